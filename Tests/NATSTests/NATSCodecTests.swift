import Foundation
import NATS
import NIOCore
import Testing

/// The NATS codec on its own: every operation parses, split anywhere; the kept corpus of
/// malformed input gets its errors; random and mutated bytes never crash the parser; client
/// operations encode as the protocol says; names become single subject tokens.
struct NATSCodecTests {
    static let valid: [(String, NATSServerOp)] = [
        (
            "INFO {\"server_id\":\"x\",\"max_payload\":1048576,\"connect_urls\":[\"127.0.0.1:4223\"]}\r\n",
            .info(Array("{\"server_id\":\"x\",\"max_payload\":1048576,\"connect_urls\":[\"127.0.0.1:4223\"]}".utf8))
        ),
        ("PING\r\n", .ping), ("PONG\r\n", .pong), ("+OK\r\n", .ok), ("ping\r\n", .ping),
        ("-ERR 'Authorization Violation'\r\n", .err("Authorization Violation")),
        (
            "MSG sb.r.lobby 7 5\r\nhello\r\n",
            .msg(subject: "sb.r.lobby", sid: "7", replyTo: nil, headers: nil, payload: Array("hello".utf8))
        ),
        ("MSG a 1 _INBOX.x 0\r\n\r\n", .msg(subject: "a", sid: "1", replyTo: "_INBOX.x", headers: nil, payload: [])),
        ("MSG a\t1 4\r\n\r\n\r\n\r\n", .msg(subject: "a", sid: "1", replyTo: nil, headers: nil, payload: Array("\r\n\r\n".utf8))),
        (
            "HMSG a 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
            .msg(subject: "a", sid: "1", replyTo: nil, headers: Array("NATS/1.0\r\n\r\n".utf8), payload: Array("hi".utf8))
        ),
    ]

    static func parseAll(_ bytes: [UInt8]) throws(NATSProtocolError) -> [NATSServerOp] {
        var buffer = ByteBuffer(bytes: bytes)
        var ops: [NATSServerOp] = []
        let parser = NATSParser()
        while let op = try parser.next(&buffer) { ops.append(op) }
        return ops
    }

    @Test func everyOperationParsesSplitAnywhere() throws {
        let all = Self.valid.map(\.0).joined()
        let bytes = Array(all.utf8)
        #expect(try Self.parseAll(bytes) == Self.valid.map(\.1))
        // Fed in two pieces at every split point, the same operations come out.
        for cut in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<cut])
            let parser = NATSParser()
            var ops: [NATSServerOp] = []
            while let op = try parser.next(&buffer) { ops.append(op) }
            buffer.writeBytes(bytes[cut...])
            while let op = try parser.next(&buffer) { ops.append(op) }
            #expect(ops == Self.valid.map(\.1), "split at \(cut)")
        }
    }

    static let corpus: [(input: [UInt8], error: String)] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus/malformed.txt")
        let text = try! String(contentsOf: url, encoding: .utf8)
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let parts = line.components(separatedBy: " => ")
            return (unescape(parts[0]), parts[1])
        }
    }()

    static func unescape(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let byte = bytes.popFirst() {
            guard byte == UInt8(ascii: "\\"), let next = bytes.popFirst() else {
                out.append(byte)
                continue
            }
            switch next {
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "x"):
                let hex = String(decoding: bytes.prefix(2), as: UTF8.self)
                bytes = bytes.dropFirst(2)
                out.append(UInt8(hex, radix: 16)!)
            default: out.append(next)
            }
        }
        return out
    }

    @Test func theKeptCorpusIsRefusedWithItsErrors() {
        #expect(Self.corpus.count >= 12)
        for (input, expected) in Self.corpus {
            do {
                let ops = try Self.parseAll(input)
                Issue.record("accepted \(String(decoding: input, as: UTF8.self)) as \(ops)")
            } catch {
                #expect(error.message.contains(expected), "\(String(decoding: input, as: UTF8.self)): \(error.message)")
            }
        }
    }

    @Test func limitsAreEnforcedBeforeBuffering() {
        var parser = NATSParser()
        parser.maxControlLine = 64
        var long = ByteBuffer(bytes: Array(repeating: UInt8(ascii: "A"), count: 100))
        #expect(throws: NATSProtocolError.self) { _ = try parser.next(&long) }
        parser.maxPayload = 10
        var big = ByteBuffer(string: "MSG a 1 11\r\n")
        #expect(throws: NATSProtocolError.self) { _ = try parser.next(&big) }
    }

    @Test func randomAndMutatedInputNeverCrashes() {
        var generator = SystemRandomNumberGenerator()
        let valid = Self.valid.map { Array($0.0.utf8) }
        let seconds = Double(ProcessInfo.processInfo.environment["FUZZ_SECONDS"] ?? "") ?? 1
        let deadline = ContinuousClock.now + .seconds(seconds)
        var rounds = 0
        while ContinuousClock.now < deadline || rounds < 1000 {
            rounds += 1
            var bytes: [UInt8]
            if rounds % 2 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            } else {
                bytes = valid[rounds % valid.count]
                for _ in 0..<Int.random(in: 1...3, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            }
            _ = try? Self.parseAll(bytes)
        }
    }

    @Test func clientOperationsEncodeAsTheProtocolSays() {
        func encoded(_ op: NATSClientOp) -> String {
            var buffer = ByteBuffer()
            op.write(to: &buffer)
            return String(buffer: buffer)
        }
        #expect(encoded(.pub(subject: "sb.r.x", payload: Array("hi".utf8))) == "PUB sb.r.x 2\r\nhi\r\n")
        #expect(
            encoded(.hpub(subject: "s", headers: Array("NATS/1.0\r\n\r\n".utf8), payload: [1]))
                == "HPUB s 12 13\r\nNATS/1.0\r\n\r\n\u{1}\r\n")
        #expect(encoded(.sub(subject: "sb.u.a", sid: "3")) == "SUB sb.u.a 3\r\n")
        #expect(encoded(.unsub(sid: "3")) == "UNSUB 3\r\n")
        #expect(encoded(.ping) == "PING\r\n" && encoded(.pong) == "PONG\r\n")
        #expect(encoded(.connect(Array("{}".utf8))) == "CONNECT {}\r\n")
    }

    @Test func namesBecomeSingleSubjectTokens() {
        #expect(natsToken("lobby") == "lobby")
        #expect(natsToken("a.b..c") == "a%2Eb%2E%2Ec")
        #expect(NATSClient.Server(url: "nats://10.0.0.1:4223") == NATSClient.Server(host: "10.0.0.1", port: 4223))
        #expect(NATSClient.Server(url: "127.0.0.1") == NATSClient.Server(host: "127.0.0.1", port: 4222))
        #expect(NATSClient.Server(url: "nats://h:0") == nil && NATSClient.Server(url: "nats://:4222") == nil)
    }
}
