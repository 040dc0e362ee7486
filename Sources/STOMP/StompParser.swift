/// Reads STOMP frames from a stream of bytes that may split a frame anywhere or hold several:
/// over WebSocket, one message may carry many frames and one frame may span many messages.
///
/// Strict where STOMP 1.2 is: the command must be one of its own, every header line has a
/// colon, an undefined escape (`\t`, a lone `\` at the end) is an error, `content-length` must be
/// a decimal that the body honours (the byte after it is NUL), and a frame over a limit is an
/// error before it is all read. End-of-lines between frames are heart-beats. After an error the
/// parser stays failed: the connection is to be closed, as STOMP requires.
public struct StompParser: Sendable {
    public enum Event: Equatable, Sendable {
        case frame(StompFrame)
        /// An end-of-line between frames.
        case heartbeat
    }

    public let limits: StompLimits
    /// STOMP 1.0 has no header escaping: its backslashes are plain bytes.
    public var escaping = true
    private var buffer: [UInt8] = []
    private var start = 0
    private var failed: StompError?

    public init(limits: StompLimits = StompLimits()) {
        self.limits = limits
    }

    /// Bytes waiting for the rest of their frame.
    public var pendingBytes: Int { buffer.count - start }

    public mutating func append(_ bytes: some Collection<UInt8>) {
        if start > 0, start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next heart-beat or whole frame, nil until more bytes come.
    public mutating func next() throws(StompError) -> Event? {
        if let failed { throw failed }
        do {
            return try parseNext()
        } catch {
            failed = error
            throw error
        }
    }

    private mutating func parseNext() throws(StompError) -> Event? {
        guard start < buffer.count else { return nil }
        // A heart-beat: LF or CR LF where a frame could begin.
        if buffer[start] == 0x0A {
            consume(to: start + 1)
            return .heartbeat
        }
        if buffer[start] == 0x0D {
            guard start + 1 < buffer.count else { return nil }
            guard buffer[start + 1] == 0x0A else { throw .bad("a CR not followed by LF between frames") }
            consume(to: start + 2)
            return .heartbeat
        }
        // The head: lines up to an empty one.
        var lines: [ArraySlice<UInt8>] = []
        var cursor = start
        while true {
            guard let lf = buffer[cursor...].firstIndex(of: 0x0A) else {
                if buffer.count - start > limits.maxHeadBytes {
                    throw .tooLarge("frame head longer than \(limits.maxHeadBytes) bytes")
                }
                return nil
            }
            if lf + 1 - start > limits.maxHeadBytes { throw .tooLarge("frame head longer than \(limits.maxHeadBytes) bytes") }
            var end = lf
            if end > cursor, buffer[end - 1] == 0x0D { end -= 1 }
            let line = buffer[cursor..<end]
            cursor = lf + 1
            if line.isEmpty { break }
            lines.append(line)
            if lines.count > limits.maxHeaders + 1 { throw .tooLarge("more than \(limits.maxHeaders) headers") }
        }
        let commandText = String(decoding: lines[0], as: UTF8.self)
        guard let command = StompCommand(rawValue: commandText) else {
            throw .bad("unknown command '\(Self.printable(commandText))'")
        }
        var headers: [StompHeader] = []
        headers.reserveCapacity(lines.count - 1)
        let unescaped = escaping && command.escapesHeaders
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                throw .bad("a header line without ':' ('\(Self.printable(String(decoding: line, as: UTF8.self)))')")
            }
            let name = try Self.text(line[line.startIndex..<colon], unescape: unescaped)
            let value = try Self.text(line[(colon + 1)...], unescape: unescaped)
            guard !name.isEmpty else { throw .bad("a header with an empty name") }
            headers.append(StompHeader(name, value))
        }
        // The body: `content-length` bytes then NUL, or everything up to the first NUL.
        let bodyStart = cursor
        let bodyEnd: Int
        if let length = headers.first(where: { $0.name == "content-length" })?.value {
            guard let count = Int(length), count >= 0, length.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw .bad("content-length '\(Self.printable(length))' is not a decimal count of bytes")
            }
            guard count <= limits.maxBodyBytes else { throw .tooLarge("body of \(count) bytes, over \(limits.maxBodyBytes)") }
            guard bodyStart + count < buffer.count else { return nil }
            guard buffer[bodyStart + count] == 0 else { throw .bad("the body is longer than its content-length") }
            bodyEnd = bodyStart + count
        } else {
            guard let nul = buffer[bodyStart...].firstIndex(of: 0) else {
                if buffer.count - bodyStart > limits.maxBodyBytes {
                    throw .tooLarge("body over \(limits.maxBodyBytes) bytes")
                }
                return nil
            }
            guard nul - bodyStart <= limits.maxBodyBytes else { throw .tooLarge("body over \(limits.maxBodyBytes) bytes") }
            bodyEnd = nul
        }
        let frame = StompFrame(command, headers, body: Array(buffer[bodyStart..<bodyEnd]))
        consume(to: bodyEnd + 1)
        return .frame(frame)
    }

    private mutating func consume(to index: Int) {
        start = index
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 4096)
            start = 0
        } else if start > 4096, start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
    }

    /// A header name or value as text: UTF-8 (STOMP's encoding), unescaped when the frame's
    /// headers are escaped.
    static func text(_ bytes: ArraySlice<UInt8>, unescape: Bool) throws(StompError) -> String {
        guard unescape, bytes.contains(UInt8(ascii: "\\")) else {
            guard let text = String(validating: bytes, as: UTF8.self) else { throw .bad("a header that is not UTF-8") }
            return text
        }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            index += 1
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                continue
            }
            guard index < bytes.endIndex else { throw .bad("a header ends with a lone '\\'") }
            switch bytes[index] {
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "c"): out.append(UInt8(ascii: ":"))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            default: throw .bad("undefined escape '\\\(printable(String(decoding: [bytes[index]], as: UTF8.self)))' in a header")
            }
            index += 1
        }
        guard let text = String(validating: out, as: UTF8.self) else { throw .bad("a header that is not UTF-8") }
        return text
    }

    /// At most 64 characters of `text`, control characters shown as `?`: for error messages.
    public static func printable(_ text: String) -> String {
        String(text.prefix(64).map { $0.isASCII && ($0.asciiValue! < 0x20 || $0.asciiValue! == 0x7F) ? "?" : $0 })
    }
}
