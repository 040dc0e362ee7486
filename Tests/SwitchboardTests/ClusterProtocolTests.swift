import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Testing

/// Every row of the protocol, across the nodes of a real 3-node embedded cluster, with real
/// WebSocket clients.
@Suite("Protocol across a 3-node cluster")
struct ClusterProtocolTests {
    @Test func welcomeIsTheFirstFrame() async throws {
        try await withCluster { cluster in
            let alice = try await cluster.connect(1, user: "alice")
            #expect(alice.client.welcome.user == "alice")
            #expect(alice.client.welcome.node == "n2")
            #expect(alice.client.welcome.heartbeat == 25)
            #expect(!alice.client.welcome.session.isEmpty)
            let anonymous = try await SwitchboardClient.connect(to: cluster.ws(0))
            #expect(anonymous.welcome.user.hasPrefix("anon-"))
            #expect(Name.isValid(anonymous.welcome.user))
            await anonymous.close()
            await alice.client.close()
        }
    }

    @Test func roomMessagesReachSubscribersOnEveryNode() async throws {
        try await withCluster { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let bob = try await cluster.connect(1, user: "bob")
            let carol = try await cluster.connect(2, user: "carol")
            let dave = try await cluster.connect(2, user: "dave")  // not subscribed
            let joined = try await bob.client.join("lobby")
            #expect(joined.type == "ok" && joined.room == "lobby")
            try await carol.client.join("lobby")

            try await alice.client.publish("lobby", data: #"{"text":"hi","n":[1,2.5]}"#)
            let atBob = try await bob.message()
            let atCarol = try await carol.message()
            #expect(atBob.from == "alice" && atBob.room == "lobby")
            #expect(atBob.data == (try JSONValue.parse(#"{"text":"hi","n":[1,2.5]}"#)))
            #expect(atBob.id == atCarol.id, "one message, one id everywhere")
            #expect(atBob.json["ts"]?.int ?? 0 > 1_600_000_000_000)

            // publish reaches the sender only if it is subscribed: it is not, here. The direct
            // message that follows (same sender, same path) arrives after any earlier delivery.
            try await alice.client.send(to: "alice", data: "\"marker\"")
            _ = try await alice.message { $0.data == .string("marker") }
            #expect(await alice.received().filter { $0.room == "lobby" && $0.type == "message" }.isEmpty)
            try await alice.client.send(to: "dave", data: "\"marker\"")
            _ = try await dave.message { $0.data == .string("marker") }
            #expect(await dave.received().filter { $0.room == "lobby" }.isEmpty)

            // Subscribed senders get their own messages.
            try await bob.client.publish("lobby", data: "2")
            let own = try await bob.message { $0.data == .number("2") }
            #expect(own.from == "bob")
            _ = try await carol.message { $0.data == .number("2") }
        }
    }

    @Test func leaveStopsDelivery() async throws {
        try await withCluster { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let bob = try await cluster.connect(1, user: "bob")
            try await bob.client.join("r")
            try await alice.client.publish("r", data: "1")
            _ = try await bob.message { $0.data == .number("1") }
            let left = try await bob.client.leave("r")
            #expect(left.type == "ok" && left.room == "r")
            try await alice.client.publish("r", data: "2")
            try await alice.client.send(to: "bob", data: "\"marker\"")
            _ = try await bob.message { $0.data == .string("marker") }
            #expect(await bob.received().filter { $0.type == "message" }.isEmpty)
        }
    }

    @Test func sendReachesEveryConnectionOfTheUser() async throws {
        try await withCluster { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let bobOnTwo = try await cluster.connect(1, user: "bob")
            let bobOnThree = try await cluster.connect(2, user: "bob")
            let reply = try await alice.client.send(to: "bob", data: #"{"q":1}"#)
            #expect(reply.type == "ok")
            let first = try await bobOnTwo.message()
            let second = try await bobOnThree.message()
            #expect(first.to == "bob" && first.from == "alice")
            #expect(first.id == second.id)

            // To one's own user: every connection of it, the sender's included.
            let aliceElsewhere = try await cluster.connect(2, user: "alice")
            try await alice.client.send(to: "alice", data: "\"self\"")
            _ = try await alice.message { $0.data == .string("self") }
            _ = try await aliceElsewhere.message { $0.data == .string("self") }
        }
    }

    @Test func sendToAnOfflineUserIsRefused() async throws {
        try await withCluster { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let reply = try await alice.client.request(.send(to: "nobody", data: RawJSON("1")))
            #expect(reply.type == "error")
            #expect(reply.code == "offline")
            #expect(reply.id == .string("c1"))
        }
    }

    @Test func broadcastReachesEveryConnection() async throws {
        try await withCluster { cluster in
            let clients = [
                try await cluster.connect(0, user: "a"), try await cluster.connect(1, user: "b"),
                try await cluster.connect(2, user: "c"),
            ]
            try await clients[1].client.broadcast(data: #"{"all":true}"#)
            var ids: Set<String> = []
            for client in clients {
                let message = try await client.message()
                #expect(message.isBroadcast && message.from == "b")
                ids.insert(message.id?.string ?? "")
            }
            #expect(ids.count == 1)
        }
    }

    @Test func presenceAndJoinedLeftAcrossNodes() async throws {
        try await withCluster { cluster in
            let watcher = try await cluster.connect(0, user: "watcher")
            try await watcher.client.join("room")
            let alice = try await cluster.connect(1, user: "alice")
            let aliceAgain = try await cluster.connect(2, user: "alice")
            try await alice.client.join("room")
            let joined = try await watcher.next("joined") { $0.type == "joined" && $0.user == "alice" }
            #expect(joined.room == "room")
            try await aliceAgain.client.join("room")
            #expect(try await watcher.client.presence("room") == ["alice", "watcher"])
            #expect(try await aliceAgain.client.presence("room") == ["alice", "watcher"])

            // Her first connection leaving changes nothing; the last one leaving sends `left`.
            try await alice.client.leave("room")
            #expect(try await watcher.client.presence("room") == ["alice", "watcher"])
            await aliceAgain.client.close()
            let left = try await watcher.next("left") { $0.type == "left" && $0.user == "alice" }
            #expect(left.room == "room")
            #expect(try await watcher.client.presence("room") == ["watcher"])
            #expect(await watcher.received().filter { $0.type == "joined" && $0.user == "alice" }.isEmpty)
        }
    }

    @Test func pingAndIDs() async throws {
        try await withCluster(nodes: 1) { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            try await alice.client.sendText(#"{"type":"ping","id":42}"#)
            let integer = try await alice.next { $0.type == "pong" }
            #expect(integer.json["id"] == .number("42"))
            try await alice.client.sendText(#"{"type":"ping","id":"abc"}"#)
            #expect(try await alice.next { $0.type == "pong" }.id == .string("abc"))
            try await alice.client.sendText(#"{"type":"ping"}"#)
            #expect(try await alice.next { $0.type == "pong" }.id == nil)
            try await alice.client.ping()
        }
    }

    @Test func oneSendersMessagesArriveInOrder() async throws {
        try await withCluster { cluster in
            let sender = try await cluster.connect(0, user: "sender")
            let roomReader = try await cluster.connect(1, user: "reader")
            let userReader = try await cluster.connect(2, user: "target")
            try await roomReader.client.join("ordered")
            // Fire without waiting for each reply, as a fast client would.
            for n in 0..<300 {
                try await sender.client.sendText(#"{"type":"publish","room":"ordered","data":\#(n)}"#)
                try await sender.client.sendText(#"{"type":"send","to":"target","data":\#(n)}"#)
            }
            for n in 0..<300 {
                #expect(try await roomReader.message().data == .number("\(n)"))
                #expect(try await userReader.message().data == .number("\(n)"))
            }
        }
    }

    @Test func batchPacksDeliveriesIntoFramesInOrder() async throws {
        try await withCluster { cluster in
            let packer = try await RawWebSocket.connect(port: cluster.ports[1], path: "/ws?user=packer&batch=1")
            defer { packer.close() }
            try await eventually("the welcome") { packer.textFrames.count == 1 }
            try await packer.sendText(#"{"type":"join","room":"packed","id":"j"}"#)
            try await eventually("the join's answer") { packer.textFrames.contains { $0.contains(#""id":"j""#) } }
            let sender = try await cluster.connect(0, user: "sender")
            // A burst, so that several deliveries reach the packer's socket in one loop turn;
            // the packer's own pings go in the middle of it.
            for n in 0..<1000 {
                try await sender.client.sendText(#"{"type":"publish","room":"packed","data":\#(n)}"#)
                if n % 250 == 0 { try await packer.sendText(#"{"type":"ping","id":"p\#(n)"}"#) }
            }
            let objects = { packer.textFrames.flatMap { $0.split(separator: "\n").map(String.init) } }
            try await eventually("every delivery") { objects().filter { $0.hasPrefix(#"{"type":"message""#) }.count == 1000 }
            try await eventually("every pong") { objects().filter { $0.hasPrefix(#"{"type":"pong""#) }.count == 4 }
            let delivered = objects().filter { $0.hasPrefix(#"{"type":"message""#) }
            #expect(delivered.enumerated().allSatisfy { n, text in text.contains(#""data":\#(n)"#) })
            #expect(objects().allSatisfy { $0.hasPrefix("{") && $0.hasSuffix("}") })
            #expect(packer.textFrames.count < objects().count, "some frames hold several messages")
        }
    }

    @Test func subprotocolIsEchoed() async throws {
        try await withCluster(nodes: 1) { cluster in
            let raw = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws?user=p")
            defer { raw.close() }
            try await eventually("a 101 response") { raw.received.contains("welcome") }
            #expect(!raw.received.lowercased().contains("sec-websocket-protocol"))
            let offered = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws?user=q", subprotocols: "chat, switchboard.v1")
            defer { offered.close() }
            try await eventually("a 101 response") { offered.received.contains("welcome") }
            #expect(offered.received.lowercased().contains("sec-websocket-protocol: switchboard.v1"))
        }
    }
}
