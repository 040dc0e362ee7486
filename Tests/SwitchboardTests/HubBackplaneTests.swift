import Foundation
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Testing

/// A `switchboard hub` and three `switchboard serve --hub` processes.
@Suite("Hub backplane, hub and three processes")
struct HubBackplaneTests {
    static let secret = "hub-test-secret"

    /// Heartbeats are 5 s unless a test is about liveness: a 1 s heartbeat also drops healthy
    /// clients on a machine busy enough to stall them for a second.
    static func hub(port: Int? = nil, assign: String = "fewest-connections", heartbeat: Int = 5) async throws -> NodeProcess {
        try await NodeProcess.start(
            "hub", ["hub", "--cluster-secret", secret, "--heartbeat", "\(heartbeat)", "--assign", assign, "--log-level", "warning"],
            port: port)
    }

    static func node(
        _ id: String, hub: NodeProcess, secret: String = secret, heartbeat: Int = 5, logLevel: String = "warning"
    ) async throws -> NodeProcess {
        try await NodeProcess.start(
            id,
            [
                "serve", "--node-id", id, "--hub", "ws://127.0.0.1:\(hub.port)", "--cluster-secret", secret, "--heartbeat", "\(heartbeat)",
                "--log-level", logLevel,
            ])
    }

    /// A hub and `count` nodes; everything is stopped afterwards.
    func withHubNodes(
        _ count: Int = 3, assign: String = "fewest-connections", heartbeat: Int = 5,
        _ body: (NodeProcess, [NodeProcess]) async throws -> Void
    ) async throws {
        let hub = try await Self.hub(assign: assign, heartbeat: heartbeat)
        var nodes: [NodeProcess] = []
        do {
            for index in 1...count { nodes.append(try await Self.node("n\(index)", hub: hub, heartbeat: heartbeat)) }
            for node in nodes { try await node.waitUntilReady() }
            try await body(hub, nodes)
        } catch {
            for process in nodes + [hub] { try? await process.kill9() }
            throw error
        }
        for process in nodes + [hub] { try? await process.kill9() }
    }

    @Test func everyProtocolRowAcrossThreeNodes() async throws {
        try await withHubNodes { hub, nodes in
            try await exerciseProtocolRows(nodes, assignFrom: hub)
            try await exerciseHistoryRows(nodes)
            let listed = try await http("GET", hub.http("/api/nodes")).json?["nodes"]?.array ?? []
            #expect(listed.compactMap { $0["id"]?.string } == ["n1", "n2", "n3"])
        }
    }

    @Test func theHubAnnouncesNodesJoiningAndLeaving() async throws {
        try await withHubNodes(1) { hub, _ in
            let listener = try await Self.node("listener", hub: hub, logLevel: "notice")
            defer { listener.killNow() }
            try await listener.waitUntilReady()
            let newcomer = try await Self.node("newcomer", hub: hub)
            try await newcomer.waitUntilReady()
            try await eventually("the join to be announced") { listener.printed.contains("node newcomer joined the cluster") }
            try await newcomer.kill9()
            try await eventually("the leave to be announced") { listener.printed.contains("node newcomer left the cluster") }
        }
    }

    @Test func assignFollowsUnevenLoad() async throws {
        try await withHubNodes { hub, nodes in
            var clients: [TestClient] = []
            for (index, count) in [3, 1, 2].enumerated() {
                for n in 0..<count { clients.append(try await nodes[index].connect(user: "u\(index)-\(n)")) }
            }
            try await eventually("n2, the least loaded, to be assigned") {
                try await http("GET", hub.http("/api/assign")).json?["node"] == .string("n2")
            }
            for n in 0..<3 { clients.append(try await nodes[1].connect(user: "more-\(n)")) }
            try await eventually("n3 to be assigned once n2 holds more") {
                try await http("GET", hub.http("/api/assign")).json?["node"] == .string("n3")
            }
        }
        try await withHubNodes(assign: "round-robin") { hub, _ in
            var picked: [String] = []
            for _ in 0..<6 { picked.append(try await http("GET", hub.http("/api/assign")).json?["node"]?.string ?? "") }
            #expect(picked == ["n1", "n2", "n3", "n1", "n2", "n3"])
        }
    }

