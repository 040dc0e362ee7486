/// One AMQP 0-9-1 frame (the specification's section 4.2.3): a method, a content header, a
/// piece of content body, or a heartbeat.
public enum AMQPFrame: Equatable, Sendable {
    case method(channel: UInt16, AMQPMethod)
    case header(channel: UInt16, AMQPContentHeader)
    case body(channel: UInt16, [UInt8])
    case heartbeat

    /// What a client sends first: "AMQP", 0, 0, 9, 1.
    public static let protocolHeader: [UInt8] = Array("AMQP".utf8) + [0, 0, 9, 1]
    static let frameEnd: UInt8 = 0xCE
    /// The smallest frame-max a peer may ask for (4.2.3); 131072 is RabbitMQ's default.
    public static let minFrameMax: UInt32 = 4096

    public func encoded() -> [UInt8] {
        let (type, channel, payload): (UInt8, UInt16, [UInt8]) =
            switch self {
            case .method(let channel, let method): (1, channel, method.encoded())
            case .header(let channel, let header): (2, channel, header.encoded())
            case .body(let channel, let bytes): (3, channel, bytes)
            case .heartbeat: (8, 0, [])
            }
        var out = AMQPWriter()
        out.octet(type)
        out.short(channel)
        out.longBytes(payload)
        out.octet(Self.frameEnd)
        return out.bytes
    }
}

/// The content header of a `basic` message: its body's size and its properties.
public struct AMQPContentHeader: Equatable, Sendable {
    public var classID: UInt16
    public var bodySize: UInt64
    public var properties: AMQPProperties

    public init(classID: UInt16 = 60, bodySize: UInt64, properties: AMQPProperties = AMQPProperties()) {
        self.classID = classID
        self.bodySize = bodySize
        self.properties = properties
    }

    func encoded() -> [UInt8] {
        var out = AMQPWriter()
        out.short(classID)
        out.short(0)  // weight
        out.longlong(bodySize)
        properties.write(to: &out)
        return out.bytes
    }

    static func read(_ reader: inout AMQPReader) throws(AMQPError) -> AMQPContentHeader {
        let classID = try reader.short()
        _ = try reader.short()  // weight, unused
        let size = try reader.longlong()
        return AMQPContentHeader(classID: classID, bodySize: size, properties: try AMQPProperties.read(&reader))
    }
}

/// The properties of a `basic` message, in the order of their flag bits (15 down to 2).
public struct AMQPProperties: Equatable, Sendable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable?
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageID: String?
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?
    public var clusterID: String?

    public init(contentType: String? = nil, headers: AMQPTable? = nil, deliveryMode: UInt8? = nil, messageID: String? = nil) {
        self.contentType = contentType
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.messageID = messageID
    }

    func write(to out: inout AMQPWriter) {
        var flags: UInt16 = 0
        var body = AMQPWriter()
        func string(_ value: String?, _ bit: UInt16) {
            guard let value else { return }
            flags |= 1 << bit
            body.shortString(value)
        }
        string(contentType, 15)
        string(contentEncoding, 14)
        if let headers {
            flags |= 1 << 13
            body.table(headers)
        }
        if let deliveryMode {
            flags |= 1 << 12
            body.octet(deliveryMode)
        }
        if let priority {
            flags |= 1 << 11
            body.octet(priority)
        }
        string(correlationID, 10)
        string(replyTo, 9)
        string(expiration, 8)
        string(messageID, 7)
        if let timestamp {
            flags |= 1 << 6
            body.longlong(timestamp)
        }
        string(type, 5)
        string(userID, 4)
        string(appID, 3)
        string(clusterID, 2)
        out.short(flags)
        out.raw(body.bytes)
    }

    static func read(_ reader: inout AMQPReader) throws(AMQPError) -> AMQPProperties {
        let flags = try reader.short()
        guard flags & 1 == 0 else { throw AMQPError("property flags continue past one word (not used by basic)") }
        func has(_ bit: UInt16) -> Bool { flags & (1 << bit) != 0 }
        var properties = AMQPProperties()
        if has(15) { properties.contentType = try reader.shortString() }
        if has(14) { properties.contentEncoding = try reader.shortString() }
        if has(13) { properties.headers = try reader.table() }
        if has(12) { properties.deliveryMode = try reader.octet() }
        if has(11) { properties.priority = try reader.octet() }
        if has(10) { properties.correlationID = try reader.shortString() }
        if has(9) { properties.replyTo = try reader.shortString() }
        if has(8) { properties.expiration = try reader.shortString() }
        if has(7) { properties.messageID = try reader.shortString() }
        if has(6) { properties.timestamp = try reader.longlong() }
        if has(5) { properties.type = try reader.shortString() }
        if has(4) { properties.userID = try reader.shortString() }
        if has(3) { properties.appID = try reader.shortString() }
        if has(2) { properties.clusterID = try reader.shortString() }
        return properties
    }
}

