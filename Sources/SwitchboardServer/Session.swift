import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardProtocol

/// Runs one client connection: welcome, then each command in the order it arrived. A command
/// is finished (its effect handed to the cluster) before the next is read, which is what keeps
/// one sender's messages in order everywhere.
struct Session {
    let connection: Connection
    let node: NodeContext
    var limiter: RateLimiter
    /// Consecutive bad or refused frames; too many closes the connection (1008).
    var strikes = 0

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

    private func handle(_ request: ClientRequest) async {
        let id = request.id
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
            case .publish(let room, let data):
                guard allowed(room, id) else { return }
                try await node.publish(from: connection.user, to: .room(room), data: data)
                connection.send(ServerFrame.ok(id: id))
            case .send(let to, let data):
                guard try await node.router.isOnline(to) else {
                    connection.send(ServerFrame.error(ProtocolError(id: id, code: .offline, message: "user '\(to)' is not connected to any node")))
                    return
                }
                try await node.publish(from: connection.user, to: .user(to), data: data)
                connection.send(ServerFrame.ok(id: id))
            case .broadcast(let data):
                try await node.publish(from: connection.user, to: .everyone, data: data)
                connection.send(ServerFrame.ok(id: id))
            case .presence(let room):
                let users = try await node.router.backplane.members(of: room)
                connection.send(ServerFrame.ok(id: id, room: room, users: users))
            case .ping:
                connection.send(ServerFrame.pong(id: id))
            }
        } catch {
            // Debug only: a backplane outage logs itself once, not once per command.
            node.metrics.commandsFailed.increment()
            logger.debug("command failed", metadata: ["session": "\(connection.session)", "error": "\(error)"])
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
}
