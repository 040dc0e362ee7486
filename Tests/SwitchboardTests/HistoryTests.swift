import Foundation
import RESP
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Synchronization
import Testing

/// History and recovery (PROTOCOL.md, 1.1) beyond the rows every backplane runs
/// (`exerciseHistoryRows`): bad input, TTL, and real processes dying under a resume.
/// One test at a time: three of them run a Redis and two or three node processes, and the
/// whole suite's load beside them starves timing-sensitive tests elsewhere.
@Suite("History and recovery", .serialized)
struct HistoryTests {
    @Test func badSinceLimitsAndNamesGetClearErrorsAndTheConnectionStays() async throws {
        try await withCluster(nodes: 1) { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let cases: [(String, String)] = [
                (#"{"type":"join","room":"r","since":"x"}"#, "bad_request"),
                (#"{"type":"join","room":"r","since":7}"#, "bad_request"),
                (#"{"type":"join","room":"r","since":{"epoch":1,"offset":0}}"#, "bad_request"),
                (#"{"type":"join","room":"r","since":{"epoch":"e","offset":-1}}"#, "bad_request"),
                (#"{"type":"join","room":"r","since":{"epoch":"e","offset":"3"}}"#, "bad_request"),
                (#"{"type":"join","room":"r","since":{"epoch":"e","offset":1.5}}"#, "bad_request"),
                (#"{"type":"join","room":"r","since":{"epoch":"e"}}"#, "bad_request"),
                (#"{"type":"join","room":"r","since":{"epoch":"","offset":1}}"#, "bad_request"),
                (#"{"type":"join","room":"r","since":{"epoch":"a:b","offset":1}}"#, "bad_request"),
                (#"{"type":"history","room":"bad name"}"#, "invalid_name"),
                (#"{"type":"history"}"#, "bad_request"),
                (#"{"type":"history","room":"r","limit":0}"#, "bad_request"),
                (#"{"type":"history","room":"r","limit":101}"#, "bad_request"),
                (#"{"type":"history","room":"r","limit":"5"}"#, "bad_request"),
                (#"{"type":"history","room":"r","limit":-2}"#, "bad_request"),
            ]
            for (frame, code) in cases {
                try await alice.client.sendText(frame.replacingOccurrences(of: "{\"type\"", with: "{\"id\":\"q\",\"type\""))
                let error = try await alice.next("error for \(frame)") { $0.type == "error" || $0.type == "ok" }
                #expect(error.code == code && error.id == .string("q"), "\(frame)")
            }
            try await alice.client.ping()
            // None of them joined anything.
            #expect(try await alice.client.presence("r") == [])

            // A malformed ?since= is refused before the upgrade.
            for since in ["x", "e:", ":5", "e:-1", "e:1.5", "e:1:2"] {
                let raw = try await RawWebSocket.connect(port: cluster.ports[0], path: "/ws?user=bob&since=\(since)")
                defer { raw.close() }
                try await raw.waitForAnswer()
                #expect(raw.received.hasPrefix("HTTP/1.1 400") && raw.received.contains("bad_request"), "\(since)")
            }
            // The HTTP API checks the same.
            #expect(try await http("GET", cluster.http(0, "/api/history/r?limit=0")).status == 400)
            #expect(try await http("GET", cluster.http(0, "/api/history/r?limit=x")).status == 400)
            #expect(try await http("GET", cluster.http(0, "/api/history/bad%20name")).json?["error"] == .string("invalid_name"))
        }
    }

    /// The embedded backplane (`switchboard cluster`): a room and an inbox resumed on another
    /// node, the sender's own copy numbered like everyone's.
    @Test func theEmbeddedClusterResumesRoomsAndInboxesOnAnotherNode() async throws {
        try await withCluster(nodes: 2) { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let bob = try await cluster.connect(1, user: "bob")
            let top = try #require(try await bob.client.join("e").top)
            try await alice.client.join("e")
            for n in 1...4 { try await alice.client.publish("e", data: "\(n)") }
            // The publisher is subscribed: it gets its own messages with the same offsets.
            for n in 1...4 { #expect(try await alice.message { $0.room == "e" }.offset == top.offset + Int64(n)) }
            _ = try await bob.message { $0.offset == top.offset + 2 }
            await bob.client.close()
            let moved = try await cluster.connect(0, user: "bob")
            let resumed = try await moved.client.join("e", since: StreamPosition(epoch: top.epoch, offset: top.offset + 2))
            #expect(resumed.recovered == true)
            #expect(try await moved.message().data == .number("3"))
            #expect(try await moved.message().data == .number("4"))

            let inbox = try #require(moved.client.welcome.inbox)
            try await alice.client.send(to: "bob", data: "\"dm\"")
            _ = try await moved.message { $0.data == .string("dm") }
            let again = try await TestClient(
                SwitchboardClient.connect(to: cluster.ws(1, "user=bob&since=\(inbox.epoch):\(inbox.offset)")))
            #expect(again.client.welcome.recovered == true)
            #expect(try await again.message().data == .string("dm"))
        }
    }

    @Test func messagesPastTheirTTLAreNeitherServedNorReplayed() async throws {
        try await withCluster(nodes: 2, history: HistoryPolicy(size: 10, ttlSeconds: 1)) { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            let top = try #require(try await alice.client.join("short").top)
            for n in 1...3 { try await alice.client.publish("short", data: "\(n)") }
            // (Kept meanwhile: the history rows check that; here only their end matters.)
            try await eventually("the messages to expire", timeout: .seconds(10)) {
                try await alice.client.history("short").messages?.isEmpty == true
            }
            let bob = try await cluster.connect(1, user: "bob")
            let resumed = try await bob.client.join("short", since: top)
            #expect(resumed.recovered == false && resumed.top?.offset == 3 && resumed.top?.epoch == top.epoch)
            // Nothing is missed from the top on: a resume from there recovers, with nothing to send.
            #expect(try await bob.client.join("short", since: resumed.top).recovered == true)
        }
    }

    @Test func historyOffMeansNoOffsetsAndHonestAnswers() async throws {
        try await withCluster(nodes: 1, history: .off) { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            #expect(alice.client.welcome.inbox == nil)
            let joined = try await alice.client.join("r", since: StreamPosition(epoch: "e", offset: 1))
            #expect(joined.recovered == false && joined.top == nil)
            try await alice.client.publish("r", data: "1")
            #expect(try await alice.message().offset == nil)
            #expect(try await alice.client.request(.history(room: "r")).code == "unsupported")
        }
    }

    /// A node dies while messages to its only user keep coming: every `send` answered `ok`
    /// reaches the user once it is back on another node, once each, in order.
    @Test func directMessagesSentWhileTheRecipientsNodeDiesReachItElsewhere() async throws {
        try await withRedisNodes(2, heartbeat: 2) { _, nodes in
            let sender = try await nodes[0].connect(user: "sender")
            let bob = try await nodes[1].connect(user: "bob")
            var seen = try #require(bob.client.welcome.inbox)
            var answered: [Int] = []
            for n in 0..<5 {
                try await sender.client.send(to: "bob", data: "\(n)")
                answered.append(n)
            }
            for _ in 0..<5 { seen.offset = try #require(try await bob.message().offset) }
            // Kill bob's node while sends go on, and go on after it is dead (until its lease
            // lapses, sends are taken; after, they are refused as offline).
            let killed = Atomic(false)
            let killing = Task {
                try await nodes[1].kill9()
                killed.store(true, ordering: .releasing)
            }
            var n = 5
            var afterDeath = 0
            while afterDeath < 10, n < 90 {
                if killed.load(ordering: .acquiring) { afterDeath += 1 }
                let reply = try await sender.client.request(.send(to: "bob", data: RawJSON("\(n)")))
                if reply.type == "ok" { answered.append(n) } else { #expect(reply.code == "offline") }
                if reply.code == "offline" { break }
                n += 1
            }
            try await killing.value
            #expect(afterDeath > 0, "sends went on after the node was dead")
            let back = try await TestClient(SwitchboardClient.connect(to: nodes[0].ws("user=bob&since=\(seen.epoch):\(seen.offset)")))
            #expect(back.client.welcome.recovered == true)
            var replayed: [Int] = []
            for _ in 5..<answered.count { replayed.append(try await back.message().data?.int ?? -1) }
            #expect(replayed == Array(answered[5...]))
            // And nothing more: the next message is a new one.
            try await sender.client.send(to: "bob", data: "\"new\"")
            #expect(try await back.message().data == .string("new"))
        }
    }

    /// Redis drops a node's subscription connection (as it does to a subscriber that falls
    /// behind) while messages keep coming: the node fills in what it missed from the history,
    /// so its client gets every message once, in order, and never notices. The history holds
    /// every message sent: an unpaced sender can outrun the reconnect's backoff by more than
    /// the default 100 (seen under a loaded machine), and this test is about filling in, not
    /// about the history's size (`recovered:false` has tests of its own).
    @Test func messagesMissedWhileANodeResubscribesAreFilledInFromHistory() async throws {
        try await withRedisNodes(2, options: ["--history-size", "1000"]) { redis, nodes in
            let bob = try await nodes[1].connect(user: "bob")
            let start = try #require(try await bob.client.join("fill").top)
            let alice = try await nodes[0].connect(user: "alice")
            let operator_ = try await RedisConnection.local(port: redis.port)
            defer { Task { await operator_.close() } }
            let publishing = Task {
                for n in 0..<300 {
                    try await alice.client.publish("fill", data: "\(n)")
                    if n == 100 { _ = try await operator_.send(["CLIENT", "KILL", "TYPE", "pubsub"]) }
                }
            }
            var offsets: [Int64] = []
            var data: [Int] = []
            for _ in 0..<300 {
                let message = try await bob.message(timeout: .seconds(20)) { $0.room == "fill" }
                offsets.append(message.offset ?? -1)
                data.append(message.data?.int ?? -1)
            }
            try await publishing.value
            #expect(data == Array(0..<300))
            #expect(offsets == (1...300).map { start.offset + Int64($0) })
        }
    }

    /// The Swift client library rides through the death of its node while a publisher runs:
    /// every message arrives once, in order, and no gap is announced.
    @Test func theClientLibraryRidesThroughANodeKill() async throws {
        try await withRedisNodes(3) { _, nodes in
            let client = ReconnectingClient(.init(urls: [nodes[2].ws(""), nodes[0].ws("")], query: "user=rider"))
            // A deadline: closing the client ends its events, and the checks below fail.
            let deadline = Task {
                try await Task.sleep(for: .seconds(60))
                await client.close()
            }
            defer { deadline.cancel() }
            var events = client.events.makeAsyncIterator()
            guard case .connected(let welcome)? = await events.next() else { throw TimedOut(what: "the first welcome") }
            #expect(welcome.node == "n3")
            try await client.join("ride")
            let publisher = try await nodes[1].connect(user: "publisher")
            let publishing = Task {
                for n in 0..<200 { try await publisher.client.publish("ride", data: "\(n)") }
            }
            var received: [Int] = []
            var nodesSeen = ["n3"]
            var notRecovered = 0
            while received.count < 200 {
                guard let event = await events.next() else { break }
                switch event {
                case .message(let message):
                    received.append(message.data?.int ?? -1)
                    if received.count == 50 { try await nodes[2].kill9() }
                case .connected(let welcome): nodesSeen.append(welcome.node)
                case .notRecovered: notRecovered += 1
                case .presence, .disconnected, .other: break
                }
            }
            try await publishing.value
            #expect(received == Array(0..<200))
            #expect(nodesSeen == ["n3", "n1"] && notRecovered == 0)
            await client.close()
        }
    }
}
