/// AMQP 0-9-1's data types on the wire (the specification's section 4.2): big-endian integers,
/// short strings (an octet of length), long strings (four octets of length) and field tables.
/// The reader never traps: anything short or malformed is an `AMQPError`.
public struct AMQPError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(_ message: String) { self.message = message }
}

/// A value in a field table, as RabbitMQ reads and writes them.
public indirect enum AMQPFieldValue: Equatable, Sendable {
    case bool(Bool)
    case int8(Int8)
    case uint8(UInt8)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case float(Float)
    case double(Double)
    case decimal(scale: UInt8, value: UInt32)
    case string([UInt8])
    case bytes([UInt8])
    case array([AMQPFieldValue])
    case timestamp(UInt64)
    case table(AMQPTable)
    case void
}

/// A field table: names and values in the order they came (a name may not repeat).
public struct AMQPTable: Equatable, Sendable, ExpressibleByDictionaryLiteral {
    public var fields: [(name: String, value: AMQPFieldValue)]

    public init(_ fields: [(name: String, value: AMQPFieldValue)] = []) {
        self.fields = fields
    }

    public init(dictionaryLiteral elements: (String, AMQPFieldValue)...) {
        self.fields = elements.map { ($0.0, $0.1) }
    }

    public subscript(_ name: String) -> AMQPFieldValue? {
        fields.first { $0.name == name }?.value
    }

    public static func == (a: AMQPTable, b: AMQPTable) -> Bool {
        a.fields.count == b.fields.count && zip(a.fields, b.fields).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }
}

