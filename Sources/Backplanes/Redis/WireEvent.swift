import SwitchboardCore

/// How an event travels through Redis: a compact binary record. The address is the channel it
/// is published on, so it is not repeated. `origin` lets a node skip its own messages (it has
/// delivered them locally already).
///
///     version(1) kind(1) origin(u16 len + bytes)
///     message: id(u16+bytes) from(u16+bytes) ts(i64 big-endian) data(rest)
///     joined/left: user(u16+bytes)
enum WireEvent {
    static let version: UInt8 = 1

    static func encode(_ event: ClusterEvent, origin: String) -> [UInt8] {
        var out: [UInt8] = [version]
        switch event {
        case .message(let envelope):
            out.append(0)
            append(origin, to: &out)
            append(envelope.id, to: &out)
            append(envelope.from, to: &out)
            withUnsafeBytes(of: envelope.timestamp.bigEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: envelope.data.bytes)
        case .joined(_, let user):
            out.append(1)
            append(origin, to: &out)
            append(user, to: &out)
        case .left(_, let user):
            out.append(2)
            append(origin, to: &out)
            append(user, to: &out)
        }
        return out
    }

    /// Decodes a record received on a channel with `address`; nil for anything malformed.
    static func decode(_ bytes: [UInt8], address: Address) -> (event: ClusterEvent, origin: String)? {
        var reader = Reader(bytes: bytes)
        guard reader.byte() == version, let kind = reader.byte(), let origin = reader.string() else { return nil }
        switch kind {
        case 0:
            guard let id = reader.string(), let from = reader.string(), let timestamp = reader.int64() else { return nil }
            let envelope = Envelope(id: id, from: from, address: address, data: RawJSON(bytes: reader.rest()), timestamp: timestamp)
            return (.message(envelope), origin)
        case 1, 2:
            guard case .room(let room) = address, let user = reader.string() else { return nil }
            return (kind == 1 ? .joined(room: room, user: user) : .left(room: room, user: user), origin)
        default:
            return nil
        }
    }

    private static func append(_ text: String, to out: inout [UInt8]) {
        let bytes = Array(text.utf8.prefix(Int(UInt16.max)))
        out.append(UInt8(bytes.count >> 8))
        out.append(UInt8(bytes.count & 0xFF))
        out.append(contentsOf: bytes)
    }

    private struct Reader {
        let bytes: [UInt8]
        var index = 0

        mutating func byte() -> UInt8? {
            guard index < bytes.count else { return nil }
            defer { index += 1 }
            return bytes[index]
        }

        mutating func string() -> String? {
            guard let high = byte(), let low = byte() else { return nil }
            let length = Int(high) << 8 | Int(low)
            guard index + length <= bytes.count else { return nil }
            defer { index += length }
            return String(decoding: bytes[index..<(index + length)], as: UTF8.self)
        }

        mutating func int64() -> Int64? {
            guard index + 8 <= bytes.count else { return nil }
            var value: Int64 = 0
            for byte in bytes[index..<(index + 8)] { value = value << 8 | Int64(byte) }
            index += 8
            return value
        }

        func rest() -> [UInt8] { Array(bytes[index...]) }
    }
}
