import Synchronization

/// The backplane refused a message after it had reached this node's own recipients.
public struct NotHandedToCluster: Error, CustomStringConvertible {
    public let deliveredLocally: Int
    public let reason: any Error
    public var description: String {
        "not handed to the cluster (\(reason)); delivered to \(deliveredLocally) connection(s) on this node only"
    }
}

/// A connection held by this node, as the router sees it.
public protocol LocalEndpoint: AnyObject, Sendable {
    var user: String { get }
}

/// Writes events to local connections. Implementations encode an event once and write the same
/// bytes to every endpoint, and never wait on a slow one.
public protocol LocalDelivery: Sendable {
    associatedtype Endpoint: LocalEndpoint
    func deliver(_ event: ClusterEvent, to endpoints: [Endpoint])
}

/// Decides where a message goes: to this node's own connections, and through the backplane to
/// the other nodes that have a recipient. It keeps the local subscriptions and tells the
/// backplane when this node's interest in a user or a room begins or ends.
public final class MessageRouter<Delivery: LocalDelivery>: ClusterReceiver, Sendable {
    public typealias Endpoint = Delivery.Endpoint

    private struct Room {
        var endpoints: [ObjectIdentifier: Endpoint] = [:]
        /// Local connections per user in this room: presence changes only at 0 <-> 1.
        var connectionsPerUser: [String: Int] = [:]
        /// `endpoints.values` as an array, kept between membership changes: a room's messages
        /// share it instead of copying (and retaining) every endpoint each time.
        var snapshot: [Endpoint]?
    }

    private struct State {
        var endpoints: [ObjectIdentifier: Endpoint] = [:]
        /// A user's connections here; most users have one, held without an array.
        var users: [String: UserConnections] = [:]
        var rooms: [String: Room] = [:]
        var roomsOfEndpoint: [ObjectIdentifier: Set<String>] = [:]
        var commits = RoomCommits()
    }

    /// One user's connections on this node. Most users have one: held inline, it costs no
    /// array (48 bytes per idle user, and an allocation per connection under churn).
    enum UserConnections {
        case one(Endpoint)
        case many([Endpoint])

        var all: [Endpoint] {
            switch self {
            case .one(let endpoint): [endpoint]
            case .many(let endpoints): endpoints
            }
        }

        func adding(_ endpoint: Endpoint) -> UserConnections {
            .many(all + [endpoint])
        }

        /// Without `endpoint`; nil when none is left.
        func removing(_ endpoint: Endpoint) -> UserConnections? {
            if case .one(let only) = self { return only === endpoint ? nil : self }
            let left = all.filter { $0 !== endpoint }
            switch left.count {
            case 0: return nil
            case 1: return .one(left[0])
            default: return .many(left)
            }
        }
    }

    private let state = Mutex(State())
    /// Serialises a user's online/offline, so that the backplane sees them in the order they
    /// happened here; different users overlap (each may take round trips). A room's joins and
    /// leaves are ordered by `State.commits` instead, without a lock held across a round trip.
    private let membership = KeyedAsyncMutex()
    public let backplane: any Backplane
    public let delivery: Delivery

    public init(backplane: any Backplane, delivery: Delivery) {
        self.backplane = backplane
        self.delivery = delivery
    }

    // MARK: Membership

    /// Registers a new connection. When it returns, a message to its user from any node reaches it.
    /// With `readingInbox`, the top of the user's inbox comes back when the backplane read it in
    /// the same round trip as the user's registration (nil: the caller reads it).
    @discardableResult
    public func connect(_ endpoint: Endpoint, readingInbox: Bool = false) async throws -> StreamRead? {
        let inbox = try await membership.withLock(Self.userKey(endpoint.user)) { () async throws -> StreamRead? in
            let first = state.withLock { state -> Bool in
                guard state.endpoints.updateValue(endpoint, forKey: ObjectIdentifier(endpoint)) == nil else { return false }
                guard let others = state.users[endpoint.user] else {
                    state.users[endpoint.user] = .one(endpoint)
                    return true
                }
                state.users[endpoint.user] = others.adding(endpoint)
                return false
            }
            guard first else { return nil }
            return try await backplane.userOnline(endpoint.user, thenRead: readingInbox)
        }
        await backplane.report(load)
        return inbox
    }

    /// Removes a connection and everything it joined. Safe to call more than once.
    public func disconnect(_ endpoint: Endpoint) async {
        let key = ObjectIdentifier(endpoint)
        await membership.withLock(Self.userKey(endpoint.user)) {
            let rooms = state.withLock { state -> Set<String>? in
                guard state.endpoints.removeValue(forKey: key) != nil else { return nil }
                return state.roomsOfEndpoint.removeValue(forKey: key) ?? []
            }
            guard let rooms else { return }
            // Errors here are the backplane's to log and repair; the connection is gone anyway.
            // One room after the other: no turn in one room's queue is held while waiting in another.
            for room in rooms {
                _ = try? await commit(in: room) { state in
                    let last = Self.remove(key, user: endpoint.user, from: room, in: &state)
                    return RoomCommits.Entry(change: last ? .left(user: endpoint.user) : nil, joining: nil, user: endpoint.user)
                }
            }
            let lastOfUser = state.withLock { state -> Bool in
                guard let connections = state.users.removeValue(forKey: endpoint.user) else { return false }
                guard let left = connections.removing(endpoint) else { return true }
                state.users[endpoint.user] = left
                return false
            }
            if lastOfUser {
                try? await backplane.userOffline(endpoint.user)
            }
        }
        await backplane.report(load)
    }

