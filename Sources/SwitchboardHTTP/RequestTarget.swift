/// A request target (`/ws?user=a&batch=1`) split into its path and its query items.
///
/// The parse is total: every string, however malformed (empty pairs, `?=`, `&&`, stray or
/// broken percent-escapes, invalid UTF-8 once decoded), gives a result and never traps. It reads
/// bytes with bounds checks only; nothing is indexed on trust. A key given twice keeps its first
/// value, so two readers of one URL can never disagree about it.
package struct RequestTarget: Equatable, Sendable {
    /// Everything before the first `?`, as sent (not decoded: routes compare it exactly).
    package var path: String
    /// Decoded query items; pairs with an empty key are ignored.
    package var query: [String: String]

    package init(_ target: String) {
        let bytes = Array(target.utf8)
        guard let mark = bytes.firstIndex(of: UInt8(ascii: "?")) else {
            self.path = target
            self.query = [:]
            return
        }
        self.path = String(decoding: bytes[..<mark], as: UTF8.self)
        var query: [String: String] = [:]
        for pair in bytes[(mark + 1)...].split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let equals = pair.firstIndex(of: UInt8(ascii: "="))
            let rawKey = equals.map { pair[pair.startIndex..<$0] } ?? pair[...]
            let rawValue = equals.map { pair[($0 + 1)...] } ?? []
            let key = Self.decode(rawKey)
            guard !key.isEmpty, query[key] == nil else { continue }
            query[key] = Self.decode(rawValue)
        }
        self.query = query
    }

    /// Form decoding: `+` is a space, `%XY` a byte; an escape that is not two hex digits stays
    /// as written. Bytes that are not UTF-8 become U+FFFD (such a name is then refused as invalid).
    package static func decode(_ bytes: ArraySlice<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%"), bytes.endIndex - index >= 3,
                let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2])
            {
                out.append(high << 4 | low)
                index += 3
                continue
            }
            out.append(byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
            index += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
