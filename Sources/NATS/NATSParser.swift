import NIOCore

public struct NATSProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { "NATS protocol error: \(message)" }
}

/// What a NATS server sends.
public enum NATSServerOp: Hashable, Sendable {
    /// The server's INFO, its JSON as sent (see `NATSInfo`).
    case info([UInt8])
    /// A message: `headers` is the raw header block of an HMSG (`NATS/1.0` and its lines), nil for MSG.
    case msg(subject: String, sid: String, replyTo: String?, headers: [UInt8]?, payload: [UInt8])
    case ping
    case pong
    case ok
    case err(String)
}

/// Parses what a NATS server sends, from a byte buffer, incrementally: `next` consumes one whole
/// operation or nothing (more bytes are needed), so input split anywhere parses the same.
/// Malformed input throws; a control line over `maxControlLine` or a payload over `maxPayload`
/// is refused before it is buffered.
public struct NATSParser: Sendable {
    public var maxControlLine = 4096
    public var maxPayload = 64 * 1024 * 1024

    public init() {}

    public func next(_ buffer: inout ByteBuffer) throws(NATSProtocolError) -> NATSServerOp? {
        let view = buffer.readableBytesView
        guard let lineEnd = try Self.lineEnd(in: view, limit: maxControlLine) else { return nil }
        let line = view[view.startIndex..<lineEnd]
        var consumed = lineEnd + 2 - view.startIndex
        let (verb, rest) = Self.split(line)
        let op: NATSServerOp
        switch verb {
        case "PING": op = .ping
        case "PONG": op = .pong
        case "+OK": op = .ok
        case "-ERR":
            var text = String(decoding: rest, as: UTF8.self).trimmingSpaces
            if text.hasPrefix("'") && text.hasSuffix("'") && text.count >= 2 { text = String(text.dropFirst().dropLast()) }
            op = .err(text)
        case "INFO":
            guard !rest.isEmpty else { throw fail("INFO without a body") }
            op = .info(Array(rest))
        case "MSG", "HMSG":
            let fields = rest.split(
                omittingEmptySubsequences: true, whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
            )
            .map { String(decoding: $0, as: UTF8.self) }
            let withHeaders = verb == "HMSG"
            // MSG subject sid [reply] size; HMSG subject sid [reply] header-size total-size.
            let sizes = withHeaders ? 2 : 1
            guard fields.count == 2 + sizes || fields.count == 3 + sizes else { throw fail("\(verb) with \(fields.count) fields") }
            guard let total = Self.size(fields[fields.count - 1]), total <= maxPayload else { throw fail("bad \(verb) size") }
            var headerSize = 0
            if withHeaders {
                guard let size = Self.size(fields[fields.count - 2]), size <= total else { throw fail("bad HMSG header size") }
                headerSize = size
            }
            guard Self.isToken(fields[0]), Self.isToken(fields[1]) else { throw fail("bad \(verb) subject or sid") }
            let replyTo = fields.count == 3 + sizes ? fields[2] : nil
            // The payload and its CRLF must all be there.
            let start = lineEnd + 2
            guard view.endIndex - start >= total + 2 else { return nil }
            guard view[start + total] == UInt8(ascii: "\r"), view[start + total + 1] == UInt8(ascii: "\n") else {
                throw fail("\(verb) payload longer than its size")
            }
            let headers = withHeaders ? Array(view[start..<(start + headerSize)]) : nil
            if let headers, !headers.starts(with: Array("NATS/1.0".utf8)) { throw fail("HMSG headers without NATS/1.0") }
            op = .msg(
                subject: fields[0], sid: fields[1], replyTo: replyTo, headers: headers,
                payload: Array(view[(start + headerSize)..<(start + total)]))
            consumed = start + total + 2 - view.startIndex
        default:
            throw fail("unknown operation \(verb.prefix(16))")
        }
        buffer.moveReaderIndex(forwardBy: consumed)
        return op
    }