    /// Subscribes a connection to a room. Returns false if it was subscribed already. When it
    /// returns, every message published to the room from any node reaches the connection.
    @discardableResult
    public func join(_ endpoint: Endpoint, room: String) async throws -> Bool {
        try await join(endpoint, room: room, readingTop: false).changed
    }

    /// `join`; with `readingTop`, the room's stream top is read after the join's batch, in the
    /// same round trip where the backplane can (`top` nil: not read, the caller reads it).
    public func join(_ endpoint: Endpoint, room: String, readingTop: Bool) async throws -> (changed: Bool, top: StreamRead?) {
        let key = ObjectIdentifier(endpoint)
        return try await commit(in: room) { state in
            guard state.endpoints[key] != nil, state.roomsOfEndpoint[key, default: []].insert(room).inserted else { return nil }
            state.rooms[room, default: Room()].endpoints[key] = endpoint
            state.rooms[room]!.snapshot = nil
            let count = (state.rooms[room]!.connectionsPerUser[endpoint.user] ?? 0) + 1
            state.rooms[room]!.connectionsPerUser[endpoint.user] = count
            // A later connection of the same user still waits for the batch that carries the
            // first one's join: the node is interested in the room only from then on.
            return RoomCommits.Entry(
                change: count == 1 ? .joined(user: endpoint.user) : nil, joining: key, user: endpoint.user, wantsTop: readingTop)
        }
    }

    /// Unsubscribes a connection from a room. Returns false if it was not subscribed.
    @discardableResult
    public func leave(_ endpoint: Endpoint, room: String) async throws -> Bool {
        let key = ObjectIdentifier(endpoint)
        return try await commit(in: room) { state in
            guard state.roomsOfEndpoint[key]?.remove(room) != nil else { return nil }
            let last = Self.remove(key, user: endpoint.user, from: room, in: &state)
            return RoomCommits.Entry(change: last ? .left(user: endpoint.user) : nil, joining: nil, user: endpoint.user)
        }.changed
    }

    /// Makes a membership change here (`change` returns nil when there is none) and, in the
    /// same step, queues it for the room's next batch to the backplane; returns once that batch
    /// is answered. Returns whether there was a change, and the room's top when an entry asked
    /// for it and its batch read it.
    private func commit(in room: String, _ change: (inout State) -> RoomCommits.Entry?) async throws -> (changed: Bool, top: StreamRead?) {
        var changed = false
        let turn = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RoomCommits.Turn, any Error>) in
            let now = state.withLock { state -> RoomCommits.Turn? in
                guard let entry = change(&state) else { return .done(nil) }
                changed = true
                // A leave that changes no presence has nothing to wait for.
                if entry.change == nil && entry.joining == nil { return .done(nil) }
                if state.commits.claim(room) { return .send(entry, []) }
                state.commits.wait(RoomCommits.Waiter(entry: entry, continuation: continuation), for: room)
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
        switch turn {
        case .send(let entry, let behind): return (changed, try await send(entry, then: behind, in: room))
        case .done(let top): return (changed, top)
        }
    }

    /// Sends one batch of a room's changes, settles everyone in it, and hands the turn on.
    /// Returns the room's top when the batch read it (a join in it asked for it).
    private func send(_ first: RoomCommits.Entry, then behind: [RoomCommits.Waiter], in room: String) async throws -> StreamRead? {
        let changes = ([first.change] + behind.map(\.entry.change)).compactMap { $0 }
        let readsTop = first.wantsTop || behind.contains { $0.entry.wantsTop }
        var failure: (any Error)?
        var top: StreamRead?
        if !changes.isEmpty {
            do { top = try await backplane.roomChanged(room, changes, thenRead: readsTop) } catch { failure = error }
        }
        let next = state.withLock { state in
            var next = state.commits.finish(room)
            guard failure != nil else { return next }
            // Undone, so that local state and the backplane agree: these joins did not happen.
            var untold: Set<String> = []
            for entry in [first] + behind.map(\.entry) {
                if case .joined(let user) = entry.change { untold.insert(user) }
                guard let key = entry.joining, state.roomsOfEndpoint[key]?.remove(room) != nil else { continue }
                _ = Self.remove(key, user: entry.user, from: room, in: &state)
            }
            // A later connection of such a user, still waiting, now makes the user's first join.
            for index in next.indices where next[index].entry.joining != nil && next[index].entry.change == nil {
                let user = next[index].entry.user
                guard untold.contains(user), state.rooms[room]?.connectionsPerUser[user] != nil else { continue }
                next[index].entry.change = .joined(user: user)
                untold.remove(user)
            }
            return next
        }
        for waiter in behind {
            if let failure { waiter.continuation.resume(throwing: failure) } else { waiter.continuation.resume(returning: .done(top)) }
        }
        if let head = next.first { head.continuation.resume(returning: .send(head.entry, Array(next.dropFirst()))) }
        if let failure { throw failure }
        return top
    }

