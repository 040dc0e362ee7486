import Foundation
import NIOCore
import NIOWebSocket
import Testing

@testable import SwitchboardServer

/// Our reader of client frames (`WebSocketFrameReader`): what it reads, the limits it keeps on
/// the header, and a fuzz target over the kept corpus (`Tests/SwitchboardTests/Corpus/websocket-frames.txt`,
/// which the over-the-wire fuzz test sends to a node too) and generated input.
@Suite("WebSocket frame reader")
struct WebSocketFrameReaderTests {
    typealias Outcome = (frames: [ClientFrame], error: FrameReadError?, held: Int)

    /// A client frame: masked with a fixed key unless `mask` is false.
    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, mask: Bool = true, rsv: UInt8 = 0) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | rsv | opcode]
        let maskBit: UInt8 = mask ? 0x80 : 0
        if payload.count < 126 {
            bytes.append(maskBit | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            bytes.append(maskBit | 126)
            bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            bytes += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        guard mask else { return bytes + payload }
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        return bytes + key + payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
    }

    /// Feeds `bytes` in pieces cut at `cuts`, collecting frames until the end or an error.
    static func read(_ bytes: [UInt8], cuts: [Int] = [], max: Int = 4096) -> Outcome {
        var reader = WebSocketFrameReader(maxFrameBytes: max)
        var frames: [ClientFrame] = []
        var start = 0
        for end in (cuts.filter { $0 > 0 && $0 < bytes.count }.sorted() + [bytes.count]) where end >= start {
            do {
                try reader.read(ByteBuffer(bytes: bytes[start..<end])) { frames.append($0) }
            } catch {
                return (frames, error, reader.bufferedBytes)
            }
            start = end
        }
        return (frames, nil, reader.bufferedBytes)
    }

    static func same(_ a: Outcome, _ b: Outcome) -> Bool {
        a.frames == b.frames && a.error == b.error && (a.error != nil || a.held == b.held)
    }

    @Test func readsMaskedFramesWholeOrInPieces() {
        let bytes =
            Self.frame(0x1, Array(#"{"type":"ping"}"#.utf8)) + Self.frame(0x9, [1, 2]) + Self.frame(0x2, Array(repeating: 7, count: 300))
            + Self.frame(0x1, Array("abc".utf8), fin: false) + Self.frame(0x0, Array("def".utf8))
        let whole = Self.read(bytes)
        #expect(whole.error == nil && whole.held == 0)
        #expect(whole.frames.map(\.opcode) == [0x1, 0x9, 0x2, 0x1, 0x0])
        #expect(whole.frames.map(\.fin) == [true, true, true, false, true])
        #expect(whole.frames.allSatisfy { $0.masked && !$0.reservedBits })
        #expect(whole.frames[0].payload == ByteBuffer(string: #"{"type":"ping"}"#))
        #expect(whole.frames[2].payload.readableBytes == 300 && whole.frames[2].payload.readableBytesView.allSatisfy { $0 == 7 })
        // Byte by byte, the same frames; a partial frame is held, and only that.
        #expect(Self.same(Self.read(bytes, cuts: Array(1..<bytes.count)), whole))
        let partial = Self.read(Array(bytes.prefix(10)))
        #expect(partial.frames.isEmpty && partial.held == 10)
    }

    @Test func reportsWhatTheHandlerRefuses() {
        // Unmasked frames and reserved bits are read; the handler closes on them (1002).
        let unmasked = Self.read(Self.frame(0x1, [65], mask: false) + Self.frame(0x1, [66], rsv: 0x40))
        #expect(unmasked.frames.map(\.masked) == [false, true])
        #expect(unmasked.frames.map(\.reservedBits) == [false, true])
    }

    @Test func limitsAreCheckedOnTheHeader() {
        // Over the limit: refused from the header alone, before any of the payload arrives.
        let big = Self.frame(0x1, Array(repeating: 1, count: 5000))
        #expect(Self.read(Array(big.prefix(8)), max: 4096).error == .tooLarge)
        #expect(Self.read(Self.frame(0x1, Array(repeating: 1, count: 4096)), max: 4096).frames.count == 1)
        // Control frames: at most 125 bytes, never fragmented.
        #expect(Self.read(Self.frame(0x9, Array(repeating: 0, count: 126))).error == .malformed("a control frame longer than 125 bytes"))
        #expect(Self.read(Self.frame(0x8, [3, 0xE8], fin: false)).error == .malformed("a fragmented control frame"))
        // A 64-bit length with the top bit set.
        #expect(Self.read([0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1]).error == .malformed("a 64-bit payload length with its top bit set"))
    }

    /// Whatever the bytes, reading them whole or in any pieces gives the same frames and the
    /// same error, and never traps.
    @Test func fuzzKeptCorpusAndGeneratedInput() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../SwitchboardTests/Corpus/websocket-frames.txt")
        var inputs = try String(contentsOf: corpus, encoding: .utf8).split(separator: "\n")
            .filter { !$0.hasPrefix("#") }
            .map { line in
                let digits = Array(line.utf8)
                return stride(from: 0, to: digits.count - 1, by: 2).compactMap {
                    UInt8(String(decoding: digits[$0...$0 + 1], as: UTF8.self), radix: 16)
                }
            }
        #expect(inputs.count > 10)
        var generator = SystemRandomNumberGenerator()
        let seconds = ProcessInfo.processInfo.environment["SWITCHBOARD_FUZZ_SECONDS"].flatMap(Double.init) ?? 3
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        var round = 0
        while round < inputs.count || ContinuousClock.now < deadline {
            if round >= inputs.count {
                var bytes: [UInt8] = []
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    let opcode = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3].randomElement(using: &generator)!
                    let length = [0, 1, 125, 126, 127, 300, 5000].randomElement(using: &generator)!
                    bytes += Self.frame(
                        UInt8(opcode), (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) },
                        fin: Bool.random(using: &generator), mask: Int.random(in: 0..<8, using: &generator) != 0)
                }
                for _ in 0..<Int.random(in: 0...3, using: &generator) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
                inputs.append(bytes)
            }
            let bytes = inputs[round]
            let cuts = (0..<Int.random(in: 0...4, using: &generator)).map { _ in Int.random(in: 0...max(0, bytes.count), using: &generator)
            }
            let whole = Self.read(bytes)
            #expect(Self.same(whole, Self.read(bytes, cuts: cuts)), "input \(round): \(bytes.prefix(32))")
            round += 1
        }
    }
}
