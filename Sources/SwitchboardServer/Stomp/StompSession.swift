import Logging
import NIOCore
import NIOWebSocket
import STOMP
import SwitchboardCore
import SwitchboardProtocol
import Synchronization

/// One STOMP client (PROTOCOL.md, "STOMP 1.2 over WebSocket"): its frames, read by a
/// `StompParser` across WebSocket messages, run in order like a JSON session's commands, on the
/// same router. The client names itself in CONNECT; until then it holds no place in the router.
/// Every error is an ERROR frame, then the connection is closed, as STOMP requires.
final class StompSession: ClientSession {
    private enum Phase { case awaitingConnect, connected, ended }

    /// What runs in order: the socket's messages, and the session's own deadlines.
    enum Message: Sendable {
        case socket(Inbound)
        /// No CONNECT in time, or no heart-beat: ERROR with this text, then close.
        case expired(String)
    }

    private struct State {
        var phase = Phase.awaitingConnect
        /// In the router (from CONNECT until the socket closes).
        var registered = false
        var parser: StompParser
        /// Subscription id → where it points (mirrors `Connection.stomp`, for the session's task).
        var subscriptions: [String: StompDestination] = [:]
        /// Open transactions and their SENDs.
        var transactions: [String: [StompFrame]] = [:]
        var timers: [RepeatedTask] = []
        /// The receipt of the last SEND still on its way; each waits for the one before it.
        var lastAnswer: Task<Void, Never>?
        var sendsInFlight = 0
    }

    let connection: Connection
    let node: NodeContext
    private let options: ClientOptions
    private let inbox: SerialInbox<Message>
    private let state: Mutex<State>
    /// When the client last sent anything, in uptime milliseconds (its heart-beats included).
    private let lastHeard = Atomic<Int64>(0)
    static let maxTransactionFrames = 1000
    /// SENDs to rooms and broadcasts on their way at once, as JSON publishes (Session).
    static let maxSendsInFlight = 64

    init(connection: Connection, node: NodeContext, options: ClientOptions) {
        self.connection = connection
        self.node = node
        self.options = options
        self.inbox = SerialInbox(channel: connection.channel)
        let limits = StompLimits(maxHeadBytes: 16 << 10, maxHeaders: 64, maxBodyBytes: node.configuration.maxFrameBytes)
        self.state = Mutex(State(parser: StompParser(limits: limits)))
    }

    var logger: Logger { node.logger }

    /// Waits for CONNECT, at most the handshake timeout. On the event loop.
    func start() {
        let timeout = TimeAmount.seconds(Int64(node.configuration.handshakeTimeoutSeconds))
        connection.eventLoop.scheduleTask(in: timeout) { [self] in
            guard state.withLock({ $0.phase == .awaitingConnect }) else { return }
            inbox.receive(.expired("no CONNECT frame within \(timeout.nanoseconds / 1_000_000_000) s"), run: run)
        }
    }

    func receive(_ message: Inbound) {
        lastHeard.store(Self.now(), ordering: .relaxed)
        inbox.receive(.socket(message), run: run)
    }

    private func run(_ message: Message) async {
        switch message {
        case .expired(let reason):
            await fail("bad_request", reason)
        case .socket(let inbound):
            await run(inbound)
        }
    }

    private func run(_ message: Inbound) async {
        switch message {
        case .closed:
            await ended()
        case .binary, .text:
            guard case .text(let bytes) = message else {
                // STOMP over WebSocket is text here: every body we carry is JSON.
                return await fail("bad_request", "binary WebSocket messages are not supported; send STOMP frames as text")
            }
            state.withLock { $0.parser.append(bytes) }
            while true {
                let event: StompParser.Event?
                do {
                    event = try state.withLock { state throws(StompError) in
                        guard state.phase != .ended else { return nil }
                        return try state.parser.next()
                    }
                } catch {
                    node.metrics.badFrames.increment()
                    return await fail(error.code, error.message)
                }
                guard let event else { return }
                if case .frame(let frame) = event {
                    node.metrics.framesReceived.increment()
                    await handle(frame)
                }
            }
        case .overRate:
            node.metrics.rateLimited.increment()
            await fail("rate_limited", "slow down: rate limit exceeded")
        }
    }

