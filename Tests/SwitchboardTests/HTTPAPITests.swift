import SwitchboardClient
import SwitchboardProtocol
import SwitchboardTesting
import Testing

@Suite("HTTP API")
struct HTTPAPITests {
    @Test func publishSendAndBroadcastFromTheServer() async throws {
        try await withCluster { cluster in
            let bob = try await cluster.connect(1, user: "bob")
            let carol = try await cluster.connect(2, user: "carol")
            try await bob.client.join("news")

            let published = try await http("POST", cluster.http(0, "/api/publish"), body: #"{"room":"news","data":{"h":"x"}}"#)
            #expect(published.status == 200 && published.json?["ok"] == .bool(true))
            let news = try await bob.message()
            #expect(news.from == "server" && news.room == "news" && news.data?["h"] == .string("x"))

            let sent = try await http("POST", cluster.http(0, "/api/send"), body: #"{"to":"carol","data":1}"#)
            #expect(sent.status == 200)
            #expect(try await carol.message().to == "carol")

            let offline = try await http("POST", cluster.http(0, "/api/send"), body: #"{"to":"nobody","data":1}"#)
            #expect(offline.status == 404 && offline.json?["error"] == .string("offline"))

            let all = try await http("POST", cluster.http(2, "/api/broadcast"), body: #"{"data":"all"}"#)
            #expect(all.status == 200)
            _ = try await bob.message { $0.isBroadcast }
            _ = try await carol.message { $0.isBroadcast }
        }
    }

    @Test func inspection() async throws {
        try await withCluster { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let alice2 = try await cluster.connect(2, user: "alice")
            _ = try await cluster.connect(2, user: "zed")
            try await alice.client.join("team/a")
            try await alice2.client.join("team/a")

            let presence = try await http("GET", cluster.http(1, "/api/presence/team/a"))
            #expect(presence.json == (try JSONValue.parse(#"{"room":"team/a","users":["alice"]}"#)))
            let user = try await http("GET", cluster.http(1, "/api/users/alice"))
            #expect(user.json == (try JSONValue.parse(#"{"user":"alice","online":true,"nodes":["n1","n3"]}"#)))
            let nobody = try await http("GET", cluster.http(1, "/api/users/nobody"))
            #expect(nobody.json?["online"] == .bool(false))

            let nodes = try await http("GET", cluster.http(0, "/api/nodes")).json?["nodes"]?.array ?? []
            #expect(nodes.map { $0["id"]?.string } == ["n1", "n2", "n3"])
            #expect(nodes.map { $0["connections"]?.int } == [1, 0, 2])
            #expect(nodes.map { $0["users"]?.int } == [1, 0, 2])
            #expect(nodes.allSatisfy { $0["alive"] == .bool(true) })
            #expect(nodes[1]["url"]?.string == cluster.ws(1))

            let assigned = try await http("GET", cluster.http(2, "/api/assign"))
            #expect(assigned.json == .object(["node": .string("n2"), "url": .string(cluster.ws(1))]))
        }
    }

    @Test func healthReadinessAndMetrics() async throws {
        try await withCluster(nodes: 1) { cluster in
            #expect(try await http("GET", cluster.http(0, "/healthz")).status == 200)
            #expect(try await http("GET", cluster.http(0, "/readyz")).status == 200)
            let client = try await cluster.connect(0, user: "m")
            try await client.client.broadcast(data: "1")
            _ = try await client.message()
            let metrics = try await http("GET", cluster.http(0, "/metrics"))
            #expect(metrics.status == 200)
            #expect(metrics.body.contains("switchboard_connections 1"))
            #expect(metrics.body.contains("switchboard_messages_published_total 1"))
        }
    }

    @Test func badRequestsGetCodes() async throws {
        try await withCluster(nodes: 1, configure: { $0.maxFrameBytes = 1024 }) { cluster in
            let cases: [(String, String, Int, String)] = [
                ("/api/publish", "nope", 400, "bad_request"),
                ("/api/publish", #"{"data":1}"#, 400, "bad_request"),
                ("/api/publish", #"{"room":"a b","data":1}"#, 400, "invalid_name"),
                ("/api/publish", #"{"room":"r"}"#, 400, "bad_request"),
                ("/api/send", #"{"to":5,"data":1}"#, 400, "bad_request"),
                ("/api/broadcast", #"{"data":""# + String(repeating: "x", count: 2000) + "\"}", 413, "too_large"),
            ]
            for (path, body, status, code) in cases {
                let reply = try await http("POST", cluster.http(0, path), body: body)
                #expect(reply.status == status, "\(path) \(body.prefix(40))")
                #expect(reply.json?["error"] == .string(code), "\(path) \(body.prefix(40))")
                #expect(reply.json?["message"]?.string != nil)
            }
            let badName = try await http("GET", cluster.http(0, "/api/presence/bad%20room"))
            #expect(badName.status == 400 && badName.json?["error"] == .string("invalid_name"))
        }
    }

    @Test func theAPIKeyGuardsTheAPI() async throws {
        try await withCluster(nodes: 1, configure: { $0.apiKey = "s3cret" }) { cluster in
            let missing = try await http("GET", cluster.http(0, "/api/nodes"))
            #expect(missing.status == 401 && missing.json?["error"] == .string("unauthorized"))
            let wrong = try await http("GET", cluster.http(0, "/api/nodes"), headers: ["Authorization": "Bearer s3cres"])
            #expect(wrong.status == 401)
            let right = try await http("GET", cluster.http(0, "/api/nodes"), headers: ["Authorization": "Bearer s3cret"])
            #expect(right.status == 200)
            // Health and metrics stay open for probes.
            #expect(try await http("GET", cluster.http(0, "/healthz")).status == 200)
        }
    }
}
