import SwitchboardCore
import SwitchboardProtocol

/// The messages between a node and its hub, one JSON object per text frame. A message's `data`
/// travels as the raw JSON the client sent; it is never decoded on the way.
///
/// node -> hub: `hello` (node, url), `online`/`offline` (user), `joined`/`left` (room, user),
///              `pub` (an envelope), `load` (connections, users), and the queries `members`
///              (room), `where` (user), `nodes`. Each but `hello` and `load` carries `rid`; the
///              hub answers `{"t":"ack","rid":..}` once it holds, or `{"t":"reply","rid":..,...}`.
/// hub -> node: `msg` (an envelope), `joined`/`left` events, and `node` (node, event: `joined`
///              or `left`) when another node joins or leaves the cluster.
public enum HubLink {
    public static func envelope(_ envelope: Envelope, type: StaticString, rid: Int? = nil) -> [UInt8] {
        var out = JSONWriter(capacity: 96 + envelope.data.bytes.count)
        out.raw("{\"t\":\"")
        out.raw(type)
        out.raw("\",\"id\":")
        out.string(envelope.id)
        out.raw(",\"from\":")
        out.string(envelope.from)
        switch envelope.address {
        case .room(let room):
            out.raw(",\"room\":")
            out.string(room)
        case .user(let user):
            out.raw(",\"user\":")
            out.string(user)
        case .everyone:
            out.raw(",\"all\":true")
        }
        out.raw(",\"ts\":")
        out.number(envelope.timestamp)
        if let rid {
            out.raw(",\"rid\":")
            out.number(rid)
        }
        out.raw(",\"data\":")
        out.raw(envelope.data.bytes)
        out.raw("}")
        return out.bytes
    }

    public static func object(_ fields: [String: JSONValue]) -> [UInt8] {
        var out = JSONWriter()
        out.value(.object(fields))
        return out.bytes
    }

    /// Reads the envelope of a `pub` or `msg` frame.
    public static func envelope(from fields: JSONFields, extra: [String: JSONValue]) -> Envelope? {
        guard let id = extra["id"]?.string, let from = extra["from"]?.string, let range = fields.data,
            let ts = extra["ts"]?.int
        else { return nil }
        let address: Address
        if let room = fields.values["room"]?.string {
            address = .room(room)
        } else if let user = fields.values["user"]?.string {
            address = .user(user)
        } else {
            address = .everyone
        }
        return Envelope(id: id, from: from, address: address, data: RawJSON(bytes: Array(fields.bytes[range])), timestamp: Int64(ts))
    }

    /// Parses a link frame: the small fields, and where `data` sits.
    public static func parse(_ bytes: [UInt8]) -> (fields: JSONFields, values: [String: JSONValue])? {
        guard
            let fields = try? JSONFields.read(
                bytes,
                parsing: [
                    "t", "rid", "room", "user", "node", "url", "id", "from", "ts", "all", "connections", "users", "nodes", "ok", "event",
                ])
        else { return nil }
        return (fields, fields.values)
    }
}
