import SwitchboardCore

/// Builds the JSON text of every server-to-client frame. Each frame is built once and the same
/// bytes go to every recipient.
public enum ServerFrame {
    /// With history on, `inbox` is the top of the user's inbox; `recovered` answers `?since=`.
    public static func welcome(
        session: String, user: String, node: String, heartbeat: Int, inbox: StreamPosition? = nil, recovered: Bool? = nil
    ) -> [UInt8] {
        var out = JSONWriter()
        out.raw("{\"type\":\"welcome\",\"session\":")
        out.string(session)
        out.raw(",\"user\":")
        out.string(user)
        out.raw(",\"node\":")
        out.string(node)
        out.raw(",\"heartbeat\":")
        out.number(heartbeat)
        if let inbox {
            out.raw(",\"inbox\":")
            out.position(inbox)
        }
        if let recovered {
            out.raw(recovered ? ",\"recovered\":true" : ",\"recovered\":false")
        }
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
        if let position = envelope.position {
            out.raw(",\"offset\":")
            out.number(position.offset)
        }
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

    /// `ok`, with optional extra fields: `room`, `users`; a stream's top (`epoch`, `offset`);
    /// `recovered` (a resume); `messages` (history: each the `message` object as encoded).
    public static func ok(
        id: CommandID?, room: String? = nil, users: [String]? = nil, top: StreamPosition? = nil, recovered: Bool? = nil,
        messages: [[UInt8]]? = nil
    ) -> [UInt8] {
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
        if let top {
            out.raw(",\"epoch\":")
            out.string(top.epoch)
            out.raw(",\"offset\":")
            out.number(top.offset)
        }
        if let recovered {
            out.raw(recovered ? ",\"recovered\":true" : ",\"recovered\":false")
        }
        if let messages {
            out.raw(",\"messages\":[")
            for (index, message) in messages.enumerated() {
                if index > 0 { out.raw(",") }
                out.raw(message)
            }
            out.raw("]")
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
        case .join(let room, let since):
            out.string("join")
            field("room", room)
            if let since {
                out.raw(",\"since\":")
                out.position(since)
            }
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
        case .history(let room, let limit):
            out.string("history")
            field("room", room)
            if let limit {
                out.raw(",\"limit\":")
                out.number(limit)
            }
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

extension JSONWriter {
    /// `{"epoch":..,"offset":..}`: a stream position, as `welcome.inbox` and `join.since` hold it.
    fileprivate mutating func position(_ position: StreamPosition) {
        raw("{\"epoch\":")
        string(position.epoch)
        raw(",\"offset\":")
        number(position.offset)
        raw("}")
    }
}
