import ClusterCodec
import NIOCore
import SwitchboardCore

/// What travels on a mesh link, one binary WebSocket message each, in the shared record format
/// (`ClusterCodec`).
///
/// The node that dials is the *sender* on that link: it sends its interest, messages and
/// heartbeats; the node that accepts answers with acks and gossip. Each pair of nodes has two
/// links, one dialled by each, so each node sends on its own link and reads on the other.
///
///     welcome  acceptor's record (the first message, sent by the acceptor)
///     hello    dialler's record
///     members  records (gossip, either way)
///     sync     seq, load, users, room/user pairs, final flag (the dialler's whole interest)
///     delta    seq, one interest change
///     message  seq, envelope (data is the client's raw JSON, never re-encoded)
///     ack      seq (acceptor to dialler: applied)
///     beat     load (the heartbeat)
///     bye      the dialler is leaving the cluster
///     refused  reason (acceptor to dialler, before it closes)
///     batch    several of the above, each with its length, in order (not another batch): a
///              link's writer sends what queued up while it was busy as one message, and the
///              acceptor answers such a message's acks as one batch
public enum MeshFrame: Hashable, Sendable {
    case welcome(MemberRecord)
    case hello(MemberRecord)
    case members([MemberRecord])
    case sync(seq: UInt32, load: NodeLoad, users: [String], rooms: [RoomMember], final: Bool)
    case delta(seq: UInt32, InterestDelta)
    case message(seq: UInt32, Envelope)
    case ack(seq: UInt32)
    case beat(NodeLoad)
    case bye
    case refused(String)
    case batch([MeshFrame])

    public typealias RoomMember = SwitchboardCore.RoomMember

    private enum Kind: UInt8 {
        case welcome = 1, hello, members, sync, delta, message, ack, beat, bye, refused, batch
    }

    /// Where a numbered frame keeps its number: after the version and kind bytes.
    private static let seqIndex = 2

    public func encoded() -> ByteBuffer {
        switch self {
        case .welcome(let record):
            var out = RecordWriter(kind: Kind.welcome.rawValue)
            out.member(record)
            return out.buffer
        case .hello(let record):
            var out = RecordWriter(kind: Kind.hello.rawValue)
            out.member(record)
            return out.buffer
        case .members(let records):
            var out = RecordWriter(kind: Kind.members.rawValue, capacity: 16 + 48 * records.count)
            out.count(records.count)
            for record in records { out.member(record) }
            return out.buffer
        case .sync(let seq, let load, let users, let rooms, let final):
            var out = RecordWriter(kind: Kind.sync.rawValue, capacity: 32 + 16 * (users.count + 2 * rooms.count))
            out.u32(seq)
            out.load(load)
            out.bool(final)
            out.strings(users)
            out.roomMembers(rooms)
            return out.buffer
        case .delta(let seq, let delta):
            var out = RecordWriter(kind: Kind.delta.rawValue)
            out.u32(seq)
            out.delta(delta)
            return out.buffer
        case .message(let seq, let envelope):
            var out = RecordWriter(kind: Kind.message.rawValue, capacity: 64 + envelope.data.bytes.count)
            out.u32(seq)
            out.envelope(envelope)
            return out.buffer
        case .ack(let seq):
            var out = RecordWriter(kind: Kind.ack.rawValue, capacity: 6)
            out.u32(seq)
            return out.buffer
        case .beat(let load):
            var out = RecordWriter(kind: Kind.beat.rawValue, capacity: 10)
            out.load(load)
            return out.buffer
        case .bye:
            return RecordWriter(kind: Kind.bye.rawValue, capacity: 2).buffer
        case .refused(let reason):
            var out = RecordWriter(kind: Kind.refused.rawValue)
            out.string(reason)
            return out.buffer
        case .batch(let frames):
            return Self.batch(encoded: frames.map { $0.encoded() })
        }
    }

    /// One batch of frames encoded already (numbered ones included), in their order.
    public static func batch(encoded: [ByteBuffer]) -> ByteBuffer {
        RecordWriter.batch(kind: Kind.batch.rawValue, of: encoded)
    }

    /// The bytes of a numbered frame (sync, delta, message) with another number: the frame is
    /// encoded once and renumbered for each link.
    public static func numbered(_ encoded: ByteBuffer, seq: UInt32) -> ByteBuffer {
        var bytes = encoded
        bytes.setInteger(seq, at: bytes.readerIndex + seqIndex)
        return bytes
    }

    public static func decode(_ bytes: [UInt8]) -> MeshFrame? {
        decode(ByteBuffer(bytes: bytes))
    }

    /// Decodes one link message; nil for anything malformed (never traps).
    public static func decode(_ buffer: ByteBuffer) -> MeshFrame? {
        guard var input = RecordReader(buffer), let raw = input.byte(), let kind = Kind(rawValue: raw) else { return nil }
        let frame: MeshFrame?
        switch kind {
        case .welcome: frame = input.member().map(MeshFrame.welcome)
        case .hello: frame = input.member().map(MeshFrame.hello)
        case .members:
            guard let count = input.count(minimumBytesEach: 13) else { return nil }
            var records: [MemberRecord] = []
            for _ in 0..<count {
                guard let record = input.member() else { return nil }
                records.append(record)
            }
            frame = .members(records)
        case .sync:
            guard let seq = input.u32(), let load = input.load(), let final = input.bool(), let users = input.strings(),
                let rooms = input.roomMembers()
            else { return nil }
            frame = .sync(seq: seq, load: load, users: users, rooms: rooms, final: final)
        case .delta:
            guard let seq = input.u32() else { return nil }
            frame = input.delta().map { .delta(seq: seq, $0) }
        case .message:
            guard let seq = input.u32() else { return nil }
            frame = input.envelope().map { .message(seq: seq, $0) }
        case .ack: frame = input.u32().map { .ack(seq: $0) }
        case .beat: frame = input.load().map(MeshFrame.beat)
        case .bye: frame = .bye
        case .refused: frame = input.string().map(MeshFrame.refused)
        case .batch:
            frame = input.batch(decode) { if case .batch = $0 { true } else { false } }.map(MeshFrame.batch)
        }
        // Trailing bytes mean a frame we do not understand.
        return input.atEnd ? frame : nil
    }
}
