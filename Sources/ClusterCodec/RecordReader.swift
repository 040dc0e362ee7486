import NIOCore
import SwitchboardCore

/// Reads the fields `RecordWriter` writes. Every read returns nil for input that is short,
/// malformed or not UTF-8 where text is due; it never traps, and a forged count cannot make it
/// reserve memory the record could not fill.
public struct RecordReader {
    private var buffer: ByteBuffer

    /// Checks the version and returns the reader with the record's kind, or nil.
    public init?(_ buffer: ByteBuffer) {
        self.buffer = buffer
        guard self.buffer.readInteger(as: UInt8.self) == RecordFormat.version else { return nil }
    }

    public init?(_ bytes: [UInt8]) {
        self.init(ByteBuffer(bytes: bytes))
    }

    /// Reads a part of a record (no version byte).
    init(body: ByteBuffer) {
        self.buffer = body
    }

    /// Nothing is left: a record with trailing bytes is one we do not understand.
    public var atEnd: Bool { buffer.readableBytes == 0 }

    public mutating func byte() -> UInt8? { buffer.readInteger() }
    public mutating func u32() -> UInt32? { buffer.readInteger() }
    public mutating func i64() -> Int64? { buffer.readInteger() }

    public mutating func bool() -> Bool? {
        switch byte() {
        case 0: false
        case 1: true
        default: nil
        }
    }

    /// A count of items that each take at least `minimumBytesEach` bytes.
    public mutating func count(minimumBytesEach: Int) -> Int? {
        guard let value = u32(), Int(value) <= buffer.readableBytes / max(1, minimumBytesEach) else { return nil }
        return Int(value)
    }

    public mutating func string() -> String? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            let bytes = buffer.getSlice(at: buffer.readerIndex + 2, length: Int(length))
        else { return nil }
        guard let text = String(validating: bytes.readableBytesView, as: UTF8.self) else { return nil }
        buffer.moveReaderIndex(forwardBy: 2 + Int(length))
        return text
    }

    public mutating func strings() -> [String]? {
        guard let count = count(minimumBytesEach: 2) else { return nil }
        var list: [String] = []
        list.reserveCapacity(count)
        for _ in 0..<count {
            guard let item = string() else { return nil }
            list.append(item)
        }
        return list
    }

    public mutating func address() -> Address? {
        switch byte() {
        case 0: .everyone
        case 1: string().map(Address.room)
        case 2: string().map(Address.user)
        default: nil
        }
    }

    /// An envelope, whose data is the rest of the record.
    public mutating func envelope() -> Envelope? {
        guard let id = string(), let from = string(), let address = address(), let timestamp = i64(),
            let position = position()
        else { return nil }
        let data = buffer.readBytes(length: buffer.readableBytes) ?? []
        return Envelope(
            id: id, from: from, address: address, data: RawJSON(bytes: data), timestamp: timestamp, position: position)
    }

    /// An envelope written with `sizedEnvelope`.
    public mutating func sizedEnvelope() -> Envelope? {
        guard let length = u32(), let slice = buffer.readSlice(length: Int(length)) else { return nil }
        var inner = RecordReader(body: slice)
        return inner.envelope()
    }

    /// The bytes of a record written with `sizedRecord`, to be decoded by its own reader.
    public mutating func sizedRecord() -> ByteBuffer? {
        guard let length = u32() else { return nil }
        return buffer.readSlice(length: Int(length))
    }

    /// The rest of a batch record: a count, then that many whole records, each decoded by
    /// `decode`. Nil when malformed, empty, or when a record is itself a batch (one level keeps
    /// the reader's work bounded).
    public mutating func batch<Frame>(_ decode: (ByteBuffer) -> Frame?, isBatch: (Frame) -> Bool) -> [Frame]? {
        // Each record takes at least its length, version and kind.
        guard let count = count(minimumBytesEach: 6), count > 0 else { return nil }
        var frames: [Frame] = []
        frames.reserveCapacity(count)
        for _ in 0..<count {
            guard let bytes = sizedRecord(), let frame = decode(bytes), !isBatch(frame) else { return nil }
            frames.append(frame)
        }
        return frames
    }

    public mutating func streamRead() -> StreamRead? {
        guard let epoch = string(), !epoch.isEmpty, let top = i64(), top >= 0,
            let count = count(minimumBytesEach: 4)
        else { return nil }
        var messages: [Envelope] = []
        for _ in 0..<count {
            guard let message = sizedEnvelope(), message.position != nil else { return nil }
            messages.append(message)
        }
        return StreamRead(top: StreamPosition(epoch: epoch, offset: top), messages: messages)
    }

    /// A stream position or its absence; nil (the outer optional) when malformed. A position
    /// is only ever given by a store: its offset is at least 1.
    public mutating func position() -> StreamPosition?? {
        guard let present = bool() else { return nil }
        guard present else { return .some(nil) }
        guard let epoch = string(), !epoch.isEmpty, let offset = i64(), offset >= 1 else { return nil }
        return .some(StreamPosition(epoch: epoch, offset: offset))
    }

    public mutating func member() -> MemberRecord? {
        guard let id = string(), let url = string(), let incarnation = i64(), let left = bool() else { return nil }
        return MemberRecord(id: id, url: url, incarnation: incarnation, left: left)
    }

    public mutating func load() -> NodeLoad? {
        guard let connections = u32(), let users = u32() else { return nil }
        return NodeLoad(connections: Int(connections), users: Int(users))
    }

    public mutating func node() -> NodeInfo? {
        guard let id = string(), let url = string() else { return nil }
        return NodeInfo(id: id, url: url)
    }

    public mutating func status() -> NodeStatus? {
        guard let info = node(), let load = load(), let alive = bool() else { return nil }
        return NodeStatus(info: info, load: load, alive: alive)
    }

    public mutating func delta() -> InterestDelta? {
        switch byte() {
        case 0: string().map { .online(user: $0) }
        case 1: string().map { .offline(user: $0) }
        case 2: roomMember().map { .joined(room: $0.room, user: $0.user) }
        case 3: roomMember().map { .left(room: $0.room, user: $0.user) }
        default: nil
        }
    }

    public mutating func roomMember() -> RoomMember? {
        guard let room = string(), let user = string() else { return nil }
        return RoomMember(room: room, user: user)
    }

    /// A counted list of room memberships (what a node holds, in a mesh sync or a broker announce).
    public mutating func roomMembers() -> [RoomMember]? {
        guard let count = count(minimumBytesEach: 4) else { return nil }
        var pairs: [RoomMember] = []
        for _ in 0..<count {
            guard let pair = roomMember() else { return nil }
            pairs.append(pair)
        }
        return pairs
    }

    public mutating func event() -> ClusterEvent? {
        switch byte() {
        case 0: envelope().map(ClusterEvent.message)
        case 1: roomMember().map { .joined(room: $0.room, user: $0.user) }
        case 2: roomMember().map { .left(room: $0.room, user: $0.user) }
        default: nil
        }
    }
}
