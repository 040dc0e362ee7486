import Foundation
import STOMP
import Testing

/// The STOMP codec on its own: the rules of STOMP 1.2, the kept corpus of malformed frames with
/// the error each must get, and fuzzing (random, truncated and hostile bytes never crash it;
/// every split of valid input parses the same; what the encoder writes parses back).
struct StompCodecTests {
    static let limits = StompLimits(maxHeadBytes: 512, maxHeaders: 8, maxBodyBytes: 1024)

    /// Everything `bytes` holds, fed in one piece.
    static func parse(_ bytes: [UInt8], escaping: Bool = true) throws(StompError) -> [StompParser.Event] {
        var parser = StompParser(limits: limits)
        parser.escaping = escaping
        parser.append(bytes)
        var events: [StompParser.Event] = []
        while let event = try parser.next() { events.append(event) }
        return events
    }

    static func frames(_ text: String) throws -> [StompFrame] {
        try parse(Array(text.utf8)).compactMap { if case .frame(let frame) = $0 { frame } else { nil } }
    }

    @Test func aFrameWithHeadersAndABody() throws {
        let frame = try #require(try Self.frames("SEND\ndestination:/topic/a\nreceipt:7\n\n{\"x\":1}\0").first)
        #expect(frame.command == .send)
        #expect(frame["destination"] == "/topic/a")
        #expect(frame["receipt"] == "7")
        #expect(frame.body == Array("{\"x\":1}".utf8))
    }

    @Test func crlfLinesAndHeartbeatsBetweenFrames() throws {
        let events = try Self.parse(Array("\n\r\nSEND\r\ndestination:/topic/a\r\n\r\nhi\0\n\nDISCONNECT\n\n\0".utf8))
        #expect(events.count == 6)
        #expect(events.prefix(2) == [.heartbeat, .heartbeat])
        guard case .frame(let send) = events[2], case .frame(let disconnect) = events[5] else {
            Issue.record("frames expected: \(events)")
            return
        }
        #expect(send["destination"] == "/topic/a" && send.body == Array("hi".utf8))
        #expect(disconnect.command == .disconnect)
    }

    @Test func theFirstOfRepeatedHeadersCounts() throws {
        let frame = try #require(try Self.frames("SEND\ndestination:/topic/first\ndestination:/topic/second\n\n\0").first)
        #expect(frame["destination"] == "/topic/first")
        #expect(frame.headers.count == 2)
    }

    @Test func contentLengthCarriesNULs() throws {
        let bytes: [UInt8] = Array("SEND\ncontent-length:5\n\n".utf8) + [1, 0, 2, 0, 3, 0] + Array("SEND\n\nz\0".utf8)
        let frames = try Self.parse(bytes).compactMap { if case .frame(let frame) = $0 { frame } else { nil } }
        #expect(frames.map(\.body) == [[1, 0, 2, 0, 3], Array("z".utf8)])
    }

    @Test func escapesAreDecodedExceptInConnect() throws {
        let send = try #require(try Self.frames("SEND\na\\cb:c\\\\d\\ne\\rf\n\n\0").first)
        #expect(send["a:b"] == "c\\d\ne\rf")
        let connect = try #require(try Self.frames("CONNECT\nlogin:a\\cb\n\n\0").first)
        #expect(connect["login"] == "a\\cb", "CONNECT headers are taken as they are")
        // STOMP 1.0 has no escapes.
        let old = try Self.parse(Array("SEND\ndestination:/topic/a\\tb\n\n\0".utf8), escaping: false)
        guard case .frame(let frame) = old.first else {
            Issue.record("a frame expected")
            return
        }
        #expect(frame["destination"] == "/topic/a\\tb")
    }

    @Test func aColonInAValueIsKept() throws {
        let frame = try #require(try Self.frames("SUBSCRIBE\nsb-since:ab12:7\n\n\0").first)
        #expect(frame["sb-since"] == "ab12:7")
    }

