import Foundation
import MeshBackplane
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Testing

/// Three and four `switchboard serve --peers` processes linked directly to each other.
@Suite("Mesh backplane, three and four processes")
struct MeshBackplaneTests {
    static let secret = "mesh-test-secret"

    /// A mesh node on `port`, seeded with `seeds` (ports). Heartbeats are 5 s unless a test is
    /// about liveness (see HubBackplaneTests).
    static func node(
        _ id: String, port: Int, seeds: [Int], secret: String = secret, heartbeat: Int = 5, logLevel: String = "warning"
    ) async throws -> NodeProcess {
        try await NodeProcess.start(
            id,
            [
                "serve", "--node-id", id, "--peers", seeds.map { "127.0.0.1:\($0)" }.joined(separator: ","),
                "--cluster-secret", secret, "--heartbeat", "\(heartbeat)", "--log-level", logLevel,
            ],
            port: port)
    }

    /// `count` nodes on consecutive ports, each seeded with all of them (itself included), as an
    /// operator would start a fixed cluster; everything is stopped afterwards.
    func withMesh(_ count: Int = 3, heartbeat: Int = 5, logLevel: String = "warning", _ body: ([NodeProcess]) async throws -> Void)
        async throws
    {
        var nodes: [NodeProcess] = []
        do {
            nodes = try await Self.startMesh(count, heartbeat: heartbeat, logLevel: logLevel)
            for node in nodes { try await node.waitUntilReady() }
            try await eventually("every node to see all \(count)") {
                for node in nodes where try await aliveNodes(node) != nodes.map(\.nodeID).sorted() { return false }
                return true
            }
            try await body(nodes)
        } catch {
            for node in nodes { try? await node.kill9() }
            throw error
        }
        for node in nodes { try? await node.kill9() }
    }

    /// Starts `count` nodes on free consecutive ports. The ports are free when picked, but a
    /// test running alongside may take one before its node binds it: then all start again on
    /// other ports (the seeds name every port, so one node cannot move alone).
    static func startMesh(_ count: Int, heartbeat: Int, logLevel: String) async throws -> [NodeProcess] {
        for attempt in 1...3 {
            let base = try await freePorts(count)
            let ports = Array(base..<(base + count))
            var nodes: [NodeProcess] = []
            do {
                for (index, port) in ports.enumerated() {
                    nodes.append(try await node("n\(index + 1)", port: port, seeds: ports, heartbeat: heartbeat, logLevel: logLevel))
                }
                return nodes
            } catch let error as NodeProcess.ExitedEarly where error.output.contains("Address already in use") && attempt < 3 {
                for node in nodes { try? await node.kill9() }
            } catch {
                for node in nodes { try? await node.kill9() }
                throw error
            }
        }
        throw TimedOut(what: "free ports for the mesh")
    }

    @Test func everyProtocolRowAcrossThreeNodes() async throws {
        try await withMesh { nodes in
            try await exerciseProtocolRows(nodes)
            try await exerciseNoHistoryRows(nodes)
        }
    }

