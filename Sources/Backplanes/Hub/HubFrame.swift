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
    case publish(rid: UInt32, Envelope)
    case query(rid: UInt32, HubQuery)
    case load(NodeLoad)

    // Hub to node.
    case ack(rid: UInt32)
    /// The answer to `members` (users) or `where` (node ids).
    case names(rid: UInt32, [String])
    case nodes(rid: UInt32, [NodeStatus])
    /// A message or presence event for this node's clients.
    case event(ClusterEvent)
    /// Another node joined or left the cluster.
    case node(id: String, joined: Bool)
    /// The hub will not take this link (another live link holds the node's id); it closes next.
    case refused(String)

    /// The request id of a change that wants no `ack` (the replay after a redial).
    public static let unanswered: UInt32 = 0

    private enum Kind: UInt8 {
        case hello = 1, interest, publish, query, load, ack, names, nodes, event, node, refused
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
        case .publish(let rid, let envelope):
            var out = RecordWriter(kind: Kind.publish.rawValue, capacity: 64 + envelope.data.bytes.count, allocator: allocator)
            out.u32(rid)
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
        }
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
            guard let rid = input.u32() else { return nil }
            frame = input.envelope().map { .publish(rid: rid, $0) }
        case .query:
            guard let rid = input.u32() else { return nil }
            let query: HubQuery?
            switch input.byte() {
            case 0: query = input.string().map(HubQuery.members)
            case 1: query = input.string().map(HubQuery.nodesOf)
            case 2: query = .nodes
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
        case .event: frame = input.event().map(HubFrame.event)
        case .node:
            guard let id = input.string(), let joined = input.bool() else { return nil }
            frame = .node(id: id, joined: joined)
        case .refused: frame = input.string().map(HubFrame.refused)
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
}

extension ClusterEvent {
    fileprivate var dataSize: Int {
        if case .message(let envelope) = self { envelope.data.bytes.count } else { 0 }
    }
}
