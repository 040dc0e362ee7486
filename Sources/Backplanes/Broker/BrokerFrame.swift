import ClusterCodec
import NIOCore
import SwitchboardCore

/// What nodes joined through a message broker (RabbitMQ, NATS) publish to each other: one record
/// in the shared format (`ClusterCodec`) per broker message.
///
///     announce  record, load, wants-replies, users, room/user pairs (the sender's whole interest)
///     delta     sender id, incarnation, one interest change
///     beat      sender id, incarnation, load (the heartbeat)
///     bye       record, marked left (the sender is leaving the cluster)
///     message   origin id, envelope (data is the client's raw JSON, never re-encoded)
///     marker    sender id, token (a node's note to itself through its own queue: when it comes
///               back, everything the broker queued for the node before it has been taken)
///
/// Membership frames go to every node (the membership key or subject), except an announce that
/// answers one node's request, which goes to that node alone. Messages go to the key of their
/// address, so only nodes with a recipient receive them.
public enum BrokerFrame: Hashable, Sendable {
    case announce(MemberRecord, load: NodeLoad, wantsReplies: Bool, users: [String], rooms: [RoomMember])
    case delta(from: String, incarnation: Int64, InterestDelta)
    case beat(from: String, incarnation: Int64, load: NodeLoad)
    case bye(MemberRecord)
    case message(origin: String, Envelope)
    case marker(from: String, token: Int64)

    private enum Kind: UInt8 {
        case announce = 1, delta, beat, bye, message, marker
    }

    public func encoded() -> ByteBuffer {
        switch self {
        case .announce(let record, let load, let wantsReplies, let users, let rooms):
            var out = RecordWriter(kind: Kind.announce.rawValue, capacity: 64 + 16 * (users.count + 2 * rooms.count))
            out.member(record)
            out.load(load)
            out.bool(wantsReplies)
            out.strings(users)
            out.roomMembers(rooms)
            return out.buffer
        case .delta(let id, let incarnation, let delta):
            var out = RecordWriter(kind: Kind.delta.rawValue)
            out.string(id)
            out.i64(incarnation)
            out.delta(delta)
            return out.buffer
        case .beat(let id, let incarnation, let load):
            var out = RecordWriter(kind: Kind.beat.rawValue)
            out.string(id)
            out.i64(incarnation)
            out.load(load)
            return out.buffer
        case .bye(let record):
            var out = RecordWriter(kind: Kind.bye.rawValue)
            out.member(record)
            return out.buffer
        case .message(let origin, let envelope):
            var out = RecordWriter(kind: Kind.message.rawValue, capacity: 64 + envelope.data.bytes.count)
            out.string(origin)
            out.envelope(envelope)
            return out.buffer
        case .marker(let id, let token):
            var out = RecordWriter(kind: Kind.marker.rawValue)
            out.string(id)
            out.i64(token)
            return out.buffer
        }
    }

    /// The encoded record as bytes, as broker clients take them.
    public var bytes: [UInt8] { Array(encoded().readableBytesView) }

    public static func decode(_ bytes: [UInt8]) -> BrokerFrame? {
        decode(ByteBuffer(bytes: bytes))
    }

    /// Decodes one broker message; nil for anything malformed (never traps).
    public static func decode(_ buffer: ByteBuffer) -> BrokerFrame? {
        guard var input = RecordReader(buffer), let raw = input.byte(), let kind = Kind(rawValue: raw) else { return nil }
        let frame: BrokerFrame?
        switch kind {
        case .announce:
            guard let record = input.member(), let load = input.load(), let wantsReplies = input.bool(), let users = input.strings(),
                let rooms = input.roomMembers()
            else { return nil }
            frame = .announce(record, load: load, wantsReplies: wantsReplies, users: users, rooms: rooms)
        case .delta:
            guard let id = input.string(), let incarnation = input.i64(), let delta = input.delta() else { return nil }
            frame = .delta(from: id, incarnation: incarnation, delta)
        case .beat:
            guard let id = input.string(), let incarnation = input.i64(), let load = input.load() else { return nil }
            frame = .beat(from: id, incarnation: incarnation, load: load)
        case .bye:
            frame = input.member().map(BrokerFrame.bye)
        case .message:
            guard let origin = input.string(), let envelope = input.envelope() else { return nil }
            frame = .message(origin: origin, envelope)
        case .marker:
            guard let id = input.string(), let token = input.i64() else { return nil }
            frame = .marker(from: id, token: token)
        }
        // Trailing bytes mean a record we do not understand.
        return input.atEnd ? frame : nil
    }
}
