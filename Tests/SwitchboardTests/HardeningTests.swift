import Foundation
import HubBackplane
import RESP
import SwitchboardClient
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardProtocol
import SwitchboardTesting
import Testing

/// The findings of the outside audit (issue 13), one test each, against real sockets and, where
/// the finding was about a process dying or holding on, real `switchboard` processes.
@Suite("Hardening")
struct HardeningTests {
    // MARK: 1. A request target that crashed the process

    @Test func queriesWithEmptyPairsCrashNeitherANodeNorAHub() async throws {
        let node = try await NodeProcess.start("target", ["serve", "--node-id", "target", "--log-level", "error"])
        let hub = try await NodeProcess.start("hub", ["hub", "--cluster-secret", "s3cret", "--log-level", "error"])
        defer { node.killNow(); hub.killNow() }
        for target in [
            "/ws?=", "/ws?&", "/ws?=&=", "/ws?%", "/ws?user=%ZZ", "/ws?a=1&=&b=2", "/ws??==&&", "/ws?user=%C3%28", "/ws?user=a%",
        ] {
            let raw = try await RawWebSocket.connect(port: node.port, path: target)
            try await raw.waitForAnswer("an answer to \(target)")
            #expect(raw.received.hasPrefix("HTTP/1.1 101"), "\(target)")
            raw.close()
        }
        for target in ["/cluster?a=1&=&b=2", "/cluster?=", "/cluster?%"] {
            let raw = try await RawWebSocket.connect(port: hub.port, path: target)
            try await raw.waitForAnswer("an answer to \(target)")
            #expect(raw.received.hasPrefix("HTTP/1.1 401"), "\(target)")
            raw.close()
        }
        #expect(node.isRunning && hub.isRunning)
        #expect(try await http("GET", node.http("/healthz")).status == 200)
        #expect(try await http("GET", hub.http("/healthz")).status == 200)
    }

    // MARK: 2. Ping floods

    /// A node process of its own, as the audit ran it: its event loops are not shared with the
    /// test's other in-process nodes.
    @Test func aPingFloodThatReadsNothingIsClosedAtTheOutboundLimit() async throws {
        let node = try await NodeProcess.start(
            "pinged",
            [
                "serve", "--node-id", "pinged", "--max-frame", "1024", "--max-buffered", "65536", "--rate-burst", "1000000",
                "--rate-per-second", "1000000", "--log-level", "error",
            ])
        defer { node.killNow() }
        let flooder = try await RawWebSocket.welcomed(port: node.port, path: "/ws?user=flooder", receiveBuffer: 4096)
        defer { flooder.close() }
        try await flooder.stopReading()
        let ping = RawWebSocket.frame(opcode: 0x9, [UInt8](repeating: 7, count: 125))
        let burst = Array([[UInt8]](repeating: ping, count: 1000).joined())
        // Bursts of 1000 pings (131 KB of pongs each) until the node gives up on the flooder:
        // the kernel's send buffer takes a few MB first, then NIO's buffer passes 64 KiB.
        // Unbounded, this grew a node by gigabytes; 400 bursts are 52 MB.
        for round in 0..<400 {
            guard (try? await flooder.write(burst)) != nil else { break }
            if round % 10 == 9, try await node.metric("switchboard_slow_consumers_closed_total") >= 1 { break }
        }
        try await eventually("the flooder closed as a slow consumer", timeout: .seconds(30)) {
            try await node.metric("switchboard_slow_consumers_closed_total") == 1
        }
        let other = try await node.connect(user: "other")
        try await other.client.ping()
    }

