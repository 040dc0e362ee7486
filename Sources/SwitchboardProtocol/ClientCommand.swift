import SwitchboardCore

/// The `id` a client puts on a command: a string or an integer, echoed back as it came.
public enum CommandID: Hashable, Sendable {
    case string(String)
    case integer(String)

    public var json: JSONValue {
        switch self {
        case .string(let text): .string(text)
        case .integer(let digits): .number(digits)
        }
    }
}

/// What a client asks of the server.
public enum ClientCommand: Hashable, Sendable {
    /// With `since`, a resume: what the room got after that position is replayed (1.1).
    case join(room: String, since: StreamPosition? = nil)
    case leave(room: String)
    case publish(room: String, data: RawJSON)
    case send(to: String, data: RawJSON)
    case broadcast(data: RawJSON)
    case presence(room: String)
    /// The last `limit` messages the room's history keeps (all it keeps without one).
    case history(room: String, limit: Int? = nil)
    case ping
}

public struct ClientRequest: Hashable, Sendable {
    public var id: CommandID?
    public var command: ClientCommand
    public init(id: CommandID?, command: ClientCommand) {
        self.id = id
        self.command = command
    }
}

/// The error codes of the protocol.
public enum ErrorCode: String, Hashable, Sendable, CaseIterable {
    case badRequest = "bad_request"
    case invalidName = "invalid_name"
    case forbidden
    case offline
    case rateLimited = "rate_limited"
    case tooLarge = "too_large"
    case `internal`
    /// The cluster cannot do this (`history` where no history is kept).
    case unsupported
}

/// A refusal: the `error` frame (or HTTP 4xx body) a client gets.
public struct ProtocolError: Error, Hashable, Sendable {
    public var id: CommandID?
    public var code: ErrorCode
    public var message: String
    public init(id: CommandID? = nil, code: ErrorCode, message: String) {
        self.id = id
        self.code = code
        self.message = message
    }
}

extension ClientRequest {
    /// Decodes one client frame. Every failure names what is wrong and keeps the command's `id`
    /// when it could be read, so the client can match the error to its command.
    public static func decode(_ bytes: [UInt8]) -> Result<ClientRequest, ProtocolError> {
        let fields: JSONFields
        do {
            fields = try JSONFields.read(bytes)
        } catch let error as ProtocolError {
            return .failure(error)
        } catch {
            return .failure(ProtocolError(code: .badRequest, message: "\(error)"))
        }
        let id: CommandID?
        switch fields.values["id"] {
        case nil, .null?: id = nil
        case .string(let text)?: id = .string(text)
        case .number(let digits)? where Int64(digits) != nil: id = .integer(digits)
        default: return .failure(ProtocolError(code: .badRequest, message: "id must be a string or an integer"))
        }
        do {
            return .success(ClientRequest(id: id, command: try command(fields, id: id)))
        } catch let error as ProtocolError {
            return .failure(error)
        } catch {
            return .failure(ProtocolError(id: id, code: .internal, message: "\(error)"))
        }
    }

