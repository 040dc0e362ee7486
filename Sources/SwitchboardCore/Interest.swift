/// What one node holds: its online users and which of them are in which rooms. It is the node's
/// interest (what must cross to it) and its share of presence. Every backplane that keeps a view
/// of its peers keeps one of these per peer.
public struct Interest: Sendable, Equatable {
    public var users: Set<String> = []
    /// room -> users of the node in it; a room with no users has no entry.
    public var rooms: [String: Set<String>] = [:]

    public init() {}

    public init(users: some Sequence<String>, rooms: some Sequence<RoomMember>) {
        self.users = Set(users)
        for pair in rooms { self.rooms[pair.room, default: []].insert(pair.user) }
    }

    public func contains(_ user: String, in room: String) -> Bool {
        rooms[room]?.contains(user) ?? false
    }

    public func hasRecipient(for address: Address) -> Bool {
        switch address {
        case .everyone: true
        case .user(let user): users.contains(user)
        case .room(let room): rooms[room] != nil
        }
    }

    /// Applies one change; returns false when it changed nothing.
    @discardableResult
    public mutating func apply(_ delta: InterestDelta) -> Bool {
        switch delta {
        case .online(let user): return users.insert(user).inserted
        case .offline(let user): return users.remove(user) != nil
        case .joined(let room, let user): return rooms[room, default: []].insert(user).inserted
        case .left(let room, let user):
            guard var members = rooms[room], members.remove(user) != nil else { return false }
            rooms[room] = members.isEmpty ? nil : members
            return true
        }
    }

    /// Every room membership, as pairs.
    public var pairs: [RoomMember] {
        rooms.flatMap { room, users in users.map { RoomMember(room: room, user: $0) } }
    }
}

/// One change to a node's interest.
public enum InterestDelta: Hashable, Sendable {
    case online(user: String)
    case offline(user: String)
    case joined(room: String, user: String)
    case left(room: String, user: String)
}

/// A user in a room.
public struct RoomMember: Hashable, Sendable {
    public var room: String
    public var user: String

    public init(room: String, user: String) {
        self.room = room
        self.user = user
    }
}
