/// Redis Cluster's key space: 16384 slots, a key's slot the CRC16 (XMODEM) of its hash tag (the
/// part between the first `{` and the next `}`, when not empty) or of the whole key, mod 16384.
public enum ClusterSlot {
    public static let count = 16384

    public static func of(_ key: some Collection<UInt8>) -> Int {
        Int(crc16(hashTag(key)) % UInt16(count))
    }

    public static func of(_ key: String) -> Int {
        of(Array(key.utf8))
    }

    /// What is hashed: the tag when the key has a non-empty `{...}`, else the whole key.
    static func hashTag<Bytes: Collection<UInt8>>(_ key: Bytes) -> Bytes.SubSequence {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key[...] }
        let afterOpen = key.index(after: open)
        guard let close = key[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close != afterOpen else { return key[...] }
        return key[afterOpen..<close]
    }

    /// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection.
    static func crc16(_ bytes: some Collection<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }
}

/// Where each slot lives: the master of each range, from `CLUSTER SLOTS`.
public struct ClusterSlotMap: Sendable, Equatable {
    public struct Node: Hashable, Sendable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { "\(host):\(port)" }
    }

    /// For each slot, its master's index in `masters`; -1 for a slot no one serves.
    private var owners: [Int16]
    public private(set) var masters: [Node]

    public init() {
        owners = Array(repeating: -1, count: ClusterSlot.count)
        masters = []
    }

    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id?], replicas...], ...]`.
    /// Nil when it is not one. A master announced with an empty host is at `fallbackHost`.
    public init?(clusterSlots reply: RESPValue, fallbackHost: String) {
        self.init()
        guard let ranges = reply.elements else { return nil }
        for range in ranges {
            guard let parts = range.elements, parts.count >= 3, let start = parts[0].int, let end = parts[1].int,
                0 <= start, start <= end, end < Int64(ClusterSlot.count), let master = parts[2].elements, master.count >= 2,
                let port = master[1].int, (1...65535).contains(port)
            else { return nil }
            var host = master[0].string ?? ""
            if host.isEmpty || host == "?" { host = fallbackHost }
            let node = Node(host: host, port: Int(port))
            let index: Int
            if let known = masters.firstIndex(of: node) {
                index = known
            } else {
                index = masters.count
                masters.append(node)
            }
            for slot in Int(start)...Int(end) { owners[slot] = Int16(index) }
        }
    }

    public func owner(ofSlot slot: Int) -> Node? {
        guard (0..<ClusterSlot.count).contains(slot) else { return nil }
        let index = Int(owners[slot])
        return index >= 0 ? masters[index] : nil
    }

    /// Every slot has an owner.
    public var isComplete: Bool { !owners.contains(-1) }
}

/// A redirection in an error reply: `MOVED slot host:port` (the slot lives there now) or
/// `ASK slot host:port` (ask there once, after `ASKING`, while the slot migrates).
public enum ClusterRedirection: Equatable, Sendable {
    case moved(slot: Int, to: ClusterSlotMap.Node)
    case ask(slot: Int, to: ClusterSlotMap.Node)

    public init?(error message: String, fallbackHost: String) {
        let parts = message.split(separator: " ")
        guard parts.count == 3, let slot = Int(parts[1]), (0..<ClusterSlot.count).contains(slot),
            let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(parts[2][..<colon])
        if host.isEmpty { host = fallbackHost }
        let node = ClusterSlotMap.Node(host: host, port: port)
        switch parts[0] {
        case "MOVED": self = .moved(slot: slot, to: node)
        case "ASK": self = .ask(slot: slot, to: node)
        default: return nil
        }
    }
}