/// Reads AMQP types from bytes; every read checks what is left.
public struct AMQPReader {
    let bytes: ArraySlice<UInt8>
    private(set) var index: Int
    /// Tables nested deeper than this are refused: a hostile peer cannot exhaust the stack.
    static let maxDepth = 16

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        self.index = bytes.startIndex
    }

    public var remaining: Int { bytes.endIndex - index }

    mutating func take(_ count: Int) throws(AMQPError) -> ArraySlice<UInt8> {
        guard count >= 0, remaining >= count else { throw AMQPError("truncated: needed \(count) bytes, \(remaining) left") }
        defer { index += count }
        return bytes[index..<index + count]
    }

    public mutating func octet() throws(AMQPError) -> UInt8 { try take(1).first! }

    public mutating func short() throws(AMQPError) -> UInt16 {
        let b = try take(2)
        return UInt16(b[b.startIndex]) << 8 | UInt16(b[b.startIndex + 1])
    }

    public mutating func long() throws(AMQPError) -> UInt32 {
        try take(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    public mutating func longlong() throws(AMQPError) -> UInt64 {
        try take(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    public mutating func shortString() throws(AMQPError) -> String {
        let length = Int(try octet())
        return String(decoding: try take(length), as: UTF8.self)
    }

    public mutating func longBytes() throws(AMQPError) -> [UInt8] {
        let length = try long()
        guard length <= UInt32(remaining) else { throw AMQPError("truncated: a long string of \(length) bytes, \(remaining) left") }
        return Array(try take(Int(length)))
    }

    public mutating func longString() throws(AMQPError) -> String {
        String(decoding: try longBytes(), as: UTF8.self)
    }

    public mutating func table(depth: Int = 0) throws(AMQPError) -> AMQPTable {
        guard depth < Self.maxDepth else { throw AMQPError("field tables nested deeper than \(Self.maxDepth)") }
        let size = try long()
        guard size <= UInt32(remaining) else { throw AMQPError("truncated: a table of \(size) bytes, \(remaining) left") }
        var inner = AMQPReader(try take(Int(size)))
        var fields: [(name: String, value: AMQPFieldValue)] = []
        while inner.remaining > 0 {
            let name = try inner.shortString()
            fields.append((name, try inner.fieldValue(depth: depth)))
        }
        return AMQPTable(fields)
    }

    mutating func fieldValue(depth: Int) throws(AMQPError) -> AMQPFieldValue {
        let kind = try octet()
        switch kind {
        case UInt8(ascii: "t"): return .bool(try octet() != 0)
        case UInt8(ascii: "b"): return .int8(Int8(bitPattern: try octet()))
        case UInt8(ascii: "B"): return .uint8(try octet())
        case UInt8(ascii: "s"): return .int16(Int16(bitPattern: try short()))
        case UInt8(ascii: "u"): return .uint16(try short())
        case UInt8(ascii: "I"): return .int32(Int32(bitPattern: try long()))
        case UInt8(ascii: "i"): return .uint32(try long())
        case UInt8(ascii: "l"): return .int64(Int64(bitPattern: try longlong()))
        case UInt8(ascii: "f"): return .float(Float(bitPattern: try long()))
        case UInt8(ascii: "d"): return .double(Double(bitPattern: try longlong()))
        case UInt8(ascii: "D"): return .decimal(scale: try octet(), value: try long())
        case UInt8(ascii: "S"): return .string(try longBytes())
        case UInt8(ascii: "x"): return .bytes(try longBytes())
        case UInt8(ascii: "T"): return .timestamp(try longlong())
        case UInt8(ascii: "F"): return .table(try table(depth: depth + 1))
        case UInt8(ascii: "V"): return .void
        case UInt8(ascii: "A"):
            guard depth + 1 < Self.maxDepth else { throw AMQPError("field arrays nested deeper than \(Self.maxDepth)") }
            let size = try long()
            guard size <= UInt32(remaining) else { throw AMQPError("truncated: an array of \(size) bytes, \(remaining) left") }
            var inner = AMQPReader(try take(Int(size)))
            var values: [AMQPFieldValue] = []
            while inner.remaining > 0 { values.append(try inner.fieldValue(depth: depth + 1)) }
            return .array(values)
        default:
            throw AMQPError("unknown field type 0x\(String(kind, radix: 16))")
        }
    }
}

/// Writes AMQP types.
public struct AMQPWriter {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func octet(_ value: UInt8) { bytes.append(value) }
    public mutating func raw(_ more: [UInt8]) { bytes += more }
    public mutating func short(_ value: UInt16) { bytes += [UInt8(value >> 8), UInt8(value & 0xFF)] }
    public mutating func long(_ value: UInt32) {
        bytes += [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }
    public mutating func longlong(_ value: UInt64) {
        long(UInt32(value >> 32))
        long(UInt32(value & 0xFFFF_FFFF))
    }

    /// At most 255 bytes: a longer name is cut (names we send are short; a caller must check).
    public mutating func shortString(_ text: String) {
        let utf8 = Array(text.utf8.prefix(255))
        octet(UInt8(utf8.count))
        bytes += utf8
    }

    public mutating func longBytes(_ value: [UInt8]) {
        long(UInt32(value.count))
        bytes += value
    }

    public mutating func longString(_ text: String) { longBytes(Array(text.utf8)) }

    public mutating func table(_ table: AMQPTable) {
        var inner = AMQPWriter()
        for field in table.fields {
            inner.shortString(field.name)
            inner.fieldValue(field.value)
        }
        longBytes(inner.bytes)
    }

    mutating func fieldValue(_ value: AMQPFieldValue) {
        switch value {
        case .bool(let v): bytes += [UInt8(ascii: "t"), v ? 1 : 0]
        case .int8(let v): bytes += [UInt8(ascii: "b"), UInt8(bitPattern: v)]
        case .uint8(let v): bytes += [UInt8(ascii: "B"), v]
        case .int16(let v): octet(UInt8(ascii: "s")); short(UInt16(bitPattern: v))
        case .uint16(let v): octet(UInt8(ascii: "u")); short(v)
        case .int32(let v): octet(UInt8(ascii: "I")); long(UInt32(bitPattern: v))
        case .uint32(let v): octet(UInt8(ascii: "i")); long(v)
        case .int64(let v): octet(UInt8(ascii: "l")); longlong(UInt64(bitPattern: v))
        case .float(let v): octet(UInt8(ascii: "f")); long(v.bitPattern)
        case .double(let v): octet(UInt8(ascii: "d")); longlong(v.bitPattern)
        case .decimal(let scale, let v): octet(UInt8(ascii: "D")); octet(scale); long(v)
        case .string(let v): octet(UInt8(ascii: "S")); longBytes(v)
        case .bytes(let v): octet(UInt8(ascii: "x")); longBytes(v)
        case .timestamp(let v): octet(UInt8(ascii: "T")); longlong(v)
        case .table(let v): octet(UInt8(ascii: "F")); table(v)
        case .void: octet(UInt8(ascii: "V"))
        case .array(let values):
            octet(UInt8(ascii: "A"))
            var inner = AMQPWriter()
            for value in values { inner.fieldValue(value) }
            longBytes(inner.bytes)
        }
    }
}
