import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardProtocol
import Synchronization

/// Runs one client's commands, each in the order it arrived. The socket's handler hands over
/// whole messages (`receive`); a task runs them only while some are waiting, so an idle client
/// has no task. Publishes and broadcasts are queued on the backplane in order and answered, in
/// order, as the cluster takes them, so a fast sender has several on their way at once (up to
/// `maxPublishesInFlight`); any other command first waits for those answers. That is what keeps
/// one sender's messages, and the answers to its commands, in order everywhere.
///
/// Its life (registering, active with strikes, ended, gone) is `SessionStateMachine`. Only one
/// task runs a session at a time (`Inbox.running`); its state sits behind a lock anyway, which
/// is never contended and keeps the type honestly `Sendable`.
final class Session: Sendable {
    /// What the socket hands over.
    enum Inbound {
        case text([UInt8])
        case binary
        /// A message (its text, when it was text) or a control frame (nil) that came over the
        /// connection's rate: refused with `rate_limited`, and a strike.
        case overRate([UInt8]?)
        case closed
    }

    /// What the running task keeps.
    private struct Running {
        var machine: SessionStateMachine
        /// The answer to the last publish still on its way; each waits for the one before it.
        var lastAnswer: Task<Void, Never>?
        var publishesInFlight = 0
    }

    let connection: Connection
    let node: NodeContext
    private let running: Mutex<Running>
    private let inbox: SerialInbox<Inbound>
    static let maxPublishesInFlight = 64

    init(connection: Connection, node: NodeContext) {
        self.connection = connection
        self.node = node
        self.running = Mutex(Running(machine: SessionStateMachine(maxStrikes: node.configuration.maxStrikes)))
        self.inbox = SerialInbox()
    }

    var logger: Logger { node.logger }

    /// Joins the router and says welcome, before any command runs; with `inboxSince`, the
    /// inbox is resumed from there. On the event loop.
    func start(inboxSince: StreamPosition? = nil) {
        inbox.start({ await self.connect(inboxSince: inboxSince) }, on: connection.channel, run: run)
    }

    /// Takes a message from the socket. On the event loop.
    func receive(_ message: Inbound) {
        inbox.receive(message, on: connection.channel, run: run)
    }

    private func connect(inboxSince since: StreamPosition?) async {
        let history = node.router.backplane.history
        let inbox = Address.user(connection.user)
        // The inbox's live messages wait until its top (and any replay) is known.
        if history.isOn { connection.hold(inbox) }
        // A plain connect's inbox top may come with its registration (one round trip).
        let registered: StreamRead?
        do {
            registered = try await node.router.connect(connection, readingInbox: history.isOn && since == nil)
        } catch {
            logger.warning("could not register a connection", metadata: ["error": "\(error)"])
            running.withLock { $0.machine.registrationFailed() }
            connection.close(.unexpectedServerError, reason: "the node could not take the connection")
            return
        }
        running.withLock { $0.machine.registered() }
        node.metrics.connectionsOpened.increment()
        node.metrics.connections.increment()
        var resumed: (replay: [Envelope], top: StreamPosition?)?
        var recovered: Bool? = since.map { _ in false }
        if history.isOn {
            do {
                let read: StreamRead
                if let registered {
                    read = registered
                } else {
                    read = try await node.router.backplane.read(inbox, after: since?.offset, limit: since == nil ? 0 : history.size)
                }
                let recovers = since.map(read.recovers) ?? false
                if since != nil { recovered = recovers }
                resumed = (recovers ? read.after(since!.offset) : [], read.top)
            } catch {
                // Served without a position: the welcome says nothing it cannot stand behind.
                logger.warning("could not read a user's inbox", metadata: ["user": "\(connection.user)", "error": "\(error)"])
                resumed = ([], nil)
            }
            node.metrics.resumes(recovered)
        }
        connection.open(
            welcome: ServerFrame.welcome(
                session: connection.session, user: connection.user, node: node.configuration.nodeID,
                heartbeat: node.configuration.heartbeatSeconds, inbox: resumed?.top, recovered: recovered),
            inbox: resumed)
    }

    private func run(_ message: Inbound) async {
        if case .closed = message {
            guard case .count(let leaveRouter) = running.withLock({ $0.machine.socketClosed() }) else { return }
            node.metrics.connectionsClosed.increment()
            node.metrics.connections.decrement()
            if leaveRouter { await node.router.disconnect(connection) }
            node.connectionLeft.poke()
            return
        }
        guard running.withLock({ $0.machine.mayRunCommands }) else { return }
        node.metrics.framesReceived.increment()
        switch message {
        case .text(let bytes):
            switch ClientRequest.decode(bytes) {
            case .success(let request):
                running.withLock { $0.machine.frameAccepted() }
                await handle(request)
            case .failure(let error):
                node.metrics.badFrames.increment()
                await refuse(error)
            }
        case .binary:
            node.metrics.badFrames.increment()
            await refuse(ProtocolError(code: .badRequest, message: "binary frames are not supported; send JSON text"))
        case .overRate(let text):
            node.metrics.rateLimited.increment()
            let error = ProtocolError(id: text.flatMap(Self.commandID), code: .rateLimited, message: "slow down: rate limit exceeded")
            await refuse(error, answer: text != nil)
        case .closed:
            break
        }
    }

    /// The `id` of a command, if the frame has a readable one.
    private static func commandID(_ text: [UInt8]) -> CommandID? {
        switch ClientRequest.decode(text) {
        case .success(let request): request.id
        case .failure(let error): error.id
        }
    }

