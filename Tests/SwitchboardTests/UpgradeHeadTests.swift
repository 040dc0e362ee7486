import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import SwitchboardHTTP
import Testing

/// The node's own reader of plain upgrade heads (`UpgradeHead`): what it reads, what it leaves to
/// NIO's parser, and a differential fuzz target: over the kept corpus
/// (`Corpus/http-heads.txt`, which the over-the-wire fuzz test also sends to nodes) and
/// mutations of it, whatever it reads as a head NIO's parser reads the same way.
@Suite("Upgrade head reader")
struct UpgradeHeadTests {
    static let plain =
        "GET /ws?user=a&batch=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://a.example\r\n"
        + "Authorization: Bearer t0k\r\nSec-WebSocket-Protocol: switchboard.v1\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"

    @Test func readsAPlainUpgrade() throws {
        let bytes = Array(Self.plain.utf8) + [0x81, 0x80, 1, 2, 3, 4]
        guard case .head(let head, let length) = UpgradeHead.parse(bytes) else {
            Issue.record("not read: \(UpgradeHead.parse(bytes))")
            return
        }
        #expect(length == Self.plain.utf8.count)  // the frame after it is not the head's
        #expect(head.target == "/ws?user=a&batch=1")
        #expect(head.upgrade == "websocket" && head.connection == "Upgrade" && head.asksForWebSocket)
        #expect(head.key == "dGhlIHNhbXBsZSBub25jZQ==" && head.version == "13")
        #expect(head.origin == "https://a.example" && head.authorization == "Bearer t0k")
        #expect(head.protocols == ["switchboard.v1", "v12.stomp"])
    }

    @Test func isIncompleteUntilItsBlankLine() {
        let bytes = Array(Self.plain.utf8)
        for end in 0..<bytes.count {
            #expect(UpgradeHead.parse(Array(bytes[..<end])) == .incomplete, "prefix of \(end) bytes")
        }
        // No blank line within the reader's limit: NIO's parser takes it (and answers 431 past its own).
        #expect(UpgradeHead.parse(Array("GET /ws HTTP/1.1\r\nX: \(String(repeating: "a", count: 5000))".utf8)) == .notSimple)
        let long = "GET /ws HTTP/1.1\r\nX: \(String(repeating: "a", count: 5000))\r\n\r\n"
        #expect(UpgradeHead.parse(Array(long.utf8)) == .notSimple)
    }

    @Test func asksForWebSocketByTokenInAnyCase() {
        func asks(_ upgrade: String, _ connection: String) -> Bool {
            let text = "GET /ws HTTP/1.1\r\nUpgrade: \(upgrade)\r\nConnection: \(connection)\r\n\r\n"
            guard case .head(let head, _) = UpgradeHead.parse(Array(text.utf8)) else { return false }
            return head.asksForWebSocket
        }
        #expect(asks("WebSocket", "keep-alive, Upgrade"))
        #expect(asks("h2c, websocket", "upgrade"))
        #expect(!asks("websockets", "upgrade"))
        #expect(!asks("websocket", "keep-alive"))
    }

    /// Each is outside the strict subset: NIO's parser decides it (answers 400, or reads it).
    @Test(arguments: [
        "POST /ws HTTP/1.1\r\n\r\n",
        "GET /ws HTTP/1.0\r\n\r\n",
        "GET /ws HTTP/1.1\nHost: x\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\n",  // refused by NIO at once: no waiting for a blank line
        "GET /ws HTTP/1.1\rHost: x",
        "\u{16}\u{3}\u{1}",  // TLS to a plain port: NIO answers 400 at once
        "POST /ap",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket \r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\n  folded\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET /ws HTTP/1.1\r\n: x\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\u{1}y\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: café\r\n\r\n",
        "GET /ws HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "GET /ws HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nupgrade: websocket\r\n\r\n",
        "GET /ws HTTP/1.1\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n\r\n",
        "GET /ws HTTP/1.1\r\nOrigin: a\r\nOrigin: b\r\n\r\n",
        "GET /ws?a=<b> HTTP/1.1\r\n\r\n",
        "GET http://x/ws HTTP/1.1\r\n\r\n",
        "GET  /ws HTTP/1.1\r\n\r\n",
        "GET /ws  HTTP/1.1\r\n\r\n",
        "get /ws HTTP/1.1\r\n\r\n",
    ])
    func leavesTheRestToNIO(_ text: String) {
        #expect(UpgradeHead.parse(Array(text.utf8)) == .notSimple)
    }

    /// Never traps; whatever it reads as a head, NIO's parser reads as the same request (method,
    /// target, version and every header it keeps), and every prefix of it is incomplete.
    @Test func fuzzAgainstNIOsParser() throws {
        let corpus = try Corpus.lines("http-heads.txt").map(Corpus.unescape) + [Array(Self.plain.utf8)]
        var generator = SystemRandomNumberGenerator()
        let noise = Array(" \t\r\n\0:;,=?&%/<>HTTP1.GETUpgradewebsocket".utf8) + [0xFF, 0x7F, 0xC3]
        var read = 0
        Corpus.forBudget { round in
            let bytes =
                round < corpus.count
                ? corpus[round]
                : Corpus.mutate(corpus.randomElement(using: &generator)!, edits: 1...3, noise: noise, longestCut: 4, using: &generator)
            guard case .head(let head, let length) = UpgradeHead.parse(bytes) else { return }
            read += 1
            #expect(
                Self.nioReads(Array(bytes[..<length])) == Self.view(head),
                "input: \(String(decoding: bytes, as: UTF8.self).debugDescription)")
            let cut = Int.random(in: 0..<length, using: &generator)
            #expect(UpgradeHead.parse(Array(bytes[..<cut])) == .incomplete)
        }
        #expect(read > 10)  // the corpus has plain upgrades; a fuzz that reads none tests nothing
    }

    /// What both parsers are compared on.
    struct View: Equatable {
        var method = "GET", target: String, version = "HTTP/1.1"
        var upgrade: [String], connection: [String], key: [String], version13: [String], origin: [String], authorization: [String]
        var protocols: [String]
    }

    static func view(_ head: UpgradeHead) -> View {
        func list(_ value: String?) -> [String] { value.map { [$0] } ?? [] }
        return View(
            target: head.target, upgrade: list(head.upgrade), connection: list(head.connection), key: list(head.key),
            version13: list(head.version), origin: list(head.origin), authorization: list(head.authorization),
            protocols: head.protocols)
    }

    /// The request NIO's decoder reads from `bytes`, or nil if it refuses them.
    static func nioReads(_ bytes: [UInt8]) -> View? {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        guard (try? channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))) != nil,
            (try? channel.writeInbound(ByteBuffer(bytes: bytes))) != nil,
            case .head(let head) = try? channel.readInbound(as: HTTPServerRequestPart.self)
        else { return nil }
        let headers = head.headers
        return View(
            method: "\(head.method)", target: head.uri, version: "\(head.version)", upgrade: headers["upgrade"],
            connection: headers["connection"], key: headers["sec-websocket-key"], version13: headers["sec-websocket-version"],
            origin: headers["origin"], authorization: headers["authorization"], protocols: headers["sec-websocket-protocol"])
    }
}
