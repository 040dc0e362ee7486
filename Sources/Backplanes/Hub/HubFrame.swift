import ClusterCodec
import NIOCore
import SwitchboardCore

/// What travels on a node's link to its hub, one binary WebSocket message each, in the shared
/// record format (`ClusterCodec`). A message's `data` is the client's raw JSON, never re-encoded.
///
/// Requests (node to hub) carry a request id (`rid`); the hub answers each with `ack` once it
/// holds the change or the message, or with `names`/`nodes` for a query.
public enum HubFrame: Hashable, Sendable {
    // Node to hub.
    /// The first frame: who the node is.
    case hello(NodeInfo)
    case interest(rid: UInt32, InterestDelta)
    /// A sequenced message is numbered and kept by the hub, and comes back to its sender too.
    case publish(rid: UInt32, Envelope, sequenced: Bool)
    case query(rid: UInt32, HubQuery)
    case load(NodeLoad)

    // Hub to node.
    case ack(rid: UInt32)
    /// The answer to `members` (users) or `where` (node ids).
    case names(rid: UInt32, [String])
    case nodes(rid: UInt32, [NodeStatus])
    /// The answer to `read`.
    case stream(rid: UInt32, StreamRead)
    /// The hub keeps no history (or the read was malformed).
    case unsupported(rid: UInt32)
    /// A message or presence event for this node's clients.
    case event(ClusterEvent)
    /// Another node joined or left the cluster.
    case node(id: String, joined: Bool)
    /// The hub will not take this link (another live link holds the node's id); it closes next.
    case refused(String)

    // Node to hub.
    /// Several node-to-hub frames, each with its length, in order (not another batch): what
    /// queued up while the link's writer was busy, as one message.
    case batch([HubFrame])

    /// The request id of a change that wants no `ack` (the replay after a redial).
    public static let unanswered: UInt32 = 0

