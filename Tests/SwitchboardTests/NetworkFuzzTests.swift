import Foundation
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardTesting
import Testing

@testable import SwitchboardProtocol

/// Fuzzing of what a node parses from the network, each target for a bounded time (seconds from
/// SWITCHBOARD_FUZZ_SECONDS, default 3) after its kept corpus in Tests/SwitchboardTests/Corpus.
/// The JSON codec, RESP and the link records have their own fuzz tests (CodecTests, RESPTests,
/// EnvelopeFuzzTests); here are request targets, JSON's UTF-8, HTTP heads and WebSocket frames,
/// the last two against real sockets of a real node and hub.
@Suite("Network fuzzing")
struct NetworkFuzzTests {
    @Test func requestTargetsNeverTrapAndDecodeWhatWasEncoded() throws {
        for target in try Corpus.lines("request-targets.txt") {
            let parsed = RequestTarget(target)
            #expect(target.hasPrefix(parsed.path))
        }
        #expect(RequestTarget("/ws?=").query.isEmpty)
        #expect(RequestTarget("/ws?user=a&user=b").query["user"] == "a")
        #expect(RequestTarget("/ws?user=a%2Fb+c&batch=1").query == ["user": "a/b c", "batch": "1"])
        var generator = SystemRandomNumberGenerator()
        let hostile = Array("?&=%+/abcAZ09%2%ZZ%C3%28%FF".utf8) + [0x00, 0xFF, 0xC3]
        Corpus.forBudget { round in
            // Random and hostile bytes: any result, no trap.
            let length = Int.random(in: 0...40, using: &generator)
            let bytes = (0..<length).map { _ in hostile.randomElement(using: &generator)! }
            _ = RequestTarget(String(decoding: bytes, as: UTF8.self))
            // Generated queries: what was percent-encoded comes back decoded.
            var expected: [String: String] = [:]
            var pairs: [String] = []
            for index in 0..<Int.random(in: 0...4, using: &generator) {
                let value =
                    String(
                        (0..<Int.random(in: 0...8, using: &generator)).map { _ in
                            Character(Unicode.Scalar(UInt8.random(in: 0x20...0x7E, using: &generator)))
                        }) + (round % 2 == 0 ? "é/€" : "")
                let key = "k\(index)"
                expected[key] = value
                pairs.append(key + "=" + Self.formEncode(value))
            }
            let parsed = RequestTarget("/ws?" + pairs.joined(separator: "&"))
            #expect(parsed.query == expected, "\(pairs)")
            #expect(parsed.path == "/ws")
        }
    }