/// Reads frames from a byte stream that may split them anywhere. Strict: an unknown frame type,
/// a frame over `frameMax`, a missing frame-end octet, a heartbeat on a channel, a method or
/// header whose arguments do not fill its payload exactly, each is an error (the connection is
/// then to be closed with 501 FRAME_ERROR or 505 UNEXPECTED_FRAME, as the specification says).
public struct AMQPFrameParser: Sendable {
    /// The largest frame accepted (the negotiated frame-max; until tuned, the minimum).
    public var frameMax: UInt32
    private var buffer: [UInt8] = []
    private var start = 0
    private var failed: AMQPError?

    public init(frameMax: UInt32 = 131072) {
        self.frameMax = frameMax
    }

    public var pendingBytes: Int { buffer.count - start }

    public mutating func append(_ bytes: some Collection<UInt8>) {
        if start > 0, start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public mutating func next() throws(AMQPError) -> AMQPFrame? {
        if let failed { throw failed }
        do {
            return try parseNext()
        } catch {
            failed = error
            throw error
        }
    }

    private mutating func parseNext() throws(AMQPError) -> AMQPFrame? {
        guard pendingBytes >= 7 else {
            // A server that does not speak 0-9-1 answers with its own protocol header.
            if pendingBytes >= 4, buffer[start..<start + 4].elementsEqual("AMQP".utf8) {
                throw AMQPError("the server refused protocol 0-9-1 (it answered with a protocol header)")
            }
            return nil
        }
        if buffer[start..<start + 4].elementsEqual("AMQP".utf8) {
            throw AMQPError("the server refused protocol 0-9-1 (it answered with a protocol header)")
        }
        var head = AMQPReader(buffer[start..<start + 7])
        let type = try head.octet()
        let channel = try head.short()
        let size = try head.long()
        guard size <= frameMax else { throw AMQPError("a frame of \(size) bytes, over frame-max \(frameMax)") }
        let total = 7 + Int(size) + 1
        guard pendingBytes >= total else { return nil }
        guard buffer[start + total - 1] == AMQPFrame.frameEnd else { throw AMQPError("a frame without its frame-end octet") }
        let payload = buffer[(start + 7)..<(start + 7 + Int(size))]
        let frame: AMQPFrame
        switch type {
        case 1:
            var reader = AMQPReader(payload)
            let method = try AMQPMethod.read(&reader)
            guard reader.remaining == 0 else { throw AMQPError("\(method.name) has \(reader.remaining) bytes past its arguments") }
            frame = .method(channel: channel, method)
        case 2:
            var reader = AMQPReader(payload)
            let header = try AMQPContentHeader.read(&reader)
            guard reader.remaining == 0 else { throw AMQPError("a content header has \(reader.remaining) bytes past its properties") }
            frame = .header(channel: channel, header)
        case 3:
            frame = .body(channel: channel, Array(payload))
        case 8:
            guard channel == 0, size == 0 else { throw AMQPError("a heartbeat frame on channel \(channel) or with a payload") }
            frame = .heartbeat
        default:
            throw AMQPError("unknown frame type \(type)")
        }
        start += total
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            start = 0
        } else if start > 1 << 16, start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        return frame
    }
}