    /// Answers a refused frame (control frames get no answer); closes the connection (1008)
    /// after too many in a row.
    private func refuse(_ error: ProtocolError, answer: Bool = true) async {
        await settleAnswers()
        if answer { connection.send(ServerFrame.error(error)) }
        guard running.withLock({ $0.machine.strike() }) == .close else { return }
        logger.notice("closing connection after repeated bad or excess frames", metadata: ["session": "\(connection.session)"])
        connection.close(.policyViolation, reason: "too many bad or excess frames")
        await node.router.disconnect(connection)
        node.connectionLeft.poke()
    }

    /// The token's `rooms` claim: answers `forbidden` and returns false for a room outside it.
    private func allowed(_ room: String, _ id: CommandID?) -> Bool {
        guard connection.identity.mayUse(room) else {
            connection.send(ServerFrame.error(ProtocolError(id: id, code: .forbidden, message: "your token does not allow room '\(room)'")))
            return false
        }
        return true
    }

    private func handle(_ request: ClientRequest) async {
        let id = request.id
        switch request.command {
        case .publish(let room, let data) where connection.identity.mayUse(room):
            return await pipeline(id) { $0.submit(from: $1, to: .room(room), data: data) }
        case .broadcast(let data) where connection.identity.mayBroadcast:
            return await pipeline(id) { $0.submit(from: $1, to: .everyone, data: data) }
        default:
            break
        }
        await settleAnswers()
        do {
            switch request.command {
            case .join(let room, let since):
                guard allowed(room, id) else { return }
                let limit = node.configuration.maxRoomsPerConnection
                guard node.router.roomCount(of: connection) < limit || node.router.isMember(connection, of: room) else {
                    node.metrics.roomLimitRefusals.increment()
                    connection.send(
                        ServerFrame.error(
                            ProtocolError(
                                id: id, code: .forbidden, message: "this connection is in \(limit) rooms, the limit; leave one first")))
                    return
                }
                try await join(room, since: since, id: id)
            case .leave(let room):
                try await node.router.leave(connection, room: room)
                connection.forget(.room(room))
                connection.send(ServerFrame.ok(id: id, room: room))
            case .history(let room, let limit):
                guard allowed(room, id) else { return }
                try await history(room, limit: limit, id: id)
            case .publish(let room, _):
                // Publishes to allowed rooms were pipelined above: this one is refused, after
                // the answers to earlier publishes.
                _ = allowed(room, id)
            case .send(let to, let data):
                guard try await node.router.isOnline(to) else {
                    connection.send(
                        ServerFrame.error(ProtocolError(id: id, code: .offline, message: "user '\(to)' is not connected to any node")))
                    return
                }
                try await node.publish(from: connection.user, to: .user(to), data: data)
                connection.send(ServerFrame.ok(id: id))
            case .broadcast:
                // Allowed broadcasts were pipelined above.
                connection.send(
                    ServerFrame.error(
                        ProtocolError(id: id, code: .forbidden, message: "your token does not allow broadcast (claim \"broadcast\": true)"))
                )
            case .presence(let room):
                guard allowed(room, id) else { return }
                let users = try await node.router.backplane.members(of: room)
                connection.send(ServerFrame.ok(id: id, room: room, users: users))
            case .ping:
                connection.send(ServerFrame.pong(id: id))
            }
        } catch {
            Self.answer(failure: error, to: id, on: connection, node: node)
        }
    }

    /// Queues a publish now; its answer comes once the cluster has it, after earlier answers.
    private func pipeline(_ id: CommandID?, _ submit: (NodeContext, String) -> PendingPublish) async {
        let pending = submit(node, connection.user)
        let (connection, node) = (connection, node)
        let full = running.withLock { running in
            let previous = running.lastAnswer
            running.lastAnswer = Task {
                await previous?.value
                do {
                    try await pending.wait()
                    connection.send(ServerFrame.ok(id: id))
                } catch {
                    Self.answer(failure: error, to: id, on: connection, node: node)
                }
            }
            running.publishesInFlight += 1
            return running.publishesInFlight >= Self.maxPublishesInFlight
        }
        // Back-pressure: past the limit, the next frame is read once the cluster caught up.
        if full { await settleAnswers() }
    }

    /// Waits until every publish queued so far is answered.
    private func settleAnswers() async {
        guard let last = running.withLock({ $0.lastAnswer }) else { return }
        await last.value
        running.withLock { running in
            running.lastAnswer = nil
            running.publishesInFlight = 0
        }
    }

    private static func answer(failure error: any Error, to id: CommandID?, on connection: Connection, node: NodeContext) {
        // Debug only: a backplane outage logs itself once, not once per command.
        node.metrics.commandsFailed.increment()
        node.logger.debug("command failed", metadata: ["session": "\(connection.session)", "error": "\(error)"])
        connection.send(ServerFrame.error(failure(error, to: id)))
    }

    static func failure(_ error: any Error, to id: CommandID?) -> ProtocolError {
        if let partial = error as? NotHandedToCluster {
            // Local recipients have it: a blind retry would give them a second copy.
            return ProtocolError(
                id: id, code: .internal,
                message:
                    "the cluster could not take the message; it reached only the \(partial.deliveredLocally) connection(s) on this node")
        }
        if error as? HistoryError == .unsupported {
            return ProtocolError(id: id, code: .unsupported, message: "this cluster keeps no history")
        }
        return ProtocolError(id: id, code: .internal, message: "the cluster could not take the command; try again")
    }
}
