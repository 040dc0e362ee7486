import SwitchboardCore

/// What travels on a mesh link, one binary WebSocket message each.
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

    public typealias RoomMember = SwitchboardCore.RoomMember

    static let version: UInt8 = 1

    private enum Kind: UInt8 {
        case welcome = 1, hello, members, sync, delta, message, ack, beat, bye, refused
    }

    public func encoded() -> [UInt8] {
        var out = ByteWriter()
        out.byte(Self.version)
        switch self {
        case .welcome(let record):
            out.byte(Kind.welcome.rawValue)
            out.record(record)
        case .hello(let record):
            out.byte(Kind.hello.rawValue)
            out.record(record)
        case .members(let records):
            out.byte(Kind.members.rawValue)
            out.u32(UInt32(records.count))
            for record in records { out.record(record) }
        case .sync(let seq, let load, let users, let rooms, let final):
            out.byte(Kind.sync.rawValue)
            out.u32(seq)
            out.load(load)
            out.byte(final ? 1 : 0)
            out.u32(UInt32(users.count))
            for user in users { out.string(user) }
            out.u32(UInt32(rooms.count))
            for pair in rooms {
                out.string(pair.room)
                out.string(pair.user)
            }
        case .delta(let seq, let delta):
            out.byte(Kind.delta.rawValue)
            out.u32(seq)
            switch delta {
            case .online(let user):
                out.byte(0)
                out.string(user)
            case .offline(let user):
                out.byte(1)
                out.string(user)
            case .joined(let room, let user):
                out.byte(2)
                out.string(room)
                out.string(user)
            case .left(let room, let user):
                out.byte(3)
                out.string(room)
                out.string(user)
            }
        case .message(let seq, let envelope):
            out.byte(Kind.message.rawValue)
            out.u32(seq)
            out.envelope(envelope)
        case .ack(let seq):
            out.byte(Kind.ack.rawValue)
            out.u32(seq)
        case .beat(let load):
            out.byte(Kind.beat.rawValue)
            out.load(load)
        case .bye:
            out.byte(Kind.bye.rawValue)
        case .refused(let reason):
            out.byte(Kind.refused.rawValue)
            out.string(reason)
        }
        return out.bytes
    }

    /// The bytes of a numbered frame (sync, delta, message) with another number: the frame is
    /// encoded once and renumbered for each link.
    public static func numbered(_ encoded: [UInt8], seq: UInt32) -> [UInt8] {
        var bytes = encoded
        withUnsafeBytes(of: seq.bigEndian) { bytes.replaceSubrange(2..<6, with: $0) }
        return bytes
    }

    /// Decodes one link message; nil for anything malformed (never traps).
    public static func decode(_ bytes: [UInt8]) -> MeshFrame? {
        var input = ByteReader(bytes: bytes)
        guard input.byte() == version, let raw = input.byte(), let kind = Kind(rawValue: raw) else { return nil }
        let frame: MeshFrame?
        switch kind {
        case .welcome: frame = input.record().map(MeshFrame.welcome)
        case .hello: frame = input.record().map(MeshFrame.hello)
        case .members:
            guard let count = input.count(minimumBytesEach: 11) else { return nil }
            var records: [MemberRecord] = []
            for _ in 0..<count {
                guard let record = input.record() else { return nil }
                records.append(record)
            }
            frame = .members(records)
        case .sync:
            guard let seq = input.u32(), let load = input.load(), let final = input.byte(),
                let userCount = input.count(minimumBytesEach: 2)
            else { return nil }
            var users: [String] = []
            for _ in 0..<userCount {
                guard let user = input.string() else { return nil }
                users.append(user)
            }
            guard let pairCount = input.count(minimumBytesEach: 4) else { return nil }
            var rooms: [RoomMember] = []
            for _ in 0..<pairCount {
                guard let room = input.string(), let user = input.string() else { return nil }
                rooms.append(RoomMember(room: room, user: user))
            }
            frame = .sync(seq: seq, load: load, users: users, rooms: rooms, final: final == 1)
        case .delta:
            guard let seq = input.u32(), let op = input.byte() else { return nil }
            let delta: InterestDelta?
            switch op {
            case 0: delta = input.string().map { .online(user: $0) }
            case 1: delta = input.string().map { .offline(user: $0) }
            case 2, 3:
                guard let room = input.string(), let user = input.string() else { return nil }
                delta = op == 2 ? .joined(room: room, user: user) : .left(room: room, user: user)
            default: delta = nil
            }
            frame = delta.map { .delta(seq: seq, $0) }
        case .message:
            guard let seq = input.u32(), let envelope = input.envelope() else { return nil }
            return .message(seq: seq, envelope)
        case .ack: frame = input.u32().map { .ack(seq: $0) }
        case .beat: frame = input.load().map(MeshFrame.beat)
        case .bye: frame = .bye
        case .refused: frame = input.string().map(MeshFrame.refused)
        }
        // Trailing bytes mean a frame we do not understand.
        return input.atEnd ? frame : nil
    }
}

