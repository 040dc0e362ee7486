/// One STOMP frame (STOMP 1.2): a command, headers in the order they came, and a body.
///
/// A header repeated keeps every occurrence here; `subscript(name)` gives the first, which is
/// the one that counts (STOMP 1.2, "Repeated Header Entries").
public struct StompFrame: Equatable, Sendable {
    public var command: StompCommand
    public var headers: [StompHeader]
    public var body: [UInt8]

    public init(_ command: StompCommand, _ headers: [StompHeader] = [], body: [UInt8] = []) {
        self.command = command
        self.headers = headers
        self.body = body
    }

    /// The first value of header `name`.
    public subscript(_ name: String) -> String? {
        headers.first { $0.name == name }?.value
    }
}

public struct StompHeader: Equatable, Sendable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// The commands of STOMP 1.2: what clients send, then what servers send.
public enum StompCommand: String, Sendable, CaseIterable {
    case connect = "CONNECT"
    case stomp = "STOMP"
    case send = "SEND"
    case subscribe = "SUBSCRIBE"
    case unsubscribe = "UNSUBSCRIBE"
    case ack = "ACK"
    case nack = "NACK"
    case begin = "BEGIN"
    case commit = "COMMIT"
    case abort = "ABORT"
    case disconnect = "DISCONNECT"
    case connected = "CONNECTED"
    case message = "MESSAGE"
    case receipt = "RECEIPT"
    case error = "ERROR"

    /// CONNECT, STOMP and CONNECTED headers are never escaped (STOMP 1.2, "Value Encoding").
    public var escapesHeaders: Bool {
        self != .connect && self != .stomp && self != .connected
    }
}

/// Why bytes are not a STOMP frame. `code` is the Switchboard protocol's error code
/// (`bad_request`, or `too_large` for a frame over a limit); the ERROR frame carries it.
public struct StompError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String
    public var description: String { "\(code): \(message)" }

    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }

    static func bad(_ message: String) -> StompError { StompError("bad_request", message) }
    static func tooLarge(_ message: String) -> StompError { StompError("too_large", message) }
}

/// How much one frame may hold.
public struct StompLimits: Sendable {
    /// The command line and headers, end of line included.
    public var maxHeadBytes: Int
    public var maxHeaders: Int
    public var maxBodyBytes: Int

    public init(maxHeadBytes: Int = 8192, maxHeaders: Int = 64, maxBodyBytes: Int = 65536) {
        self.maxHeadBytes = maxHeadBytes
        self.maxHeaders = maxHeaders
        self.maxBodyBytes = maxBodyBytes
    }
}
