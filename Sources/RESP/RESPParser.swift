import NIOCore

public struct RESPProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { "RESP protocol error: \(message)" }
}

/// Parses RESP2 and RESP3 replies from a byte buffer.
///
/// `parse` either consumes one whole value or consumes nothing and returns nil (more bytes are
/// needed), so a reply split anywhere across reads parses the same. Malformed input throws;
/// sizes and nesting are capped so hostile input cannot exhaust memory or the stack.
public struct RESPParser: Sendable {
    public static let maxDepth = 32
    public static let maxBulkLength = 512 * 1024 * 1024
    public static let maxElements = 16 * 1024 * 1024

    public init() {}

    public func parse(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> RESPValue? {
        let view = buffer.readableBytesView
        var cursor = Cursor(view: view, offset: view.startIndex)
        guard let value = try cursor.value(depth: 0) else { return nil }
        buffer.moveReaderIndex(forwardBy: cursor.offset - view.startIndex)
        return value
    }

    struct Cursor {
        let view: ByteBufferView
        var offset: Int

        func fail(_ message: String) -> RESPProtocolError { RESPProtocolError(message: message) }

        /// The bytes up to the next CRLF, consuming it; nil when no full line is there yet.
        mutating func line() throws(RESPProtocolError) -> ArraySlice<UInt8>? {
            var index = offset
            while index < view.endIndex {
                if view[index] == UInt8(ascii: "\r") {
                    guard index + 1 < view.endIndex else { return nil }
                    guard view[index + 1] == UInt8(ascii: "\n") else { throw fail("CR without LF") }
                    let text = ArraySlice(view[offset..<index])
                    offset = index + 2
                    return text
                }
                index += 1
            }
            return nil
        }

        mutating func integerLine() throws(RESPProtocolError) -> Int64? {
            guard let text = try line() else { return nil }
            guard let value = Int64(String(decoding: text, as: UTF8.self)) else { throw fail("bad integer") }
            return value
        }

        mutating func length(max: Int) throws(RESPProtocolError) -> Int?? {
            guard let value = try integerLine() else { return nil }
            if value == -1 { return .some(nil) }
            guard value >= 0, value <= max else { throw fail("bad length \(value)") }
            return .some(Int(value))
        }

        mutating func blob() throws(RESPProtocolError) -> [UInt8]?? {
            guard let length = try length(max: RESPParser.maxBulkLength) else { return nil }
            guard let length else { return .some(nil) }
            guard view.endIndex - offset >= length + 2 else { return nil }
            let bytes = Array(view[offset..<(offset + length)])
            guard view[offset + length] == UInt8(ascii: "\r"), view[offset + length + 1] == UInt8(ascii: "\n") else {
                throw fail("bulk string without CRLF")
            }
            offset += length + 2
            return .some(bytes)
        }

        mutating func elements(depth: Int) throws(RESPProtocolError) -> [RESPValue]?? {
            guard let count = try length(max: RESPParser.maxElements) else { return nil }
            guard let count else { return .some(nil) }
            var values: [RESPValue] = []
            values.reserveCapacity(min(count, 1024))
            for _ in 0..<count {
                guard let value = try value(depth: depth + 1) else { return nil }
                values.append(value)
            }
            return .some(values)
        }

        mutating func value(depth: Int) throws(RESPProtocolError) -> RESPValue? {
            guard depth <= RESPParser.maxDepth else { throw fail("nested too deeply") }
            guard offset < view.endIndex else { return nil }
            let type = view[offset]
            offset += 1
            switch type {
            case UInt8(ascii: "+"):
                return try line().map { .simpleString(String(decoding: $0, as: UTF8.self)) }
            case UInt8(ascii: "-"):
                return try line().map { .error(String(decoding: $0, as: UTF8.self)) }
            case UInt8(ascii: ":"):
                return try integerLine().map(RESPValue.integer)
            case UInt8(ascii: "$"):
                guard let bytes = try blob() else { return nil }
                return bytes.map(RESPValue.bulkString) ?? .null
            case UInt8(ascii: "*"):
                guard let values = try elements(depth: depth) else { return nil }
                return values.map(RESPValue.array) ?? .null
            case UInt8(ascii: "_"):
                guard let text = try line() else { return nil }
                guard text.isEmpty else { throw fail("bad null") }
                return .null
            case UInt8(ascii: "#"):
                guard let text = try line() else { return nil }
                switch String(decoding: text, as: UTF8.self) {
                case "t": return .boolean(true)
                case "f": return .boolean(false)
                default: throw fail("bad boolean")
                }
            case UInt8(ascii: ","):
                guard let text = try line() else { return nil }
                let string = String(decoding: text, as: UTF8.self)
                switch string {
                case "inf": return .double(.infinity)
                case "-inf": return .double(-.infinity)
                case "nan": return .double(.nan)
                default:
                    guard let number = Double(string) else { throw fail("bad double") }
                    return .double(number)
                }
            case UInt8(ascii: "("):
                return try line().map { .bigNumber(String(decoding: $0, as: UTF8.self)) }
            case UInt8(ascii: "!"):
                guard let bytes = try blob() else { return nil }
                return .error(String(decoding: bytes ?? [], as: UTF8.self))
            case UInt8(ascii: "="):
                guard let bytes = try blob() else { return nil }
                guard let bytes, bytes.count >= 4, bytes[3] == UInt8(ascii: ":") else { throw fail("bad verbatim string") }
                return .verbatim(String(decoding: bytes[4...], as: UTF8.self))
            case UInt8(ascii: "~"):
                guard let values = try elements(depth: depth) else { return nil }
                return .set(values ?? [])
            case UInt8(ascii: ">"):
                guard let values = try elements(depth: depth) else { return nil }
                return .push(values ?? [])
            case UInt8(ascii: "%"), UInt8(ascii: "|"):
                guard let count = try length(max: RESPParser.maxElements) else { return nil }
                var pairs: [RESPPair] = []
                for _ in 0..<(count ?? 0) {
                    guard let key = try value(depth: depth + 1), let value = try value(depth: depth + 1) else { return nil }
                    pairs.append(RESPPair(key: key, value: value))
                }
                // An attribute (`|`) annotates the value that follows; we keep the value only.
                if type == UInt8(ascii: "|") { return try value(depth: depth) }
                return .map(pairs)
            default:
                throw fail("unknown type byte \(type)")
            }
        }
    }
}

/// Encodes commands as RESP arrays of bulk strings.
public enum RESPEncoder {
    public static func encode(_ arguments: [RESPArgument], into buffer: inout ByteBuffer) {
        header(UInt8(ascii: "*"), arguments.count, into: &buffer)
        for argument in arguments {
            header(UInt8(ascii: "$"), argument.bytes.count, into: &buffer)
            buffer.writeBytes(argument.bytes)
            buffer.writeInteger(crlf)
        }
    }

    private static let crlf = UInt16(0x0D0A)

    /// `*3\r\n` or `$11\r\n`, in one write for the counts commands have (below 100): under
    /// churn a node writes a few hundred thousand of these a second, and a formatted `String`
    /// or a write per byte each showed in its profile.
    private static func header(_ marker: UInt8, _ count: Int, into buffer: inout ByteBuffer) {
        let zero = UInt8(ascii: "0")
        switch count {
        case 0..<10:
            buffer.writeMultipleIntegers(marker, zero + UInt8(count), crlf)
        case 10..<100:
            buffer.writeMultipleIntegers(marker, zero + UInt8(count / 10), zero + UInt8(count % 10), crlf)
        default:
            buffer.writeInteger(marker)
            buffer.writeString(String(count))
            buffer.writeInteger(crlf)
        }
    }
}

/// One argument of a command: any bytes.
public struct RESPArgument: Hashable, Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public var bytes: [UInt8]
    public init(_ text: String) { bytes = Array(text.utf8) }
    public init(bytes: [UInt8]) { self.bytes = bytes }
    public init(_ value: Int) { bytes = Array(String(value).utf8) }
    public init(stringLiteral text: String) { self.init(text) }
    public init(integerLiteral value: Int) { self.init(value) }
}