/// Big-endian fields; strings are a u16 length and UTF-8 bytes.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func u32(_ value: UInt32) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func i64(_ value: Int64) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ text: String) {
        let utf8 = text.utf8.prefix(Int(UInt16.max))
        bytes.append(UInt8(utf8.count >> 8))
        bytes.append(UInt8(utf8.count & 0xFF))
        bytes.append(contentsOf: utf8)
    }

    mutating func record(_ record: MemberRecord) {
        string(record.id)
        string(record.url)
        i64(record.incarnation)
        byte(record.left ? 1 : 0)
    }

    mutating func load(_ load: NodeLoad) {
        u32(UInt32(clamping: load.connections))
        u32(UInt32(clamping: load.users))
    }

    /// The envelope's data goes last, as the rest of the frame: no length, no copy on decode
    /// beyond the one slice.
    mutating func envelope(_ envelope: Envelope) {
        string(envelope.id)
        string(envelope.from)
        switch envelope.address {
        case .everyone:
            byte(0)
        case .room(let room):
            byte(1)
            string(room)
        case .user(let user):
            byte(2)
            string(user)
        }
        i64(envelope.timestamp)
        bytes.append(contentsOf: envelope.data.bytes)
    }
}

struct ByteReader {
    let bytes: [UInt8]
    var index = 0

    var atEnd: Bool { index == bytes.count }

    mutating func byte() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func u32() -> UInt32? {
        guard bytes.count - index >= 4 else { return nil }
        var value: UInt32 = 0
        for byte in bytes[index..<(index + 4)] { value = value << 8 | UInt32(byte) }
        index += 4
        return value
    }

    mutating func i64() -> Int64? {
        guard bytes.count - index >= 8 else { return nil }
        var value: UInt64 = 0
        for byte in bytes[index..<(index + 8)] { value = value << 8 | UInt64(byte) }
        index += 8
        return Int64(bitPattern: value)
    }

    /// A count, refused when the rest of the frame could not hold that many items: a forged
    /// count must not make us reserve memory.
    mutating func count(minimumBytesEach: Int) -> Int? {
        guard let value = u32(), Int(value) <= (bytes.count - index) / minimumBytesEach else { return nil }
        return Int(value)
    }

    mutating func string() -> String? {
        guard let high = byte(), let low = byte() else { return nil }
        let length = Int(high) << 8 | Int(low)
        guard bytes.count - index >= length else { return nil }
        defer { index += length }
        return String(validating: bytes[index..<(index + length)], as: UTF8.self)
    }

    mutating func record() -> MemberRecord? {
        guard let id = string(), let url = string(), let incarnation = i64(), let left = byte(), left <= 1 else { return nil }
        return MemberRecord(id: id, url: url, incarnation: incarnation, left: left == 1)
    }

    mutating func load() -> NodeLoad? {
        guard let connections = u32(), let users = u32() else { return nil }
        return NodeLoad(connections: Int(connections), users: Int(users))
    }

    mutating func envelope() -> Envelope? {
        guard let id = string(), let from = string(), let kind = byte() else { return nil }
        let address: Address
        switch kind {
        case 0: address = .everyone
        case 1:
            guard let room = string() else { return nil }
            address = .room(room)
        case 2:
            guard let user = string() else { return nil }
            address = .user(user)
        default: return nil
        }
        guard let timestamp = i64() else { return nil }
        defer { index = bytes.count }
        return Envelope(id: id, from: from, address: address, data: RawJSON(bytes: Array(bytes[index...])), timestamp: timestamp)
    }
}
