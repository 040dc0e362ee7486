import SwitchboardCore

/// The routing keys of the exchange. Names are at most 128 bytes of `A-Z a-z 0-9 _ . : @ / -`
/// (`Name`), so a key stays within AMQP's 255 bytes; the exchange is direct, so dots in names
/// are plain characters, never wildcards.
///
///     r.<room>   a room's messages         u.<user>   a user's direct messages
///     all        broadcasts                members    announces, deltas, beats, goodbyes
///     n.<node>   an announce for one node alone
struct RabbitMQKeys: Sendable {
    let everyone = "all"
    let members = "members"

    func key(_ address: Address) -> String {
        switch address {
        case .everyone: everyone
        case .room(let room): "r." + room
        case .user(let user): "u." + user
        }
    }

    func node(_ id: String) -> String { "n." + id }
}