    @Test func aFastSendersPublishesAreAnsweredAndDeliveredInOrder() async throws {
        try await withMesh { nodes in
            let sender = try await nodes[0].connect(user: "sender")
            let readers = [try await nodes[1].connect(user: "reader1"), try await nodes[2].connect(user: "reader2")]
            for reader in readers { try await reader.client.join("ordered") }
            // Without waiting for answers, as a fast client would: many are on both links at
            // once, yet arrive and are answered in the order sent.
            for n in 0..<300 {
                try await sender.client.sendText(#"{"type":"publish","room":"ordered","data":\#(n),"id":"m\#(n)"}"#)
            }
            try await sender.client.sendText(#"{"type":"ping","id":"last"}"#)
            for reader in readers {
                for n in 0..<300 { #expect(try await reader.message().data == .number("\(n)")) }
            }
            var answers: [ServerMessage] = []
            for _ in 0...300 { answers.append(try await sender.next("an answer")) }
            #expect(answers.map { $0.id?.string } == (0..<300).map { "m\($0)" } + ["last"])
            #expect(answers.dropLast().allSatisfy { $0.type == "ok" } && answers.last?.type == "pong")
        }
    }

    /// A sender's messages are on their way together: one waiting for a frozen peer's ack does
    /// not hold back the next, to another peer. (One at a time, the second would leave only
    /// when the first was acked or timed out, 5 s later; the reader waits 3 s at most.)
    @Test func aFrozenPeerDoesNotHoldBackMessagesToOthers() async throws {
        try await withMesh { nodes in
            let sender = try await nodes[0].connect(user: "sender")
            let stuck = try await nodes[1].connect(user: "stuck")
            let reader = try await nodes[2].connect(user: "reader")
            try await stuck.client.join("behind")
            try await reader.client.join("ahead")
            nodes[1].freeze()
            try await sender.client.sendText(#"{"type":"publish","room":"behind","data":1,"id":"first"}"#)
            try await sender.client.sendText(#"{"type":"publish","room":"ahead","data":2,"id":"second"}"#)
            let passed = try await reader.message(timeout: .seconds(3)) { $0.from == "sender" }
            #expect(passed.data == .number("2"))
            nodes[1].thaw()
            #expect(try await stuck.message { $0.from == "sender" }.data == .number("1"))
            #expect(try await sender.next("an answer").id?.string == "first")
            #expect(try await sender.next("an answer").id?.string == "second")
        }
    }

    @Test func aFourthNodeJoinsThroughOneSeedAndLinksToAll() async throws {
        try await withMesh(logLevel: "info") { nodes in
            let fourth = try await Self.node("n4", port: try await freePorts(1), seeds: [nodes[1].port], logLevel: "info")
            defer { fourth.killNow() }
            try await fourth.waitUntilReady()
            // It learned the whole member list from its one seed, and everyone learned of it.
            for node in nodes + [fourth] {
                try await eventually("\(node.nodeID) to see four nodes") { try await aliveNodes(node) == ["n1", "n2", "n3", "n4"] }
            }
            for id in ["n1", "n2", "n3"] { #expect(fourth.printed.contains("linked to node \(id)")) }
            for node in nodes { #expect(node.printed.contains("linked to node n4")) }
            // And traffic flows both ways between it and the nodes it was not seeded with.
            let dave = try await fourth.connect(user: "dave")
            let alice = try await nodes[0].connect(user: "alice")
            let carol = try await nodes[2].connect(user: "carol")
            for client in [dave, alice, carol] { try await client.client.join("r") }
            try await dave.client.publish("r", data: "\"from n4\"")
            _ = try await alice.message { $0.data == .string("from n4") }
            _ = try await carol.message { $0.data == .string("from n4") }
            try await alice.client.send(to: "dave", data: "\"to n4\"")
            _ = try await dave.message { $0.data == .string("to n4") }
            #expect(try await dave.client.presence("r") == ["alice", "carol", "dave"])
        }
    }

    @Test func aKilledNodeIsDetectedCleanedAndTheRestKeepWorking() async throws {
        try await withMesh(heartbeat: 2) { nodes in
            // Detected by silence: 3 heartbeats of 2 s, checked every half second.
            try await expectNodeLossNoticed(watching: nodes[0], lost: nodes[2], registry: nodes[1], within: .seconds(8)) {
                try await nodes[2].kill9()
            }
            // Every survivor dropped it (each judges for itself), and n1 and n2 still talk.
            try await eventually("n2 to drop n3", timeout: .seconds(8)) { try await aliveNodes(nodes[1]) == ["n1", "n2"] }
            let bob = try await nodes[1].connect(user: "bob2")
            try await bob.client.join("room")
            let watcher = try await nodes[0].connect(user: "w2")
            try await watcher.client.join("room")
            try await bob.client.publish("room", data: "\"n2 to n1\"")
            _ = try await watcher.message { $0.data == .string("n2 to n1") }
        }
    }

    @Test func aFrozenNodeIsDeclaredDeadWhenItFallsSilent() async throws {
        try await withMesh(heartbeat: 2) { nodes in
            // Its sockets stay open; only the missing heartbeats give it away.
            try await expectNodeLossNoticed(watching: nodes[0], lost: nodes[1], registry: nodes[2], within: .seconds(8)) {
                nodes[1].freeze()
            }
        }
    }

    @Test func aRestartedNodeRejoinsWithANewIncarnation() async throws {
        try await withMesh { nodes in
            let watcher = try await nodes[0].connect(user: "watcher")
            try await watcher.client.join("room")
            let victim = try await nodes[2].connect(user: "victim")
            try await victim.client.join("room")
            _ = try await watcher.next { $0.type == "joined" && $0.user == "victim" }
            // Back at once, long before silence would give the old one away (heartbeat 5 s):
            // the new incarnation replaces the old, whose users leave presence once.
            try await nodes[2].kill9()
            let restarted = try await Self.node("n3", port: nodes[2].port, seeds: [nodes[0].port])
            defer { restarted.killNow() }
            try await restarted.waitUntilReady()
            _ = try await watcher.next("left", timeout: .seconds(10)) { $0.type == "left" && $0.user == "victim" }
            try await eventually("n1 to see n3 again") { try await aliveNodes(nodes[0]) == ["n1", "n2", "n3"] }
            #expect(try await watcher.client.presence("room") == ["watcher"])

            let again = try await restarted.connect(user: "victim")
            try await again.client.join("room")
            _ = try await watcher.next { $0.type == "joined" && $0.user == "victim" }
            try await watcher.client.publish("room", data: "\"welcome back\"")
            _ = try await again.message { $0.data == .string("welcome back") }
            try await again.client.publish("room", data: "\"thanks\"")
            _ = try await watcher.message { $0.data == .string("thanks") }
            #expect(await watcher.received().filter { $0.type == "left" && $0.user == "victim" }.isEmpty)
            #expect(await watcher.received().filter { $0.type == "message" && $0.data == .string("thanks") }.isEmpty)
        }
    }

    @Test func aWrongSecretIsRefused() async throws {
        try await withMesh(1) { nodes in
            let intruder = try await Self.node("intruder", port: try await freePorts(1), seeds: [nodes[0].port], secret: "not-the-secret")
            defer { intruder.killNow() }
            try await eventually("the intruder to say why") { intruder.printed.contains("refused this node's link") }
            #expect(try await http("GET", intruder.http("/readyz")).status == 503)
            #expect(try await aliveNodes(nodes[0]) == ["n1"])
            let listed = try await http("GET", nodes[0].http("/api/nodes")).json?["nodes"]?.array ?? []
            #expect(listed.compactMap { $0["id"]?.string } == ["n1"])

            // A stranger, with a wrong secret or none, gets a 401 before any upgrade.
            for authorization in ["Bearer wrong", nil] {
                let raw = try await RawWebSocket.connect(port: nodes[0].port, path: "/cluster", authorization: authorization)
                defer { raw.close() }
                try await raw.waitForAnswer("an answer")
                #expect(raw.received.hasPrefix("HTTP/1.1 401"))
            }
            #expect(try await nodes[0].metric("switchboard_handshakes_refused_total") >= 3)
        }
    }

    /// The accepting end reads a link's frames itself (AcceptedLink): a message in fragments is
    /// joined, a ping between them is answered, and an unexpected text frame ends the link.
    @Test func anAcceptedLinkJoinsFragmentsAndAnswersPings() async throws {
        try await withMesh(1) { nodes in
            let peer = try await RawWebSocket.connect(port: nodes[0].port, path: "/cluster", authorization: "Bearer \(Self.secret)")
            defer { peer.close() }
            try await eventually("the acceptor's welcome") { peer.rawFrames.contains { $0.opcode == 0x2 } }
            let hello = Array(
                MeshFrame.hello(MemberRecord(id: "frag", url: "ws://127.0.0.1:1/ws", incarnation: 1)).encoded().readableBytesView)
            let cut = hello.count / 2
            try await peer.sendFrame(opcode: 0x2, Array(hello[..<cut]), fin: false)
            try await peer.sendFrame(opcode: 0x9, Array("mid".utf8))
            try await eventually("the pong between fragments") {
                peer.rawFrames.contains { $0.opcode == 0xA && $0.payload == Array("mid".utf8) }
            }
            #expect(!peer.rawFrames.contains { MeshFrame.decode($0.payload).map { if case .members = $0 { true } else { false } } == true })
            try await peer.sendFrame(opcode: 0x0, Array(hello[cut...]), fin: true)
            try await eventually("the member list, answering the joined hello") {
                peer.rawFrames.contains { frame in
                    if frame.opcode == 0x2, case .members = MeshFrame.decode(frame.payload) { return true }
                    return false
                }
            }
            try await peer.sendText("not a link frame")
            try await eventually("the link closed") { peer.isClosed }
        }
    }

    /// A peer with the secret cannot take the id of a live node at its incarnation (issue 13):
    /// the node keeps its link and its view.
    @Test func aSecondHelloForALiveNodeIsRefused() async throws {
        try await withMesh(2) { nodes in
            let bob = try await nodes[1].connect(user: "bob")
            try await bob.client.join("r")
            try await eventually("bob in n1's view") {
                try await http("GET", nodes[0].http("/api/presence/r")).json?["users"] == .array(["bob"])
            }
            // A first link, under a name of its own, learns the members and their incarnations.
            let spy = try await RawWebSocket.connect(port: nodes[0].port, path: "/cluster", authorization: "Bearer \(Self.secret)")
            defer { spy.close() }
            try await eventually("the acceptor's welcome") { spy.rawFrames.contains { $0.opcode == 0x2 } }
            let spyRecord = MemberRecord(id: "spy", url: "ws://127.0.0.1:1/ws", incarnation: 1)
            try await spy.sendFrame(opcode: 0x2, Array(MeshFrame.hello(spyRecord).encoded().readableBytesView))
            var n2: MemberRecord?
            try await eventually("the member list") {
                for frame in spy.rawFrames where frame.opcode == 0x2 {
                    if case .members(let records) = MeshFrame.decode(frame.payload) { n2 = records.first { $0.id == "n2" } }
                }
                return n2 != nil
            }
            let forged = try #require(n2)
            // A second link says it is n2, at n2's own incarnation.
            let forger = try await RawWebSocket.connect(port: nodes[0].port, path: "/cluster", authorization: "Bearer \(Self.secret)")
            defer { forger.close() }
            try await eventually("the acceptor's welcome") { forger.rawFrames.contains { $0.opcode == 0x2 } }
            try await forger.sendFrame(opcode: 0x2, Array(MeshFrame.hello(forged).encoded().readableBytesView))
            try await eventually("the forger refused") {
                forger.rawFrames.contains { frame in
                    if case .refused = MeshFrame.decode(frame.payload) { return true }
                    return false
                }
            }
            // n2's link and view are untouched: bob is still there, and messages still cross.
            #expect(try await http("GET", nodes[0].http("/api/presence/r")).json?["users"] == .array(["bob"]))
            let alice = try await nodes[0].connect(user: "alice")
            try await alice.client.publish("r", data: "\"still linked\"")
            _ = try await bob.message { $0.data == .string("still linked") }
        }
    }

    /// A link's writer sends what queued up as one `batch`: the acceptor applies its frames in
    /// order and answers their acks as one batch. A batch inside a batch closes that link.
    @Test func aBatchIsAppliedInOrderAndAckedAsOneBatch() async throws {
        try await withMesh(2) { nodes in
            let spy = try await RawWebSocket.connect(port: nodes[0].port, path: "/cluster", authorization: "Bearer \(Self.secret)")
            defer { spy.close() }
            try await eventually("the acceptor's welcome") { spy.rawFrames.contains { $0.opcode == 0x2 } }
            let record = MemberRecord(id: "spy", url: "ws://127.0.0.1:1/ws", incarnation: 1)
            try await spy.sendFrame(opcode: 0x2, Array(MeshFrame.hello(record).encoded().readableBytesView))
            let batch = MeshFrame.batch([
                .sync(
                    seq: 1, load: NodeLoad(connections: 1, users: 1), users: ["carol"], rooms: [.init(room: "r", user: "carol")],
                    final: true),
                .delta(seq: 2, .joined(room: "r2", user: "carol")),
                .delta(seq: 3, .left(room: "r", user: "carol")),
            ])
            try await spy.sendFrame(opcode: 0x2, Array(batch.encoded().readableBytesView))
            try await eventually("one batch of the three acks") {
                spy.rawFrames.contains { MeshFrame.decode($0.payload) == .batch([.ack(seq: 1), .ack(seq: 2), .ack(seq: 3)]) }
            }
            // Applied in order: carol joined r2 and left r after the sync put her in r.
            #expect(try await http("GET", nodes[0].http("/api/presence/r2")).json?["users"] == .array(["carol"]))
            #expect(try await http("GET", nodes[0].http("/api/presence/r")).json?["users"] == .array([]))
            let nested = MeshFrame.batch(encoded: [MeshFrame.batch([.beat(NodeLoad(connections: 1, users: 1))]).encoded()])
            try await spy.sendFrame(opcode: 0x2, Array(nested.readableBytesView))
            try await eventually("the link closed as malformed") { spy.receivedClose(code: 1002) }
        }
    }

    @Test func aMalformedLinkFrameClosesThatLinkOnly() async throws {
        try await withMesh(2, logLevel: "info") { nodes in
            let raw = try await RawWebSocket.connect(port: nodes[0].port, path: "/cluster", authorization: "Bearer \(Self.secret)")
            defer { raw.close() }
            try await eventually("the upgrade") { raw.received.hasPrefix("HTTP/1.1 101") }
            try await raw.sendFrame(opcode: 0x2, [1, 99, 0, 0])
            try await eventually("the link to be closed") { raw.receivedClose(code: 1002) }
            try await eventually("the reason to be logged") { nodes[0].printed.contains("closed a cluster link: malformed link frame") }
            // The node and its real links are unharmed.
            let alice = try await nodes[0].connect(user: "alice")
            let bob = try await nodes[1].connect(user: "bob")
            try await bob.client.join("r")
            try await alice.client.publish("r", data: "\"fine\"")
            _ = try await bob.message { $0.data == .string("fine") }
        }
    }

    @Test func aDrainingNodeSaysGoodbyeAndItsUsersLeaveAtOnce() async throws {
        // Heartbeat 5 s: silence would take 15 s; the goodbye makes it immediate.
        try await withMesh(2) { nodes in try await expectGoodbyeOnDrain(watching: nodes[0], leaving: nodes[1]) }
    }

    @Test func messagesCrossOnlyToNodesWithARecipient() async throws {
        try await withMesh { nodes in try await exerciseTargetedRouting(nodes, room: "only-n2", user: "bob") }
    }
}
