import AMQP
import BrokerMembership
import Foundation
import Logging
import RabbitMQBackplane
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Synchronization
import Testing

/// Three `switchboard serve --rabbitmq` processes joined through a private rabbitmq-server. One
/// test at a time: each starts its own broker (seconds of Erlang start-up).
@Suite("RabbitMQ backplane, three processes", .serialized)
struct RabbitMQBackplaneTests {
    static func node(_ id: String, broker: String, heartbeat: Int = 5, logLevel: String = "warning") async throws -> NodeProcess {
        try await NodeProcess.start(
            id, ["serve", "--node-id", id, "--rabbitmq", broker, "--heartbeat", "\(heartbeat)", "--log-level", logLevel])
    }

    /// A broker and `count` nodes on it, each seeing all; everything is stopped afterwards.
    func withRabbitMQNodes(
        _ count: Int = 3, heartbeat: Int = 5, logLevel: String = "warning", _ body: (RabbitMQServer, [NodeProcess]) async throws -> Void
    ) async throws {
        try await withRabbitMQ { broker in
            var nodes: [NodeProcess] = []
            defer { for node in nodes { node.killNow() } }
            for index in 1...count {
                nodes.append(try await Self.node("n\(index)", broker: broker.url, heartbeat: heartbeat, logLevel: logLevel))
            }
            for node in nodes { try await node.waitUntilReady() }
            try await eventually("every node to see all \(count)") {
                for node in nodes where try await aliveNodes(node) != nodes.map(\.nodeID).sorted() { return false }
                return true
            }
            try await body(broker, nodes)
        }
    }

    /// The shared rows, the rows of a backplane without history, and the proof that a message
    /// crosses only to nodes with a recipient (each node's queue is bound per room and user).
    @Test func everyProtocolRowAcrossThreeNodesAndTargetedRouting() async throws {
        try await withRabbitMQNodes { _, nodes in
            try await exerciseProtocolRows(nodes)
            try await exerciseNoHistoryRows(nodes)

            try await exerciseTargetedRouting(nodes, room: "only-n2", user: "bob-t")
        }
    }

    @Test func aKilledNodeLeavesPresenceWithinThreeHeartbeats() async throws {
        try await withRabbitMQNodes(heartbeat: 2) { broker, nodes in
            // One queue per node, server-named.
            func queues() throws -> Int {
                try broker.control(["list_queues", "name"]).split(separator: "\n").filter { $0.hasPrefix("amq.gen-") }.count
            }
            #expect(try queues() == 3)
            // Heartbeat 2 s: three periods, plus scheduling slack on a busy machine.
            try await expectNodeLossNoticed(watching: nodes[0], lost: nodes[2], registry: nodes[1], within: .seconds(8)) {
                try await nodes[2].kill9()
            }
            try await eventually("n2 to drop n3", timeout: .seconds(8)) { try await aliveNodes(nodes[1]) == ["n1", "n2"] }
            // The dead node's queue went with its connection.
            try await eventually("the broker to delete n3's queue") { try queues() == 2 }
        }
    }

    @Test func aDrainingNodeSaysGoodbye() async throws {
        // Heartbeat 30 s: silence would take 90 s; the goodbye makes it immediate.
        try await withRabbitMQNodes(2, heartbeat: 30) { _, nodes in try await expectGoodbyeOnDrain(watching: nodes[0], leaving: nodes[1]) }
    }

    /// The broker is not up when the nodes start, comes, is killed and comes back: the nodes
    /// serve their own clients throughout, refuse cross-node messages while it is away (logged
    /// once), and find each other again by themselves.
    @Test func nodesRideThroughABrokerThatIsLateAndRestarts() async throws {
        let broker = try await RabbitMQServer.reserve()
        var nodes: [NodeProcess] = []
        defer { for node in nodes { node.killNow() } }
        do {
            for id in ["n1", "n2"] { nodes.append(try await Self.node(id, broker: broker.url, logLevel: "info")) }
            #expect(try await http("GET", nodes[0].http("/readyz")).status == 503)
            let alice = try await nodes[0].connect(user: "alice")
            try await alice.client.join("r")
            try await alice.client.ping()

            try await broker.start()
            for node in nodes { try await node.waitUntilReady() }
            let bob = try await nodes[1].connect(user: "bob")
            try await bob.client.join("r")
            // What alice did before the broker came was announced once it came.
            try await eventually("n2 to see alice") { try await bob.client.presence("r") == ["alice", "bob"] }
            try await bob.client.publish("r", data: "\"hello early\"")
            _ = try await alice.message { $0.data == .string("hello early") }

            try await broker.kill9()
            // Away: local work goes on, cross-node publishing is refused, not lost silently.
            try await eventually("publishing to be refused") {
                try await alice.client.request(.publish(room: "r", data: RawJSON("\"lost?\""))).code == "internal"
            }
            for _ in 0..<10 {
                #expect(try await alice.client.request(.publish(room: "r", data: RawJSON("1"))).code == "internal")
            }
            let carol = try await nodes[0].connect(user: "carol")
            try await carol.client.join("r")
            try await carol.client.ping()

            try await broker.start()
            let back = ContinuousClock.now
            try await eventually("cross-node delivery to resume", timeout: .seconds(10)) {
                let reply = try await alice.client.request(.publish(room: "r", data: RawJSON("\"back\"")))
                guard reply.type == "ok" else { return false }
                return (try? await bob.message(timeout: .seconds(2)) { $0.data == .string("back") }) != nil
            }
            #expect(ContinuousClock.now - back < .seconds(10))
            // Presence re-announced by both, carol's join (made while the broker was away) included.
            try await eventually("presence to be whole again") { try await bob.client.presence("r") == ["alice", "bob", "carol"] }
            try await bob.client.send(to: "carol", data: "\"found you\"")
            _ = try await carol.message { $0.data == .string("found you") }

            let lines = nodes[0].printed.split(separator: "\n")
            #expect(lines.filter { $0.contains("lost the connection to RabbitMQ") }.count == 1)
            // Once when it came late, once when it came back.
            #expect(lines.filter { $0.contains("is reachable again") }.count == 2)
            #expect(lines.filter { $0.contains("is unreachable") }.count <= 2)
            #expect(try await nodes[0].metric("switchboard_commands_failed_total") >= 11)
        } catch {
            try? await broker.stop()
            throw error
        }
        try await broker.stop()
    }

