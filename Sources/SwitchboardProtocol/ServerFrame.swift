import SwitchboardCore

/// Builds the JSON text of every server-to-client frame. Each frame is built once and the same
/// bytes go to every recipient.
public enum ServerFrame {
    public static func welcome(session: String, user: String, node: String, heartbeat: Int) -> [UInt8] {
        var out = JSONWriter()
        out.raw("{\"type\":\"welcome\",\"session\":")
        out.string(session)
        out.raw(",\"user\":")
        out.string(user)
        out.raw(",\"node\":")
        out.string(node)
        out.raw(",\"heartbeat\":")
        out.number(heartbeat)
        out.raw("}")
        return out.bytes
    }

    public static func event(_ event: ClusterEvent) -> [UInt8] {
        switch event {
        case .message(let envelope): message(envelope)
        case .joined(let room, let user): presence("joined", room: room, user: user)
        case .left(let room, let user): presence("left", room: room, user: user)
        }
    }

    public static func message(_ envelope: Envelope) -> [UInt8] {
        var out = JSONWriter(capacity: 96 + envelope.data.bytes.count)
        out.raw("{\"type\":\"message\",\"id\":")
        out.string(envelope.id)
        out.raw(",\"from\":")
        out.string(envelope.from)
        switch envelope.address {
        case .room(let room):
            out.raw(",\"room\":")
            out.string(room)
        case .user(let user):
            out.raw(",\"to\":")
            out.string(user)
        case .everyone:
            out.raw(",\"broadcast\":true")
        }
        out.raw(",\"data\":")
        out.raw(envelope.data.bytes)
        out.raw(",\"ts\":")
        out.number(envelope.timestamp)
        out.raw("}")
        return out.bytes
    }

    static func presence(_ type: String, room: String, user: String) -> [UInt8] {
        var out = JSONWriter()
        out.raw("{\"type\":")
        out.string(type)
        out.raw(",\"room\":")
        out.string(room)
        out.raw(",\"user\":")
        out.string(user)
        out.raw("}")
        return out.bytes
    }

    /// `ok`, with optional extra fields (`room`, `users`).
    public static func ok(id: CommandID?, room: String? = nil, users: [String]? = nil) -> [UInt8] {
        var out = JSONWriter()
        out.raw("{\"type\":\"ok\"")
        if let id {
            out.raw(",\"id\":")
            out.value(id.json)
        }
        if let room {
            out.raw(",\"room\":")
            out.string(room)
        }
        if let users {
            out.raw(",\"users\":")
            out.value(.array(users.map(JSONValue.string)))
        }
        out.raw("}")
        return out.bytes
    }

    public static func pong(id: CommandID?) -> [UInt8] {
        var out = JSONWriter()
        out.raw("{\"type\":\"pong\"")
        if let id {
            out.raw(",\"id\":")
            out.value(id.json)
        }
        out.raw("}")
        return out.bytes
    }

    public static func error(_ error: ProtocolError) -> [UInt8] {
        var out = JSONWriter()
        out.raw("{\"type\":\"error\"")
        if let id = error.id {
            out.raw(",\"id\":")
            out.value(id.json)
        }
        out.raw(",\"code\":")
        out.string(error.code.rawValue)
        out.raw(",\"message\":")
        out.string(error.message)
        out.raw("}")
        return out.bytes
    }
}

/// Builds client-to-server frames (for the client library and tests).
public enum ClientFrame {
    public static func encode(_ request: ClientRequest) -> [UInt8] {
        var out = JSONWriter()
        out.raw("{\"type\":")
        func field(_ key: StaticString, _ value: String) {
            out.raw(",\"")
            out.raw(key)
            out.raw("\":")
            out.string(value)
        }
        func data(_ json: RawJSON) {
            out.raw(",\"data\":")
            out.raw(json.bytes)
        }
        switch request.command {
        case .join(let room):
            out.string("join")
            field("room", room)
        case .leave(let room):
            out.string("leave")
            field("room", room)
        case .publish(let room, let json):
            out.string("publish")
            field("room", room)
            data(json)
        case .send(let to, let json):
            out.string("send")
            field("to", to)
            data(json)
        case .broadcast(let json):
            out.string("broadcast")
            data(json)
        case .presence(let room):
            out.string("presence")
            field("room", room)
        case .ping:
            out.string("ping")
        }
        if let id = request.id {
            out.raw(",\"id\":")
            out.value(id.json)
        }
        out.raw("}")
        return out.bytes
    }
}