    // MARK: Frames

    private func handle(_ frame: StompFrame) async {
        let phase = state.withLock { $0.phase }
        switch (phase, frame.command) {
        case (.ended, _):
            return
        case (.awaitingConnect, .connect), (.awaitingConnect, .stomp):
            return await connect(frame)
        case (.awaitingConnect, _):
            return await fail("bad_request", "the first frame must be CONNECT (or STOMP)", frame)
        case (.connected, .connect), (.connected, .stomp):
            return await fail("bad_request", "already connected", frame)
        default:
            break
        }
        if frame.command != .send { await settleSends() }
        do {
            switch frame.command {
            case .send: try await send(frame)
            case .subscribe: try await subscribe(frame)
            case .unsubscribe: try await unsubscribe(frame)
            case .ack, .nack: receipt(frame)  // accepted; nothing is redelivered
            case .begin, .commit, .abort: try await transaction(frame)
            case .disconnect:
                receipt(frame)
                connection.close(.normalClosure, reason: "disconnected")
            case .connected, .message, .receipt, .error, .connect, .stomp:
                throw StompRefusal("bad_request", "\(frame.command.rawValue) is a server frame")
            }
        } catch {
            await settleSends()
            await refuse(error, frame)
        }
    }

    private func refuse(_ error: any Error, _ frame: StompFrame) async {
        if let refusal = error as? StompRefusal {
            if refusal.code == "bad_request" || refusal.code == "invalid_name" { node.metrics.badFrames.increment() }
            return await fail(refusal.code, refusal.message, frame)
        }
        node.metrics.commandsFailed.increment()
        logger.debug("STOMP frame failed", metadata: ["session": "\(connection.session)", "error": "\(error)"])
        let failure = Session.failure(error, to: nil)
        await fail(failure.code.rawValue, failure.message, frame)
    }

