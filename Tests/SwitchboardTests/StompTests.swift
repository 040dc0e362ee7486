import Foundation
import STOMP
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Synchronization
import Testing

/// STOMP clients with hand-made frames over a raw WebSocket: every edge of the mapping
/// (PROTOCOL.md, "STOMP 1.2 over WebSocket"). stomp.py, a real third-party client, is driven in
/// `StompClientTests`.
/// One at a time: each starts a cluster, and eleven at once added to the full run's load.
@Suite(.serialized) struct StompTests {
    @Test func theHighestOfferedVersionIsEchoedAndStompAlwaysAnswers() async throws {
        try await withCluster(nodes: 1) { cluster in
            let port = cluster.ports[0]
            let ws = try await StompSocket.open(port: port, path: "/ws", subprotocols: "v10.stomp, v12.stomp, v11.stomp")
            defer { ws.close() }
            #expect(ws.raw.received.contains("Sec-WebSocket-Protocol: v12.stomp"))
            let connected = try await ws.connect(login: "ann", headers: ["accept-version": "1.1,1.2"])
            #expect(connected["version"] == "1.2")
            #expect(connected["user-name"] == "ann")
            #expect(connected["session"]?.count == 15)
            // `/stomp` needs no subprotocol; a client offering JSON's and STOMP's gets STOMP's.
            let plain = try await StompSocket.open(port: port, path: "/stomp")
            defer { plain.close() }
            #expect(!plain.raw.received.contains("Sec-WebSocket-Protocol"))
            #expect(try await plain.connect(login: "bob", headers: ["accept-version": "1.0"])["version"] == "1.0")
            let mixed = try await StompSocket.open(port: port, path: "/ws", subprotocols: "switchboard.v1, v11.stomp")
            defer { mixed.close() }
            #expect(mixed.raw.received.contains("Sec-WebSocket-Protocol: v11.stomp"))
            // No accept-version: STOMP 1.0.
            let old = try await StompSocket.open(port: port, path: "/stomp")
            defer { old.close() }
            #expect(try await old.connect(login: "cat", headers: [:], acceptVersion: nil)["version"] == "1.0")
        }
    }

