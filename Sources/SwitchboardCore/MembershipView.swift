/// A node's view of the other members of its cluster: who they are (records with incarnations),
/// what each holds (its interest), when each was last heard from, and the presence that results
/// together with this node's own interest.
///
/// A pure value: every change returns the `joined`/`left` events it causes and what the caller
/// must do; it does no I/O, starts nothing and holds no lock (the backplane that owns it does).
/// The mesh keeps one; a broker backplane that carries the same records, interest deltas and
/// heartbeats over a broker keeps one as is.
public struct MembershipView: Sendable {
    public struct Member: Sendable {
        public fileprivate(set) var record: MemberRecord
        /// Its interest: nil until it has told us (a full sync), and again once it is dropped
        /// (declared dead, superseded, or gone).
        public fileprivate(set) var interest: Interest?
        public var load = NodeLoad(connections: 0, users: 0)
        public fileprivate(set) var lastHeard: ContinuousClock.Instant

        public var isAlive: Bool { interest != nil && !record.left }
    }

    /// What taking in a record did.
    public enum Merge: Equatable, Sendable {
        /// Nothing: an invalid id, our own record, or one no newer than what we hold.
        case ignored
        /// A newer record carries our own id: node ids must be unique.
        case claimsOurID
        /// A member we did not know.
        case learned
        /// A known member restarted (newer incarnation) or said goodbye: whatever the old record
        /// held is gone (its users left presence); links to the old incarnation should close.
        case superseded(previous: MemberRecord)
    }

    public private(set) var me: MemberRecord?
    public private(set) var local = Interest()
    public private(set) var members: [String: Member] = [:]

    public init() {}

    /// This node's own record, once it knows its URL and incarnation.
    public mutating func start(as me: MemberRecord) {
        self.me = me
    }

    /// Every record known, ours first: what gossip carries.
    public var records: [MemberRecord] {
        (me.map { [$0] } ?? []) + members.values.map(\.record)
    }

    // MARK: Changes

    /// Takes in a record from gossip, a hello or a welcome.
    public mutating func merge(_ record: MemberRecord, at now: ContinuousClock.Instant = .now) -> (Merge, [ClusterEvent]) {
        guard let me, Name.isValid(record.id) else { return (.ignored, []) }
        guard record.id != me.id else {
            return (record.incarnation > me.incarnation && !record.left ? .claimsOurID : .ignored, [])
        }
        guard let known = members[record.id] else {
            members[record.id] = Member(record: record, interest: nil, lastHeard: now)
            return (.learned, [])
        }
        guard record.supersedes(known.record) else { return (.ignored, []) }
        let events = drop(record.id)
        members[record.id]?.record = record
        return (.superseded(previous: known.record), events)
    }

    /// A change to this node's own interest.
    public mutating func changeLocal(_ delta: InterestDelta) -> [ClusterEvent] {
        changePresence(touching: delta.pairs) { $0.local.apply(delta) }
    }

    /// A member's whole interest (a full sync). Nil when the member is unknown or has left;
    /// `first` when it had none before (it has just joined the view).
    public mutating func replaceInterest(of id: String, with interest: Interest, load: NodeLoad) -> (events: [ClusterEvent], first: Bool)? {
        guard let member = members[id], !member.record.left else { return nil }
        let pairs = Set((member.interest?.pairs ?? []) + interest.pairs)
        let events = changePresence(touching: pairs) { $0.members[id]?.interest = interest }
        members[id]?.load = load
        return (events, member.interest == nil)
    }

    /// One change to a member's interest; ignored until its full sync.
    public mutating func apply(_ delta: InterestDelta, from id: String) -> [ClusterEvent] {
        guard members[id]?.interest != nil else { return [] }
        return changePresence(touching: delta.pairs) { $0.members[id]?.interest?.apply(delta) }
    }

    /// Forgets a member's interest: its users leave presence. The member stays known.
    public mutating func drop(_ id: String) -> [ClusterEvent] {
        guard let interest = members[id]?.interest else { return [] }
        return changePresence(touching: Set(interest.pairs)) { $0.members[id]?.interest = nil }
    }

    /// Notes that a member was heard from; false when it is unknown.
    @discardableResult
    public mutating func heard(from id: String, at now: ContinuousClock.Instant = .now) -> Bool {
        guard members[id] != nil else { return false }
        members[id]?.lastHeard = now
        return true
    }

    public mutating func setLoad(_ load: NodeLoad, of id: String) {
        members[id]?.load = load
    }

    // MARK: Questions

    /// Live members not heard from for longer than `silence`: the caller declares them dead
    /// (`drop`).
    public func silent(at now: ContinuousClock.Instant, longerThan silence: Duration) -> [String] {
        members.filter { $0.value.isAlive && now - $0.value.lastHeard > silence }.map(\.key).sorted()
    }

    /// Live members with a recipient for `address`.
    public func members(withRecipientFor address: Address) -> [String] {
        members.filter { $0.value.isAlive && $0.value.interest?.hasRecipient(for: address) == true }.map(\.key)
    }

    /// Who is in `room` anywhere: this node and every live member.
    public func users(in room: String) -> [String] {
        var users = local.rooms[room] ?? []
        for member in members.values where member.isAlive {
            users.formUnion(member.interest?.rooms[room] ?? [])
        }
        return users.sorted()
    }

    /// The nodes, this one included, where `user` is online.
    public func nodes(of user: String) -> [String] {
        var nodes = members.values.filter { $0.isAlive && $0.interest?.users.contains(user) == true }.map(\.record.id)
        if let me, local.users.contains(user) { nodes.append(me.id) }
        return nodes.sorted()
    }

    public func isPresent(_ pair: RoomMember) -> Bool {
        local.contains(pair.user, in: pair.room)
            || members.values.contains { $0.isAlive && $0.interest?.contains(pair.user, in: pair.room) == true }
    }

    /// Runs `body` and returns the `joined`/`left` events it causes among `pairs`: a user's first
    /// node entering a room, or its last one leaving.
    private mutating func changePresence(touching pairs: some Collection<RoomMember>, _ body: (inout Self) -> Void) -> [ClusterEvent] {
        let before = pairs.map(isPresent)
        body(&self)
        return zip(pairs, before).compactMap { pair, was in
            let now = isPresent(pair)
            guard now != was else { return nil }
            return now ? .joined(room: pair.room, user: pair.user) : .left(room: pair.room, user: pair.user)
        }
    }
}

extension InterestDelta {
    /// The room membership it touches, if any.
    public var pairs: [RoomMember] {
        switch self {
        case .online, .offline: []
        case .joined(let room, let user), .left(let room, let user): [RoomMember(room: room, user: user)]
        }
    }
}

/// A member of the mesh as gossip carries it. `incarnation` grows each time the node starts
/// (it is the start time in milliseconds), so a restarted node supersedes its old self.
public struct MemberRecord: Hashable, Sendable {
    public var id: String
    /// The node's client WebSocket URL; its cluster endpoint is the same host and port.
    public var url: String
    public var incarnation: Int64
    /// Set when the node said goodbye: peers stop dialling it until a newer incarnation appears.
    public var left: Bool

    public init(id: String, url: String, incarnation: Int64, left: Bool = false) {
        self.id = id
        self.url = url
        self.incarnation = incarnation
        self.left = left
    }

    /// Whether this record should replace `other` (same id): a newer incarnation wins, and at the
    /// same incarnation a goodbye wins.
    public func supersedes(_ other: MemberRecord) -> Bool {
        incarnation > other.incarnation || (incarnation == other.incarnation && left && !other.left)
    }
}
