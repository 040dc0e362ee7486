/// The head of a plain WebSocket upgrade request, read without NIO's HTTP parser.
///
/// Only a strict subset of HTTP/1.1 is read: `GET`, an origin-form target of URI characters,
/// `HTTP/1.1`, header lines of token names and visible-ASCII values, CRLF line ends, nothing after
/// the blank line but what the client sends next (WebSocket frames). Whatever falls outside it
/// (another method or version, a bare CR or LF, obs-fold, a value ending in a blank, a control or non-ASCII byte, a body header, a
/// header this reader uses given twice, a head over `maxBytes`) is `notSimple`: the connection
/// then goes to NIO's parser, which answers or refuses it. So this reader never has to decide
/// an edge case, and where it does read a head, NIO would read the same one.
package struct UpgradeHead: Equatable, Sendable {
    /// The longest head read here; a longer one goes to NIO's parser (and its 431).
    package static let maxBytes = 4096

    package var target: String
    package var upgrade: String?
    package var connection: String?
    package var key: String?
    package var version: String?
    /// Every `Sec-WebSocket-Protocol` line, in order (the one header a client may repeat here).
    package var protocols: [String] = []
    package var origin: String?
    package var authorization: String?

    package enum Parse: Equatable, Sendable {
        /// No blank line yet, and fewer than `maxBytes` bytes.
        case incomplete
        /// Not for this reader: NIO's parser decides.
        case notSimple
        /// A head of `length` bytes, blank line included.
        case head(UpgradeHead, length: Int)
    }

    package static func parse(_ bytes: UnsafeRawBufferPointer) -> Parse {
        guard let end = headEnd(bytes) else {
            // Not a GET, or a line end NIO refuses: its parser answers now, not after a wait.
            let couldBeOne = bytes.prefix(5).elementsEqual("GET /".utf8.prefix(bytes.count)) && !hasBareLineEnd(bytes)
            return bytes.count < maxBytes && couldBeOne ? .incomplete : .notSimple
        }
        guard end <= maxBytes, let head = read(UnsafeRawBufferPointer(rebasing: bytes[..<(end - 2)])) else { return .notSimple }
        return .head(head, length: end)
    }

    package static func parse(_ bytes: [UInt8]) -> Parse {
        bytes.withUnsafeBytes { parse($0) }
    }

    /// Whether it asks for a WebSocket (RFC 6455 4.2.1): `Upgrade` lists `websocket` and
    /// `Connection` lists `upgrade`, in any case.
    package var asksForWebSocket: Bool {
        Self.lists(upgrade, "websocket") && Self.lists(connection, "upgrade")
    }

    /// The offset just past the first CRLF CRLF, if there is one.
    private static func headEnd(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 4 else { return nil }
        var index = 3
        while index < bytes.count {
            if bytes[index] == lf, bytes[index - 1] == cr, bytes[index - 2] == lf, bytes[index - 3] == cr { return index + 1 }
            index += 1
        }
        return nil
    }

    /// A CR not followed by LF, or an LF not after a CR.
    private static func hasBareLineEnd(_ bytes: UnsafeRawBufferPointer) -> Bool {
        for index in bytes.indices {
            if bytes[index] == cr, index + 1 < bytes.count, bytes[index + 1] != lf { return true }
            if bytes[index] == lf, index == 0 || bytes[index - 1] != cr { return true }
        }
        return false
    }

    /// Reads the request line and header lines (the head without its final CRLF).
    private static func read(_ bytes: UnsafeRawBufferPointer) -> UpgradeHead? {
        var lines = LineReader(bytes: bytes)
        guard let requestLine = lines.next(), let target = requestTarget(requestLine) else { return nil }
        var head = UpgradeHead(target: target)
        while let line = lines.next() {
            guard let (name, value) = field(line), head.take(name, value) else { return nil }
        }
        return lines.malformed ? nil : head
    }

    /// `GET <target> HTTP/1.1`, and the target if it is origin-form of RFC 3986's characters.
    private static func requestTarget(_ line: UnsafeRawBufferPointer) -> String? {
        let prefix = "GET /".utf8, suffix = " HTTP/1.1".utf8
        guard line.count > prefix.count + suffix.count, line.starts(with: prefix),
            line[(line.count - suffix.count)...].elementsEqual(suffix)
        else { return nil }
        let target = line[(prefix.count - 1)..<(line.count - suffix.count)]
        guard target.allSatisfy(isTargetByte) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: target), as: UTF8.self)
    }

    /// `name: value`, the name a token, the value visible ASCII with spaces and tabs inside,
    /// without the blanks after the colon. A value that ends in a blank is not read here (NIO
    /// keeps trailing blanks in the value, and the two readers must agree).
    private static func field(_ line: UnsafeRawBufferPointer) -> (UnsafeRawBufferPointer, String)? {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { return nil }
        let name = UnsafeRawBufferPointer(rebasing: line[..<colon])
        guard name.allSatisfy(isTokenByte), let last = line.last, !isBlank(last) else { return nil }
        var start = colon + 1
        while start < line.count, isBlank(line[start]) { start += 1 }
        let value = line[start...]
        guard value.allSatisfy({ ($0 >= 0x20 && $0 < 0x7F) || $0 == 0x09 }) else { return nil }
        return (name, String(decoding: UnsafeRawBufferPointer(rebasing: value), as: UTF8.self))
    }

    init(target: String) {
        self.target = target
    }

    /// Keeps a header this reader uses; false for one that sends the head to NIO's parser.
    private mutating func take(_ name: UnsafeRawBufferPointer, _ value: String) -> Bool {
        func once(_ slot: inout String?) -> Bool {
            guard slot == nil else { return false }
            slot = value
            return true
        }
        switch name.count {
        case 6 where Self.named(name, "origin"): return once(&origin)
        case 7 where Self.named(name, "upgrade"): return once(&upgrade)
        case 10 where Self.named(name, "connection"): return once(&connection)
        case 13 where Self.named(name, "authorization"): return once(&authorization)
        case 14 where Self.named(name, "content-length"): return false
        case 17 where Self.named(name, "transfer-encoding"): return false
        case 17 where Self.named(name, "sec-websocket-key"): return once(&key)
        case 21 where Self.named(name, "sec-websocket-version"): return once(&version)
        case 22 where Self.named(name, "sec-websocket-protocol"):
            protocols.append(value)
            return true
        default: return true
        }
    }

    /// Whether `name` is `lowercase` in any case.
    private static func named(_ name: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        named(name, UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount))
    }

    /// Whether `bytes` are `lowercase` (letters, digits and `-`) in any case.
    private static func named(_ bytes: UnsafeRawBufferPointer, _ lowercase: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count == lowercase.count else { return false }
        return zip(bytes, lowercase).allSatisfy { $0 == $1 || (($0 | 0x20) == $1 && $1 >= UInt8(ascii: "a") && $1 <= UInt8(ascii: "z")) }
    }

    /// Whether a comma-separated header value lists `token` (lowercase), in any case.
    private static func lists(_ value: String?, _ token: StaticString) -> Bool {
        guard var value else { return false }
        let expected = UnsafeRawBufferPointer(start: token.utf8Start, count: token.utf8CodeUnitCount)
        return value.withUTF8 { bytes in
            var start = 0
            while start <= bytes.count {
                var end = start
                while end < bytes.count, bytes[end] != UInt8(ascii: ",") { end += 1 }
                var first = start, last = end
                while first < last, isBlank(bytes[first]) { first += 1 }
                while last > first, isBlank(bytes[last - 1]) { last -= 1 }
                if named(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[first..<last]), expected) { return true }
                start = end + 1
            }
            return false
        }
    }

    private static func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

    /// RFC 9110 tchar.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default: false
        }
    }

    /// RFC 3986 path and query characters (unreserved, sub-delims, `:@/?` and `%`).
    private static func isTargetByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "!"), UInt8(ascii: "$"),
            UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"),
            UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "/"),
            UInt8(ascii: "?"), UInt8(ascii: "%"):
            true
        default: false
        }
    }

    private static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")

    /// CRLF-separated lines; a CR or LF anywhere else marks the head malformed.
    private struct LineReader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0
        var malformed = false

        mutating func next() -> UnsafeRawBufferPointer? {
            guard offset < bytes.count, !malformed else { return nil }
            var index = offset
            while index < bytes.count, bytes[index] != UpgradeHead.cr, bytes[index] != UpgradeHead.lf { index += 1 }
            let line = UnsafeRawBufferPointer(rebasing: bytes[offset..<index])
            if index < bytes.count {
                guard index + 1 < bytes.count, bytes[index] == UpgradeHead.cr, bytes[index + 1] == UpgradeHead.lf else {
                    malformed = true
                    return nil
                }
                offset = index + 2
            } else {
                offset = index
            }
            return line
        }
    }
}
