import SwitchboardCore

/// What one node holds: its online users and which of them are in which rooms. It is the
/// node's interest (what crosses to it) and its share of presence.
struct Interest: Sendable {
    var users: Set<String> = []
    /// room -> users of the node in it
    var rooms: [String: Set<String>] = [:]

    init() {}

    init(users: [String], rooms: [MeshFrame.RoomMember]) {
        self.users = Set(users)
        for pair in rooms { self.rooms[pair.room, default: []].insert(pair.user) }
    }

    func contains(_ user: String, in room: String) -> Bool {
        rooms[room]?.contains(user) ?? false
    }

    func hasRecipient(for address: Address) -> Bool {
        switch address {
        case .everyone: true
        case .user(let user): users.contains(user)
        case .room(let room): rooms[room] != nil
        }
    }

    /// Applies one change; returns false when it changed nothing.
    @discardableResult
    mutating func apply(_ delta: InterestDelta) -> Bool {
        switch delta {
        case .online(let user): return users.insert(user).inserted
        case .offline(let user): return users.remove(user) != nil
        case .joined(let room, let user): return rooms[room, default: []].insert(user).inserted
        case .left(let room, let user):
            guard rooms[room]?.remove(user) != nil else { return false }
            if rooms[room]!.isEmpty { rooms[room] = nil }
            return true
        }
    }

    var pairs: [MeshFrame.RoomMember] {
        rooms.flatMap { room, users in users.map { MeshFrame.RoomMember(room: room, user: $0) } }
    }
}
