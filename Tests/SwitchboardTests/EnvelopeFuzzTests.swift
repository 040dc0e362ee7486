import HubBackplane
import MeshBackplane
import SwitchboardCore
import SwitchboardProtocol
import Testing

@testable import RedisBackplane

/// The records that cross between nodes are decoded from bytes another process sent: random,
/// truncated and mutated input must be refused (nil), never crash, and valid input must round-trip.
@Suite("Cluster envelope fuzzing")
struct EnvelopeFuzzTests {
    static let events: [ClusterEvent] = [
        .message(
            Envelope(
                id: "abc-1", from: "alice", address: .room("lobby"), data: RawJSON(#"{"a":[1,"é",null]}"#), timestamp: 1_700_000_000_123)),
        .message(Envelope(id: "abc-2", from: "server", address: .room("r"), data: RawJSON(""), timestamp: -1)),
        .joined(room: "lobby", user: "bob"),
        .left(room: "lobby", user: "bob"),
    ]

    /// Worst cases kept from earlier runs and by hand: lengths past the end, empty input, a
    /// kind byte out of range, a timestamp cut in half.
    static let corpus: [[UInt8]] = [
        [], [1], [1, 0], [1, 0, 0xFF, 0xFF], [1, 9, 0, 0], [2, 0, 0, 0],
        [1, 0, 0, 1, 0x61, 0, 1, 0x62, 0, 1, 0x63, 0, 0, 0],
        [1, 1, 0, 1, 0x61, 0, 0xFF],
    ]

    @Test func redisRecordsRoundTripAndRefuseGarbage() {
        for event in Self.events {
            let bytes = WireEvent.encode(event, origin: "n1")
            let decoded = WireEvent.decode(bytes, address: event.address)
            #expect(decoded?.event == event && decoded?.origin == "n1")
            // Every truncation of a joined/left record is refused (a message keeps its raw tail).
            if case .message = event { continue }
            for cut in 0..<bytes.count {
                #expect(WireEvent.decode(Array(bytes[..<cut]), address: event.address) == nil)
            }
        }
        for bytes in Self.corpus {
            _ = WireEvent.decode(bytes, address: .room("r"))
            _ = WireEvent.decode(bytes, address: .everyone)
        }
        var generator = SystemRandomNumberGenerator()
        for round in 0..<20000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...48, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            } else {
                bytes = WireEvent.encode(Self.events[round % Self.events.count], origin: "node")
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            // Joined/left records need a room address; others decode or are refused.
            _ = WireEvent.decode(bytes, address: round % 3 == 0 ? .room("r") : .user("u"))
        }
    }

    @Test func hubLinkFramesRoundTripAndRefuseGarbage() throws {
        let envelope = Envelope(id: "m-1", from: "alice", address: .user("bob"), data: RawJSON(#"[1,{"x":"y"}]"#), timestamp: 42)
        let frame = HubLink.envelope(envelope, type: "pub", rid: 7)
        let parsed = try #require(HubLink.parse(frame))
        #expect(parsed.values["rid"]?.int == 7)
        #expect(HubLink.envelope(from: parsed.fields, extra: parsed.values) == envelope)
        for cut in 0..<frame.count {
            #expect(HubLink.parse(Array(frame[..<cut])) == nil, "a truncated link frame must be refused")
        }
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]":,tpubrid0123456789.-eE"nulltruefalse\"#.utf8)
        for round in 0..<20000 {
            var bytes = frame
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...48, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
            } else {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = alphabet.randomElement(using: &generator)!
            }
            if let (fields, values) = HubLink.parse(bytes) {
                _ = HubLink.envelope(from: fields, extra: values)
            }
        }
    }

    static let meshFrames: [MeshFrame] = [
        .welcome(MemberRecord(id: "n1", url: "ws://127.0.0.1:8080/ws", incarnation: 1_700_000_000_000)),
        .hello(MemberRecord(id: "n2", url: "ws://h:1/ws", incarnation: 5, left: true)),
        .members([MemberRecord(id: "a", url: "u", incarnation: 1), MemberRecord(id: "b", url: "v", incarnation: -2, left: true)]),
        .members([]),
        .sync(
            seq: 1, load: NodeLoad(connections: 3, users: 2), users: ["alice", "bob"],
            rooms: [.init(room: "lobby", user: "alice"), .init(room: "é", user: "bob")], final: true),
        .sync(seq: UInt32.max, load: NodeLoad(connections: 0, users: 0), users: [], rooms: [], final: false),
        .delta(seq: 2, .online(user: "u")), .delta(seq: 3, .offline(user: "u")),
        .delta(seq: 4, .joined(room: "r", user: "u")), .delta(seq: 5, .left(room: "r", user: "u")),
        .message(seq: 6, Envelope(id: "m", from: "alice", address: .room("lobby"), data: RawJSON(#"{"a":[1,"é"]}"#), timestamp: 42)),
        .message(seq: 7, Envelope(id: "m", from: "server", address: .everyone, data: RawJSON(""), timestamp: -1)),
        .message(seq: 8, Envelope(id: "m", from: "a", address: .user("bob"), data: RawJSON("1"), timestamp: 0)),
        .ack(seq: 9), .beat(NodeLoad(connections: 1, users: 1)), .bye, .refused("wrong secret"),
    ]

    @Test func meshLinkFramesRoundTripAndRefuseGarbage() {
        for frame in Self.meshFrames {
            let bytes = frame.encoded()
            #expect(MeshFrame.decode(bytes) == frame)
            // Every truncation is refused, except of a message (its data is the rest of the frame).
            if case .message = frame { continue }
            for cut in 0..<bytes.count {
                #expect(MeshFrame.decode(Array(bytes[..<cut])) == nil)
            }
            #expect(MeshFrame.decode(bytes + [0]) == nil)
        }
        // Renumbering an encoded frame is the same as encoding it with that number.
        let message = Self.meshFrames[10]
        guard case .message(_, let envelope) = message else { return }
        #expect(MeshFrame.numbered(message.encoded(), seq: 77) == MeshFrame.message(seq: 77, envelope).encoded())
        // A forged count larger than the frame could hold is refused without reserving memory.
        #expect(MeshFrame.decode([1, 3, 0xFF, 0xFF, 0xFF, 0xFF]) == nil)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<20000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = [1] + (0..<Int.random(in: 0...48, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            } else {
                bytes = Self.meshFrames[round % Self.meshFrames.count].encoded()
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            _ = MeshFrame.decode(bytes)
        }
    }
}
