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
        // Over the readable bytes in place: a line is a range, an integer is read from its
        // digits, and only a value's own text or bytes are copied out (under churn a node
        // parses about a hundred lines per connection; each used to be an array).
        let parsed: Result<(RESPValue, Int)?, RESPProtocolError> = buffer.withUnsafeReadableBytes { bytes in
            var cursor = Cursor(bytes: bytes, offset: 0)
            do throws(RESPProtocolError) {
                guard let value = try cursor.value(depth: 0) else { return .success(nil) }
                return .success((value, cursor.offset))
            } catch {
                return .failure(error)
            }
        }
        guard let (value, consumed) = try parsed.get() else { return nil }
        buffer.moveReaderIndex(forwardBy: consumed)
        return value
    }

    struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var offset: Int

        func fail(_ message: String) -> RESPProtocolError { RESPProtocolError(message: message) }

        /// The range of the bytes up to the next CRLF, consuming it; nil when no full line is
        /// there yet.
        mutating func line() throws(RESPProtocolError) -> Range<Int>? {
            var index = offset
            while index < bytes.count {
                if bytes[index] == UInt8(ascii: "\r") {
                    guard index + 1 < bytes.count else { return nil }
                    guard bytes[index + 1] == UInt8(ascii: "\n") else { throw fail("CR without LF") }
                    let range = offset..<index
                    offset = index + 2
                    return range
                }
                index += 1
            }
            return nil
        }

        func text(_ range: Range<Int>) -> String {
            String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }

        /// A decimal integer with an optional sign, as RESP writes them (no spaces, no plus).
        mutating func integerLine() throws(RESPProtocolError) -> Int64? {
            guard let range = try line() else { return nil }
            var index = range.lowerBound
            let negative = index < range.upperBound && bytes[index] == UInt8(ascii: "-")
            if negative { index += 1 }
            guard index < range.upperBound, range.upperBound - index <= 19 else { throw fail("bad integer") }
            var value: Int64 = 0
            while index < range.upperBound {
                let digit = bytes[index] &- UInt8(ascii: "0")
                guard digit < 10 else { throw fail("bad integer") }
                let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
                // Toward the sign, so that Int64.min reads as well.
                let (sum, overflow2) =
                    negative ? times10.subtractingReportingOverflow(Int64(digit)) : times10.addingReportingOverflow(Int64(digit))
                guard !overflow1, !overflow2 else { throw fail("bad integer") }
                value = sum
                index += 1
            }
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
            guard bytes.count - offset >= length + 2 else { return nil }
            guard bytes[offset + length] == UInt8(ascii: "\r"), bytes[offset + length + 1] == UInt8(ascii: "\n") else {
                throw fail("bulk string without CRLF")
            }
            let blob = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)]))
            offset += length + 2
            return .some(blob)
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
            guard offset < bytes.count else { return nil }
            let type = bytes[offset]
            offset += 1
            switch type {
            case UInt8(ascii: "+"):
                return try line().map { .simpleString(text($0)) }
            case UInt8(ascii: "-"):
                return try line().map { .error(text($0)) }
            case UInt8(ascii: ":"):
                return try integerLine().map(RESPValue.integer)
            case UInt8(ascii: "$"):
                guard let blob = try blob() else { return nil }
                return blob.map(RESPValue.bulkString) ?? .null
            case UInt8(ascii: "*"):
                guard let values = try elements(depth: depth) else { return nil }
                return values.map(RESPValue.array) ?? .null
            case UInt8(ascii: "_"):
                guard let range = try line() else { return nil }
                guard range.isEmpty else { throw fail("bad null") }
                return .null
            case UInt8(ascii: "#"):
                guard let range = try line() else { return nil }
                switch text(range) {
                case "t": return .boolean(true)
                case "f": return .boolean(false)
                default: throw fail("bad boolean")
                }
            case UInt8(ascii: ","):
                guard let range = try line() else { return nil }
                let string = text(range)
                switch string {
                case "inf": return .double(.infinity)
                case "-inf": return .double(-.infinity)
                case "nan": return .double(.nan)
                default:
                    guard let number = Double(string) else { throw fail("bad double") }
                    return .double(number)
                }
            case UInt8(ascii: "("):
                return try line().map { .bigNumber(text($0)) }
            case UInt8(ascii: "!"):
                guard let blob = try blob() else { return nil }
                return .error(String(decoding: blob ?? [], as: UTF8.self))
            case UInt8(ascii: "="):
                guard let blob = try blob() else { return nil }
                guard let blob, blob.count >= 4, blob[3] == UInt8(ascii: ":") else { throw fail("bad verbatim string") }
                return .verbatim(String(decoding: blob[4...], as: UTF8.self))
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
            switch argument.storage {
            case .text(let text):
                header(UInt8(ascii: "$"), text.utf8.count, into: &buffer)
                buffer.writeString(text)
            case .bytes(let bytes):
                header(UInt8(ascii: "$"), bytes.count, into: &buffer)
                buffer.writeBytes(bytes)
            }
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

/// One argument of a command: any bytes. Text stays a `String` until it is written: most
/// arguments are names and numbers, and an array per argument was a third of the allocations
/// a Redis node made per connection under churn.
public struct RESPArgument: Hashable, Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    enum Storage: Sendable {
        case text(String)
        case bytes([UInt8])
    }

    let storage: Storage

    public init(_ text: String) { storage = .text(text) }
    public init(bytes: [UInt8]) { storage = .bytes(bytes) }
    public init(_ value: Int) { storage = .text(String(value)) }
    public init(stringLiteral text: String) { self.init(text) }
    public init(integerLiteral value: Int) { self.init(value) }

    public var bytes: [UInt8] {
        switch storage {
        case .text(let text): Array(text.utf8)
        case .bytes(let bytes): bytes
        }
    }

    /// Equal when the bytes are: the text "a" and the bytes [97] are the same argument.
    public static func == (lhs: RESPArgument, rhs: RESPArgument) -> Bool {
        switch (lhs.storage, rhs.storage) {
        case (.text(let left), .text(let right)): left.utf8.elementsEqual(right.utf8)
        default: lhs.bytes == rhs.bytes
        }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes)
    }
}
