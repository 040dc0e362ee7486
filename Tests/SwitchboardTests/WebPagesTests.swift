import Foundation
import SwitchboardProtocol
import SwitchboardTesting
import Testing

/// What a node serves to browsers, over plain HTTP: the pages and their headers, the admin
/// stats, and who may call them from another origin. (The pages themselves run in Chromium in
/// BrowserTests.)
@Suite struct WebPagesTests {
    @Test func pagesComeWithAStrictPolicy() async throws {
        try await withCluster(nodes: 2) { cluster in
            for path in ["/", "/admin"] {
                let page = try await http("GET", cluster.http(0, path))
                #expect(page.status == 200)
                #expect(page.headers["content-type"] == "text/html; charset=utf-8")
                let policy = try #require(page.headers["content-security-policy"])
                #expect(policy.contains("default-src 'none'"))
                #expect(policy.contains("script-src 'self';"))
                #expect(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"))
                // The other node is reachable from the page (reconnects, the admin's stats).
                #expect(policy.contains("ws://127.0.0.1:\(cluster.ports[1])"))
                #expect(policy.contains("http://127.0.0.1:\(cluster.ports[1])"))
                #expect(page.headers["x-content-type-options"] == "nosniff")
                #expect(page.headers["x-frame-options"] == "DENY")
                #expect(!page.body.contains("<script>"), "no inline script")
            }
            let script = try await http("GET", cluster.http(1, "/switchboard.js"))
            #expect(script.status == 200)
            #expect(script.headers["content-type"] == "text/javascript; charset=utf-8")
            #expect(script.body.contains("export class Switchboard"))
        }
    }

    @Test func adminStatsCountWhatTheNodeDid() async throws {
        try await withCluster(nodes: 1) { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let bob = try await cluster.connect(0, user: "bob")
            for client in [alice, bob] { try await client.client.join("lobby") }
            _ = try await alice.client.publish("lobby", data: "1")
            try await eventually("the stats to show the delivery") {
                let stats = try await http("GET", cluster.http(0, "/api/admin/stats")).json
                return stats?["counters"]?["deliveries"]?.int ?? 0 >= 2
            }
            let stats = try #require(try await http("GET", cluster.http(0, "/api/admin/stats")).json)
            #expect(stats["node"]?.string == "n1")
            #expect(stats["phase"]?.string == "ready")
            #expect(stats["connections"]?.int == 2)
            #expect(stats["counters"]?["messages_published"]?.int == 1)
            let room = try #require(stats["top_rooms"]?.array?.first)
            #expect(room["room"]?.string == "lobby")
            #expect(room["users"]?.int == 2)
        }
    }

