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
    enum Phase { case awaitingConnect, connected, ended }

    /// What runs in order: the socket's messages, and the session's own deadlines.
    enum Message: Sendable {
        case socket(Inbound)
        /// No CONNECT in time, or no heart-beat: ERROR with this text, then close.
        case expired(String)
    }

    struct State {
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
    let options: ClientOptions
    let inbox: SerialInbox<Message>
    let state: Mutex<State>
    /// When the client last sent anything, in uptime milliseconds (its heart-beats included).
    let lastHeard = Atomic<Int64>(0)
    static let maxTransactionFrames = 1000
    /// SENDs to rooms and broadcasts on their way at once, as JSON publishes (Session).
    static let maxSendsInFlight = 64

    init(connection: Connection, node: NodeContext, options: ClientOptions) {
        self.connection = connection
        self.node = node
        self.options = options
        self.inbox = SerialInbox()
        let limits = StompLimits(maxHeadBytes: 16 << 10, maxHeaders: 64, maxBodyBytes: node.configuration.maxFrameBytes)
        self.state = Mutex(State(parser: StompParser(limits: limits)))
    }

    var logger: Logger { node.logger }

    /// Waits for CONNECT, at most the handshake timeout. On the event loop.
    func start() {
        let timeout = TimeAmount.seconds(Int64(node.configuration.handshakeTimeoutSeconds))
        connection.eventLoop.scheduleTask(in: timeout) { [self] in
            guard state.withLock({ $0.phase == .awaitingConnect }) else { return }
            inbox.receive(.expired("no CONNECT frame within \(timeout.nanoseconds / 1_000_000_000) s"), on: connection.channel, run: run)
        }
    }

    func receive(_ message: Inbound) {
        lastHeard.store(Self.now(), ordering: .relaxed)
        inbox.receive(.socket(message), on: connection.channel, run: run)
    }

    func run(_ message: Message) async {
        switch message {
        case .expired(let reason):
            await fail("bad_request", reason)
        case .socket(let inbound):
            await run(inbound)
        }
    }

    func run(_ message: Inbound) async {
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

    func handle(_ frame: StompFrame) async {
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

    func refuse(_ error: any Error, _ frame: StompFrame) async {
        if let refusal = error as? StompRefusal {
            if refusal.code == "bad_request" || refusal.code == "invalid_name" { node.metrics.badFrames.increment() }
            return await fail(refusal.code, refusal.message, frame)
        }
        node.metrics.commandsFailed.increment()
        logger.debug("STOMP frame failed", metadata: ["session": "\(connection.session)", "error": "\(error)"])
        let failure = Session.failure(error, to: nil)
        await fail(failure.code.rawValue, failure.message, frame)
    }

    // MARK: Answers

    func receipt(_ frame: StompFrame, recovered: Bool? = nil) {
        guard let bytes = receiptFrame(frame, recovered: recovered, top: nil) else { return }
        connection.send(bytes)
    }

    func receiptFrame(_ frame: StompFrame, recovered: Bool?, top: StreamPosition?) -> [UInt8]? {
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
    func fail(_ code: String, _ message: String, _ frame: StompFrame? = nil) async {
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

    func ended() async {
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
