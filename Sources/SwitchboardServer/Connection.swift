import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore

/// How a client asked to be served, in the query of `/ws`.
struct ClientOptions: Sendable {
    /// `batch=1`.
    var batch = false
    /// `since=EPOCH:OFFSET`: resume the inbox.
    var inboxSince: StreamPosition?
    /// The client speaks STOMP (`/stomp`, or a `v1x.stomp` subprotocol on `/ws`).
    var stomp = false
    /// For a STOMP client, what the upgrade said of who it is (CONNECT may say more).
    var upgradeToken: String?
    var upgradeUser: String?
}

/// One client WebSocket held by this node.
///
/// Frames are written straight to the NIO channel on its event loop, never through an awaiting
/// writer, so a slow socket cannot stall whoever delivers to it. They go through `context` (the
/// socket handler's, lent to it) as whole frames, encoded once for every recipient: replies,
/// deliveries and control frames take this one path, so they stay in order, and anything below
/// the handler (TLS) still applies. What the socket has not taken
/// yet stays in NIO's outbound buffer; when that exceeds `maxBufferedBytes` at a flush the
/// connection is closed (it would otherwise grow without bound) and the others are unaffected.
///
/// Its life (opening, open, closing, closed) and heartbeat are a state machine of their own
/// (`ConnectionStateMachine`); this class does the I/O it calls for. The mutable state below is
/// touched only on `channel.eventLoop`, as a channel handler's is.
final class Connection: LocalEndpoint, @unchecked Sendable {
    let session: String
    /// Set once, before the router knows the connection: a STOMP client names itself in its
    /// CONNECT frame, after the upgrade.
    private(set) var identity: Identity
    var user: String { identity.user }
    /// A STOMP client's subscriptions (nil for a JSON client); on the event loop.
    let stomp: StompSubscriptions?
    let channel: any Channel
    /// The socket handler's context, lent while the handler is in the pipeline (see
    /// `ClientSocketHandler`); on the event loop.
    var context: ChannelHandlerContext?
    /// The node's, shared by every connection: an idle socket does not carry its own copies.
    private let settings: ConnectionSettings
    private var metrics: NodeMetrics { settings.metrics }
    private var logger: Logger { settings.logger }
    private var maxBufferedBytes: Int { settings.maxBufferedBytes }

    private var machine = ConnectionStateMachine()
    /// Streams being resumed, and floors below which a late message is a duplicate.
    private var gates = StreamGates()
    /// `?batch=1`: deliveries of one loop turn go out as one frame, objects separated by `\n`.
    let batch: Bool
    private var packed: ByteBuffer?
    /// Written to since the last flush (see LoopFlusher), and how many frames.
    private var dirty = false
    private var framesSinceFlush = 0
    /// A control frame (ping or pong) was written since the last flush.
    private var controlSinceFlush = false

    init(
        session: String, identity: Identity, channel: any Channel, settings: ConnectionSettings,
        options: ClientOptions = ClientOptions()
    ) {
        self.batch = options.batch
        self.stomp = options.stomp ? StompSubscriptions() : nil
        self.session = session
        self.identity = identity
        self.channel = channel
        self.eventLoop = channel.eventLoop
        self.loopID = ObjectIdentifier(channel.eventLoop)
        self.settings = settings
    }

    /// Names the client; before the connection is registered with the router only.
    func identify(_ identity: Identity) {
        self.identity = identity
    }

    /// Changes the STOMP subscriptions on the event loop, in order with deliveries.
    func stompChange(_ change: @escaping @Sendable (StompSubscriptions) -> Void) {
        guard let stomp else { return }
        eventLoop.execute { change(stomp) }
    }

    /// Kept, not asked of the channel: every delivery needs it.
    let eventLoop: any EventLoop
    /// Its loop's identity, compared without copying the existential (a retain) per delivery.
    let loopID: ObjectIdentifier

    /// Sends one frame (a reply) from any thread, after any deliveries still packed.
    func send(_ bytes: [UInt8]) {
        let frame = EncodedFrame(bytes, allocator: channel.allocator)
        eventLoop.execute {
            self.writeThrough(frame)
            self.flushPending()
        }
    }

    /// Marks the connection as written to; false if it already was (and is due a flush).
    func markDirty() -> Bool {
        eventLoop.preconditionInEventLoop()
        guard !dirty else { return false }
        dirty = true
        return true
    }

