import ArgumentParser

/// What the load generator makes of one incoming text message.
enum Incoming {
    /// A bench payload delivered to a subscriber or receiver (latency is read from it).
    case delivery
    /// The answer to a command (join, publish, send).
    case reply
    case error
    /// The connection is ready for commands.
    case welcome
    /// Someone joined or left a room the connection is in.
    case presence
    /// A protocol-level message that must be answered with these bytes (Engine.IO's ping).
    case answer([UInt8])
    case other
}

/// How the load generator speaks to one kind of server: the same scenarios, in its protocol.
/// Every frame a scenario sends is built here once, as text.
enum Dialect: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Switchboard's own protocol, which the bench's Node `ws` peer also speaks.
    case switchboard
    /// Centrifuge's JSON protocol (v0.15): connect, subscribe, publish commands with ids.
    case centrifuge
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport only, events with acks.
    case socketio
    /// STOMP 1.2 on Switchboard's `/stomp`: SUBSCRIBE and SEND with receipts (the replies).
    case stomp

    func path(_ target: Target, user: String, batch: Bool) -> String {
        switch self {
        case .switchboard: target.path("user=\(user)" + (batch ? "&batch=1" : ""))
        case .centrifuge: target.path("user=\(user)")
        case .socketio: target.path("EIO=4&transport=websocket&user=\(user)")
        case .stomp: target.path("user=\(user)")
        }
    }

    /// What the client sends once upgraded, before the server welcomes it.
    var greeting: [UInt8]? {
        switch self {
        case .switchboard: nil
        case .centrifuge: Array(#"{"id":1,"params":{}}"#.utf8)
        case .socketio: Array("40".utf8)
        // The user is named by the query; no heart-beats asked for.
        case .stomp: Array("CONNECT\naccept-version:1.2\nhost:bench\n\n\u{0}".utf8)
        }
    }

    func join(_ room: String) -> [UInt8] {
        switch self {
        case .switchboard: Array(#"{"type":"join","room":"\#(room)"}"#.utf8)
        case .centrifuge: Array(#"{"id":2,"method":1,"params":{"channel":"\#(room)"}}"#.utf8)
        case .socketio: Array(#"420["join","\#(room)"]"#.utf8)
        // Every subscriber uses the id most clients use for their first subscription.
        case .stomp: Array("SUBSCRIBE\nid:sub-0\ndestination:/topic/\(room)\nreceipt:j\n\n\u{0}".utf8)
        }
    }

    /// `data` is JSON, here a bench payload `[seq,sentNanos,"pad"]`.
    func publish(room: String, data: String) -> [UInt8] {
        switch self {
        case .switchboard: Array(#"{"type":"publish","room":"\#(room)","data":\#(data)}"#.utf8)
        case .centrifuge: Array(#"{"id":2,"method":3,"params":{"channel":"\#(room)","data":\#(data)}}"#.utf8)
        case .socketio: Array(#"420["publish",{"room":"\#(room)","data":\#(data)}]"#.utf8)
        case .stomp: Array("SEND\ndestination:/topic/\(room)\nreceipt:p\n\n\(data)\u{0}".utf8)
        }
    }

    func send(to user: String, data: String) -> [UInt8] {
        switch self {
        case .switchboard: Array(#"{"type":"send","to":"\#(user)","data":\#(data)}"#.utf8)
        // The bench's Centrifuge server subscribes every client to its own "user-NAME" channel.
        case .centrifuge: Array(#"{"id":2,"method":3,"params":{"channel":"user-\#(user)","data":\#(data)}}"#.utf8)
        case .socketio: Array(#"420["send",{"to":"\#(user)","data":\#(data)}]"#.utf8)
        case .stomp: Array("SEND\ndestination:/user/\(user)\nreceipt:s\n\n\(data)\u{0}".utf8)
        }
    }

    /// What comes just before a delivery's bench payload `[seq,sent,...]`.
    var payloadMarker: [UInt8] {
        switch self {
        case .stomp: Array("\n\n[".utf8)  // the MESSAGE body, after the headers
        default: Array("\"data\":[".utf8)
        }
    }

    func classify(_ bytes: UnsafeRawBufferPointer) -> Incoming {
        switch self {
        case .switchboard:
            if bytes.starts(with: #"{"type":"message""#) { return .delivery }
            if bytes.starts(with: #"{"type":"ok""#) { return .reply }
            if bytes.starts(with: #"{"type":"error""#) { return .error }
            if bytes.starts(with: #"{"type":"welcome""#) { return .welcome }
            if bytes.starts(with: #"{"type":"joined""#) || bytes.starts(with: #"{"type":"left""#) { return .presence }
        case .centrifuge:
            // Replies carry the command's id (1: connect, 2: everything else); pushes have none.
            if bytes.starts(with: #"{"result":{"channel""#) { return .delivery }
            if bytes.starts(with: #"{"result":{"type":1,"#) || bytes.starts(with: #"{"result":{"type":2,"#) { return .presence }
            if bytes.starts(with: #"{"id":1,"result""#) { return .welcome }
            if bytes.starts(with: #"{"id":2,"result""#) { return .reply }
            if bytes.starts(with: #"{"id":"#) { return .error }
        case .socketio:
            if bytes.starts(with: #"42["message""#) { return .delivery }
            if bytes.starts(with: "43") { return .reply }
            if bytes.starts(with: "40") { return .welcome }
            if bytes.starts(with: #"42["joined""#) || bytes.starts(with: #"42["left""#) { return .presence }
            if bytes.starts(with: "44") { return .error }
            if bytes.count == 1, bytes[0] == UInt8(ascii: "2") { return .answer(Array("3".utf8)) }
        case .stomp:
            if bytes.starts(with: "MESSAGE\n") { return .delivery }
            if bytes.starts(with: "RECEIPT\n") { return .reply }
            if bytes.starts(with: "CONNECTED\n") { return .welcome }
            if bytes.starts(with: "ERROR\n") { return .error }
        }
        return .other
    }
}
