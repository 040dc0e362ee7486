import SwitchboardCore
import SwitchboardProtocol

/// The commands of history and recovery (PROTOCOL.md, 1.1): `join` with the room's position and
/// an optional resume, and `history`.
extension Session {
    /// Joins a room. With history, the `ok` carries the room's top, and with `since` the
    /// messages missed after it follow (or `recovered:false`): live messages of the room wait
    /// meanwhile, so each arrives once and in order (`StreamGates`).
    func join(_ room: String, since: StreamPosition?, id: CommandID?) async throws {
        let history = node.router.backplane.history
        guard history.isOn else {
            try await node.router.join(connection, room: room)
            connection.send(ServerFrame.ok(id: id, room: room, recovered: since.map { _ in false }))
            return
        }
        let stream = Address.room(room)
        connection.hold(stream)
        // A plain join's top may come with its batch (one round trip); a resume reads its own.
        let joined: StreamRead?
        do {
            joined = try await node.router.join(connection, room: room, readingTop: since == nil).top
        } catch {
            connection.resume(stream, reply: ServerFrame.error(Self.failure(error, to: id)), replay: [], top: nil)
            connection.forget(stream)
            node.metrics.commandsFailed.increment()
            return
        }
        let read: StreamRead
        do {
            if let joined {
                read = joined
            } else {
                read = try await node.router.backplane.read(stream, after: since?.offset, limit: since == nil ? 0 : history.size)
            }
        } catch {
            // The store is away (its outage is logged once by the backplane): the join stands,
            // as local work goes on, but without a position; a resume is answered honestly.
            logger.debug("joined without the room's position", metadata: ["room": "\(room)", "error": "\(error)"])
            if since != nil { node.metrics.resumes(false) }
            connection.resume(
                stream, reply: ServerFrame.ok(id: id, room: room, recovered: since.map { _ in false }), replay: [], top: nil)
            return
        }
        let recovered = since.map(read.recovers)
        if since != nil { node.metrics.resumes(recovered) }
        let replay = recovered == true ? read.after(since!.offset) : []
        connection.resume(
            stream, reply: ServerFrame.ok(id: id, room: room, top: read.top, recovered: recovered), replay: replay, top: read.top)
    }

    /// `history`: the last messages the room keeps, each as its recipients got it.
    func history(_ room: String, limit: Int?, id: CommandID?) async throws {
        let history = node.router.backplane.history
        guard history.isOn else {
            connection.send(
                ServerFrame.error(ProtocolError(id: id, code: .unsupported, message: "this cluster keeps no history")))
            return
        }
        if let limit, limit > history.size {
            connection.send(
                ServerFrame.error(
                    ProtocolError(id: id, code: .badRequest, message: "'limit' must be 1 to \(history.size), the history size")))
            return
        }
        let read = try await node.router.backplane.read(.room(room), after: nil, limit: limit ?? history.size)
        connection.send(
            ServerFrame.ok(id: id, room: room, top: read.top, messages: read.messages.map(ServerFrame.message)))
    }
}
