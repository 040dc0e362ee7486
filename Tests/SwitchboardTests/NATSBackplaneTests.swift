import Foundation
import Logging
import NATS
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Synchronization
import Testing

/// Three `switchboard serve --nats` processes on a real three-server NATS cluster, each node
/// given a different server (it learns the others from the cluster's INFO).
@Suite("NATS backplane, three processes on a three-server NATS cluster", .serialized)
struct NATSBackplaneTests {
    static func node(_ id: String, nats: String, heartbeat: Int = 5, logLevel: String = "warning") async throws -> NodeProcess {
        try await NodeProcess.start(id, ["serve", "--node-id", id, "--nats", nats, "--heartbeat", "\(heartbeat)", "--log-level", logLevel])
    }

    func withNATSNodes(heartbeat: Int = 5, logLevel: String = "warning", _ body: (NATSCluster, [NodeProcess]) async throws -> Void)
        async throws
    {
        try await withNATSCluster { cluster in
            var nodes: [NodeProcess] = []
            defer { for node in nodes { node.killNow() } }
            for index in 0..<3 {
                nodes.append(try await Self.node("n\(index + 1)", nats: cluster.url(index), heartbeat: heartbeat, logLevel: logLevel))
            }
            for node in nodes { try await node.waitUntilReady() }
            try await eventually("every node to see all three") {
                for node in nodes where try await aliveNodes(node) != ["n1", "n2", "n3"] { return false }
                return true
            }
            try await body(cluster, nodes)
        }
    }

    @Test func everyProtocolRowAndTargetedRouting() async throws {
        try await withNATSNodes { _, nodes in
            try await exerciseProtocolRows(nodes)
            try await exerciseNoHistoryRows(nodes)

            // Names with dots are escaped into one subject token: "a.b" and "a" do not mix.
            try await exerciseTargetedRouting(nodes, room: "only.n2", user: "bob.t")
        }
    }

    @Test func aKilledNodeLeavesPresenceWithinThreeHeartbeats() async throws {
        try await withNATSNodes(heartbeat: 2) { _, nodes in
            try await expectNodeLossNoticed(watching: nodes[0], lost: nodes[2], registry: nodes[1], within: .seconds(8)) {
                try await nodes[2].kill9()
            }
            try await eventually("n2 to drop n3", timeout: .seconds(8)) { try await aliveNodes(nodes[1]) == ["n1", "n2"] }
        }
    }

    @Test func aDrainingNodeSaysGoodbye() async throws {
        // Heartbeat 30 s: silence would take 90 s; the goodbye makes it immediate.
        try await withNATSNodes(heartbeat: 30) { _, nodes in try await expectGoodbyeOnDrain(watching: nodes[0], leaving: nodes[2]) }
    }

    /// kill -9 of the server n1 is on: n1 moves to another server of the cluster (learned from
    /// INFO: it was given only its own), subscribes again and re-announces; delivery resumes
    /// within 10 s and presence is whole. The server comes back and the cluster is whole again.
    @Test func nodesFailOverWhenTheirServerDies() async throws {
        try await withNATSNodes(logLevel: "info") { cluster, nodes in
            let alice = try await nodes[0].connect(user: "alice")
            let bob = try await nodes[1].connect(user: "bob")
            for client in [alice, bob] { try await client.client.join("r") }
            try await eventually("both to see each other") { try await alice.client.presence("r") == ["alice", "bob"] }

            try await cluster.kill9(0)
            let killed = ContinuousClock.now
            try await eventually("delivery to n1 to resume", timeout: .seconds(10)) {
                let reply = try await bob.client.request(.publish(room: "r", data: RawJSON("\"after failover\"")))
                guard reply.type == "ok" else { return false }
                return (try? await alice.message(timeout: .seconds(1)) { $0.data == .string("after failover") }) != nil
            }
            #expect(ContinuousClock.now - killed < .seconds(10))
            try await eventually("n1 to publish again") {
                try await alice.client.request(.publish(room: "r", data: RawJSON("\"from n1\""))).type == "ok"
            }
            _ = try await bob.message { $0.data == .string("from n1") }
            try await alice.client.send(to: "bob", data: "\"dm\"")
            _ = try await bob.message { $0.data == .string("dm") }
            #expect(try await bob.client.presence("r") == ["alice", "bob"])
            #expect(nodes[0].printed.contains("lost the connection to NATS"))
            #expect(nodes[0].printed.contains("NATS is reachable again"))
            try await cluster.restart(0)
            let carol = try await nodes[2].connect(user: "carol")
            try await carol.client.join("r")
            _ = try await alice.next { $0.type == "joined" && $0.user == "carol" }
        }
    }