    private enum Kind: UInt8 {
        case hello = 1, interest, publish, query, load, ack, names, nodes, event, node, refused, stream, unsupported, batch
    }

    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        switch self {
        case .hello(let node):
            var out = RecordWriter(kind: Kind.hello.rawValue, allocator: allocator)
            out.node(node)
            return out.buffer
        case .interest(let rid, let delta):
            var out = RecordWriter(kind: Kind.interest.rawValue, allocator: allocator)
            out.u32(rid)
            out.delta(delta)
            return out.buffer
        case .publish(let rid, let envelope, let sequenced):
            var out = RecordWriter(kind: Kind.publish.rawValue, capacity: 64 + envelope.data.bytes.count, allocator: allocator)
            out.u32(rid)
            out.bool(sequenced)
            out.envelope(envelope)
            return out.buffer
        case .query(let rid, let query):
            var out = RecordWriter(kind: Kind.query.rawValue, allocator: allocator)
            out.u32(rid)
            switch query {
            case .members(let room):
                out.byte(0)
                out.string(room)
            case .nodesOf(let user):
                out.byte(1)
                out.string(user)
            case .nodes:
                out.byte(2)
            case .read(let stream, let after, let limit):
                out.byte(3)
                out.address(stream)
                out.i64(after ?? -1)
                out.u32(limit)
            }
            return out.buffer
        case .load(let load):
            var out = RecordWriter(kind: Kind.load.rawValue, capacity: 10, allocator: allocator)
            out.load(load)
            return out.buffer
        case .ack(let rid):
            var out = RecordWriter(kind: Kind.ack.rawValue, capacity: 6, allocator: allocator)
            out.u32(rid)
            return out.buffer
        case .names(let rid, let names):
            var out = RecordWriter(kind: Kind.names.rawValue, capacity: 16 + 16 * names.count, allocator: allocator)
            out.u32(rid)
            out.strings(names)
            return out.buffer
        case .nodes(let rid, let nodes):
            var out = RecordWriter(kind: Kind.nodes.rawValue, capacity: 16 + 48 * nodes.count, allocator: allocator)
            out.u32(rid)
            out.count(nodes.count)
            for node in nodes { out.status(node) }
            return out.buffer
        case .stream(let rid, let read):
            let size = read.messages.reduce(32) { $0 + 64 + $1.data.bytes.count }
            var out = RecordWriter(kind: Kind.stream.rawValue, capacity: size, allocator: allocator)
            out.u32(rid)
            out.streamRead(read)
            return out.buffer
        case .unsupported(let rid):
            var out = RecordWriter(kind: Kind.unsupported.rawValue, capacity: 6, allocator: allocator)
            out.u32(rid)
            return out.buffer
        case .event(let event):
            var out = RecordWriter(kind: Kind.event.rawValue, capacity: 64 + event.dataSize, allocator: allocator)
            out.event(event)
            return out.buffer
        case .node(let id, let joined):
            var out = RecordWriter(kind: Kind.node.rawValue, allocator: allocator)
            out.string(id)
            out.bool(joined)
            return out.buffer
        case .refused(let reason):
            var out = RecordWriter(kind: Kind.refused.rawValue, allocator: allocator)
            out.string(reason)
            return out.buffer
        case .batch(let frames):
            return Self.batch(encoded: frames.map { $0.encoded(allocator: allocator) }, allocator: allocator)
        }
    }

    /// One batch of frames encoded already, in their order.
    public static func batch(encoded: [ByteBuffer], allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        RecordWriter.batch(kind: Kind.batch.rawValue, of: encoded, allocator: allocator)
    }

    public static func decode(_ bytes: [UInt8]) -> HubFrame? {
        decode(ByteBuffer(bytes: bytes))
    }

    /// Decodes one link message; nil for anything malformed (never traps).
    public static func decode(_ buffer: ByteBuffer) -> HubFrame? {
        guard var input = RecordReader(buffer), let raw = input.byte(), let kind = Kind(rawValue: raw) else { return nil }
        let frame: HubFrame?
        switch kind {
        case .hello: frame = input.node().map(HubFrame.hello)
        case .interest:
            guard let rid = input.u32() else { return nil }
            frame = input.delta().map { .interest(rid: rid, $0) }
        case .publish:
            guard let rid = input.u32(), let sequenced = input.bool() else { return nil }
            frame = input.envelope().map { .publish(rid: rid, $0, sequenced: sequenced) }
        case .query:
            guard let rid = input.u32() else { return nil }
            let query: HubQuery?
            switch input.byte() {
            case 0: query = input.string().map(HubQuery.members)
            case 1: query = input.string().map(HubQuery.nodesOf)
            case 2: query = .nodes
            case 3:
                if let stream = input.address(), let after = input.i64(), after >= -1, let limit = input.u32() {
                    query = .read(stream: stream, after: after < 0 ? nil : after, limit: limit)
                } else {
                    query = nil
                }
            default: query = nil
            }
            frame = query.map { .query(rid: rid, $0) }
        case .load: frame = input.load().map(HubFrame.load)
        case .ack: frame = input.u32().map { .ack(rid: $0) }
        case .names:
            guard let rid = input.u32() else { return nil }
            frame = input.strings().map { .names(rid: rid, $0) }
        case .nodes:
            guard let rid = input.u32(), let count = input.count(minimumBytesEach: 13) else { return nil }
            var nodes: [NodeStatus] = []
            for _ in 0..<count {
                guard let node = input.status() else { return nil }
                nodes.append(node)
            }
            frame = .nodes(rid: rid, nodes)
        case .stream:
            guard let rid = input.u32() else { return nil }
            frame = input.streamRead().map { .stream(rid: rid, $0) }
        case .unsupported: frame = input.u32().map { .unsupported(rid: $0) }
        case .event: frame = input.event().map(HubFrame.event)
        case .node:
            guard let id = input.string(), let joined = input.bool() else { return nil }
            frame = .node(id: id, joined: joined)
        case .refused: frame = input.string().map(HubFrame.refused)
        case .batch:
            frame = input.batch(decode) { if case .batch = $0 { true } else { false } }.map(HubFrame.batch)
        }
        // Trailing bytes mean a frame we do not understand.
        return input.atEnd ? frame : nil
    }
}

/// What a node asks its hub.
public enum HubQuery: Hashable, Sendable {
    case members(room: String)
    /// The nodes a user is connected to.
    case nodesOf(user: String)
    case nodes
    /// A stream's top and kept messages (`Backplane.read`).
    case read(stream: Address, after: Int64?, limit: UInt32)
}

extension ClusterEvent {
    fileprivate var dataSize: Int {
        if case .message(let envelope) = self { envelope.data.bytes.count } else { 0 }
    }
}
