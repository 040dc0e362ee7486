/// Who a message is for.
public enum Address: Hashable, Sendable {
    case user(String)
    case room(String)
    case everyone
}

extension Address {
    /// The room's or the user's name; nil for everyone.
    public var name: String? {
        switch self {
        case .room(let name), .user(let name): name
        case .everyone: nil
        }
    }
}

/// The `data` of a message, kept as the exact JSON bytes the sender wrote: it is never decoded
/// or re-encoded on its way through the cluster.
public struct RawJSON: Hashable, Sendable {
    public var bytes: [UInt8]
    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(_ text: String) { self.bytes = Array(text.utf8) }
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// One message as it travels the cluster. Its `id` is the same at every recipient.
public struct Envelope: Hashable, Sendable {
    public var id: String
    /// The sender's user id, or `server` for the HTTP API.
    public var from: String
    public var address: Address
    public var data: RawJSON
    /// Milliseconds since the epoch, at the publishing node.
    public var timestamp: Int64
    /// Its place in its room's or user's stream, when the backplane keeps history (given by the
    /// store, never by the sender).
    public var position: StreamPosition?

    public init(
        id: String, from: String, address: Address, data: RawJSON, timestamp: Int64, position: StreamPosition? = nil
    ) {
        self.id = id
        self.from = from
        self.address = address
        self.data = data
        self.timestamp = timestamp
        self.position = position
    }
}

/// What a node receives from the cluster and hands to its local connections.
public enum ClusterEvent: Hashable, Sendable {
    case message(Envelope)
    /// A user's first connection (cluster-wide) joined the room.
    case joined(room: String, user: String)
    /// A user's last connection (cluster-wide) left the room, disconnected, or its node died.
    case left(room: String, user: String)

    /// Where the event goes.
    public var address: Address {
        switch self {
        case .message(let envelope): envelope.address
        case .joined(let room, _), .left(let room, _): .room(room)
        }
    }
}
