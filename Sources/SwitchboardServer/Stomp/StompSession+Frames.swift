import Logging
import NIOCore
import NIOWebSocket
import STOMP
import SwitchboardCore
import SwitchboardProtocol
import Synchronization

/// The frames of a connected STOMP client (PROTOCOL.md, "STOMP 1.2 over WebSocket"), and CONNECT.
extension StompSession {
    func connect(_ frame: StompFrame) async {
        let offered = (frame["accept-version"] ?? "1.0").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard let version = ["1.2", "1.1", "1.0"].first(where: offered.contains) else {
            return await fail("bad_request", "supported versions are 1.0, 1.1 and 1.2", frame)
        }
        state.withLock { $0.parser.escaping = version != "1.0" }
        let identity: Identity
        if let tokens = node.tokens {
            let header = frame["Authorization"] ?? frame["authorization"]
            let bearer = header.flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
            do {
                identity = try await tokens.identity(fromToken: frame["passcode"] ?? bearer ?? options.upgradeToken)
            } catch {
                node.metrics.refusedHandshakes.increment()
                return await fail("unauthorized", error.message, frame)
            }
        } else {
            let user = frame["login"].flatMap { $0.isEmpty ? nil : $0 } ?? options.upgradeUser ?? "anon-" + Identifiers.random(12)
            guard Name.isValidUser(user) else {
                return await fail("invalid_name", "user must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -, and not 'server'", frame)
            }
            identity = Identity(user: user, rooms: nil, mayBroadcast: true)
        }
        switch node.admissions.reserve(identity.user, on: connection.channel) {
        case nil: break
        case .nodeFull:
            node.metrics.refusedHandshakes.increment()
            return await fail("rate_limited", "this node is full; GET /api/assign names another", frame)
        case .userFull:
            node.metrics.refusedHandshakes.increment()
            return await fail("rate_limited", "user \(identity.user) has too many connections on this node", frame)
        }
        connection.identify(identity)
        do {
            try await node.router.connect(connection)
        } catch {
            logger.warning("could not register a connection", metadata: ["error": "\(error)"])
            return await fail("internal", "the node could not take the connection", frame)
        }
        state.withLock {
            $0.phase = .connected
            $0.registered = true
        }
        node.metrics.connectionsOpened.increment()
        node.metrics.connections.increment()
        let beats = heartbeats(frame["heart-beat"])
        let connected = StompFrame(
            .connected,
            [
                .init("version", version), .init("heart-beat", "\(beats.server.sends),\(beats.server.wants)"),
                .init("session", connection.session), .init("server", "switchboard/1.1"), .init("user-name", identity.user),
            ])
        connection.open(welcome: StompEncoder.encode(connected))
        startHeartbeats(send: beats.sendEvery, expect: beats.expectEvery)
    }

    func send(_ frame: StompFrame) async throws {
        if let id = frame["transaction"] {
            let queued = state.withLock { state -> Bool? in
                guard state.transactions[id] != nil else { return nil }
                guard state.transactions[id]!.count < Self.maxTransactionFrames else { return false }
                state.transactions[id]!.append(frame)
                return true
            }
            guard let queued else { throw StompRefusal("bad_request", "no transaction '\(id)' (BEGIN it first)") }
            guard queued else { throw StompRefusal("too_large", "a transaction holds at most \(Self.maxTransactionFrames) frames") }
            return receipt(frame)
        }
        // To a room or everyone: queued on the cluster now, the receipt once it has it, so that a
        // fast sender has several on their way. To a user: checked online first, one at a time.
        let destination = try Self.destination(frame["destination"] ?? "", for: .send, missing: "SEND needs a destination header")
        let identity = connection.identity
        let address: Address
        switch destination {
        case .room(let room):
            guard identity.mayUse(room) else { throw StompRefusal("forbidden", "your token does not allow room '\(room)'") }
            address = .room(room)
        case .broadcast:
            guard identity.mayBroadcast else {
                throw StompRefusal("forbidden", "your token does not allow broadcast (claim \"broadcast\": true)")
            }
            address = .everyone
        default:
            await settleSends()
            try await deliver(frame)
            return receipt(frame)
        }
        let pending = node.submit(from: identity.user, to: address, data: try Self.data(frame.body))
        let full = state.withLock { state in
            let previous = state.lastAnswer
            state.lastAnswer = Task { [self] in
                await previous?.value
                do {
                    try await pending.wait()
                    receipt(frame)
                } catch {
                    await refuse(error, frame)
                }
            }
            state.sendsInFlight += 1
            return state.sendsInFlight >= Self.maxSendsInFlight
        }
        // Back-pressure: past the limit, the next frame is read once the cluster caught up.
        if full { await settleSends() }
    }

