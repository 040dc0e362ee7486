import SwitchboardCore
import SwitchboardProtocol

/// One server-to-client JSON object, with typed accessors for the protocol's fields.
public struct ServerMessage: Sendable, CustomStringConvertible {
    public let text: String
    public let json: JSONValue

    public init(text: String) throws {
        self.text = text
        self.json = try JSONValue.parse(text)
    }

    public var type: String { json["type"]?.string ?? "" }
    /// The command id a reply echoes, or a message's unique id, as JSON.
    public var id: JSONValue? { json["id"] }
    public var room: String? { json["room"]?.string }
    public var user: String? { json["user"]?.string }
    public var from: String? { json["from"]?.string }
    public var to: String? { json["to"]?.string }
    public var code: String? { json["code"]?.string }
    public var message: String? { json["message"]?.string }
    public var data: JSONValue? { json["data"] }
    public var users: [String]? { json["users"]?.array?.compactMap(\.string) }
    public var isBroadcast: Bool { json["broadcast"]?.bool ?? false }
    /// A message's place in its room's or inbox's stream (history on).
    public var offset: Int64? { json["offset"]?.int.map(Int64.init) }
    /// The epoch of a stream's top, in `ok` to `join` and `history`.
    public var epoch: String? { json["epoch"]?.string }
    /// The top of a stream (`ok` to `join` or `history`), when the reply carries one.
    public var top: StreamPosition? {
        guard let epoch, let offset else { return nil }
        return StreamPosition(epoch: epoch, offset: offset)
    }
    /// The answer to a resume (`join` with `since`).
    public var recovered: Bool? { json["recovered"]?.bool }
    /// `history`: the messages, each as its recipients got it.
    public var messages: [JSONValue]? { json["messages"]?.array }
    public var description: String { text }
}

/// The first frame of every connection.
public struct Welcome: Sendable, Hashable {
    public let session: String
    public let user: String
    public let node: String
    public let heartbeat: Int
    /// The top of the user's inbox (history on).
    public let inbox: StreamPosition?
    /// The answer to `?since=`: whether every missed inbox message follows.
    public let recovered: Bool?
}

public enum SwitchboardClientError: Error, CustomStringConvertible {
    /// The server answered the command with an `error` frame.
    case refused(code: String, message: String)
    /// The connection closed; `code` is the WebSocket close code the server sent, if any.
    case closed(code: Int?)
    /// No `welcome` arrived in time.
    case timedOut
    /// The server sent something that is not a protocol frame.
    case unexpected(String)

    public var description: String {
        switch self {
        case .refused(let code, let message): "refused (\(code)): \(message)"
        case .closed(let code): "connection closed" + (code.map { " with code \($0)" } ?? "")
        case .timedOut: "no welcome from the server in time"
        case .unexpected(let text): "unexpected frame: \(text)"
        }
    }
}