    /// With every server of the cluster away, cross-node messages are refused (never buffered
    /// or lost silently) and the outage is logged once; when one comes back, the nodes return.
    @Test func withNoServerMessagesAreRefusedAndTheNodesComeBack() async throws {
        try await withNATSNodes(logLevel: "info") { cluster, nodes in
            let alice = try await nodes[0].connect(user: "alice")
            let bob = try await nodes[1].connect(user: "bob")
            try await bob.client.join("r")
            for index in 0..<3 { try await cluster.kill9(index) }
            try await eventually("publishing to be refused") {
                try await alice.client.request(.publish(room: "r", data: RawJSON("1"))).code == "internal"
            }
            for _ in 0..<10 { #expect(try await alice.client.request(.publish(room: "r", data: RawJSON("2"))).code == "internal") }
            try await cluster.restart(1)
            try await eventually("cross-node delivery to resume", timeout: .seconds(15)) {
                let reply = try await alice.client.request(.publish(room: "r", data: RawJSON("\"back\"")))
                guard reply.type == "ok" else { return false }
                return (try? await bob.message(timeout: .seconds(1)) { $0.data == .string("back") }) != nil
            }
            let lines = nodes[0].printed.split(separator: "\n")
            // The servers die one after another: a node may lose each in turn before none is
            // left, and then says once that none answers, however many messages it refused.
            #expect((1...3).contains(lines.filter { $0.contains("lost the connection to NATS") }.count))
            #expect(lines.filter { $0.contains("is unreachable") }.count <= 1)
            #expect(try await nodes[0].metric("switchboard_commands_failed_total") >= 11)
        }
    }

    /// Our client against a real server, on its own: subscriptions, messages, PING/PONG, a
    /// payload over the server's max_payload refused before it is sent (the connection stays),
    /// and the server killed: the client moves to another of the cluster with its subscriptions.
    @Test func theClientSubscribesPublishesAndRecoversFromAnError() async throws {
        try await withNATSCluster { cluster in
            let received = Mutex<[NATSMessage]>([])
            var configuration = NATSClient.Configuration(servers: [NATSClient.Server(url: cluster.url(0))!])
            configuration.minimumBackoff = .milliseconds(50)
            let client = NATSClient(
                configuration: configuration, logger: Logger(label: "nats-test"),
                onMessage: { message in received.withLock { $0.append(message) } })
            // Our own messages do not come back (echo:false): another client publishes.
            let publisher = NATSClient(
                configuration: NATSClient.Configuration(servers: [NATSClient.Server(url: cluster.url(1))!]),
                logger: Logger(label: "nats-test"),
                onMessage: { _ in })
            let task = Task { await client.run() }
            let publisherTask = Task { await publisher.run() }
            defer {
                task.cancel()
                publisherTask.cancel()
            }
            await client.waitUntilConnected()
            await publisher.waitUntilConnected()
            try await client.subscribe("t.a")
            let other = try await client.subscribe("t.b")
            try await publisher.publish("t.a", Array("one".utf8))?.get()
            try await publisher.publish("t.c", Array("nobody".utf8))?.get()
            try await publisher.publish("t.b", Array("two".utf8))?.get()
            try await eventually("two messages") { received.withLock { $0.count } == 2 }
            #expect(received.withLock { $0.map(\.subject) } == ["t.a", "t.b"])
            await client.unsubscribe(other)
            let big = [UInt8](repeating: 1, count: 2 * 1024 * 1024)  // over the default 1 MiB max_payload
            await #expect(throws: NATSError.payloadTooLarge(1024 * 1024)) { try await publisher.publish("t.a", big)?.get() }
            #expect(publisher.isConnected)
            try await publisher.publish("t.b", Array("x".utf8))?.get()

            try await cluster.kill9(0)
            try await eventually("the client to move to another server") {
                client.isConnected && client.server?.contains("\(cluster.ports[0].client)") == false
            }
            try await publisher.publish("t.a", Array("three".utf8))?.get()
            try await eventually("the subscription to be back") { received.withLock { $0.last?.payload } == Array("three".utf8) }
            #expect(!received.withLock { $0.contains { $0.subject == "t.b" && $0.payload == Array("x".utf8) } })
            await client.stop()
            await publisher.stop()
        }
    }
}