    @Test func adminStatsNeedTheKeyAndAnAdmittedOrigin() async throws {
        let key = "k-\(UInt32.random(in: 0...UInt32.max))"
        try await withCluster(
            nodes: 2,
            configure: {
                $0.apiKey = key
                $0.allowedOrigins = ["https://app.example.com"]
            }
        ) { cluster in
            let stats = cluster.http(1, "/api/admin/stats")
            #expect(try await http("GET", stats).status == 401)
            #expect(try await http("GET", stats, headers: ["Authorization": "Bearer wrong"]).status == 401)
            #expect(try await http("GET", stats, headers: ["Authorization": "Bearer \(key)"]).status == 200)
            // The page of another node of the cluster: its preflight, then the call, both with CORS.
            let sibling = "http://127.0.0.1:\(cluster.ports[0])"
            let preflight = try await http(
                "OPTIONS", stats,
                headers: ["Origin": sibling, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"])
            #expect(preflight.status == 204)
            #expect(preflight.headers["access-control-allow-origin"] == sibling)
            #expect(preflight.headers["access-control-allow-headers"] == "authorization")
            let call = try await http("GET", stats, headers: ["Origin": sibling, "Authorization": "Bearer \(key)"])
            #expect(call.status == 200)
            #expect(call.headers["access-control-allow-origin"] == sibling)
            // A wrong key from a sibling page is a readable 401, not a CORS failure.
            let refused = try await http("GET", stats, headers: ["Origin": sibling, "Authorization": "Bearer wrong"])
            #expect(refused.status == 401)
            #expect(refused.headers["access-control-allow-origin"] == sibling)
            // Listed origins are admitted; any other is refused before the key is looked at.
            let listed = try await http("GET", stats, headers: ["Origin": "https://app.example.com", "Authorization": "Bearer \(key)"])
            #expect(listed.status == 200)
            let foreign = try await http("GET", stats, headers: ["Origin": "https://evil.example", "Authorization": "Bearer \(key)"])
            #expect(foreign.status == 403)
            #expect(foreign.headers["access-control-allow-origin"] == nil)
            let foreignPreflight = try await http("OPTIONS", stats, headers: ["Origin": "https://evil.example"])
            #expect(foreignPreflight.status == 403)
            // /api/assign answers sibling pages too, with the key.
            let assign = try await http(
                "GET", cluster.http(1, "/api/assign"), headers: ["Origin": sibling, "Authorization": "Bearer \(key)"])
            #expect(assign.status == 200)
            #expect(assign.headers["access-control-allow-origin"] == sibling)
            #expect(try await http("GET", cluster.http(1, "/api/assign")).status == 401)
            // Other API routes give no CORS: a foreign page cannot read them.
            let nodes = try await http(
                "GET", cluster.http(1, "/api/nodes"), headers: ["Origin": sibling, "Authorization": "Bearer \(key)"])
            #expect(nodes.status == 200)
            #expect(nodes.headers["access-control-allow-origin"] == nil)
        }
    }

    /// With `--allowed-origins`, pages the cluster's own nodes serve still connect.
    @Test func theClustersOwnPagesMayOpenWebSockets() async throws {
        try await withCluster(nodes: 2, configure: { $0.allowedOrigins = ["https://app.example.com"] }) { cluster in
            for (origin, expected) in [
                ("http://127.0.0.1:\(cluster.ports[1])", "HTTP/1.1 101"), ("http://127.0.0.1:1", "HTTP/1.1 403"),
            ] {
                let raw = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws?user=o", origin: origin)
                defer { raw.close() }
                try await raw.waitForAnswer("an answer")
                #expect(raw.received.hasPrefix(expected), "\(origin)")
            }
        }
    }
}

extension WebPagesTests {
    /// `deploy/grafana-dashboard.json` queries only metrics a node exports, and every counter
    /// the node exports has a panel: the dashboard cannot drift from the code.
    @Test func theGrafanaDashboardMatchesTheMetrics() async throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("deploy/grafana-dashboard.json")
        let dashboard = try String(contentsOf: file, encoding: .utf8)
        #expect(try JSONValue.parse(dashboard)["panels"]?.array?.isEmpty == false)
        let queried = Set(names(in: dashboard))
        try await withCluster(nodes: 1) { cluster in
            let exported = Set(
                try await http("GET", cluster.http(0, "/metrics")).body.split(separator: "\n")
                    .filter { !$0.hasPrefix("#") }.compactMap { $0.split(separator: " ").first.map(String.init) })
            #expect(!exported.isEmpty)
            #expect(queried.subtracting(exported).isEmpty, "queried but not exported: \(queried.subtracting(exported))")
            #expect(exported.subtracting(queried).isEmpty, "exported but on no panel: \(exported.subtracting(queried))")
        }
    }

    private func names(in text: String) -> [String] {
        var found: [String] = []
        var rest = Substring(text)
        while let start = rest.range(of: "switchboard_") {
            let name = rest[start.lowerBound...].prefix { $0.isLetter || $0 == "_" }
            found.append(String(name))
            rest = rest[start.upperBound...]
        }
        return found
    }
}