    @Test func theKeptCorpusGetsItsErrors() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus/malformed-frames.txt")
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines.count >= 10)
        for line in lines {
            let parts = line.components(separatedBy: " => ")
            try #require(parts.count == 2, "\(line)")
            let bytes = Self.unescape(parts[0])
            #expect(throws: StompError(expectedCode(parts[1]), expectedMessage(parts[1])), "\(parts[0])") {
                _ = try Self.parse(bytes)
            }
        }
    }

    @Test func framesOverTheLimitsAreRefusedBeforeTheyAreRead() throws {
        let longHead = "SEND\nx:" + String(repeating: "a", count: 600) + "\n\n\0"
        #expect(throws: StompError("too_large", "frame head longer than 512 bytes")) { _ = try Self.frames(longHead) }
        // Refused while the head is still coming: no end of line needed.
        #expect(throws: StompError("too_large", "frame head longer than 512 bytes")) {
            _ = try Self.parse(Array(("SEND\nx:" + String(repeating: "a", count: 600)).utf8))
        }
        let manyHeaders = "SEND\n" + (0..<9).map { "h\($0):v\n" }.joined() + "\n\0"
        #expect(throws: StompError("too_large", "more than 8 headers")) { _ = try Self.frames(manyHeaders) }
        let longBody = "SEND\n\n" + String(repeating: "b", count: 1025)
        #expect(throws: StompError("too_large", "body over 1024 bytes")) { _ = try Self.parse(Array(longBody.utf8)) }
    }

    @Test func aFailedParserStaysFailed() throws {
        var parser = StompParser(limits: Self.limits)
        parser.append(Array("NOPE\n\n\0SEND\n\n\0".utf8))
        #expect(throws: StompError.self) { _ = try parser.next() }
        #expect(throws: StompError.self) { _ = try parser.next() }
    }

    @Test func theEncoderWritesWhatTheParserReads() throws {
        let frame = StompFrame(
            .message, [.init("destination", "/topic/a:b"), .init("odd\\name", "line\nbreak\r"), .init("content-length", "3")],
            body: [0, 1, 0])
        let bytes = StompEncoder.encode(frame)
        #expect(try Self.parse(bytes) == [.frame(frame)])
        // CONNECTED is not escaped: what cannot be written becomes a space.
        let connected = StompEncoder.encode(StompFrame(.connected, [.init("server", "a\nb:c")]))
        #expect(String(decoding: connected, as: UTF8.self) == "CONNECTED\nserver:a b:c\n\n\0")
    }

    /// Every way of cutting valid input in two parses the same as the whole.
    @Test func everySplitParsesTheSame() throws {
        let input = Array(
            "\nCONNECT\naccept-version:1.2\nhost:x\n\n\0SEND\ndestination:/topic/r\ncontent-length:4\n\nab\0c\0\r\nSUBSCRIBE\nid:s\\c1\ndestination:/topic/r\n\n\0"
                .utf8)
        let whole = try Self.parse(input)
        #expect(whole.count == 5)
        for cut in 0...input.count {
            var parser = StompParser(limits: Self.limits)
            var events: [StompParser.Event] = []
            parser.append(input[..<cut])
            while let event = try parser.next() { events.append(event) }
            parser.append(input[cut...])
            while let event = try parser.next() { events.append(event) }
            #expect(events == whole, "cut at \(cut)")
            #expect(parser.pendingBytes == 0)
        }
    }

    /// Random bytes, mutated valid frames and byte-at-a-time feeding never crash the parser;
    /// it answers a frame, waits, or fails with an error.
    @Test func fuzzing() throws {
        let seeds = [
            "SEND\ndestination:/topic/a\n\nhi\0", "CONNECT\naccept-version:1.2\nheart-beat:100,100\n\n\0",
            "SEND\ncontent-length:3\n\na\0b\0", "SUBSCRIBE\nid:0\ndestination:/user/queue/x\nack:auto\n\n\0",
        ].map { Array($0.utf8) }
        var generator = SystemRandomNumberGenerator()
        let deadline = ContinuousClock.now + .seconds(Double(ProcessInfo.processInfo.environment["SWITCHBOARD_FUZZ_SECONDS"] ?? "") ?? 1)
        var rounds = 0
        while ContinuousClock.now < deadline {
            rounds += 1
            var bytes: [UInt8]
            if rounds % 3 == 0 {
                bytes = (0..<Int.random(in: 0...200, using: &generator)).map { _ in
                    [0, 0x0A, 0x0D, 0x3A, 0x5C, UInt8.random(in: 0...255, using: &generator)].randomElement(using: &generator)!
                }
            } else {
                bytes = seeds.randomElement(using: &generator)!
                for _ in 0..<Int.random(in: 1...4, using: &generator) where !bytes.isEmpty {
                    let index = Int.random(in: 0..<bytes.count, using: &generator)
                    switch Int.random(in: 0...2, using: &generator) {
                    case 0: bytes[index] = UInt8.random(in: 0...255, using: &generator)
                    case 1: bytes.remove(at: index)
                    default: bytes.insert([0, 0x0A, 0x5C, 0x3A].randomElement(using: &generator)!, at: index)
                    }
                }
            }
            var parser = StompParser(limits: Self.limits)
            for byte in bytes {
                parser.append(CollectionOfOne(byte))
                do {
                    while try parser.next() != nil {}
                } catch {
                    #expect(["bad_request", "too_large"].contains(error.code))
                    break
                }
            }
        }
        #expect(rounds > 100)
    }

    // MARK: Corpus helpers

    func expectedCode(_ text: String) -> String { String(text.prefix { $0 != ":" }) }
    func expectedMessage(_ text: String) -> String { String(text.drop { $0 != ":" }.dropFirst(2)) }

    /// `\n`, `\r`, `\0`, `\\` and `\xHH` as bytes.
    static func unescape(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let byte = bytes.popFirst() {
            guard byte == UInt8(ascii: "\\"), let kind = bytes.popFirst() else {
                out.append(byte)
                continue
            }
            switch kind {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "0"): out.append(0)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "x"):
                out.append(UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) ?? 0)
                bytes = bytes.dropFirst(2)
            default: out += [byte, kind]
            }
        }
        return out
    }
}
