/// The naming rule for user ids and room names: 1 to 128 characters of `A-Z a-z 0-9 _ . : @ / -`.
public enum Name {
    public static let maxLength = 128
    /// The sender of messages from the HTTP API; no client may take it (PROTOCOL.md 1.1).
    public static let reservedUser = "server"

    /// A name a client may hold as its user id: valid, and not the reserved `server`.
    public static func isValidUser(_ name: some StringProtocol) -> Bool {
        isValid(name) && name != reservedUser
    }

    public static func isValid(_ name: some StringProtocol) -> Bool {
        var count = 0
        for byte in name.utf8 {
            count += 1
            guard count <= maxLength, isAllowed(byte) else { return false }
        }
        return count > 0
    }

    @inline(__always)
    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "@"),
            UInt8(ascii: "/"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}