    @Test func aKilledNodeIsDroppedAndItsUsersLeave() async throws {
        try await withHubNodes { hub, nodes in
            try await expectNodeLossNoticed(watching: nodes[0], lost: nodes[2], registry: hub, within: .seconds(5)) {
                try await nodes[2].kill9()
            }
        }
    }

    @Test func aFrozenNodeIsDroppedWhenItsHeartbeatsStop() async throws {
        try await withHubNodes(2, heartbeat: 2) { hub, nodes in
            // The link stays open; only the missing pongs give the node away (heartbeat 2 s: two
            // missed pings, 4 to 6 s). Twice in fresh-clone CI runs on a loaded machine the
            // `left` took over 10 s: the bound allows for that, and the handoff note asks for a
            // look at the hub's ping loop under load.
            try await expectNodeLossNoticed(
                watching: nodes[0], lost: nodes[1], registry: hub, within: .seconds(14), leftTimeout: .seconds(16)
            ) {
                nodes[1].freeze()
            }
        }
    }

    @Test func deliveryResumesWhenTheHubComesBack() async throws {
        try await withHubNodes(2) { hub, nodes in
            let alice = try await nodes[0].connect(user: "alice")
            let bob = try await nodes[1].connect(user: "bob")
            let before = try #require(try await bob.client.join("r").top)
            try await hub.kill9()
            // Hub away: local work goes on; cross-node publishing is refused, not lost silently.
            try await eventually("the nodes to notice") {
                try await alice.client.request(.publish(room: "r", data: RawJSON("1"))).code == "internal"
            }
            try await alice.client.ping()
            let restarted = try await Self.hub(port: hub.port)
            defer { restarted.killNow() }
            try await eventually("cross-node delivery to resume", timeout: .seconds(15)) {
                let reply = try await alice.client.request(.publish(room: "r", data: RawJSON("\"back\"")))
                guard reply.type == "ok" else { return false }
                return (try? await bob.message(timeout: .seconds(2)) { $0.data == .string("back") }) != nil
            }
            // The history was in the hub: a restarted hub is a new epoch, and says so.
            // (Once bob's node reads from the store again: until then its answer has no position.)
            try await eventually("bob's node to read the room's history again") {
                let resumed = try await bob.client.join("r", since: before)
                guard let epoch = resumed.epoch else { return false }
                #expect(resumed.recovered == false && epoch != before.epoch)
                return true
            }
            // The nodes re-sent their interests and counts: the new hub knows them all.
            #expect(try await alice.client.presence("r") == ["bob"])
            try await eventually("both nodes on the new hub") {
                (try await http("GET", restarted.http("/api/nodes")).json?["nodes"]?.array?.count) == 2
            }
        }
    }

    @Test func aFrozenHubIsNoticedAndLocalWorkGoesOn() async throws {
        // 3 s, not 2: the heartbeat also times out this test's own client, and a full suite
        // with several mesh processes can stall it for 2 s (seen once in CI).
        try await withHubNodes(2, heartbeat: 3) { hub, nodes in
            let alice = try await nodes[0].connect(user: "alice")
            try await alice.client.join("r")
            hub.freeze()
            // Requests to the frozen hub time out, and the missed pongs drop the link:
            // publishing is refused within bounded time, and the node still serves its clients.
            try await eventually("publishing to be refused", timeout: .seconds(20)) {
                try await alice.client.request(.publish(room: "r", data: RawJSON("1"))).code == "internal"
            }
            try await alice.client.ping()
            _ = try await alice.message { $0.data == .number("1") }
        }
    }

    @Test func aNodeWithTheWrongSecretIsRefused() async throws {
        try await withHubNodes(1) { hub, _ in
            let intruder = try await Self.node("intruder", hub: hub, secret: "not-the-secret")
            defer { intruder.killNow() }
            #expect(try await http("GET", intruder.http("/readyz")).status == 503)
            let listed = try await http("GET", hub.http("/api/nodes")).json?["nodes"]?.array ?? []
            #expect(listed.compactMap { $0["id"]?.string } == ["n1"])

            // And a stranger on the link endpoint gets a 401 before any upgrade.
            let raw = try await RawWebSocket.connect(port: hub.port, path: "/cluster")
            defer { raw.close() }
            try await raw.waitForAnswer("an answer")
            #expect(raw.received.hasPrefix("HTTP/1.1 401"))
        }
    }
}