    private static func userKey(_ user: String) -> String { "user " + user }

    /// Removes one endpoint from a room; true when it was its user's last connection there.
    private static func remove(_ key: ObjectIdentifier, user: String, from room: String, in state: inout State) -> Bool {
        guard var entry = state.rooms[room], entry.endpoints.removeValue(forKey: key) != nil else { return false }
        entry.snapshot = nil
        let count = (entry.connectionsPerUser[user] ?? 1) - 1
        entry.connectionsPerUser[user] = count > 0 ? count : nil
        state.rooms[room] = entry.endpoints.isEmpty ? nil : entry
        return count == 0
    }

    // MARK: Routing

    /// Delivers a message to this node's recipients, then hands it to the backplane for the others.
    /// Calls from one task are delivered everywhere in the order they were made.
    public func route(_ envelope: Envelope) async throws {
        try await submit(envelope).wait()
    }

    /// `route` without the wait: local recipients have the message when this returns (unless
    /// the backplane sequences it: then they get it from the backplane, with its offset), and
    /// the backplane has it queued behind any message submitted before it.
    public func submit(_ envelope: Envelope) -> PendingPublish {
        let event = ClusterEvent.message(envelope)
        let sequenced = backplane.history.keeps(envelope.address)
        let local = sequenced ? [] : recipients(for: event.address)
        if !local.isEmpty {
            delivery.deliver(event, to: local)
        }
        let pending = backplane.submit(envelope)
        return PendingPublish {
            do {
                try await pending.wait()
            } catch {
                // The cluster did not take it: local recipients still get it (without an offset,
                // as it has none), and the sender hears how far it went.
                var delivered = local.count
                if sequenced {
                    let now = self.recipients(for: event.address)
                    if !now.isEmpty { self.delivery.deliver(event, to: now) }
                    delivered = now.count
                }
                throw NotHandedToCluster(deliveredLocally: delivered, reason: error)
            }
        }
    }

    /// Events from the backplane: delivered to local recipients only.
    public func receive(_ event: ClusterEvent) {
        let local = recipients(for: event.address)
        if !local.isEmpty {
            delivery.deliver(event, to: local)
        }
    }

    public func recipients(for address: Address) -> [Endpoint] {
        state.withLock { state in
            switch address {
            case .everyone: Array(state.endpoints.values)
            case .room(let room):
                if let snapshot = state.rooms[room]?.snapshot {
                    snapshot
                } else if state.rooms[room] != nil {
                    Self.snapshot(of: room, in: &state)
                } else {
                    []
                }
            case .user(let user): state.users[user]?.all ?? []
            }
        }
    }

    private static func snapshot(of room: String, in state: inout State) -> [Endpoint] {
        let endpoints = Array(state.rooms[room]!.endpoints.values)
        state.rooms[room]!.snapshot = endpoints
        return endpoints
    }

    // MARK: Inspection

    /// True when `user` has a connection on any node.
    public func isOnline(_ user: String) async throws -> Bool {
        if state.withLock({ $0.users[user] != nil }) { return true }
        return try await !backplane.nodes(of: user).isEmpty
    }

    public var load: NodeLoad {
        state.withLock { NodeLoad(connections: $0.endpoints.count, users: $0.users.count) }
    }

    public func isMember(_ endpoint: Endpoint, of room: String) -> Bool {
        state.withLock { $0.roomsOfEndpoint[ObjectIdentifier(endpoint)]?.contains(room) ?? false }
    }

    /// Connections `user` holds on this node.
    public func connectionCount(of user: String) -> Int {
        state.withLock { $0.users[user]?.all.count ?? 0 }
    }

    /// Connections subscribed to `room` on this node.
    public func connectionCount(in room: String) -> Int {
        state.withLock { $0.rooms[room]?.endpoints.count ?? 0 }
    }

    public func roomCount(of endpoint: Endpoint) -> Int {
        state.withLock { $0.roomsOfEndpoint[ObjectIdentifier(endpoint)]?.count ?? 0 }
    }

    public var endpoints: [Endpoint] {
        state.withLock { Array($0.endpoints.values) }
    }

    /// This node's rooms, the most populated first (by local users, then name), at most `limit`,
    /// and how many rooms it has in all. Sorting happens outside the lock.
    public func localRooms(limit: Int) -> (rooms: [LocalRoom], total: Int) {
        let all = state.withLock { state in
            state.rooms.map { LocalRoom(name: $0.key, users: $0.value.connectionsPerUser.count, connections: $0.value.endpoints.count) }
        }
        let top = all.sorted { ($1.users, $0.name) < ($0.users, $1.name) }.prefix(limit)
        return (Array(top), all.count)
    }
}

/// A room as one node holds it: its local users and connections.
public struct LocalRoom: Hashable, Sendable {
    public var name: String
    public var users: Int
    public var connections: Int
}