    private static func command(_ fields: JSONFields, id: CommandID?) throws -> ClientCommand {
        func bad(_ message: String) -> ProtocolError { ProtocolError(id: id, code: .badRequest, message: message) }
        func name(_ key: String) throws -> String {
            guard let value = fields.values[key] else { throw bad("missing field '\(key)'") }
            guard case .string(let text) = value else { throw bad("'\(key)' must be a string") }
            guard Name.isValid(text) else {
                throw ProtocolError(
                    id: id, code: .invalidName,
                    message: "'\(key)' must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -")
            }
            return text
        }
        func data() throws -> RawJSON {
            guard let range = fields.data else { throw bad("missing field 'data'") }
            return RawJSON(bytes: Array(fields.bytes[range]))
        }
        func since() throws -> StreamPosition? {
            switch fields.values["since"] {
            case nil, .null?: return nil
            case .object(let position)?:
                guard case .string(let epoch)? = position["epoch"], Self.isEpoch(epoch) else {
                    throw bad("'since.epoch' must be the epoch string of an earlier 'ok' or 'welcome'")
                }
                guard case .number(let digits)? = position["offset"], let offset = Int64(digits), offset >= 0 else {
                    throw bad("'since.offset' must be an integer of at least 0")
                }
                return StreamPosition(epoch: epoch, offset: offset)
            default:
                throw bad("'since' must be an object {\"epoch\":..,\"offset\":..}")
            }
        }
        func limit() throws -> Int? {
            switch fields.values["limit"] {
            case nil, .null?: return nil
            case .number(let digits)?:
                guard let limit = Int(digits), limit >= 1 else { throw bad("'limit' must be an integer of at least 1") }
                return limit
            default: throw bad("'limit' must be an integer")
            }
        }
        guard let typeValue = fields.values["type"] else { throw bad("missing field 'type'") }
        guard case .string(let type) = typeValue else { throw bad("'type' must be a string") }
        switch type {
        case "join": return .join(room: try name("room"), since: try since())
        case "leave": return .leave(room: try name("room"))
        case "publish": return .publish(room: try name("room"), data: try data())
        case "send": return .send(to: try name("to"), data: try data())
        case "broadcast": return .broadcast(data: try data())
        case "presence": return .presence(room: try name("room"))
        case "history": return .history(room: try name("room"), limit: try limit())
        case "ping": return .ping
        default: throw bad("unknown type '\(type.prefix(64))'")
        }
    }
}

extension ClientRequest {
    /// An epoch as servers give them out: 1 to 64 letters, digits, `-` or `_` (no colon, so that
    /// `since=EPOCH:OFFSET` splits cleanly).
    public static func isEpoch(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 64
            && text.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x2D
                    || byte == 0x5F
            }
    }

    /// Parses the `since` query parameter of `/ws`: `EPOCH:OFFSET`; nil when malformed.
    public static func inboxSince(_ text: String) -> StreamPosition? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let epoch = String(text[..<colon])
        let digits = text[text.index(after: colon)...]
        guard isEpoch(epoch), !digits.isEmpty, digits.allSatisfy(\.isASCII), let offset = Int64(digits), offset >= 0 else {
            return nil
        }
        return StreamPosition(epoch: epoch, offset: offset)
    }
}

/// The top level of a JSON object: small fields parsed, `data` only validated and located.
/// Fields the protocol does not know are validated and skipped.
public struct JSONFields: Sendable {
    static let parsedKeys: Set<String> = ["type", "id", "room", "to", "user", "since", "limit"]

    public var bytes: [UInt8]
    public var values: [String: JSONValue] = [:]
    /// Where the `data` value sits in `bytes`.
    public var data: Range<Int>?

    public static func read(_ bytes: [UInt8]) throws -> JSONFields {
        try read(bytes, parsing: parsedKeys)
    }

    /// Reads an object, parsing the fields named in `keys` (plus `data`, located only).
    public static func read(_ bytes: [UInt8], parsing keys: Set<String>) throws -> JSONFields {
        var fields = JSONFields(bytes: bytes)
        var reader = JSONReader(bytes)
        do {
            guard try reader.peek() == UInt8(ascii: "{") else {
                _ = try JSONValue.parse(bytes)  // says why, when it is not JSON at all
                throw ProtocolError(code: .badRequest, message: "a frame must be a JSON object")
            }
            reader.index += 1
            reader.depth = 1
            if try reader.peek() == UInt8(ascii: "}") {
                reader.index += 1
            } else {
                while true {
                    guard try reader.peek() == UInt8(ascii: "\"") else { throw reader.fail("expected a string key") }
                    let key = try reader.string(build: true)!
                    try reader.expect(UInt8(ascii: ":"))
                    if key == "data" {
                        fields.data = try reader.skipValue()
                    } else if keys.contains(key) {
                        fields.values[key] = try reader.readValue()
                    } else {
                        _ = try reader.skipValue()
                    }
                    let next = try reader.peek()
                    reader.index += 1
                    if next == UInt8(ascii: "}") { break }
                    guard next == UInt8(ascii: ",") else { throw reader.fail("expected ',' or '}'") }
                }
            }
            try reader.expectEnd()
        } catch let error as JSONError {
            throw ProtocolError(code: .badRequest, message: "not valid JSON: \(error)")
        }
        return fields
    }
}
