/// A node of the cluster as the others see it.
public struct NodeInfo: Hashable, Sendable {
    public var id: String
    /// The WebSocket URL clients use to reach this node, e.g. `ws://127.0.0.1:8080/ws`.
    public var url: String
    public init(id: String, url: String) {
        self.id = id
        self.url = url
    }
}

/// A node's load, reported to the backplane so that `/api/nodes` and `/api/assign` can read it.
public struct NodeLoad: Hashable, Sendable {
    public var connections: Int
    public var users: Int
    public init(connections: Int, users: Int) {
        self.connections = connections
        self.users = users
    }
}

public struct NodeStatus: Hashable, Sendable {
    public var info: NodeInfo
    public var load: NodeLoad
    public var alive: Bool
    public init(info: NodeInfo, load: NodeLoad, alive: Bool) {
        self.info = info
        self.load = load
        self.alive = alive
    }
}

/// Receives what the backplane delivers to this node. Called from any thread; must not block.
public protocol ClusterReceiver: AnyObject, Sendable {
    func receive(_ event: ClusterEvent)
}

/// The seam between a node and the rest of its cluster.
///
/// A node tells the backplane which users it holds (`userOnline`/`userOffline`) and which users
/// are in which rooms on it (`roomJoined`/`roomLeft`). That one set of facts serves twice: it is
/// the node's *interest* (a message crosses to a node only if that node has a recipient; broadcast
/// aside), and it is *presence* (who is in a room, which nodes a user is on). Each backplane keeps
/// it in its own way: in memory, in Redis, or spread among peers.
///
/// The backplane turns presence changes into `joined`/`left` events: `joined` when a user's first
/// node enters a room, `left` when the last one leaves it or dies, and delivers those to every
/// node with an interest in the room, this one included. Messages handed to `publish` go to the
/// *other* interested nodes; the router delivers them locally itself.
///
/// Calls that return have taken effect cluster-wide: once `roomJoined` returns, every message
/// published to that room on any node reaches this node.
public protocol Backplane: Sendable {
    /// The backplane's background work (connections and their reconnection, links, heartbeats,
    /// failure detection), as the `run` of a swift-service-lifecycle `Service`: every loop is a
    /// child task of this call, which returns once its task is cancelled. The node runs it for
    /// its whole life, from before `join` until after `leave`.
    func run() async
    /// Joins the cluster as `node`; from then on events for this node go to `receiver`.
    func join(node: NodeInfo, receiver: any ClusterReceiver) async throws
    /// Leaves the cluster at once: this node's users leave presence (with `left` events).
    func leave() async

    /// Hands a message to every other node with a recipient for its address.
    func publish(_ envelope: Envelope) async throws
    /// Like `publish`, but returns once the message is queued, in call order, so that a sender
    /// can have several on their way; `wait()` then says whether the cluster took it.
    func submit(_ envelope: Envelope) -> PendingPublish

    /// The first connection of `user` opened on this node.
    func userOnline(_ user: String) async throws
    /// `userOnline`, and with `thenRead` the top of the user's inbox read after it, in the same
    /// round trip where the backplane can (the welcome carries the top). Nil when it was not
    /// read: the caller reads it itself. A failed read does not fail `userOnline`.
    func userOnline(_ user: String, thenRead: Bool) async throws -> StreamRead?
    /// The last connection of `user` on this node closed.
    func userOffline(_ user: String) async throws
    /// The first connection of `user` on this node joined `room`.
    func roomJoined(_ room: String, user: String) async throws
    /// The last connection of `user` on this node left `room`.
    func roomLeft(_ room: String, user: String) async throws
    /// Several `roomJoined`/`roomLeft` of one room, taking effect in this order, in as few round
    /// trips as the backplane can. The router sends a room's changes this way, a batch at a time
    /// (see `MessageRouter`). When it throws, any prefix of the changes may have taken effect.
    func roomChanged(_ room: String, _ changes: [RoomChange]) async throws
    /// `roomChanged`, and with `thenRead` the room's stream top read after the changes, in the
    /// same round trip where the backplane can (a join's `ok` carries the top). Nil when it was
    /// not read: the caller reads it itself. A failed read does not fail the changes.
    func roomChanged(_ room: String, _ changes: [RoomChange], thenRead: Bool) async throws -> StreamRead?

    /// Users in `room`, cluster-wide, sorted.
    func members(of room: String) async throws -> [String]
    /// Ids of the nodes that hold a connection of `user`, sorted.
    func nodes(of user: String) async throws -> [String]
    /// Every node known to the cluster.
    func nodes() async throws -> [NodeStatus]
    /// Publishes this node's load.
    func report(_ load: NodeLoad) async

    // History (PROTOCOL.md, "History and recovery").

    /// How much history this backplane keeps; `.off` when it keeps none. With history on, a
    /// message to a room or a user is *sequenced*: its stream's store gives it its position, and
    /// the backplane delivers it to every node with a recipient, this one included, in offset
    /// order. The router then does not deliver it locally itself, so that a local recipient gets
    /// the same offset, in the same order, as a remote one.
    var history: HistoryPolicy { get }
    /// Reads one stream (a room, or a user's inbox): its top and the messages it still keeps
    /// after `after` (or, without it, the last ones), at most `limit`. Throws
    /// `HistoryError.unsupported` when the backplane keeps none.
    func read(_ stream: Address, after: Int64?, limit: Int) async throws -> StreamRead
}

/// One user's presence in a room on this node, as it changes.
public enum RoomChange: Hashable, Sendable {
    case joined(user: String)
    case left(user: String)

    public func delta(in room: String) -> InterestDelta {
        switch self {
        case .joined(let user): .joined(room: room, user: user)
        case .left(let user): .left(room: room, user: user)
        }
    }
}

/// A message handed to a backplane whose acceptance has not been awaited yet.
public struct PendingPublish: Sendable {
    private let acceptance: @Sendable () async throws -> Void

    public init(_ acceptance: @escaping @Sendable () async throws -> Void) {
        self.acceptance = acceptance
    }

    /// Returns once the cluster has the message; throws if it could not take it.
    public func wait() async throws {
        try await acceptance()
    }
}

extension Backplane {
    /// A backplane keeps no history unless it says so.
    public var history: HistoryPolicy { .off }

    public func read(_ stream: Address, after: Int64?, limit: Int) async throws -> StreamRead {
        throw HistoryError.unsupported
    }

    /// One change after the other: a backplane that can send several in one round trip says so.
    public func roomChanged(_ room: String, _ changes: [RoomChange]) async throws {
        for change in changes {
            switch change {
            case .joined(let user): try await roomJoined(room, user: user)
            case .left(let user): try await roomLeft(room, user: user)
            }
        }
    }

    /// Online, and no read: the caller reads the top itself.
    public func userOnline(_ user: String, thenRead: Bool) async throws -> StreamRead? {
        try await userOnline(user)
        return nil
    }

    /// The changes, and no read: the caller reads the top itself.
    public func roomChanged(_ room: String, _ changes: [RoomChange], thenRead: Bool) async throws -> StreamRead? {
        try await roomChanged(room, changes)
        return nil
    }

    /// A backplane with no background work of its own waits to be cancelled.
    public func run() async {
        await untilCancelled()
    }

    /// Without a queue of its own, a backplane publishes when the sender waits: a sender that
    /// waits for each message in turn still gets them out in order, only without overlap.
    public func submit(_ envelope: Envelope) -> PendingPublish {
        PendingPublish { try await self.publish(envelope) }
    }
}
