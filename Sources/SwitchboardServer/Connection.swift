import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore

/// One client WebSocket held by this node.
///
/// Frames are written straight to the NIO channel on its event loop, never through an awaiting
/// writer, so a slow socket cannot stall whoever delivers to it. What the socket has not taken
/// yet stays in NIO's outbound buffer; when that exceeds `maxBufferedBytes` the connection is
/// closed (it would otherwise grow without bound) and the others are unaffected.
///
/// The mutable state below is touched only on `channel.eventLoop`.
final class Connection: LocalEndpoint, @unchecked Sendable {
    let session: String
    let identity: Identity
    var user: String { identity.user }
    let channel: any Channel
    let outbound: WebSocketOutboundWriter
    private let maxBufferedBytes: Int
    private let metrics: NodeMetrics
    private let logger: Logger

    /// Until `welcome` is written, deliveries wait here: `welcome` is always the first frame.
    private var welcomed = false
    private var early: [ByteBuffer] = []
    private var overflowed = false
    /// `?batch=1`: deliveries of one loop turn go out as one frame, objects separated by `\n`.
    let batch: Bool
    private var packed: ByteBuffer?
    /// Written to since the last flush (see LoopFlusher).
    private var dirty = false

    init(
        session: String, identity: Identity, channel: any Channel, outbound: WebSocketOutboundWriter,
        maxBufferedBytes: Int, metrics: NodeMetrics, logger: Logger, batch: Bool = false
    ) {
        self.batch = batch
        self.session = session
        self.identity = identity
        self.channel = channel
        self.outbound = outbound
        self.maxBufferedBytes = maxBufferedBytes
        self.metrics = metrics
        self.logger = logger
    }

    var eventLoop: any EventLoop { channel.eventLoop }

    /// Sends one frame (a reply) from any thread, after any deliveries still packed.
    func send(_ bytes: [UInt8]) {
        let buffer = channel.allocator.buffer(bytes: bytes)
        eventLoop.execute {
            self.write(buffer)
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

    /// Writes what is packed and flushes the socket.
    func flushPending() {
        eventLoop.preconditionInEventLoop()
        dirty = false
        if let frame = packed {
            packed = nil
            writeFrame(frame)
        }
        channel.flush()
    }

    /// Writes the welcome frame, then anything delivered before it.
    func open(welcome: [UInt8]) {
        let buffer = channel.allocator.buffer(bytes: welcome)
        eventLoop.execute {
            self.welcomed = true
            self.writeFrame(buffer)
            for frame in self.early { self.writeFrame(frame) }
            self.early = []
            self.channel.flush()
        }
    }

    /// Queues a frame. On the event loop only; the caller flushes.
    func write(_ buffer: ByteBuffer) {
        eventLoop.preconditionInEventLoop()
        guard welcomed else {
            early.append(buffer)
            return
        }
        guard batch else {
            writeFrame(buffer)
            return
        }
        // Packed until the flush: one frame for everything this turn delivers here.
        if packed == nil {
            packed = buffer
        } else {
            packed!.writeInteger(UInt8(ascii: "\n"))
            var copy = buffer
            packed!.writeBuffer(&copy)
        }
    }

    private func writeFrame(_ buffer: ByteBuffer) {
        guard !overflowed, channel.isActive else { return }
        let buffered = (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        guard buffered + buffer.readableBytes <= maxBufferedBytes else {
            overflow(buffered: buffered)
            return
        }
        channel.write(WebSocketFrame(fin: true, opcode: .text, data: buffer), promise: nil)
        metrics.deliveries.increment()
    }

    private func overflow(buffered: Int) {
        overflowed = true
        metrics.slowConsumersClosed.increment()
        logger.warning(
            "closing slow consumer: outbound buffer full",
            metadata: ["session": "\(session)", "user": "\(user)", "buffered": "\(buffered)"])
        // Policy violation (1008). The close frame would queue behind the backlog the client
        // is not reading, so it is put in front of nothing: the socket is closed right after.
        var payload = channel.allocator.buffer(capacity: 2)
        payload.write(webSocketErrorCode: .policyViolation)
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload), promise: nil)
        channel.close(promise: nil)
    }

    /// How long a peer may take to answer our close frame before the socket is shut anyway.
    static let closeHandshakeTimeout: TimeAmount = .seconds(5)

    /// Closes the WebSocket in an orderly way (close frame, then the close handshake). A peer
    /// that never answers cannot hold the socket: it is closed after `closeHandshakeTimeout`.
    func close(_ code: WebSocketErrorCode, reason: String) async {
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: Self.closeHandshakeTimeout) { channel.close(promise: nil) }
        try? await outbound.close(code, reason: reason)
    }
}
