import SwitchboardCore

/// The in-memory "network" of an embedded cluster: N nodes in one process share one of these.
/// It holds every node's interest and presence, and delivers events by calling the receivers of
/// the nodes that have a recipient. Being an actor, it delivers in the order it was called.
///
/// It also keeps the history of rooms and inboxes (`StreamStore`): a sequenced message gets its
/// offset here and goes to every node with a recipient, its sender's included, so that local and
/// remote recipients see one order.
public actor EmbeddedCluster {
    struct Member {
        var info: NodeInfo
        var receiver: any ClusterReceiver
        var load = NodeLoad(connections: 0, users: 0)
        var interest = Interest()
    }

    private var members: [String: Member] = [:]
    /// Every node that ever joined, for `/api/nodes` (those that left show `alive: false`).
    private var departed: [String: NodeInfo] = [:]

    /// Messages that crossed from one node to another, for tests and metrics.
    public private(set) var crossings = 0

    public nonisolated let history: HistoryPolicy
    private var store: StreamStore

    public init(history: HistoryPolicy = .standard) {
        self.history = history
        self.store = StreamStore(policy: history)
    }

    /// A backplane for one node of this cluster.
    public nonisolated func backplane() -> EmbeddedBackplane {
        EmbeddedBackplane(cluster: self)
    }

    public func join(_ node: NodeInfo, receiver: any ClusterReceiver) throws {
        guard members[node.id] == nil else { throw EmbeddedClusterError.duplicateNode(node.id) }
        departed[node.id] = nil
        members[node.id] = Member(info: node, receiver: receiver)
    }

    /// Removes `nodeID`, but only while `receiver` is still the one it joined with: a link that
    /// closes late must not remove the node's next incarnation.
    public func leave(_ nodeID: String, ifReceiver receiver: any ClusterReceiver) {
        guard let member = members[nodeID], member.receiver === receiver else { return }
        leave(nodeID)
    }

    public func leave(_ nodeID: String) {
        guard let member = members.removeValue(forKey: nodeID) else { return }
        departed[nodeID] = member.info
        for (room, users) in member.interest.rooms {
            for user in users where !isInRoom(user, room) {
                deliver(.left(room: room, user: user), to: .room(room))
            }
        }
    }

    /// Delivers a message to the nodes with a recipient. A sequenced one is numbered in its
    /// stream first and goes to its sender's node too (which did not deliver it locally).
    @discardableResult
    public func publish(_ envelope: Envelope, from nodeID: String, sequenced: Bool? = nil) -> StreamPosition? {
        guard sequenced ?? history.keeps(envelope.address), envelope.address != .everyone else {
            deliver(.message(envelope), to: envelope.address, except: nodeID)
            return nil
        }
        let stored = store.append(envelope, now: wallClockMilliseconds())
        deliver(.message(stored), to: stored.address, from: nodeID)
        return stored.position
    }

    /// See `Backplane.read`.
    public func read(_ stream: Address, after: Int64?, limit: Int) -> StreamRead {
        store.read(stream, after: after, limit: limit, now: wallClockMilliseconds())
    }

    /// Streams and messages held, for tests.
    public var storeCounts: (streams: Int, messages: Int) { (store.streamCount, store.messageCount) }

    public func userOnline(_ user: String, on nodeID: String) {
        members[nodeID]?.interest.apply(.online(user: user))
    }

    public func userOffline(_ user: String, on nodeID: String) {
        members[nodeID]?.interest.apply(.offline(user: user))
    }

    public func roomJoined(_ room: String, user: String, on nodeID: String) {
        guard members[nodeID] != nil else { return }
        let wasIn = isInRoom(user, room)
        members[nodeID]?.interest.apply(.joined(room: room, user: user))
        if !wasIn { deliver(.joined(room: room, user: user), to: .room(room)) }
    }

    public func roomLeft(_ room: String, user: String, on nodeID: String) {
        guard members[nodeID]?.interest.apply(.left(room: room, user: user)) == true else { return }
        if !isInRoom(user, room) { deliver(.left(room: room, user: user), to: .room(room)) }
    }

    public func members(of room: String) -> [String] {
        var users: Set<String> = []
        for member in members.values { users.formUnion(member.interest.rooms[room] ?? []) }
        return users.sorted()
    }

    public func nodes(of user: String) -> [String] {
        members.values.filter { $0.interest.users.contains(user) }.map(\.info.id).sorted()
    }

    public func nodes() -> [NodeStatus] {
        let alive = members.values.map { NodeStatus(info: $0.info, load: $0.load, alive: true) }
        let dead = departed.values.map { NodeStatus(info: $0, load: NodeLoad(connections: 0, users: 0), alive: false) }
        return (alive + dead).sorted { $0.info.id < $1.info.id }
    }

    public func report(_ load: NodeLoad, for nodeID: String) {
        members[nodeID]?.load = load
    }

    private func isInRoom(_ user: String, _ room: String) -> Bool {
        members.values.contains { $0.interest.contains(user, in: room) }
    }

    /// Targeted delivery: only nodes with a recipient for the address get the event (`except`
    /// skips the sender's node; `from` only keeps it out of the count of crossings).
    private func deliver(_ event: ClusterEvent, to address: Address, except sender: String? = nil, from origin: String? = nil) {
        for (id, member) in members where id != sender && member.interest.hasRecipient(for: address) {
            if let from = sender ?? origin, id != from { crossings += 1 }
            member.receiver.receive(event)
        }
    }
}

public enum EmbeddedClusterError: Error, CustomStringConvertible {
    case duplicateNode(String)
    case notJoined

    public var description: String {
        switch self {
        case .duplicateNode(let id): "a node with id \(id) is already in the cluster"
        case .notJoined: "the node has not joined its cluster"
        }
    }
}
