import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardProtocol

/// Runs one client connection: welcome, then each command in the order it arrived. Publishes
/// and broadcasts are queued on the backplane in that order and answered, in order, as the
/// cluster takes them, so a fast sender has several on their way at once (up to
/// `maxPublishesInFlight`); any other command first waits for those answers. That is what keeps
/// one sender's messages, and the answers to its commands, in order everywhere.
struct Session {
    let connection: Connection
    let node: NodeContext
    var limiter: RateLimiter
    /// Consecutive bad or refused frames; too many closes the connection (1008).
    var strikes = 0
    /// The answer to the last publish still on its way; each waits for the one before it.
    private var lastAnswer: Task<Void, Never>?
    private var publishesInFlight = 0
    static let maxPublishesInFlight = 64

    init(connection: Connection, node: NodeContext) {
        self.connection = connection
        self.node = node
        self.limiter = RateLimiter(burst: node.configuration.rateBurst, perSecond: node.configuration.ratePerSecond)
    }

    var logger: Logger { node.logger }

    mutating func run(_ inbound: WebSocketInboundStream) async throws {
        try await node.router.connect(connection)
        node.metrics.connectionsOpened.increment()
        node.metrics.connections.increment()
        defer {
            node.metrics.connectionsClosed.increment()
            node.metrics.connections.decrement()
        }
        connection.open(
            welcome: ServerFrame.welcome(
                session: connection.session, user: connection.user, node: node.configuration.nodeID,
                heartbeat: node.configuration.heartbeatSeconds))
        do {
            // Too large a message ends this loop with an error that closes the socket with 1009.
            for try await message in inbound.messages(maxSize: node.configuration.maxFrameBytes) {
                node.metrics.framesReceived.increment()
                guard limiter.allow() else {
                    node.metrics.rateLimited.increment()
                    if try await refuse(ProtocolError(code: .rateLimited, message: "slow down: rate limit exceeded")) { return }
                    continue
                }
                switch message {
                case .text(let text):
                    switch ClientRequest.decode(Array(text.utf8)) {
                    case .success(let request):
                        strikes = 0
                        await handle(request)
                    case .failure(let error):
                        node.metrics.badFrames.increment()
                        if try await refuse(error) { return }
                    }
                case .binary:
                    node.metrics.badFrames.increment()
                    if try await refuse(ProtocolError(code: .badRequest, message: "binary frames are not supported; send JSON text")) { return }
                }
            }
        } catch {
            if Self.isTooLarge(error) { node.metrics.tooLarge.increment() }
            await node.router.disconnect(connection)
            throw error
        }
        await node.router.disconnect(connection)
    }

    /// Too big after reassembly ends the read loop with hummingbird-websocket's internal close
    /// error, whose type is not public, so it is recognised by its code's name. (One frame too
    /// big never reaches here: `OversizeCounter` counts it in the pipeline.)
    static func isTooLarge(_ error: any Error) -> Bool {
        String(describing: error).contains("messageTooLarge")
    }

    /// Answers a refused frame; true when the connection has been closed for repeated abuse.
    private mutating func refuse(_ error: ProtocolError) async throws -> Bool {
        await settleAnswers()
        connection.send(ServerFrame.error(error))
        strikes += 1
        guard strikes >= node.configuration.maxStrikes else { return false }
        logger.notice("closing connection after repeated bad or excess frames", metadata: ["session": "\(connection.session)"])
        await connection.close(.policyViolation, reason: "too many bad or excess frames")
        await node.router.disconnect(connection)
        return true
    }

    /// The token's `rooms` claim: answers `forbidden` and returns false for a room outside it.
    private func allowed(_ room: String, _ id: CommandID?) -> Bool {
        guard connection.identity.mayUse(room) else {
            connection.send(ServerFrame.error(ProtocolError(id: id, code: .forbidden, message: "your token does not allow room '\(room)'")))
            return false
        }
        return true
    }

    private mutating func handle(_ request: ClientRequest) async {
        let id = request.id
        switch request.command {
        case .publish(let room, let data) where connection.identity.mayUse(room):
            return await pipeline(id) { $0.submit(from: $1, to: .room(room), data: data) }
        case .broadcast(let data):
            return await pipeline(id) { $0.submit(from: $1, to: .everyone, data: data) }
        default:
            break
        }
        await settleAnswers()
        do {
            switch request.command {
            case .join(let room):
                guard allowed(room, id) else { return }
                let limit = node.configuration.maxRoomsPerConnection
                guard node.router.roomCount(of: connection) < limit || node.router.isMember(connection, of: room) else {
                    node.metrics.roomLimitRefusals.increment()
                    connection.send(ServerFrame.error(ProtocolError(id: id, code: .forbidden, message: "this connection is in \(limit) rooms, the limit; leave one first")))
                    return
                }
                try await node.router.join(connection, room: room)
                connection.send(ServerFrame.ok(id: id, room: room))
            case .leave(let room):
                try await node.router.leave(connection, room: room)
                connection.send(ServerFrame.ok(id: id, room: room))
            case .publish(let room, _):
                // Publishes to allowed rooms were pipelined above: this one is refused, after
                // the answers to earlier publishes.
                _ = allowed(room, id)
            case .send(let to, let data):
                guard try await node.router.isOnline(to) else {
                    connection.send(ServerFrame.error(ProtocolError(id: id, code: .offline, message: "user '\(to)' is not connected to any node")))
                    return
                }
                try await node.publish(from: connection.user, to: .user(to), data: data)
                connection.send(ServerFrame.ok(id: id))
            case .broadcast:
                break  // pipelined above
            case .presence(let room):
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
    private mutating func pipeline(_ id: CommandID?, _ submit: (NodeContext, String) -> PendingPublish) async {
        let pending = submit(node, connection.user)
        let previous = lastAnswer
        let (connection, node) = (connection, node)
        lastAnswer = Task {
            await previous?.value
            do {
                try await pending.wait()
                connection.send(ServerFrame.ok(id: id))
            } catch {
                Self.answer(failure: error, to: id, on: connection, node: node)
            }
        }
        publishesInFlight += 1
        // Back-pressure: past the limit, the next frame is read once the cluster caught up.
        if publishesInFlight >= Self.maxPublishesInFlight { await settleAnswers() }
    }

    /// Waits until every publish queued so far is answered.
    private mutating func settleAnswers() async {
        guard let last = lastAnswer else { return }
        await last.value
        lastAnswer = nil
        publishesInFlight = 0
    }

    private static func answer(failure error: any Error, to id: CommandID?, on connection: Connection, node: NodeContext) {
        // Debug only: a backplane outage logs itself once, not once per command.
        node.metrics.commandsFailed.increment()
        node.logger.debug("command failed", metadata: ["session": "\(connection.session)", "error": "\(error)"])
        let message: String
        if let partial = error as? NotHandedToCluster {
            // Local recipients have it: a blind retry would give them a second copy.
            message = "the cluster could not take the message; it reached only the \(partial.deliveredLocally) connection(s) on this node"
        } else {
            message = "the cluster could not take the command; try again"
        }
        connection.send(ServerFrame.error(ProtocolError(id: id, code: .internal, message: message)))
    }
}
