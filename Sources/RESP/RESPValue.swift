/// A reply from Redis, in RESP2 or RESP3.
public enum RESPValue: Hashable, Sendable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    case bulkString([UInt8])
    /// RESP2 null bulk string or null array, RESP3 null.
    case null
    case array([RESPValue])
    case double(Double)
    case boolean(Bool)
    case bigNumber(String)
    /// Verbatim string, without its three-letter format.
    case verbatim(String)
    case map([RESPPair])
    case set([RESPValue])
    /// RESP3 out-of-band data (pub/sub messages).
    case push([RESPValue])

    /// The value as text, for the string-like cases.
    public var string: String? {
        switch self {
        case .simpleString(let text), .verbatim(let text), .bigNumber(let text): text
        case .bulkString(let bytes): String(decoding: bytes, as: UTF8.self)
        case .integer(let value): String(value)
        default: nil
        }
    }

    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): bytes
        case .simpleString(let text), .verbatim(let text): Array(text.utf8)
        default: nil
        }
    }

    public var int: Int64? {
        switch self {
        case .integer(let value): value
        case .bulkString, .simpleString: string.flatMap { Int64($0) }
        default: nil
        }
    }

    /// Elements of an array, set or push.
    public var elements: [RESPValue]? {
        switch self {
        case .array(let values), .set(let values), .push(let values): values
        default: nil
        }
    }
}

public struct RESPPair: Hashable, Sendable {
    public var key: RESPValue
    public var value: RESPValue
}