    @Test func stompAndJSONClientsShareRoomsUsersAndBroadcasts() async throws {
        try await withCluster(nodes: 2) { cluster in
            let alice = try await cluster.connect(0, user: "alice")
            try await alice.client.join("mix")
            let bob = try await StompSocket.open(port: cluster.ports[1], path: "/stomp")
            defer { bob.close() }
            _ = try await bob.connect(login: "bob")
            try await bob.request(.subscribe, ["id": "sub-0", "destination": "/topic/mix"])
            try await bob.request(.subscribe, ["id": "sub-1", "destination": "/user/queue/inbox"])
            try await bob.request(.subscribe, ["id": "sub-2", "destination": "/broadcast"])
            // STOMP to JSON: a JSON body is the data as it is; text becomes a JSON string.
            try await bob.request(.send, ["destination": "/topic/mix"], body: #"{"n":1}"#)
            try await bob.request(.send, ["destination": "/topic/mix"], body: "plain words")
            try await bob.request(.send, ["destination": "/user/alice/queue/chat"], body: "2")
            let first = try await alice.message { $0.type == "message" && $0.room == "mix" }
            #expect(first.from == "bob" && first.data == .object(["n": .number("1")]))
            #expect(try await alice.message { $0.type == "message" && $0.room == "mix" }.data == .string("plain words"))
            let direct = try await alice.message { $0.type == "message" && $0.to != nil }
            #expect(direct.to == "alice" && direct.data == .number("2") && direct.from == "bob")
            // JSON to STOMP: one MESSAGE per subscription, with the protocol's headers.
            _ = try await alice.client.publish("mix", data: #"{"hello":"bob"}"#)
            let message = try await bob.frame { $0.command == .message && $0["sb-from"] == "alice" }
            #expect(message["destination"] == "/topic/mix")
            #expect(message["subscription"] == "sub-0")
            #expect(message["content-type"] == "application/json")
            #expect(message["sb-offset"] != nil && message["sb-ts"] != nil && message["message-id"] != nil)
            #expect(String(decoding: message.body, as: UTF8.self) == #"{"hello":"bob"}"#)
            _ = try await alice.client.send(to: "bob", data: "3")
            let inbox = try await bob.frame { $0.command == .message && $0["subscription"] == "sub-1" }
            #expect(inbox["destination"] == "/user/queue/inbox" && inbox.body == Array("3".utf8))
            _ = try await alice.client.broadcast(data: "4")
            let everyone = try await bob.frame { $0.command == .message && $0["subscription"] == "sub-2" }
            #expect(everyone["destination"] == "/broadcast" && everyone.body == Array("4".utf8))
        }
    }

    @Test func presenceIsOptInAndUnsubscribingTheLastOneLeaves() async throws {
        try await withCluster(nodes: 2) { cluster in
            let watcher = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { watcher.close() }
            _ = try await watcher.connect(login: "watcher")
            try await watcher.request(.subscribe, ["id": "p", "destination": "/topic/room", "sb-presence": "true"])
            let quiet = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { quiet.close() }
            _ = try await quiet.connect(login: "quiet")
            try await quiet.request(.subscribe, ["id": "q", "destination": "/topic/room"])
            let carol = try await StompSocket.open(port: cluster.ports[1], path: "/stomp")
            defer { carol.close() }
            _ = try await carol.connect(login: "carol")
            try await carol.request(.subscribe, ["id": "a", "destination": "/topic/room"])
            try await carol.request(.subscribe, ["id": "b", "destination": "/topic/room"])
            let joined = try await watcher.frame { $0["sb-event"] == "joined" && $0["sb-user"] == "carol" }
            #expect(joined["subscription"] == "p" && joined["destination"] == "/topic/room")
            #expect(String(decoding: joined.body, as: UTF8.self) == #"{"type":"joined","room":"room","user":"carol"}"#)
            // Two subscriptions to one room: one MESSAGE for each.
            try await carol.request(.send, ["destination": "/topic/room"], body: "1")
            try await eventually("both subscriptions served") {
                Set(carol.frames.filter { $0.command == .message }.compactMap { $0["subscription"] }) == ["a", "b"]
            }
            // The first UNSUBSCRIBE keeps carol in the room, the last one leaves it.
            try await carol.request(.unsubscribe, ["id": "a"])
            #expect(try await http("GET", cluster.http(0, "/api/presence/room")).json?["users"]?.array?.contains("carol") == true)
            try await carol.request(.unsubscribe, ["id": "b"])
            _ = try await watcher.frame { $0["sb-event"] == "left" && $0["sb-user"] == "carol" }
            #expect(!quiet.frames.contains { $0["sb-event"] != nil }, "no presence without sb-presence")
        }
    }

    @Test func transactionsGoOutOnCommitAndAbortDropsThem() async throws {
        try await withCluster(nodes: 1) { cluster in
            let reader = try await cluster.connect(0, user: "reader")
            try await reader.client.join("tx")
            let writer = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { writer.close() }
            _ = try await writer.connect(login: "writer")
            try await writer.request(.begin, ["transaction": "t1"])
            try await writer.request(.send, ["destination": "/topic/tx", "transaction": "t1"], body: "1")
            try await writer.request(.send, ["destination": "/topic/tx", "transaction": "t1"], body: "2")
            try await writer.request(.begin, ["transaction": "t2"])
            try await writer.request(.send, ["destination": "/topic/tx", "transaction": "t2"], body: "99")
            try await writer.request(.abort, ["transaction": "t2"])
            try await writer.request(.send, ["destination": "/topic/tx"], body: "0")
            // Outside any transaction, "0" went at once: nothing of t1 (not committed) nor t2 before it.
            #expect(try await reader.message { $0.type == "message" }.data == .number("0"))
            try await writer.request(.commit, ["transaction": "t1"])
            #expect(try await reader.message { $0.type == "message" }.data == .number("1"))
            #expect(try await reader.message { $0.type == "message" }.data == .number("2"))
            try await writer.request(.send, ["destination": "/topic/tx"], body: "3")
            #expect(try await reader.message { $0.type == "message" }.data == .number("3"), "t2's 99 never came")
            // A subscription with ack:client gets `ack` headers; ACK and NACK are accepted.
            try await writer.request(.subscribe, ["id": "c", "destination": "/topic/tx", "ack": "client"])
            try await writer.request(.send, ["destination": "/topic/tx"], body: "4")
            let acked = try await writer.frame { $0.command == .message && $0["subscription"] == "c" }
            #expect(acked["ack"] == acked["message-id"] && acked["ack"] != nil)
            // DISCONNECT is answered, then the socket closes.
            try await writer.request(.ack, ["id": "x"])
            try await writer.request(.nack, ["id": "x"])
            try await writer.request(.disconnect, [:])
            try await eventually("the close") { writer.raw.isClosed || writer.raw.receivedClose(code: 1000) }
        }
    }

    /// Each error is an ERROR frame naming the protocol's code (with `receipt-id` when the frame
    /// asked for a receipt), then the connection closes.
    @Test func everyErrorIsAnErrorFrameThenAClose() async throws {
        try await withCluster(nodes: 1, configure: { $0.maxRoomsPerConnection = 1 }) { cluster in
            let cases: [(frames: [String], code: String)] = [
                (["SEND\ndestination:/topic/a\n\n\u{0}"], "bad_request"),  // before CONNECT
                (["SEND\ndestination:/user/nobody\nreceipt:r9\n\nhi\u{0}"], "offline"),
                (["SUBSCRIBE\nid:1\ndestination:/topic/bad name!\n\n\u{0}"], "invalid_name"),
                (["SUBSCRIBE\nid:1\ndestination:/queue/x\n\n\u{0}"], "bad_request"),
                (["SUBSCRIBE\ndestination:/topic/a\n\n\u{0}"], "bad_request"),
                (["SUBSCRIBE\nid:1\ndestination:/topic/a\n\n\u{0}", "SUBSCRIBE\nid:1\ndestination:/topic/b\n\n\u{0}"], "bad_request"),
                (["SUBSCRIBE\nid:1\ndestination:/topic/a\n\n\u{0}", "SUBSCRIBE\nid:2\ndestination:/topic/b\n\n\u{0}"], "forbidden"),
                (["SUBSCRIBE\nid:1\ndestination:/topic/a\nsb-since:nope\n\n\u{0}"], "bad_request"),
                (["UNSUBSCRIBE\nid:none\n\n\u{0}"], "bad_request"),
                (["SUBSCRIBE\nid:1\ndestination:/broadcast\nack:sometimes\n\n\u{0}"], "bad_request"),
                (["COMMIT\ntransaction:none\n\n\u{0}"], "bad_request"),
                (["SEND\ntransaction:none\ndestination:/topic/a\n\n\u{0}"], "bad_request"),
                (["CONNECT\naccept-version:1.2\n\n\u{0}"], "bad_request"),  // twice
                (["MESSAGE\n\n\u{0}"], "bad_request"),
                // One STOMP frame over two WebSocket messages, past the frame limit.
                (
                    ["SEND\ndestination:/topic/a\n\n" + String(repeating: "x", count: 40000), String(repeating: "x", count: 30000)],
                    "too_large"
                ),
            ]
            for (index, item) in cases.enumerated() {
                let socket = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
                defer { socket.close() }
                if index > 0 { _ = try await socket.connect(login: "e\(index)") }
                for frame in item.frames { try await socket.raw.sendText(frame) }
                let error = try await socket.frame { $0.command == .error }
                #expect(error["message"] == item.code, "\(item.frames): \(error.headers) \(String(decoding: error.body, as: UTF8.self))")
                if item.frames[0].contains("receipt:r9") { #expect(error["receipt-id"] == "r9") }
                try await eventually("the close after ERROR") { socket.raw.receivedClose(code: 1000) || socket.raw.isClosed }
            }
        }
    }

    /// The kept corpus of malformed frames, over the wire: each gets its ERROR, then a close.
    @Test func theMalformedCorpusOverTheWire() async throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("STOMPTests/Corpus/malformed-frames.txt")
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        try await withCluster(nodes: 1) { cluster in
            for line in lines {
                let parts = line.components(separatedBy: " => ")
                let code = String(parts[1].prefix { $0 != ":" })
                var bytes = Corpus.unescape(parts[0])
                if code == "too_large" { bytes = Array("SEND\ncontent-length:99999999\n\n\u{0}".utf8) }
                let socket = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
                defer { socket.close() }
                _ = try await socket.connect(login: "c")
                try await socket.raw.sendFrame(opcode: 0x1, bytes)
                if !(String(validating: bytes, as: UTF8.self) != nil) {
                    // Not UTF-8 at all: the WebSocket layer refuses the text message (1007).
                    try await eventually("a close") { socket.raw.receivedClose(code: 1007) }
                    continue
                }
                let error = try await socket.frame { $0.command == .error }
                #expect(error["message"] == code, "\(line)")
                try await eventually("the close") { socket.raw.receivedClose(code: 1000) || socket.raw.isClosed }
            }
        }
    }

    /// The limits of `/ws` hold for STOMP: the origin list, connections per user (counted at
    /// CONNECT, where a STOMP client names itself), and the frame rate.
    @Test func theLimitsOfJSONClientsHoldForStompClients() async throws {
        try await withCluster(
            nodes: 1,
            configure: {
                $0.allowedOrigins = ["https://app.example.com"]
                $0.maxConnectionsPerUser = 1
                $0.rateBurst = 5
                $0.ratePerSecond = 1
            }
        ) { cluster in
            let port = cluster.ports[0]
            let foreign = try await RawWebSocket.connect(port: port, path: "/stomp", origin: "https://evil.example")
            defer { foreign.close() }
            try await foreign.waitForAnswer()
            #expect(foreign.received.hasPrefix("HTTP/1.1 403"))

            let first = try await StompSocket.open(port: port, path: "/stomp")
            defer { first.close() }
            #expect(try await first.connect(login: "solo").command == .connected)
            let second = try await StompSocket.open(port: port, path: "/stomp")
            defer { second.close() }
            let refused = try await second.connect(login: "solo")
            #expect(refused.command == .error && refused["message"] == "rate_limited")

            // Over the rate: ERROR rate_limited, then the close.
            for index in 0..<10 { try await first.raw.sendText("ACK\nid:\(index)\n\n\u{0}") }
            #expect(try await first.frame { $0.command == .error }["message"] == "rate_limited")
            try await eventually("the close") { first.raw.receivedClose(code: 1000) || first.raw.isClosed }
        }
    }

    @Test func framesMaySpanMessagesAndMessagesHoldSeveralFrames() async throws {
        try await withCluster(nodes: 1) { cluster in
            let socket = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { socket.close() }
            for piece in ["CONN", "ECT\naccept-version:1.2\nlog", "in:split\n\n\u{0}\n"] { try await socket.raw.sendText(piece) }
            _ = try await socket.frame { $0.command == .connected }
            try await socket.raw.sendText(
                "\nSUBSCRIBE\nid:s\ndestination:/topic/r\n\n\u{0}\r\nSEND\ndestination:/topic/r\ncontent-length:5\nreceipt:x\n\n[1,2]\u{0}\n"
            )
            let message = try await socket.frame { $0.command == .message }
            #expect(message.body == Array("[1,2]".utf8))
            _ = try await socket.frame { $0.command == .receipt && $0["receipt-id"] == "x" }
        }
    }

    @Test func tokensRideInConnectAndLimitRooms() async throws {
        try await withCluster(nodes: 1, configure: { $0.jwtSecret = AuthenticationTests.secret }) { cluster in
            let token = try await AuthenticationTests.token(sub: "tina", rooms: ["team/*"])
            let socket = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { socket.close() }
            #expect(try await socket.connect(login: "ignored", headers: ["passcode": token])["user-name"] == "tina")
            try await socket.request(.subscribe, ["id": "1", "destination": "/topic/team/a"])
            try await socket.raw.sendText("SUBSCRIBE\nid:2\ndestination:/topic/other\n\n\u{0}")
            #expect(try await socket.frame { $0.command == .error }["message"] == "forbidden")
            // In the Authorization header of CONNECT, or of the upgrade.
            let bearer = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { bearer.close() }
            #expect(try await bearer.connect(login: "x", headers: ["Authorization": "Bearer \(token)"])["user-name"] == "tina")
            let upgrade = try await StompSocket.open(port: cluster.ports[0], path: "/stomp?token=\(token)")
            defer { upgrade.close() }
            #expect(try await upgrade.connect(login: "x")["user-name"] == "tina")
            // A bad token: ERROR unauthorized, then the close.
            let bad = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { bad.close() }
            try await bad.raw.sendText("CONNECT\naccept-version:1.2\npasscode:not-a-token\n\n\u{0}")
            #expect(try await bad.frame { $0.command == .error }["message"] == "unauthorized")
            try await eventually("the close") { bad.raw.receivedClose(code: 1000) || bad.raw.isClosed }
        }
    }

    @Test func heartBeatsAreNegotiatedAndASilentClientIsDropped() async throws {
        // 2 s: with 1 s, a JSON client starved by the full suite's load missed its pongs.
        try await withCluster(nodes: 1, configure: { $0.heartbeatSeconds = 2 }) { cluster in
            let watcher = try await cluster.connect(0, user: "watcher")
            try await watcher.client.join("hb")
            let socket = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { socket.close() }
            let connected = try await socket.connect(login: "sleepy", headers: ["heart-beat": "500,500"])
            // The node's period (2000 ms) both ways; the client's 500 is below it.
            #expect(connected["heart-beat"] == "2000,2000")
            try await socket.request(.subscribe, ["id": "1", "destination": "/topic/hb"])
            try await watcher.next("sleepy joined", timeout: .seconds(10)) { $0.type == "joined" && $0.user == "sleepy" }
            // The raw socket answers no WebSocket pings: it sends pongs by itself, so that
            // only STOMP's silence can drop it.
            let ponger = Task {
                while !Task.isCancelled {
                    try? await socket.raw.sendFrame(opcode: 0xA, [])
                    try? await Task.sleep(for: .milliseconds(250))
                }
            }
            defer { ponger.cancel() }
            // The node beats (an EOL), and the silent client is dropped: ERROR, close, left.
            try await eventually("a heart-beat from the node") { socket.raw.textFrames.contains("\n") }
            let error = try await socket.frame(timeout: .seconds(15)) { $0.command == .error }
            #expect(String(decoding: error.body, as: UTF8.self).contains("no heart-beat"))
            try await watcher.next("sleepy left", timeout: .seconds(15)) { $0.type == "left" && $0.user == "sleepy" }
        }
    }

    @Test func noConnectInTimeIsAnError() async throws {
        // 3 s, not 1: the same deadline guards the upgrade itself, which a loaded machine may
        // take over a second to answer.
        try await withCluster(nodes: 1, configure: { $0.handshakeTimeoutSeconds = 3 }) { cluster in
            let socket = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { socket.close() }
            let error = try await socket.frame { $0.command == .error }
            #expect(String(decoding: error.body, as: UTF8.self).contains("no CONNECT frame"))
            try await eventually("the close") { socket.raw.receivedClose(code: 1000) || socket.raw.isClosed }
        }
    }

    /// `sb-since` resumes a room as `since` does: the RECEIPT says `sb-recovered`, the missed
    /// messages follow in order.
    @Test func sbSinceResumesARoom() async throws {
        try await withCluster(nodes: 2) { cluster in
            let publisher = try await cluster.connect(0, user: "pub")
            let first = try await StompSocket.open(port: cluster.ports[1], path: "/stomp")
            _ = try await first.connect(login: "reader")
            let receipt = try await first.request(.subscribe, ["id": "r", "destination": "/topic/news"])
            let epoch = try #require(receipt["sb-epoch"])
            #expect(receipt["sb-offset"] == "0" && receipt["sb-recovered"] == nil)
            _ = try await publisher.client.publish("news", data: "1")
            _ = try await first.frame { $0.command == .message && $0["sb-offset"] == "1" }
            first.close()
            for value in 2...3 { _ = try await publisher.client.publish("news", data: "\(value)") }
            let again = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { again.close() }
            _ = try await again.connect(login: "reader")
            let resumed = try await again.request(.subscribe, ["id": "r", "destination": "/topic/news", "sb-since": "\(epoch):1"])
            #expect(resumed["sb-recovered"] == "true")
            _ = try await again.frame { $0.command == .message && $0["sb-offset"] == "3" }
            let offsets = again.frames.filter { $0.command == .message }.compactMap { $0["sb-offset"] }
            #expect(offsets == ["2", "3"])
            // A wrong epoch: sb-recovered:false and no replay.
            let wrong = try await StompSocket.open(port: cluster.ports[0], path: "/stomp")
            defer { wrong.close() }
            _ = try await wrong.connect(login: "reader")
            let refused = try await wrong.request(.subscribe, ["id": "r", "destination": "/topic/news", "sb-since": "zzzzzzzzzz:1"])
            #expect(refused["sb-recovered"] == "false")
        }
    }
}

/// A STOMP client on a raw WebSocket: frames read back with our own parser.
struct StompSocket {
    let raw: RawWebSocket
    private static let counter = Counter()

    static func open(port: Int, path: String, subprotocols: String? = nil) async throws -> StompSocket {
        let raw = try await RawWebSocket.connect(port: port, path: path, subprotocols: subprotocols)
        try await eventually("the upgrade") { raw.received.contains("\r\n\r\n") || raw.isClosed }
        #expect(raw.received.hasPrefix("HTTP/1.1 101"), "\(raw.received.prefix(200))")
        return StompSocket(raw: raw)
    }

    func close() { raw.close() }

    /// Every STOMP frame received so far (heart-beats left out).
    var frames: [StompFrame] {
        var parser = StompParser(limits: StompLimits(maxBodyBytes: 1 << 20))
        for text in raw.textFrames { parser.append(Array(text.utf8)) }
        var frames: [StompFrame] = []
        while case .some(let event) = try? parser.next() {
            if case .frame(let frame) = event { frames.append(frame) }
        }
        return frames
    }

    /// The first received frame that matches (waiting for it).
    @discardableResult
    func frame(timeout: Duration = .seconds(10), _ predicate: @escaping (StompFrame) -> Bool) async throws -> StompFrame {
        try await eventually("a matching STOMP frame", timeout: timeout) { frames.contains(where: predicate) || raw.isClosed }
        guard let frame = frames.first(where: predicate) else {
            throw TimedOut(what: "a matching STOMP frame; got \(frames.map { "\($0.command) \($0.headers)" })")
        }
        return frame
    }

    func connect(login: String, headers: [String: String] = [:], acceptVersion: String? = "1.2") async throws -> StompFrame {
        var all: [StompHeader] = []
        if let acceptVersion, headers["accept-version"] == nil { all.append(.init("accept-version", acceptVersion)) }
        all.append(.init("host", "switchboard"))
        all.append(.init("login", login))
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { all.append(.init(name, value)) }
        try await raw.sendText(String(decoding: StompEncoder.encode(StompFrame(.connect, all)), as: UTF8.self))
        return try await frame { $0.command == .connected || $0.command == .error }
    }

    /// Sends a frame with a fresh receipt and waits for its RECEIPT (an ERROR fails the test).
    @discardableResult
    func request(_ command: StompCommand, _ headers: [String: String], body: String = "") async throws -> StompFrame {
        let receipt = "rc-\(Self.counter.next())"
        var all = headers.sorted(by: { $0.key < $1.key }).map { StompHeader($0.key, $0.value) }
        all.append(.init("receipt", receipt))
        try await raw.sendText(String(decoding: StompEncoder.encode(StompFrame(command, all, body: Array(body.utf8))), as: UTF8.self))
        let answer = try await frame { ($0.command == .receipt && $0["receipt-id"] == receipt) || $0.command == .error }
        if answer.command == .error {
            Issue.record("\(command) \(headers): ERROR \(answer.headers) \(String(decoding: answer.body, as: UTF8.self))")
        }
        return answer
    }

    final class Counter: Sendable {
        private let value = Mutex(0)
        func next() -> Int {
            value.withLock {
                $0 += 1; return $0
            }
        }
    }
}