    @Test func pingsCountAgainstTheRateAndAreNotAnsweredAfterTheCloseFrame() async throws {
        try await withCluster(
            nodes: 1,
            configure: {
                $0.rateBurst = 10
                $0.ratePerSecond = 1
                $0.maxStrikes = 20
            }
        ) { cluster in
            let flooder = try await RawWebSocket.welcomed(port: cluster.ports[0], path: "/ws?user=pinger")
            defer { flooder.close() }
            let ping = RawWebSocket.frame(opcode: 0x9, [1, 2, 3])
            try await flooder.write(Array([[UInt8]](repeating: ping, count: 40).joined()))
            try await eventually("closed for excess frames") { flooder.receivedClose(code: 1008) }
            #expect(flooder.count(opcode: 0xA) <= 10)
            #expect(try await metric(cluster, "switchboard_rate_limited_total") >= 20)

            // After the server's close frame, a ping gets no pong: nothing follows the close.
            let closing = try await RawWebSocket.welcomed(port: cluster.ports[0], path: "/ws?user=closing")
            defer { closing.close() }
            try await closing.sendFrame(opcode: 0x1, Array("{}".utf8), rsv1: true)
            try await eventually("the server's close") { closing.receivedClose(code: 1002) }
            try await closing.sendFrame(opcode: 0x9, [9])
            try await closing.sendFrame(opcode: 0x8, [0x03, 0xE8])
            try await eventually("the socket closed") { closing.isClosed }
            #expect(closing.frames.last?.opcode == 0x8)
            #expect(closing.count(opcode: 0xA) == 0)
        }
    }

    // MARK: 3. Half-open and malformed HTTP