    private func fail(_ message: String) -> NATSProtocolError { NATSProtocolError(message: message) }

    /// Where the first CRLF starts; nil when there is none yet; throws past the limit or on a bare CR.
    static func lineEnd(in view: ByteBufferView, limit: Int) throws(NATSProtocolError) -> Int? {
        var index = view.startIndex
        while index < view.endIndex {
            if view[index] == UInt8(ascii: "\r") {
                guard index + 1 < view.endIndex else { return nil }
                guard view[index + 1] == UInt8(ascii: "\n") else { throw NATSProtocolError(message: "CR without LF") }
                return index
            }
            guard index - view.startIndex < limit else { throw NATSProtocolError(message: "control line over \(limit) bytes") }
            index += 1
        }
        guard view.count <= limit else { throw NATSProtocolError(message: "control line over \(limit) bytes") }
        return nil
    }

    /// The verb (upper-cased) and what follows its first space or tab.
    static func split(_ line: ByteBufferView.SubSequence) -> (String, ByteBufferView.SubSequence) {
        let separator = line.firstIndex { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") } ?? line.endIndex
        let verb = String(decoding: line[line.startIndex..<separator], as: UTF8.self).uppercased()
        let rest = separator < line.endIndex ? line[(separator + 1)...] : line[line.endIndex...]
        return (verb, rest)
    }

    static func size(_ text: String) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 10, text.utf8.allSatisfy({ (48...57).contains($0) }) else { return nil }
        return Int(text)
    }

    /// A subject or sid: printable, no spaces (split already removed them), not empty.
    static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 > 32 && $0 < 127 }
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}

/// What a client sends, encoded.
public enum NATSClientOp: Hashable, Sendable {
    case connect([UInt8])
    case pub(subject: String, payload: [UInt8])
    /// HPUB with a header block (`NATS/1.0\r\n` and `Name: value\r\n` lines, then `\r\n`).
    case hpub(subject: String, headers: [UInt8], payload: [UInt8])
    case sub(subject: String, sid: String)
    case unsub(sid: String)
    case ping
    case pong

    public func write(to buffer: inout ByteBuffer) {
        switch self {
        case .connect(let json):
            buffer.writeString("CONNECT ")
            buffer.writeBytes(json)
            buffer.writeString("\r\n")
        case .pub(let subject, let payload):
            buffer.writeString("PUB \(subject) \(payload.count)\r\n")
            buffer.writeBytes(payload)
            buffer.writeString("\r\n")
        case .hpub(let subject, let headers, let payload):
            buffer.writeString("HPUB \(subject) \(headers.count) \(headers.count + payload.count)\r\n")
            buffer.writeBytes(headers)
            buffer.writeBytes(payload)
            buffer.writeString("\r\n")
        case .sub(let subject, let sid): buffer.writeString("SUB \(subject) \(sid)\r\n")
        case .unsub(let sid): buffer.writeString("UNSUB \(sid)\r\n")
        case .ping: buffer.writeString("PING\r\n")
        case .pong: buffer.writeString("PONG\r\n")
        }
    }
}

/// The INFO fields a client uses.
public struct NATSInfo: Decodable, Hashable, Sendable {
    public var serverID: String?
    public var maxPayload: Int?
    public var headers: Bool?
    /// Other servers of the cluster, as HOST:PORT.
    public var connectURLs: [String]?

    enum CodingKeys: String, CodingKey {
        case serverID = "server_id"
        case maxPayload = "max_payload"
        case headers
        case connectURLs = "connect_urls"
    }
}

/// A subject token for a name: names hold `A-Z a-z 0-9 _ . : @ / -` (see `Name`), and `.`
/// separates tokens, so it is written `%2E`; no name holds `%`, so the mapping is one to one.
public func natsToken(_ name: String) -> String {
    name.split(separator: ".", omittingEmptySubsequences: false).joined(separator: "%2E")
}
