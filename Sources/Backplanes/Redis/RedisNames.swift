import SwitchboardCore

/// Channel and key names. Each name carries a hash tag (`{...}`), so that on Redis Cluster a
/// room's channel and its presence keys live in one slot and a script touching them is legal.
/// User ids and room names cannot contain braces, so a tag is always the one meant.
struct RedisNames: Sendable {
    let prefix: String

    // Channels (sharded pub/sub).
    func channel(_ address: Address) -> String {
        switch address {
        case .room(let room): "\(prefix):{r:\(room)}"
        case .user(let user): "\(prefix):{u:\(user)}"
        case .everyone: "\(prefix):{all}"
        }
    }

    func address(ofChannel channel: String) -> Address? {
        guard channel.hasPrefix(prefix + ":{"), channel.hasSuffix("}") else { return nil }
        let inner = channel.dropFirst(prefix.count + 2).dropLast()
        if inner == "all" { return .everyone }
        if inner.hasPrefix("r:") { return .room(String(inner.dropFirst(2))) }
        if inner.hasPrefix("u:") { return .user(String(inner.dropFirst(2))) }
        return nil
    }

    // Presence of a room: "user|node" members, and per user the number of nodes holding it.
    func roomMembers(_ room: String) -> String { "\(prefix):{r:\(room)}:m" }
    func roomUsers(_ room: String) -> String { "\(prefix):{r:\(room)}:c" }
    // History of a stream (a room or an inbox): its epoch and top, and its last records.
    func streamMeta(_ address: Address) -> String { channel(address) + ":s" }
    func streamLog(_ address: Address) -> String { channel(address) + ":h" }
    // Nodes holding a user.
    func userNodes(_ user: String) -> String { "\(prefix):{u:\(user)}:n" }
    // The node registry: a sorted set of node ids scored by lease deadline (ms), and per node
    // its info and what it registered (so that a survivor can clean up after it).
    var nodes: String { "\(prefix):nodes" }
    func nodeInfo(_ node: String) -> String { "\(prefix):{n:\(node)}:info" }
    func nodeRooms(_ node: String) -> String { "\(prefix):{n:\(node)}:rooms" }
    func nodeUsers(_ node: String) -> String { "\(prefix):{n:\(node)}:users" }
    func nodeCleanupClaim(_ node: String) -> String { "\(prefix):{n:\(node)}:gc" }
}

/// Scripts that keep a room's presence consistent in one step. All keys share the room's tag.
/// Given a third key (the room's channel) and a third argument (the encoded event), a script
/// also publishes the `joined`/`left` it causes, so that the event leaves Redis in the same step
/// as the change, in the same order, and costs no second round trip.
enum PresenceScripts {
    /// Adds "user|node"; returns 1 when the user was in the room on no node before.
    static let enter = """
        if redis.call('SADD', KEYS[1], ARGV[1] .. '|' .. ARGV[2]) == 1 then
          if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 1 then
            if KEYS[3] then redis.call('SPUBLISH', KEYS[3], ARGV[3]) end
            return 1
          end
        end
        return 0
        """
    /// Removes "user|node"; returns 1 when the user is now in the room on no node.
    static let exit = """
        if redis.call('SREM', KEYS[1], ARGV[1] .. '|' .. ARGV[2]) == 1 then
          if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
            redis.call('HDEL', KEYS[2], ARGV[1])
            if KEYS[3] then redis.call('SPUBLISH', KEYS[3], ARGV[3]) end
            return 1
          end
        end
        return 0
        """
}