    /// The JSON reader accepts a string's bytes, and `UTF8Check` a text message's, exactly when
    /// they are UTF-8 as the standard library decides it: a differential test over random bytes.
    @Test func utf8ChecksAgreeWithTheStandardLibrary() {
        var generator = SystemRandomNumberGenerator()
        let interesting: [UInt8] = [
            0x61, 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xA0, 0xED, 0x9F, 0xEF, 0xF0, 0x90, 0xF4, 0x8F, 0xF5, 0xFF,
        ]
        Corpus.forBudget { _ in
            let inner = (0..<Int.random(in: 0...6, using: &generator)).map { _ in
                Bool.random(using: &generator)
                    ? interesting.randomElement(using: &generator)! : UInt8.random(in: 0x80...0xFF, using: &generator)
            }
            let json = Array(#"{"type":"publish","room":"r","data":""#.utf8) + inner + Array(#""}"#.utf8)
            let isUTF8 = String(validating: inner, as: UTF8.self) != nil
            let accepted = if case .success = ClientRequest.decode(json) { true } else { false }
            #expect(accepted == isUTF8, "\(inner.map { String($0, radix: 16) })")
            #expect(RawJSON(bytes: Array(#"""#.utf8) + inner + Array(#"""#.utf8)).isWellFormed == isUTF8)
            #expect(UTF8Check.isValid(Array("ok".utf8) + inner) == isUTF8)
        }
    }

    /// Kept and mutated request heads against a node and a hub: each is answered or closed, and
    /// both still serve afterwards.
    @Test func requestHeadsOverTheWire() async throws {
        let node = try await NodeProcess.start(
            "fuzzed", ["serve", "--node-id", "fuzzed", "--handshake-timeout", "2", "--log-level", "critical"])
        let hub = try await NodeProcess.start(
            "hub", ["hub", "--cluster-secret", "s3cret", "--handshake-timeout", "2", "--log-level", "critical"])
        defer { node.killNow(); hub.killNow() }
        let corpus = try Corpus.lines("http-heads.txt").map(Corpus.unescape)
        var generator = SystemRandomNumberGenerator()
        let noise = Array(" \r\n\0:;,=?&%/HTTP1.GETPOSTws".utf8) + [0xFF, 0x7F]
        var inputs = corpus
        Corpus.forBudget(maxRounds: 300) { _ in
            let bytes = corpus.randomElement(using: &generator)!
            inputs.append(Corpus.mutate(bytes, edits: 1...4, noise: noise, longestCut: 8, using: &generator))
        }
        for port in [node.port, hub.port] {
            for chunk in stride(from: 0, to: inputs.count, by: 50) {
                let sockets = try await withThrowingTaskGroup(of: RawWebSocket.self) { group in
                    for bytes in inputs[chunk..<min(inputs.count, chunk + 50)] {
                        group.addTask {
                            let socket = try await RawWebSocket.open(port: port)
                            try? await socket.write(bytes)
                            return socket
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                // Answered, upgraded or closed: within the 2 s deadline at the latest.
                try await eventually("every fuzzed request on :\(port) answered or closed", timeout: .seconds(10)) {
                    sockets.allSatisfy { $0.isClosed || $0.received.hasPrefix("HTTP/1.1 ") }
                }
                for socket in sockets { socket.close() }
            }
        }
        #expect(node.isRunning && hub.isRunning)
        #expect(try await http("GET", node.http("/healthz")).status == 200)
        #expect(try await http("GET", hub.http("/healthz")).status == 200)
    }

    /// Kept and generated frame sequences after an upgrade: the node answers or closes each
    /// connection, never stops, and a client alongside keeps its round trips.
    @Test func webSocketFramesOverTheWire() async throws {
        try await withCluster(nodes: 1, configure: { $0.maxFrameBytes = 4096 }) { cluster in
            let port = cluster.ports[0]
            let witness = try await cluster.connect(0, user: "witness")
            var sequences = try Corpus.lines("websocket-frames.txt").map(Corpus.hex)
            var generator = SystemRandomNumberGenerator()
            let valid: [[UInt8]] = [
                RawWebSocket.frame(opcode: 0x1, Array(#"{"type":"ping","id":1}"#.utf8)),
                RawWebSocket.frame(opcode: 0x1, Array(#"{"type":"join","room":"r"}"#.utf8), fin: false),
                RawWebSocket.frame(opcode: 0x0, []),
                RawWebSocket.frame(opcode: 0x9, [1, 2]),
                RawWebSocket.frame(opcode: 0xA, []),
                RawWebSocket.frame(opcode: 0x2, [0, 1, 2]),
                RawWebSocket.frame(opcode: 0x8, [0x03, 0xE8]),
            ]
            Corpus.forBudget(maxRounds: 200) { _ in
                var bytes = Array(
                    (0..<Int.random(in: 1...5, using: &generator)).map { _ in valid.randomElement(using: &generator)! }.joined())
                for _ in 0..<Int.random(in: 0...3, using: &generator) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
                if Bool.random(using: &generator) { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &generator))) }
                sequences.append(bytes)
            }
            for chunk in stride(from: 0, to: sequences.count, by: 25) {
                let sockets = try await withThrowingTaskGroup(of: RawWebSocket.self) { group in
                    for bytes in sequences[chunk..<min(sequences.count, chunk + 25)] {
                        group.addTask {
                            let socket = try await RawWebSocket.connect(port: port, path: "/ws?user=fuzz")
                            try await eventually("welcome") { socket.textFrames.contains { $0.contains("welcome") } }
                            try? await socket.write(bytes)
                            return socket
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                try await witness.client.ping()
                for socket in sockets { socket.close() }
            }
            try await eventually("every fuzzed socket gone") { try await metric(cluster, "switchboard_connections") == 1 }
            try await witness.client.ping()
        }
    }

    static func formEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                out.append(Character(Unicode.Scalar(byte)))
            case UInt8(ascii: " "):
                out.append("+")
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

/// The kept corpus and the time budget of the fuzz tests.
enum Corpus {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus")

    /// Seconds each fuzz target runs after its corpus (SWITCHBOARD_FUZZ_SECONDS, default 3).
    static var seconds: Double {
        ProcessInfo.processInfo.environment["SWITCHBOARD_FUZZ_SECONDS"].flatMap(Double.init) ?? 3
    }

    /// Runs `body` until the time budget is spent (or `maxRounds`, for the targets that open
    /// sockets and must stay within the process's files).
    static func forBudget(maxRounds: Int = .max, _ body: (Int) -> Void) {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        var round = 0
        while round < maxRounds, ContinuousClock.now < deadline {
            body(round)
            round += 1
        }
    }

    /// `bytes` with a few random edits: a byte replaced or inserted from `noise`, or a run of up
    /// to `longestCut` bytes cut out.
    static func mutate(
        _ bytes: [UInt8], edits: ClosedRange<Int>, noise: [UInt8], longestCut: Int, using generator: inout some RandomNumberGenerator
    ) -> [UInt8] {
        var bytes = bytes
        for _ in 0..<Int.random(in: edits, using: &generator) where !bytes.isEmpty {
            let at = Int.random(in: 0..<bytes.count, using: &generator)
            switch Int.random(in: 0...2, using: &generator) {
            case 0: bytes[at] = noise.randomElement(using: &generator)!
            case 1: bytes.insert(noise.randomElement(using: &generator)!, at: at)
            default: bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...longestCut, using: &generator)))
            }
        }
        return bytes
    }

    /// The file's entries: its lines, without blank ones and `#` comments.
    static func lines(_ name: String) throws -> [String] {
        try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: true)
            .filter { !$0.hasPrefix("#") }
            .map(String.init)
    }

    /// `\r`, `\n`, `\0`, `\\` and `\xHH` in a corpus line, as bytes.
    static func unescape(_ line: String) -> [UInt8] {
        var out: [UInt8] = []
        var bytes = Array(line.utf8)[...]
        while let byte = bytes.popFirst() {
            guard byte == UInt8(ascii: "\\"), let kind = bytes.popFirst() else {
                out.append(byte)
                continue
            }
            switch kind {
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "0"): out.append(0x00)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "x"):
                let digits = String(decoding: bytes.prefix(2), as: UTF8.self)
                bytes = bytes.dropFirst(2)
                out.append(UInt8(digits, radix: 16) ?? 0)
            default: out += [byte, kind]
            }
        }
        return out
    }

    static func hex(_ line: String) -> [UInt8] {
        let digits = Array(line.utf8)
        return stride(from: 0, to: digits.count - 1, by: 2).compactMap {
            UInt8(String(decoding: digits[$0...$0 + 1], as: UTF8.self), radix: 16)
        }
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