    private func connect(_ frame: StompFrame) async {
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

    private func send(_ frame: StompFrame) async throws {
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
    private func settleSends() async {
        guard let last = state.withLock({ $0.lastAnswer }) else { return }
        await last.value
        state.withLock { state in
            state.lastAnswer = nil
            state.sendsInFlight = 0
        }
    }

    /// A SEND's message, to the cluster; returns once the cluster has it (`ok` in JSON).
    private func deliver(_ frame: StompFrame) async throws {
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

    private func subscribe(_ frame: StompFrame) async throws {
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
    private func join(_ room: String, since: StreamPosition?, subscription: StompSubscriptions.Subscription, frame: StompFrame)
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

    private func unsubscribe(_ frame: StompFrame) async throws {
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

    private func transaction(_ frame: StompFrame) async throws {
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

    // MARK: Answers

    private func receipt(_ frame: StompFrame, recovered: Bool? = nil) {
        guard let bytes = receiptFrame(frame, recovered: recovered, top: nil) else { return }
        connection.send(bytes)
    }

    private func receiptFrame(_ frame: StompFrame, recovered: Bool?, top: StreamPosition?) -> [UInt8]? {
        guard let id = frame["receipt"] else { return nil }
        var headers = [StompHeader("receipt-id", id)]
        if let top {
            headers.append(.init("sb-epoch", top.epoch))
            headers.append(.init("sb-offset", String(top.offset)))
        }
        if let recovered { headers.append(.init("sb-recovered", recovered ? "true" : "false")) }
        return StompEncoder.encode(StompFrame(.receipt, headers))
    }

    /// ERROR (its `message` header the protocol's error code), then the connection closes.
    private func fail(_ code: String, _ message: String, _ frame: StompFrame? = nil) async {
        let wasConnected = state.withLock { state -> Bool? in
            guard state.phase != .ended else { return nil }
            defer { state.phase = .ended }
            return state.phase == .connected
        }
        guard let wasConnected else { return }
        var headers = [StompHeader("message", code), .init("content-type", "text/plain")]
        if let receipt = frame?["receipt"] { headers.append(.init("receipt-id", receipt)) }
        headers.append(.init("content-length", String(message.utf8.count)))
        let error = StompEncoder.encode(StompFrame(.error, headers, body: Array(message.utf8)))
        if wasConnected {
            connection.send(error)
        } else {
            connection.open(welcome: error)  // nothing reaches an unwelcomed socket otherwise
        }
        connection.close(.normalClosure, reason: "STOMP error: \(code)")
    }

    private func ended() async {
        let (registered, timers) = state.withLock { state -> (Bool, [RepeatedTask]) in
            defer {
                state.phase = .ended
                state.registered = false
                state.timers = []
            }
            return (state.registered, state.timers)
        }
        for timer in timers { timer.cancel() }
        guard registered else { return }
        node.metrics.connectionsClosed.increment()
        node.metrics.connections.decrement()
        await node.router.disconnect(connection)
        node.connectionLeft.poke()
    }

    // MARK: Heart-beats

    /// STOMP 1.2 "Heart-beating": the client offers `cx,cy` (it can send every cx ms, wants to
    /// hear every cy ms); the node offers its heartbeat period both ways. Each side then beats
    /// at the larger of what one can and the other wants, or not at all when either says 0.
    private func heartbeats(_ header: String?) -> (server: (sends: Int, wants: Int), sendEvery: Int, expectEvery: Int) {
        let period = node.configuration.heartbeatSeconds * 1000
        let parts = (header ?? "0,0").split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? 0 }
        let (clientSends, clientWants) = parts.count == 2 ? (max(0, parts[0]), max(0, parts[1])) : (0, 0)
        let sendEvery = clientWants == 0 ? 0 : max(period, clientWants)
        let expectEvery = clientSends == 0 ? 0 : max(period, clientSends)
        return ((period, period), sendEvery, expectEvery)
    }

    private func startHeartbeats(send: Int, expect: Int) {
        let loop = connection.eventLoop
        var timers: [RepeatedTask] = []
        if send > 0 {
            timers.append(
                loop.scheduleRepeatedTask(initialDelay: .milliseconds(Int64(send)), delay: .milliseconds(Int64(send))) { [connection] _ in
                    connection.send([0x0A])
                })
        }
        if expect > 0 {
            // Twice the period, as the specification's tolerance suggests; then the client is gone.
            let grace = Int64(expect) * 2
            timers.append(
                loop.scheduleRepeatedTask(initialDelay: .milliseconds(Int64(expect)), delay: .milliseconds(Int64(expect))) {
                    [self] task in
                    guard Self.now() - lastHeard.load(ordering: .relaxed) > grace else { return }
                    task.cancel()
                    logger.debug("STOMP client silent past its heart-beat", metadata: ["session": "\(connection.session)"])
                    inbox.receive(.expired("no heart-beat for \(grace) ms"), run: run)
                })
        }
        state.withLock { $0.timers = timers }
    }

    static func now() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000)
    }

    // MARK: Parsing

    static func destination(_ text: String, for use: StompDestination.Use, missing: String? = nil) throws(StompRefusal)
        -> StompDestination
    {
        if text.isEmpty, let missing { throw StompRefusal("bad_request", missing) }
        if let destination = StompDestination(text, for: use) { return destination }
        if text.hasPrefix("/topic/") || text.hasPrefix("/user/") {
            throw StompRefusal("invalid_name", "'\(text)': names are 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -")
        }
        let known = use == .send ? "/topic/ROOM, /user/USER[/queue/NAME] or /broadcast" : "/topic/ROOM, /user/queue/NAME or /broadcast"
        throw StompRefusal("bad_request", "unknown destination '\(StompParser.printable(text))'; use \(known)")
    }

    /// A body that is JSON is the message's data as it is; any other text becomes a JSON string.
    static func data(_ body: [UInt8]) throws(StompRefusal) -> RawJSON {
        if (try? JSONValue.parse(body)) != nil { return RawJSON(bytes: body) }
        guard let text = String(validating: body, as: UTF8.self) else {
            throw StompRefusal("bad_request", "the body is neither JSON nor UTF-8 text")
        }
        var out = JSONWriter()
        out.string(text)
        return RawJSON(bytes: out.bytes)
    }
}

/// A frame the session refuses: ERROR with `code`, then close.
struct StompRefusal: Error {
    let code: String
    let message: String
    init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }
}