    /// The broker's flow control (a memory alarm): publishing is refused at once, not queued;
    /// joins still work (they use the consuming connection); all is well once it unblocks.
    @Test func aBlockedBrokerRefusesPublishesAndRecovers() async throws {
        try await withRabbitMQNodes(2, logLevel: "info") { broker, nodes in
            let alice = try await nodes[0].connect(user: "alice")
            let bob = try await nodes[1].connect(user: "bob")
            try await bob.client.join("r")
            try await eventually("n1 to see bob") { try await alice.client.presence("r") == ["bob"] }

            try broker.control(["set_vm_memory_high_watermark", "0.0000001"])
            // The broker says it blocks a connection once that connection publishes: the first
            // publish may wait for its confirm until the node's timeout; then all are refused.
            try await eventually("the node to know it is blocked", timeout: .seconds(20)) {
                try await alice.client.request(.publish(room: "r", data: RawJSON("\"blocked?\""))).code == "internal"
            }
            try await eventually("n1 to log the block") { nodes[0].printed.contains("RabbitMQ blocked publishing") }
            for _ in 0..<20 {
                #expect(try await alice.client.request(.publish(room: "r", data: RawJSON("2"))).code == "internal")
            }
            try await alice.client.join("r")

            try broker.control(["set_vm_memory_high_watermark", "0.4"])
            try await eventually("publishing to work again", timeout: .seconds(15)) {
                try await alice.client.request(.publish(room: "r", data: RawJSON("\"unblocked\""))).type == "ok"
            }
            _ = try await bob.message { $0.data == .string("unblocked") }
            // alice's join, whose delta was refused, was announced again once unblocked.
            try await eventually("n2 to see alice") { try await bob.client.presence("r") == ["alice", "bob"] }
        }
    }

    /// A user another node has just welcomed is not reported offline by a node whose consumer is
    /// behind: before saying nobody holds a user, the node catches up with its own queue. The
    /// other node is played by hand on a raw AMQP connection (its publishes are confirmed, so
    /// in this node's queue); this node's consumer is held up by its receiver on an earlier
    /// record, so the user's delta waits in the queue while the question is asked.
    @Test func offlineIsNeverOlderThanAnotherNodesWelcome() async throws {
        try await withRabbitMQ { broker in
            let address = try #require(AMQPAddress(url: broker.url))
            let logger = Logger(label: "rabbitmq-test")
            let backplane = RabbitMQBackplane(configuration: .init(broker: address, heartbeat: .seconds(5)), logger: logger)
            let receiver = StallingReceiver(on: .joined(room: "r", user: "slow"))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await backplane.run() }
                defer { group.cancelAll() }
                try await backplane.join(node: NodeInfo(id: "a", url: "ws://127.0.0.1:1/ws"), receiver: receiver)
                try await backplane.roomJoined("r", user: "here")

                let other = try await AMQPConnection.connect(to: address, logger: logger)
                func publish(_ frame: BrokerFrame) async throws {
                    try await other.publish(exchange: "switchboard", routingKey: "members", body: frame.bytes)
                }
                let b = MemberRecord(id: "b", url: "ws://127.0.0.1:2/ws", incarnation: 1)
                try await publish(.announce(b, load: NodeLoad(connections: 0, users: 0), wantsReplies: false, users: [], rooms: []))
                try await eventually("a to know b") { try await backplane.nodes().map(\.info.id) == ["a", "b"] }
                try await publish(.delta(from: "b", incarnation: 1, .joined(room: "r", user: "slow")))
                try await publish(.delta(from: "b", incarnation: 1, .online(user: "x")))
                #expect(try await backplane.nodes(of: "x") == ["b"])
                // The consumer was held up (so an answer from the view alone would have been []).
                #expect(receiver.stalled)
                #expect(try await backplane.nodes(of: "nobody").isEmpty)
                await other.close()
            }
        }
    }
}

/// Holds up the caller's thread, a backplane's consumer, for 500 ms on one event, once.
private final class StallingReceiver: ClusterReceiver {
    let event: ClusterEvent
    private let done = Atomic<Bool>(false)

    init(on event: ClusterEvent) { self.event = event }

    var stalled: Bool { done.load(ordering: .acquiring) }

    func receive(_ event: ClusterEvent) {
        guard event == self.event, !done.load(ordering: .acquiring) else { return }
        Thread.sleep(forTimeInterval: 0.5)
        done.store(true, ordering: .releasing)
    }
}