    /// Waits until every SEND queued so far is answered.
    func settleSends() async {
        guard let last = state.withLock({ $0.lastAnswer }) else { return }
        await last.value
        state.withLock { state in
            state.lastAnswer = nil
            state.sendsInFlight = 0
        }
    }

    /// A SEND's message, to the cluster; returns once the cluster has it (`ok` in JSON).
    func deliver(_ frame: StompFrame) async throws {
        let destination = try Self.destination(frame["destination"] ?? "", for: .send, missing: "SEND needs a destination header")
        let data = try Self.data(frame.body)
        let identity = connection.identity
        switch destination {
        case .room(let room):
            guard identity.mayUse(room) else { throw StompRefusal("forbidden", "your token does not allow room '\(room)'") }
            try await node.publish(from: identity.user, to: .room(room), data: data)
        case .user(let user):
            guard try await node.router.isOnline(user) else {
                throw StompRefusal("offline", "user '\(user)' is not connected to any node")
            }
            try await node.publish(from: identity.user, to: .user(user), data: data)
        case .broadcast:
            guard identity.mayBroadcast else {
                throw StompRefusal("forbidden", "your token does not allow broadcast (claim \"broadcast\": true)")
            }
            try await node.publish(from: identity.user, to: .everyone, data: data)
        case .inbox:
            throw StompRefusal("bad_request", "SEND to /user/USER or /user/USER/queue/NAME")
        }
    }

    func subscribe(_ frame: StompFrame) async throws {
        guard let id = frame["id"] else { throw StompRefusal("bad_request", "SUBSCRIBE needs an id header") }
        guard let text = frame["destination"] else { throw StompRefusal("bad_request", "SUBSCRIBE needs a destination header") }
        let destination = try Self.destination(text, for: .subscribe)
        guard state.withLock({ $0.subscriptions[id] == nil }) else {
            throw StompRefusal("bad_request", "subscription id '\(id)' is in use on this connection")
        }
        let ack = frame["ack"] ?? "auto"
        guard ["auto", "client", "client-individual"].contains(ack) else {
            throw StompRefusal("bad_request", "ack must be auto, client or client-individual")
        }
        let subscription = StompSubscriptions.Subscription(
            id: id, destination: text, target: destination, presence: frame["sb-presence"] == "true", acknowledged: ack != "auto")
        guard case .room(let room) = destination else {
            state.withLock { $0.subscriptions[id] = destination }
            connection.stompChange { $0.add(subscription) }
            return receipt(frame)
        }
        guard connection.identity.mayUse(room) else { throw StompRefusal("forbidden", "your token does not allow room '\(room)'") }
        var since: StreamPosition?
        if let text = frame["sb-since"] {
            guard let position = ClientRequest.inboxSince(text) else {
                throw StompRefusal("bad_request", "sb-since must be EPOCH:OFFSET, as in a RECEIPT's sb-epoch and a MESSAGE's sb-offset")
            }
            since = position
        }
        let member = node.router.isMember(connection, of: room)
        let limit = node.configuration.maxRoomsPerConnection
        guard member || node.router.roomCount(of: connection) < limit else {
            node.metrics.roomLimitRefusals.increment()
            throw StompRefusal("forbidden", "this connection is in \(limit) rooms, the limit; unsubscribe one first")
        }
        state.withLock { $0.subscriptions[id] = destination }
        // In the table first: what the room delivers once joined finds this subscription.
        connection.stompChange { $0.add(subscription) }
        if member {
            // Already in the room through another subscription: live from here, no replay.
            return receipt(frame, recovered: since.map { _ in false })
        }
        try await join(room, since: since, subscription: subscription, frame: frame)
    }