    /// Each case is sent on its own socket to a node and to a hub, both with a 2 s handshake
    /// timeout: the silent and unfinished ones are closed by the timeout, the malformed ones are
    /// answered and closed at once.
    @Test func halfOpenAndMalformedRequestsAreClosedOnNodesAndHubs() async throws {
        let node = try await NodeProcess.start(
            "strict", ["serve", "--node-id", "strict", "--handshake-timeout", "2", "--log-level", "error"])
        let hub = try await NodeProcess.start(
            "hub", ["hub", "--cluster-secret", "s3cret", "--handshake-timeout", "2", "--log-level", "error"])
        defer { node.killNow(); hub.killNow() }
        let big = String(repeating: "a", count: 70_000)
        let timedOut: [(String, [UInt8])] = [
            ("one byte", Array("G".utf8)),
            ("half a request line", Array("GET /healthz HT".utf8)),
            ("a head without its end", Array("GET /healthz HTTP/1.1\r\nHost: x\r\n".utf8)),
            ("a body that never comes", Array("POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{".utf8)),
        ]
        let answered: [(String, [UInt8], String)] = [
            ("TLS to a plain port", [0x16, 0x03, 0x01, 0x00, 0xA5, 0x01, 0x00, 0x00, 0xA1, 0x03, 0x03], "400"),
            (
                "Content-Length with Transfer-Encoding",
                Array("POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".utf8),
                "400"
            ),
            ("a NUL in a header", Array("GET /healthz HTTP/1.1\r\nHost: x\u{0}y\r\n\r\n".utf8), "400"),
            ("a bare LF", Array("GET /healthz HTTP/1.1\nHost: x\n\n".utf8), "400"),
            ("a header over 64 KiB", Array("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(big)\r\n\r\n".utf8), "431"),
            ("a target over 64 KiB", Array("GET /healthz?\(big) HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "431"),
        ]
        for port in [node.port, hub.port] {
            for (what, bytes) in timedOut {
                let socket = try await RawWebSocket.open(port: port)
                defer { socket.close() }
                try await socket.write(bytes)
                try await eventually("\(what) closed by the timeout on :\(port)", timeout: .seconds(8)) { socket.isClosed }
            }
            for (what, bytes, status) in answered {
                let socket = try await RawWebSocket.open(port: port)
                defer { socket.close() }
                try await socket.write(bytes)
                try await eventually("\(what) answered and closed on :\(port)", timeout: .seconds(8)) { socket.isClosed }
                #expect(socket.received.hasPrefix("HTTP/1.1 \(status)"), "\(what): \(socket.received.prefix(40))")
            }
            // An idle keep-alive is closed after the timeout, once its response is written.
            let keepAlive = try await RawWebSocket.open(port: port)
            defer { keepAlive.close() }
            try await keepAlive.write(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            try await eventually("the keep-alive answered") { keepAlive.received.contains("\"ok\":true") }
            try await eventually("the idle keep-alive closed", timeout: .seconds(8)) { keepAlive.isClosed }
        }
        #expect(node.isRunning && hub.isRunning)
        let counted = try await node.metric("switchboard_bad_http_requests_total")
        #expect(counted == Double(answered.count), "counted \(counted)")
    }

    // MARK: 4. UTF-8 through the HTTP API and from peers

    @Test func theAPIRefusesJSONThatIsNotUTF8() async throws {
        try await withCluster(nodes: 1) { cluster in
            let reader = try await cluster.connect(0, user: "reader")
            try await reader.client.join("lobby")
            for body: [UInt8] in [
                Array(#"{"room":"lobby","data":""#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8),
                Array(#"{"room":"lobby","data":{"k":""#.utf8) + [0xC0, 0xAF] + Array(#""}}"#.utf8),  // overlong
                Array(#"{"room":"lobby","data":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8),  // a surrogate
            ] {
                let reply = try await rawRequest(cluster.ports[0], "POST", "/api/publish", body: body)
                #expect(reply.hasPrefix("HTTP/1.1 400"), "\(reply.prefix(40))")
                #expect(reply.contains(#""error":"bad_request""#))
            }
            let broadcast = try await rawRequest(
                cluster.ports[0], "POST", "/api/broadcast", body: Array(#"{"data":""#.utf8) + [0x80] + Array(#""}"#.utf8))
            #expect(broadcast.hasPrefix("HTTP/1.1 400"))
            let fine = try await rawRequest(cluster.ports[0], "POST", "/api/publish", body: Array(#"{"room":"lobby","data":"héllo"}"#.utf8))
            #expect(fine.hasPrefix("HTTP/1.1 200"))
            // The reader is still connected, and the first message it got is the valid one.
            let first = try await reader.message { $0.from == "server" }
            #expect(first.data == .string("héllo"))
        }
    }

    /// What arrives from the backplane is checked too: a record put straight into Redis (as a
    /// compromised or buggy peer would) whose data is not UTF-8 JSON reaches no client.
    @Test func aPeersMessageThatIsNotUTF8JSONIsDroppedAndCounted() async throws {
        try await withRedisNodes(1) { redis, nodes in
            let reader = try await nodes[0].connect(user: "reader")
            try await reader.client.join("lobby")
            let connection = try await RedisConnection.local(port: redis.port)
            defer { Task { await connection.close() } }
            func string(_ text: String) -> [UInt8] { [0, UInt8(text.utf8.count)] + Array(text.utf8) }
            func record(_ data: [UInt8]) -> [UInt8] {
                // version 3, kind 1 (a Redis record), origin "peer", a message: id "x", from
                // "mallory", to room "lobby", ts 0, no position, data (see ClusterCodec).
                [3, 1] + string("peer") + [0] + string("x") + string("mallory") + [1] + string("lobby")
                    + [UInt8](repeating: 0, count: 8) + [0] + data
            }
            for bad in [[0x22, 0xFF, 0x22], [0x22, 0xC0, 0xAF, 0x22], Array("{\"a\":".utf8)] as [[UInt8]] {
                _ = try await connection.send(["SPUBLISH", "sb:{r:lobby}", RESPArgument(bytes: record(bad))])
            }
            _ = try await connection.send(["SPUBLISH", "sb:{r:lobby}", RESPArgument(bytes: record(Array(#""fine""#.utf8)))])
            let first = try await reader.message { $0.from == "mallory" }
            #expect(first.data == .string("fine"))
            #expect(try await nodes[0].metric("switchboard_backplane_events_refused_total") == 3)
        }
    }

    // MARK: 5. Connection limits under concurrency

    @Test func connectionLimitsHoldUnderConcurrentUpgrades() async throws {
        try await withCluster(
            nodes: 1,
            configure: {
                $0.maxConnectionsPerUser = 5
                $0.maxConnections = 20
            }
        ) { cluster in
            let port = cluster.ports[0]
            let sameUser = try await concurrentUpgrades(15, port: port) { _ in "/ws?user=crowd" }
            defer { for socket in sameUser { socket.close() } }
            #expect(sameUser.filter { $0.received.hasPrefix("HTTP/1.1 101") }.count == 5)
            #expect(sameUser.filter { $0.received.hasPrefix("HTTP/1.1 429") }.count == 10)
            // 5 held; 30 more users at once for the 15 places left.
            let many = try await concurrentUpgrades(30, port: port) { "/ws?user=u\($0)" }
            defer { for socket in many { socket.close() } }
            #expect(many.filter { $0.received.hasPrefix("HTTP/1.1 101") }.count == 15)
            #expect(many.filter { $0.received.hasPrefix("HTTP/1.1 503") }.count == 15)
        }
    }

    /// The accept cap (`--max-connections` + 256 TCP connections of any kind): every way a
    /// connection ends gives its place back, and one over the cap is closed at once.
    @Test func theSocketCapGivesPlacesBackAndClosesWhatIsOverIt() async throws {
        try await withCluster(nodes: 1, configure: { $0.maxConnections = 2 }) { cluster in
            let port = cluster.ports[0]
            let cap = 2 + 256
            // Counted with requests that close their connection when answered (no keep-alive).
            func open() async throws -> Int {
                let reply = try await rawRequest(port, "GET", "/metrics", body: [])
                let line = reply.split(separator: "\n").first { $0.hasPrefix("switchboard_tcp_connections ") }
                return Double(line?.split(separator: " ").last ?? "").map { Int($0) } ?? -1
            }
            for round in 0..<5 {
                let client = try await RawWebSocket.welcomed(port: port, path: "/ws?user=u\(round)")
                client.close()
                let stomp = try await RawWebSocket.connect(port: port, path: "/stomp")
                try await eventually("a STOMP upgrade") { stomp.received.hasPrefix("HTTP/1.1 101") }
                stomp.close()
                let refused = try await RawWebSocket.connect(port: port, path: "/ws?since=nonsense")
                try await eventually("a refused upgrade answered") { refused.received.hasPrefix("HTTP/1.1 400") }
                refused.close()
                _ = try await rawRequest(port, "GET", "/healthz", body: [])
                try await RawWebSocket.open(port: port).close()
            }
            // Only the counting request itself is left.
            try await eventually("every place given back") { try await open() == 1 }
            var held: [RawWebSocket] = []
            defer { for socket in held { socket.close() } }
            for _ in 0..<(cap - 1) { held.append(try await RawWebSocket.open(port: port)) }
            // A socket is open on our side before the node has accepted it: wait for the count
            // (a counting request over the cap while an earlier one gives its place back is
            // closed, and tried again).
            try await eventually("the held sockets counted, with the counting request") { (try? await open()) == cap }
            // Two more: at most one fits (the counting request may not have given its place
            // back yet), so one of them is closed at once.
            let more = [try await RawWebSocket.open(port: port), try await RawWebSocket.open(port: port)]
            defer { for socket in more { socket.close() } }
            try await eventually("a connection over the cap closed") { more.contains { $0.isClosed } }
            #expect(held.allSatisfy { !$0.isClosed }, "the ones under the cap stay open")
            for socket in held + more { socket.close() }
            held = []
            try await eventually("the places given back") { try await open() == 1 }
        }
    }

    // MARK: 6. Forged hub hello

    @Test func aForgedHelloCannotTakeALiveNodesIDAtTheHub() async throws {
        let hub = try await NodeProcess.start("hub", ["hub", "--cluster-secret", "s3cret", "--log-level", "error"])
        defer { hub.killNow() }
        let node = try await NodeProcess.start(
            "n1", ["serve", "--node-id", "n1", "--hub", "ws://127.0.0.1:\(hub.port)", "--cluster-secret", "s3cret", "--log-level", "error"])
        defer { node.killNow() }
        try await node.waitUntilReady()
        let alice = try await node.connect(user: "alice")
        try await alice.client.join("lobby")
        try await eventually("alice in presence at the hub") {
            try await http("GET", node.http("/api/presence/lobby")).json?["users"] == .array(["alice"])
        }
        let forger = try await RawWebSocket.connect(port: hub.port, path: "/cluster", authorization: "Bearer s3cret")
        defer { forger.close() }
        try await eventually("the forger upgraded") { forger.received.hasPrefix("HTTP/1.1 101") }
        let hello = HubFrame.hello(NodeInfo(id: "n1", url: "ws://203.0.113.9:1/ws")).encoded()
        try await forger.sendFrame(opcode: 0x2, Array(hello.readableBytesView))
        try await eventually("the forger refused and closed") { forger.isClosed }
        #expect(
            forger.rawFrames.contains { frame in
                if frame.opcode == 0x2, case .refused = HubFrame.decode(frame.payload) { return true }
                return false
            })
        // The real node keeps its id, its URL and its users.
        let nodes = try await http("GET", hub.http("/api/nodes")).json?["nodes"]?.array ?? []
        #expect(nodes.count == 1 && nodes.first?["url"]?.string == "ws://127.0.0.1:\(node.port)/ws")
        #expect(try await http("GET", hub.http("/api/assign")).json?["url"]?.string == "ws://127.0.0.1:\(node.port)/ws")
        #expect(try await http("GET", node.http("/api/presence/lobby")).json?["users"] == .array(["alice"]))
    }

    // MARK: 7. Empty secrets

    @Test func emptySecretsAreRefusedAtStart() async throws {
        let cases: [([String], [String: String])] = [
            (["serve", "--port", "0", "--api-key", ""], [:]),
            (["serve", "--port", "0", "--jwt-secret", ""], [:]),
            (["serve", "--port", "0", "--cluster-secret", ""], [:]),
            (["serve", "--port", "0", "--peers", "127.0.0.1:1", "--cluster-secret", ""], [:]),
            (["serve", "--port", "0"], ["SWITCHBOARD_API_KEY": ""]),
            (["hub", "--port", "0", "--cluster-secret", ""], [:]),
            (["hub", "--port", "0"], ["SWITCHBOARD_CLUSTER_SECRET": ""]),
            (["cluster", "--nodes", "1", "--base-port", "0", "--api-key", ""], [:]),
        ]
        for (arguments, environment) in cases {
            let (status, errors) = try await runToExit(arguments, environment: environment)
            #expect(status != 0, "\(arguments) \(environment)")
            #expect(errors.contains("is empty"), "\(arguments): \(errors)")
        }
    }

    // MARK: 8. The rooms claim and broadcasts

    @Test func theRoomsClaimLimitsPresenceAndBroadcastNeedsItsClaim() async throws {
        try await withCluster(nodes: 1, configure: { $0.jwtSecret = AuthenticationTests.secret }) { cluster in
            let limited = try await SwitchboardClient.connect(
                to: cluster.ws(0, "token=\(try await AuthenticationTests.token(sub: "limited", rooms: ["public"]))"))
            let presence = try await limited.request(.presence(room: "secret"))
            #expect(presence.type == "error" && presence.code == "forbidden")
            let allowed = try await limited.request(.presence(room: "public"))
            #expect(allowed.type == "ok")
            let broadcast = try await limited.request(.broadcast(data: RawJSON("1")))
            #expect(broadcast.type == "error" && broadcast.code == "forbidden")

            let announcer = try await TestClient(
                SwitchboardClient.connect(
                    to: cluster.ws(0, "token=\(try await AuthenticationTests.token(sub: "announcer", broadcast: true))")))
            let reply = try await announcer.client.request(.broadcast(data: RawJSON("2")))
            #expect(reply.type == "ok")
            _ = try await announcer.message { $0.data == .number("2") }
        }
    }

    // MARK: 9. The reserved user `server`

    /// `?user=server` is refused as an invalid name: `BadInputTests.anInvalidUserIDIsRefused`.
    @Test func aTokenForTheUserServerIsRefused() async throws {
        try await withCluster(nodes: 1, configure: { $0.jwtSecret = AuthenticationTests.secret }) { cluster in
            let answer = try await AuthenticationTests.attempt(cluster.ports[0], token: try await AuthenticationTests.token(sub: "server"))
            #expect(answer.hasPrefix("HTTP/1.1 401"))
        }
    }

    // MARK: 10. RFC 6455 and the small things

    @Test func framesTheRFCForbidsAreClosedWith1002() async throws {
        try await withCluster(nodes: 1) { cluster in
            let cases: [(String, [UInt8], UInt16)] = [
                ("an unmasked text frame", RawWebSocket.frame(opcode: 0x1, Array(#"{"type":"ping"}"#.utf8), masked: false), 1002),
                ("an unmasked ping", RawWebSocket.frame(opcode: 0x9, [1], masked: false), 1002),
                ("a one-byte close", RawWebSocket.frame(opcode: 0x8, [0x03]), 1002),
                ("close code 999", RawWebSocket.frame(opcode: 0x8, [0x03, 0xE7]), 1002),
                ("close code 1005", RawWebSocket.frame(opcode: 0x8, [0x03, 0xED]), 1002),
                ("close code 1006", RawWebSocket.frame(opcode: 0x8, [0x03, 0xEE]), 1002),
                ("close code 1015", RawWebSocket.frame(opcode: 0x8, [0x03, 0xF7]), 1002),
                ("close code 5000", RawWebSocket.frame(opcode: 0x8, [0x13, 0x88]), 1002),
                ("a close reason that is not UTF-8", RawWebSocket.frame(opcode: 0x8, [0x03, 0xE8, 0xFF]), 1002),
                ("close code 1000 with a reason", RawWebSocket.frame(opcode: 0x8, [0x03, 0xE8] + Array("bye".utf8)), 1000),
                ("close code 3000", RawWebSocket.frame(opcode: 0x8, [0x0B, 0xB8]), 3000),
                ("close code 4999", RawWebSocket.frame(opcode: 0x8, [0x13, 0x87]), 4999),
                // Our frame reader's own refusals: the socket is shut after the close frame.
                ("a ping of 126 bytes", RawWebSocket.frame(opcode: 0x9, [UInt8](repeating: 1, count: 126)), 1002),
                ("a fragmented ping", RawWebSocket.frame(opcode: 0x9, [1], fin: false), 1002),
                ("a 64-bit length with its top bit set", [0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4], 1002),
            ]
            for (what, bytes, code) in cases {
                let raw = try await RawWebSocket.welcomed(port: cluster.ports[0], path: "/ws?user=rfc")
                defer { raw.close() }
                try await raw.write(bytes)
                try await eventually("\(what) answered with \(code)") { raw.receivedClose(code: code) }
            }
        }
    }

    /// Our handshake (`WebSocketUpgrader`): the RFC 6455 example key gets the RFC's accept value;
    /// a version other than 13, or two keys, is not upgraded.
    @Test func theHandshakeFollowsRFC6455() async throws {
        try await withCluster(nodes: 1) { cluster in
            func upgrade(_ headers: String) async throws -> RawWebSocket {
                let raw = try await RawWebSocket.open(port: cluster.ports[0])
                try await raw.write(
                    Array("GET /ws?user=shake HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\(headers)\r\n".utf8))
                try await eventually("an answer") { raw.received.contains("\r\n\r\n") || raw.isClosed }
                return raw
            }
            let good = try await upgrade("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
            #expect(good.received.hasPrefix("HTTP/1.1 101"))
            #expect(good.received.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
            good.close()
            for headers in [
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: eA==\r\nSec-WebSocket-Version: 13\r\n",
                "Sec-WebSocket-Version: 13\r\n",
            ] {
                let refused = try await upgrade(headers)
                #expect(!refused.received.hasPrefix("HTTP/1.1 101"), "\(headers): \(refused.received)")
                refused.close()
            }
        }
    }

    @Test func emptyContinuationFramesAreRateLimitedAndRateLimitErrorsCarryTheID() async throws {
        try await withCluster(
            nodes: 1,
            configure: {
                $0.rateBurst = 10
                $0.ratePerSecond = 1
                $0.maxStrikes = 1000
            }
        ) { cluster in
            let raw = try await RawWebSocket.welcomed(port: cluster.ports[0], path: "/ws?user=slow")
            defer { raw.close() }
            // One message in 30 frames, 28 of them empty: over the burst of 10.
            var bytes = RawWebSocket.frame(opcode: 0x1, Array(#"{"type":"ping","#.utf8), fin: false)
            for _ in 0..<28 { bytes += RawWebSocket.frame(opcode: 0x0, [], fin: false) }
            bytes += RawWebSocket.frame(opcode: 0x0, Array(#""id":"frag"}"#.utf8))
            try await raw.write(bytes)
            try await eventually("the fragmented ping refused") { raw.textFrames.contains { $0.contains("rate_limited") } }
            let refusal = try #require(raw.textFrames.first { $0.contains("rate_limited") })
            #expect(refusal.contains(#""id":"frag""#))
            #expect(!raw.textFrames.contains { $0.contains("pong") })
        }
    }

    @Test func aSecretFollowedByNULBytesIsNotTheSecret() {
        let key = Array("api-key".utf8)
        #expect(constantTimeEqual(key, key))
        #expect(!constantTimeEqual(key, key + [UInt8](repeating: 0, count: 256)))
        #expect(!constantTimeEqual(key + [UInt8](repeating: 0, count: 256), key))
        #expect(!constantTimeEqual([], key))
        #expect(!constantTimeEqual(key, Array("api-kez".utf8)))
    }
}

// MARK: Helpers

/// The value of a metric on node `index` of an in-process cluster.
func metric(_ cluster: TestCluster, _ name: String, node index: Int = 0) async throws -> Double {
    let text = try await http("GET", cluster.http(index, "/metrics")).body
    for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.split(separator: " ").last ?? "") ?? 0
    }
    return 0
}

/// One HTTP/1.1 request with raw bytes as its body, on its own connection; what came back.
func rawRequest(_ port: Int, _ method: String, _ path: String, body: [UInt8]) async throws -> String {
    let socket = try await RawWebSocket.open(port: port)
    defer { socket.close() }
    let head =
        "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
    try await socket.write(Array(head.utf8) + body)
    try await eventually("an answer to \(method) \(path)") { socket.isClosed }
    return socket.received
}

/// `count` upgrades sent at once, each answered; the caller closes them.
func concurrentUpgrades(_ count: Int, port: Int, path: @escaping @Sendable (Int) -> String) async throws -> [RawWebSocket] {
    let sockets = try await withThrowingTaskGroup(of: RawWebSocket.self) { group in
        for index in 0..<count {
            group.addTask { try await RawWebSocket.connect(port: port, path: path(index)) }
        }
        return try await group.reduce(into: []) { $0.append($1) }
    }
    for socket in sockets { try await socket.waitForAnswer() }
    return sockets
}
