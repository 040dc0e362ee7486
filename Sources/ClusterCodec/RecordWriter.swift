import NIOCore
import SwitchboardCore

/// The one binary format of everything nodes tell each other through a backplane: Redis records,
/// mesh link frames and hub link frames are each a version byte, a kind byte and the fields below.
///
/// Integers are big-endian; a string is a u16 length and its UTF-8 bytes; a list is a u32 count
/// and its items. An envelope's `data` is the client's raw JSON and always goes last, as the
/// rest of the record, so it is copied once and never re-encoded.
///
/// Version 3 added the stream position of a message (history).
public enum RecordFormat {
    /// The first byte of every record. A node refuses records of another version rather than
    /// misreading them: nodes of different versions do not share a cluster.
    public static let version: UInt8 = 3
    /// What a string field may hold; longer names never reach the codec (see `Name`).
    public static let maxStringBytes = Int(UInt16.max)
}

/// Writes records into a `ByteBuffer`.
public struct RecordWriter {
    public private(set) var buffer: ByteBuffer

    /// Starts a record: the version, then its kind.
    public init(kind: UInt8, capacity: Int = 64, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        buffer = allocator.buffer(capacity: capacity)
        buffer.writeInteger(RecordFormat.version)
        buffer.writeInteger(kind)
    }

    public mutating func byte(_ value: UInt8) { buffer.writeInteger(value) }
    public mutating func bool(_ value: Bool) { buffer.writeInteger(value ? 1 : 0 as UInt8) }
    public mutating func u32(_ value: UInt32) { buffer.writeInteger(value) }
    public mutating func i64(_ value: Int64) { buffer.writeInteger(value) }
    public mutating func count(_ value: Int) { buffer.writeInteger(UInt32(clamping: value)) }

    /// A string, cut at `RecordFormat.maxStringBytes` (on a character boundary it may not be;
    /// the reader refuses such a string rather than guess).
    public mutating func string(_ text: String) {
        let utf8 = text.utf8.prefix(RecordFormat.maxStringBytes)
        buffer.writeInteger(UInt16(utf8.count))
        buffer.writeBytes(utf8)
    }

    public mutating func strings(_ list: [String]) {
        count(list.count)
        for item in list { string(item) }
    }

    public mutating func address(_ address: Address) {
        switch address {
        case .everyone:
            byte(0)
        case .room(let room):
            byte(1)
            string(room)
        case .user(let user):
            byte(2)
            string(user)
        }
    }

    /// An envelope; its data is the rest of the record, so nothing may be written after it.
    public mutating func envelope(_ envelope: Envelope) {
        string(envelope.id)
        string(envelope.from)
        address(envelope.address)
        i64(envelope.timestamp)
        position(envelope.position)
        buffer.writeBytes(envelope.data.bytes)
    }

    /// An envelope that is not last: its length first.
    public mutating func sizedEnvelope(_ envelope: Envelope) {
        var inner = RecordWriter(kind: 0, capacity: 64 + envelope.data.bytes.count)
        inner.envelope(envelope)
        inner.buffer.moveReaderIndex(forwardBy: 2)  // no version and kind inside
        u32(UInt32(inner.buffer.readableBytes))
        buffer.writeImmutableBuffer(inner.buffer)
    }

    /// A whole record (its own version and kind included) inside this one, its length first:
    /// how several records travel as one.
    public mutating func sizedRecord(_ record: ByteBuffer) {
        u32(UInt32(record.readableBytes))
        buffer.writeImmutableBuffer(record)
    }

    /// A batch record of kind `kind`: records encoded already, in their order (read back by
    /// `RecordReader.batch`).
    public static func batch(
        kind: UInt8, of records: [ByteBuffer], allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var out = RecordWriter(kind: kind, capacity: 8 + records.reduce(0) { $0 + 4 + $1.readableBytes }, allocator: allocator)
        out.count(records.count)
        for record in records { out.sizedRecord(record) }
        return out.buffer
    }

    /// What a stream read found: its top and messages.
    public mutating func streamRead(_ read: StreamRead) {
        string(read.top.epoch)
        i64(read.top.offset)
        count(read.messages.count)
        for message in read.messages { sizedEnvelope(message) }
    }

    /// A stream position, or its absence (a flag byte first).
    public mutating func position(_ position: StreamPosition?) {
        guard let position else { return bool(false) }
        bool(true)
        string(position.epoch)
        i64(position.offset)
    }

    public mutating func member(_ record: MemberRecord) {
        string(record.id)
        string(record.url)
        i64(record.incarnation)
        bool(record.left)
    }

    public mutating func load(_ load: NodeLoad) {
        u32(UInt32(clamping: load.connections))
        u32(UInt32(clamping: load.users))
    }

    public mutating func node(_ node: NodeInfo) {
        string(node.id)
        string(node.url)
    }

    public mutating func status(_ status: NodeStatus) {
        node(status.info)
        load(status.load)
        bool(status.alive)
    }

    public mutating func roomMembers(_ pairs: [RoomMember]) {
        count(pairs.count)
        for pair in pairs {
            string(pair.room)
            string(pair.user)
        }
    }

    public mutating func delta(_ delta: InterestDelta) {
        switch delta {
        case .online(let user):
            byte(0)
            string(user)
        case .offline(let user):
            byte(1)
            string(user)
        case .joined(let room, let user):
            byte(2)
            string(room)
            string(user)
        case .left(let room, let user):
            byte(3)
            string(room)
            string(user)
        }
    }

    /// A presence event or a message.
    public mutating func event(_ event: ClusterEvent) {
        switch event {
        case .message(let envelope):
            byte(0)
            self.envelope(envelope)
        case .joined(let room, let user):
            byte(1)
            string(room)
            string(user)
        case .left(let room, let user):
            byte(2)
            string(room)
            string(user)
        }
    }
}