    /// Writes what is packed and flushes the socket, unless its backlog is over the limit.
    /// Returns the frames flushed; they are counted in `switchboard_deliveries_total` here, or,
    /// with `countsDeliveries: false`, by the caller (a loop's flusher counts its whole batch
    /// at once: one atomic add per batch, not per socket).
    @discardableResult
    func flushPending(countsDeliveries: Bool = true) -> Int {
        eventLoop.preconditionInEventLoop()
        dirty = false
        if let payload = packed {
            packed = nil
            writeWire(WireFrame.text(payload, allocator: channel.allocator))
        }
        guard framesSinceFlush > 0 || controlSinceFlush, machine.mayWriteControl else { return 0 }
        let flushed = framesSinceFlush
        if countsDeliveries, flushed > 0 { metrics.deliveries.increment(by: Int64(flushed)) }
        framesSinceFlush = 0
        controlSinceFlush = false
        // A writable channel holds less than NIO's high water mark (64 KiB by default): the
        // exact backlog, a costlier option lookup, is needed only past it.
        let buffered =
            channel.isWritable && maxBufferedBytes >= Self.highWaterMark
            ? 0 : (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        guard buffered <= maxBufferedBytes else {
            overflow(buffered: buffered)
            return flushed
        }
        context?.flush()
        return flushed
    }

    /// Writes the welcome frame, then the inbox's replay (when it is being resumed, see
    /// `hold`), then anything delivered before it.
    func open(welcome: [UInt8], inbox: (replay: [Envelope], top: StreamPosition?)? = nil) {
        let frame = EncodedFrame(welcome, allocator: channel.allocator)
        let replay = (inbox?.replay ?? []).map { EncodedFrame(message: $0, allocator: channel.allocator) }
        let stream = Address.user(user)
        eventLoop.execute {
            guard let (early, pong) = self.machine.welcome() else { return }
            self.writeThrough(frame)
            if let inbox {
                for frame in replay { self.writeThrough(frame) }
                for frame in self.gates.release(stream, top: inbox.top) { self.writeThrough(frame) }
            }
            for frame in early { self.writeThrough(frame) }
            if let pong { self.writeControl(opcode: 0xA, pong) }
            self.flushPending()
        }
    }

    /// From now on, live messages of `stream` wait for `resume` (see `StreamGates`). Call it
    /// before the connection subscribes to the stream.
    func hold(_ stream: Address) {
        eventLoop.execute { self.gates.hold(stream) }
    }

    /// Writes `reply`, then the replay, then what was held of `stream` past `top` (all of it,
    /// without a top), and lets later messages through.
    func resume(
        _ stream: Address, reply: [UInt8]?, replay: [Envelope], top: StreamPosition?,
        encode: ((Envelope, ByteBufferAllocator) -> EncodedFrame)? = nil
    ) {
        let reply = reply.map { EncodedFrame($0, allocator: channel.allocator) }
        let replay = replay.map { encode?($0, channel.allocator) ?? EncodedFrame(message: $0, allocator: channel.allocator) }
        eventLoop.execute {
            let held = self.gates.release(stream, top: top)
            if let reply { self.writeThrough(reply) }
            for frame in replay { self.writeThrough(frame) }
            for frame in held { self.writeThrough(frame) }
            self.flushPending()
        }
    }

    /// The connection left `stream`: no floor is kept for it.
    func forget(_ stream: Address) {
        eventLoop.execute { self.gates.forget(stream) }
    }

    /// Queues a delivery, unless its stream is being resumed (held) or it is a duplicate. On
    /// the event loop only; the caller flushes.
    func write(_ frame: EncodedFrame) {
        eventLoop.preconditionInEventLoop()
        if !gates.isEmpty, gates.deliver(frame) != .write { return }
        writeThrough(frame)
    }

    /// Queues a frame past the gates. On the event loop only; the caller flushes.
    private func writeThrough(_ frame: EncodedFrame) {
        guard machine.deliver(frame) == .write else { return }
        guard batch else {
            writeWire(frame.wire)
            return
        }
        // Packed until the flush: one frame for everything this turn delivers here.
        if packed == nil {
            packed = frame.payload
        } else {
            packed!.writeInteger(UInt8(ascii: "\n"))
            var payload = frame.payload
            packed!.writeBuffer(&payload)
        }
    }

    /// NIO's default `writeBufferWaterMark.high` for stream sockets (we do not change it).
    private static let highWaterMark = 64 << 10

    /// Nothing follows our close frame (RFC 6455 5.5.1), and nothing goes to a closed socket.
    private func writeWire(_ frame: ByteBuffer) {
        guard machine.mayWriteMessages, let context else { return }
        context.write(NIOAny(frame), promise: nil)
        framesSinceFlush += 1
    }

    private func overflow(buffered: Int, reason: Logger.Message = "outbound buffer full") {
        guard machine.overflowed() else { return }
        packed = nil
        metrics.slowConsumersClosed.increment()
        logger.warning(
            "closing slow consumer: \(reason)",
            metadata: ["session": "\(session)", "user": "\(user)", "buffered": "\(buffered)"])
        // Policy violation (1008). The close frame would queue behind the backlog the client
        // is not reading, so it is put in front of nothing: the socket is closed right after.
        channel.writeAndFlush(WireFrame.close(.policyViolation, allocator: channel.allocator), promise: nil)
        channel.close(promise: nil)
    }

    /// How long a peer may take to answer our close frame before the socket is shut anyway.
    static let closeHandshakeTimeout: TimeAmount = .seconds(5)

    /// Closes the WebSocket in an orderly way: what is queued, then a close frame, then the
    /// peer's close. A peer that never answers cannot hold the socket: it is shut after
    /// `closeHandshakeTimeout`. From any thread; only the first close counts.
    func close(_ code: WebSocketErrorCode, reason: String) {
        eventLoop.execute {
            guard self.channel.isActive else { return }
            // What this turn delivered goes out ahead of the close frame; nothing after it.
            self.flushPending()
            guard self.machine.closeRequested() else { return }
            self.channel.writeAndFlush(WireFrame.close(code, reason: reason, allocator: self.channel.allocator), promise: nil)
            let channel = self.channel
            channel.eventLoop.scheduleTask(in: Self.closeHandshakeTimeout) { channel.close(promise: nil) }
        }
    }

    /// Closes at once, after a close frame: for a peer whose bytes can no longer be read as
    /// frames, so no answer to the close frame could be recognised. On the event loop.
    func abort(_ code: WebSocketErrorCode, reason: String) {
        eventLoop.preconditionInEventLoop()
        guard channel.isActive else { return }
        flushPending()
        // Our close frame, unless one went out already (then only what is queued).
        let last = machine.closeRequested() ? WireFrame.close(code, reason: reason, allocator: channel.allocator) : ByteBuffer()
        channel.writeAndFlush(last).whenComplete { [channel] _ in channel.close(promise: nil) }
    }

    /// The peer sent its close frame: answer it with the same code, or 1002 when the frame was
    /// malformed (unless we began the handshake), then shut the socket. On the event loop.
    func peerClosed(_ close: PeerClose) {
        eventLoop.preconditionInEventLoop()
        // What this turn delivered goes out ahead of the echo; nothing after it.
        if machine.mayWriteControl { flushPending() }
        switch machine.peerCloseReceived() {
        case .echo: break
        case .shut: return channel.close(promise: nil)
        case .none: return
        }
        let code: WebSocketErrorCode? =
            switch close {
            case .echo(let code?): WebSocketErrorCode(codeNumber: Int(code))
            case .echo(nil): nil
            case .protocolError: .protocolError
            }
        let channel = self.channel
        channel.writeAndFlush(WireFrame.close(code, allocator: channel.allocator)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    /// Sends a heartbeat ping, or closes with 1001 when the last one went unanswered. On the
    /// event loop.
    func heartbeat() {
        eventLoop.preconditionInEventLoop()
        if !gates.isEmpty { gates.age() }
        switch machine.heartbeatDue() {
        case .ping:
            writeControl(opcode: 0x9, ByteBuffer())
            flushPending()
        case .close:
            logger.debug("closing connection: no pong to the last ping", metadata: ["session": "\(session)"])
            close(.goingAway, reason: "no pong")
        case .none:
            break
        }
    }

    /// Pings in a row that found the socket backed up (past NIO's high water mark).
    private var unansweredPings = 0
    /// A client that sends this many pings in a row while not reading what we send is closed
    /// as a slow consumer: it would otherwise be answered at whatever pace the node reads it,
    /// up to `maxBufferedBytes`, which under load took minutes.
    static let maxUnansweredPings = 100

    /// Answers a client's ping. Like every write, it counts against the outbound limit and
    /// nothing goes after our close frame. While the socket is backed up the ping is not
    /// answered (RFC 6455 5.5.3 lets a pong answer only the latest ping). On the event loop.
    func pong(_ payload: ByteBuffer) {
        eventLoop.preconditionInEventLoop()
        guard machine.pingReceived(payload) == .answer else { return }
        guard channel.isWritable else {
            unansweredPings += 1
            if unansweredPings >= Self.maxUnansweredPings {
                let buffered = (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
                overflow(buffered: buffered, reason: "pings keep coming while it reads nothing")
            }
            return
        }
        unansweredPings = 0
        writeControl(opcode: 0xA, payload)
        flushPending()
    }

    /// A control frame (a client's ping carries at most 125 bytes: `WebSocketFrameReader`),
    /// unmasked, on the same path as every other frame.
    private func writeControl(opcode: UInt8, _ payload: ByteBuffer) {
        guard machine.mayWriteControl else { return }
        guard let context else { return }
        context.write(NIOAny(WireFrame.control(opcode: opcode, payload, allocator: channel.allocator)), promise: nil)
        controlSinceFlush = true
    }

    func heardPong() {
        machine.pongReceived()
    }

    /// The socket is gone: nothing more is written to it. On the event loop.
    func closed() {
        machine.socketClosed()
        packed = nil
    }
}

/// What every connection of a node reads and none changes: one object per node.
final class ConnectionSettings: Sendable {
    let maxBufferedBytes: Int
    let metrics: NodeMetrics
    let logger: Logger

    init(maxBufferedBytes: Int, metrics: NodeMetrics, logger: Logger) {
        self.maxBufferedBytes = maxBufferedBytes
        self.metrics = metrics
        self.logger = logger
    }
}