    /// Joins with history: as `Session.join`, with a RECEIPT (if asked) for the reply and
    /// MESSAGE frames for the replay.
    func join(_ room: String, since: StreamPosition?, subscription: StompSubscriptions.Subscription, frame: StompFrame)
        async throws
    {
        let history = node.router.backplane.history
        guard history.isOn else {
            try await node.router.join(connection, room: room)
            return receipt(frame, recovered: since.map { _ in false })
        }
        let stream = Address.room(room)
        connection.hold(stream)
        do {
            try await node.router.join(connection, room: room)
        } catch {
            connection.resume(stream, reply: nil, replay: [], top: nil)
            connection.forget(stream)
            throw error
        }
        var recovered = since.map { _ in false }
        var replay: [Envelope] = []
        var top: StreamPosition?
        do {
            let read = try await node.router.backplane.read(stream, after: since?.offset, limit: since == nil ? 0 : history.size)
            recovered = since.map(read.recovers)
            replay = recovered == true ? read.after(since!.offset) : []
            top = read.top
        } catch {
            logger.debug("joined without the room's position", metadata: ["room": "\(room)", "error": "\(error)"])
        }
        if since != nil { node.metrics.resumes(recovered) }
        let (id, destination, acknowledged) = (subscription.id, subscription.destination, subscription.acknowledged)
        connection.resume(
            stream, reply: receiptFrame(frame, recovered: recovered, top: top), replay: replay, top: top,
            encode: { StompMessageCache.message($0, subscription: id, destination: destination, acknowledged: acknowledged, allocator: $1) }
        )
    }

    func unsubscribe(_ frame: StompFrame) async throws {
        guard let id = frame["id"] else { throw StompRefusal("bad_request", "UNSUBSCRIBE needs an id header") }
        let (removed, lastOfRoom) = state.withLock { state -> (StompDestination?, Bool) in
            guard let removed = state.subscriptions.removeValue(forKey: id) else { return (nil, false) }
            return (removed, !state.subscriptions.values.contains(removed))
        }
        guard let removed else { throw StompRefusal("bad_request", "no subscription '\(id)'") }
        connection.stompChange { $0.remove(id: id) }
        if case .room(let room) = removed, lastOfRoom {
            try await node.router.leave(connection, room: room)
            connection.forget(.room(room))
        }
        receipt(frame)
    }

    func transaction(_ frame: StompFrame) async throws {
        guard let id = frame["transaction"] else {
            throw StompRefusal("bad_request", "\(frame.command.rawValue) needs a transaction header")
        }
        switch frame.command {
        case .begin:
            let begun = state.withLock { state -> Bool in
                guard state.transactions[id] == nil else { return false }
                guard state.transactions.count < 16 else { return false }
                state.transactions[id] = []
                return true
            }
            guard begun else { throw StompRefusal("bad_request", "transaction '\(id)' is open already, or 16 are") }
        case .commit:
            guard let frames = state.withLock({ $0.transactions.removeValue(forKey: id) }) else {
                throw StompRefusal("bad_request", "no transaction '\(id)'")
            }
            for send in frames { try await deliver(send) }
        default:
            guard state.withLock({ $0.transactions.removeValue(forKey: id) }) != nil else {
                throw StompRefusal("bad_request", "no transaction '\(id)'")
            }
        }
        receipt(frame)
    }
}
