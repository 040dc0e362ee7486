import BrokerMembership
import ClusterCodec
import Foundation
import HubBackplane
import MeshBackplane
import NIOCore
import SwitchboardCore
import Testing

@testable import RedisBackplane

/// The records that cross between nodes (Redis records, mesh and hub link frames, broker
/// messages) are decoded from
/// bytes another process sent: random, truncated and mutated input must be refused (nil), never
/// crash, and valid input must round-trip. All three share one format (`ClusterCodec`).
@Suite("Cluster record fuzzing")
struct RecordFuzzTests {
    static let envelopes: [Envelope] = [
        Envelope(id: "abc-1", from: "alice", address: .room("lobby"), data: RawJSON(#"{"a":[1,"é",null]}"#), timestamp: 1_700_000_000_123),
        Envelope(id: "abc-2", from: "server", address: .room("r"), data: RawJSON(""), timestamp: -1),
        Envelope(id: "m", from: "a", address: .user("bob"), data: RawJSON("1"), timestamp: 0),
        Envelope(id: "m", from: "server", address: .everyone, data: RawJSON(#"[1,{"x":"y"}]"#), timestamp: 42),
        Envelope(
            id: "s", from: "a", address: .room("lobby"), data: RawJSON("{}"), timestamp: 7,
            position: StreamPosition(epoch: "e1x", offset: 9)),
    ]

    static let events: [ClusterEvent] =
        envelopes.map(ClusterEvent.message) + [.joined(room: "lobby", user: "bob"), .left(room: "é", user: "bob")]

    /// Worst cases kept from earlier runs and by hand (`Corpus/records.txt`, one hex record per
    /// line): lengths past the end, empty input, kinds out of range, a timestamp cut in half,
    /// forged counts, strings that are not UTF-8, the old version byte.
    static let corpus: [[UInt8]] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus/records.txt")
        let text = try! String(contentsOf: url, encoding: .utf8)
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let hex = Array(line.filter(\.isHexDigit))
            return stride(from: 0, to: hex.count - 1, by: 2).map { UInt8(String(hex[$0...$0 + 1]), radix: 16)! }
        }
    }()

    /// Every way of spoiling valid bytes: each truncation, one extra byte, and random mutations.
    static func mutations(of valid: [[UInt8]], rounds: Int) -> [[UInt8]] {
        var generator = SystemRandomNumberGenerator()
        var out = corpus
        for round in 0..<rounds {
            if round % 2 == 0 {
                out.append(
                    [RecordFormat.version]
                        + (0..<Int.random(in: 0...48, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            } else {
                var bytes = valid[round % valid.count]
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                out.append(bytes)
            }
        }
        return out
    }

    @Test func redisRecordsRoundTripAndRefuseGarbage() {
        var valid: [[UInt8]] = []
        for event in Self.events {
            let bytes = WireEvent.encode(event, origin: "n1")
            valid.append(bytes)
            let decoded = WireEvent.decode(bytes, address: event.address)
            #expect(decoded?.event == event && decoded?.origin == "n1")
            // A record published on another address's channel is refused.
            #expect(WireEvent.decode(bytes, address: .room("elsewhere")) == nil)
            // Every truncation of a joined/left record is refused (a message keeps its raw tail).
            if case .message = event { continue }
            for cut in 0..<bytes.count {
                #expect(WireEvent.decode(Array(bytes[..<cut]), address: event.address) == nil)
            }
            #expect(WireEvent.decode(bytes + [0], address: event.address) == nil)
        }
        for bytes in Self.mutations(of: valid, rounds: 20000) {
            for address in [Address.room("lobby"), .user("bob"), .everyone] {
                if let decoded = WireEvent.decode(bytes, address: address) { #expect(decoded.event.address == address) }
            }
        }
    }

    /// What the append script does to a record (`HistoryScripts.append`), done here: the epoch
    /// and offset go in after the version and kind bytes.
    static func numbered(_ record: [UInt8], epoch: String, offset: Int64) -> [UInt8] {
        var position = RecordWriter(kind: 0)
        position.string(epoch)
        position.i64(offset)
        return Array(record[..<2]) + Array(position.buffer.readableBytesView.dropFirst(2)) + Array(record[2...])
    }

    @Test func sequencedRedisRecordsCarryTheirPosition() {
        var valid: [[UInt8]] = []
        for envelope in Self.envelopes where envelope.address != .everyone {
            let record = Self.numbered(WireEvent.encodeUnsequenced(envelope, origin: "n1"), epoch: "ep0ch", offset: 41)
            valid.append(record)
            var expected = envelope
            expected.position = StreamPosition(epoch: "ep0ch", offset: 41)
            let decoded = WireEvent.decode(record, address: envelope.address)
            #expect(decoded?.event == .message(expected) && decoded?.sequenced == true && decoded?.origin == "n1")
            #expect(WireEvent.decode(record, address: .room("elsewhere")) == nil)
            // No offset 0, no empty epoch, no record left without its position.
            #expect(
                WireEvent.decode(
                    Self.numbered(WireEvent.encodeUnsequenced(envelope, origin: "n1"), epoch: "e", offset: 0), address: envelope.address)
                    == nil)
            #expect(
                WireEvent.decode(
                    Self.numbered(WireEvent.encodeUnsequenced(envelope, origin: "n1"), epoch: "", offset: 1), address: envelope.address)
                    == nil)
            #expect(WireEvent.decode(WireEvent.encodeUnsequenced(envelope, origin: "n1"), address: envelope.address) == nil)
        }
        for bytes in Self.mutations(of: valid, rounds: 20000) {
            if let decoded = WireEvent.decode(bytes, address: .room("lobby")), decoded.sequenced {
                guard case .message(let envelope) = decoded.event else {
                    Issue.record("a sequenced record that is not a message"); continue
                }
                #expect((envelope.position?.offset ?? 0) >= 1)
            }
        }
    }

    static let hubFrames: [HubFrame] =
        [
            .hello(NodeInfo(id: "n1", url: "ws://127.0.0.1:8080/ws")),
            .interest(rid: 1, .online(user: "u")), .interest(rid: HubFrame.unanswered, .offline(user: "u")),
            .interest(rid: 3, .joined(room: "r", user: "u")), .interest(rid: 4, .left(room: "é", user: "u")),
            .query(rid: 5, .members(room: "lobby")), .query(rid: 6, .nodesOf(user: "bob")), .query(rid: UInt32.max, .nodes),
            .load(NodeLoad(connections: 7, users: 3)), .ack(rid: 8), .names(rid: 9, []), .names(rid: 10, ["a", "é"]),
            .nodes(
                rid: 11, [NodeStatus(info: NodeInfo(id: "n2", url: "ws://h:1/ws"), load: NodeLoad(connections: 1, users: 1), alive: true)]),
            .node(id: "n3", joined: true), .node(id: "n3", joined: false), .refused("node id n1 is held by a live link"),
            .event(.joined(room: "r", user: "u")), .event(.left(room: "r", user: "u")),
            .query(rid: 13, .read(stream: .room("lobby"), after: nil, limit: 100)),
            .query(rid: 14, .read(stream: .user("bob"), after: 0, limit: 0)), .unsupported(rid: 15),
            .stream(rid: 16, StreamRead(top: StreamPosition(epoch: "e", offset: 0), messages: [])),
            .stream(rid: 17, StreamRead(top: StreamPosition(epoch: "e1x", offset: 9), messages: [envelopes[4], envelopes[4]])),
            .batch([.load(NodeLoad(connections: 7, users: 3))]),
            .batch([
                .hello(NodeInfo(id: "n1", url: "ws://127.0.0.1:8080/ws")), .interest(rid: 1, .online(user: "u")),
                .publish(rid: 2, envelopes[0], sequenced: true), .query(rid: 3, .nodes),
            ]),
        ] + envelopes.map { .publish(rid: 12, $0, sequenced: $0.address != .everyone) } + envelopes.map { .event(.message($0)) }

    @Test func hubLinkFramesRoundTripAndRefuseGarbage() {
        var valid: [[UInt8]] = []
        for frame in Self.hubFrames {
            let bytes = Array(frame.encoded().readableBytesView)
            valid.append(bytes)
            #expect(HubFrame.decode(bytes) == frame)
            // Every truncation is refused, except of a message (its data is the rest of the frame).
            switch frame {
            case .publish, .event(.message): continue
            default: break
            }
            for cut in 0..<bytes.count {
                #expect(HubFrame.decode(Array(bytes[..<cut])) == nil)
            }
            #expect(HubFrame.decode(bytes + [0]) == nil)
        }
        // No empty batch, no batch in a batch, no inner frame that is short or long.
        let batchesInCorpus = Self.corpus.filter { $0.count >= 2 && $0[0] == RecordFormat.version && $0[1] == 14 }
        #expect(batchesInCorpus.count == 5)
        for bytes in batchesInCorpus { #expect(HubFrame.decode(bytes) == nil) }
        let parts = [HubFrame.interest(rid: 1, .online(user: "u")), .load(NodeLoad(connections: 1, users: 1))]
        #expect(HubFrame.batch(encoded: parts.map { $0.encoded() }) == HubFrame.batch(parts).encoded())
        for bytes in Self.mutations(of: valid, rounds: 20000) {
            if case .batch(let frames) = HubFrame.decode(bytes) {
                #expect(!frames.isEmpty && !frames.contains { if case .batch = $0 { true } else { false } })
            }
        }
    }

    static let meshFrames: [MeshFrame] =
        [
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
            .ack(seq: 9), .beat(NodeLoad(connections: 1, users: 1)), .bye, .refused("wrong secret"),
            .batch([.ack(seq: 1)]), .batch([.ack(seq: 1), .ack(seq: 2), .members([]), .beat(NodeLoad(connections: 1, users: 1))]),
            .batch([.delta(seq: 6, .online(user: "u")), .message(seq: 7, envelopes[0]), .bye]),
        ] + envelopes.enumerated().map { .message(seq: UInt32($0.offset), $0.element) }

    @Test func meshLinkFramesRoundTripAndRefuseGarbage() {
        var valid: [[UInt8]] = []
        for frame in Self.meshFrames {
            let bytes = Array(frame.encoded().readableBytesView)
            valid.append(bytes)
            #expect(MeshFrame.decode(bytes) == frame)
            if case .message = frame { continue }
            for cut in 0..<bytes.count {
                #expect(MeshFrame.decode(Array(bytes[..<cut])) == nil)
            }
            #expect(MeshFrame.decode(bytes + [0]) == nil)
        }
        // Renumbering an encoded frame is the same as encoding it with that number.
        let envelope = Self.envelopes[0]
        #expect(
            MeshFrame.numbered(MeshFrame.message(seq: 0, envelope).encoded(), seq: 77) == MeshFrame.message(seq: 77, envelope).encoded())
        // A batch is encoded once from frames encoded already (renumbered ones included).
        let parts = [MeshFrame.ack(seq: 1), .delta(seq: 2, .online(user: "u"))]
        #expect(MeshFrame.batch(encoded: parts.map { $0.encoded() }) == MeshFrame.batch(parts).encoded())
        // No empty batch, no batch in a batch, no inner frame that is short, long or old.
        let batchesInCorpus = Self.corpus.filter { $0.count >= 2 && $0[0] == RecordFormat.version && $0[1] == 11 }
        #expect(batchesInCorpus.count == 6)
        for bytes in batchesInCorpus { #expect(MeshFrame.decode(bytes) == nil) }
        #expect(MeshFrame.decode(MeshFrame.batch(encoded: [MeshFrame.batch([.ack(seq: 1)]).encoded()])) == nil)
        for bytes in Self.mutations(of: valid, rounds: 20000) {
            if case .batch(let frames) = MeshFrame.decode(bytes) {
                #expect(!frames.isEmpty && !frames.contains { if case .batch = $0 { true } else { false } })
            }
        }
    }

    static let brokerFrames: [BrokerFrame] =
        [
            .announce(
                MemberRecord(id: "n1", url: "ws://127.0.0.1:8080/ws", incarnation: 1_700_000_000_000),
                load: NodeLoad(connections: 3, users: 2), wantsReplies: true, users: ["alice", "bob"],
                rooms: [.init(room: "lobby", user: "alice"), .init(room: "é", user: "bob")]),
            .announce(
                MemberRecord(id: "n2", url: "u", incarnation: -1), load: NodeLoad(connections: 0, users: 0), wantsReplies: false, users: [],
                rooms: []),
            .delta(from: "n1", incarnation: 7, .online(user: "u")), .delta(from: "n1", incarnation: 7, .offline(user: "u")),
            .delta(from: "n2", incarnation: 0, .joined(room: "r", user: "u")),
            .delta(from: "n2", incarnation: 0, .left(room: "r", user: "u")),
            .beat(from: "n3", incarnation: Int64.max, load: NodeLoad(connections: 1, users: 1)),
            .bye(MemberRecord(id: "n1", url: "ws://h:1/ws", incarnation: 5, left: true)),
            .marker(from: "n2", token: 42),
        ] + envelopes.map { .message(origin: "n1", $0) }

    @Test func brokerFramesRoundTripAndRefuseGarbage() {
        var valid: [[UInt8]] = []
        for frame in Self.brokerFrames {
            let bytes = frame.bytes
            valid.append(bytes)
            #expect(BrokerFrame.decode(bytes) == frame)
            if case .message = frame { continue }
            for cut in 0..<bytes.count {
                #expect(BrokerFrame.decode(Array(bytes[..<cut])) == nil)
            }
            #expect(BrokerFrame.decode(bytes + [0]) == nil)
        }
        for bytes in Self.mutations(of: valid, rounds: 20000) {
            _ = BrokerFrame.decode(bytes)
        }
    }

    @Test func stringsThatAreNotUTF8AndForgedCountsAreRefused() {
        // A members frame whose one record's id is the lone byte 0xFF.
        var bad = RecordWriter(kind: 3)
        bad.count(1)
        var record = Array(bad.buffer.readableBytesView) + [0, 1, 0xFF, 0, 1, 0x75]
        record += [UInt8](repeating: 0, count: 9)
        #expect(MeshFrame.decode(record) == nil)
        // The same bytes with a valid id decode, so it was the UTF-8 that was refused.
        record[8] = 0x61
        #expect(MeshFrame.decode(record) == .members([MemberRecord(id: "a", url: "u", incarnation: 0)]))
        // A count of 2^32-1 names in a few bytes is refused before anything is reserved.
        var forged = RecordWriter(kind: 7)
        forged.u32(1)
        forged.u32(UInt32.max)
        #expect(HubFrame.decode(forged.buffer) == nil)
    }

    @Test func anotherVersionIsRefused() {
        for frame in Self.hubFrames {
            var bytes = Array(frame.encoded().readableBytesView)
            bytes[0] = RecordFormat.version &+ 1
            #expect(HubFrame.decode(bytes) == nil)
            bytes[0] = 1  // the version before the shared format
            #expect(HubFrame.decode(bytes) == nil)
        }
    }
}
