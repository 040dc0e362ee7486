import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

public enum NATSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No server is reachable: the client refuses rather than buffers.
    case unavailable
    case connectionClosed
    case timedOut
    /// The server answered `-ERR`.
    case server(String)
    case protocolError(String)
    /// Over the server's `max_payload`: refused before it is sent (the server would close the connection).
    case payloadTooLarge(Int)

    public var description: String {
        switch self {
        case .unavailable: "no NATS server is reachable"
        case .connectionClosed: "the NATS connection closed"
        case .timedOut: "the NATS server did not answer in time"
        case .server(let message): "the NATS server refused: \(message)"
        case .protocolError(let message): "NATS protocol error: \(message)"
        case .payloadTooLarge(let limit): "the message is over the NATS server's max_payload of \(limit) bytes"
        }
    }
}

/// A message received on a subscription.
public struct NATSMessage: Sendable {
    public var subject: String
    public var sid: String
    public var payload: [UInt8]
}

/// One connection to one NATS server: INFO, then CONNECT (`verbose:false`, `echo:false`,
/// `headers:true`) and a PING whose PONG says the server took it; then PUB, SUB and UNSUB go
/// out in call order, `flush()` is a PING answered by a PONG (the server has processed
/// everything sent before it), the server's PINGs are answered, ours go out every
/// `pingInterval` and two unanswered ones close the connection. Messages go to `onMessage` on
/// the connection's event loop.
public final class NATSConnection: Sendable {
    public let channel: any Channel
    private let handler: NATSHandler
    private let timeout: TimeAmount

    private init(channel: any Channel, handler: NATSHandler, timeout: TimeAmount) {
        self.channel = channel
        self.handler = handler
        self.timeout = timeout
    }

    /// What the server said of itself in its INFO.
    public var info: NATSInfo? { handler.info.withLock { $0 } }

    public static func connect(
        host: String, port: Int, name: String = "switchboard", pingInterval: TimeAmount = .seconds(10),
        timeout: TimeAmount = .seconds(5), logger: Logger, onMessage: @escaping @Sendable (NATSMessage) -> Void
    ) async throws -> NATSConnection {
        let handler = NATSHandler(name: name, pingInterval: pingInterval, logger: logger, onMessage: onMessage)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(timeout)
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
                }
                .connect(host: host, port: port).get()
        } catch {
            handler.failAll(error)
            throw error
        }
        let connection = NATSConnection(channel: channel, handler: handler, timeout: timeout)
        do {
            try await connection.withTimeout(handler.ready.futureResult)
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return connection
    }

    /// Queues an operation (in call order, from one thread or under one lock).
    public func send(_ op: NATSClientOp) {
        let handler = self.handler
        channel.eventLoop.execute { handler.send(op) }
    }

    /// Publishes, and returns once the server has it (a PING after it, answered).
    public func publish(_ subject: String, _ payload: [UInt8]) -> EventLoopFuture<Void> {
        if let limit = info?.maxPayload, limit > 0, payload.count > limit {
            return channel.eventLoop.makeFailedFuture(NATSError.payloadTooLarge(limit))
        }
        let handler = self.handler
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute {
            handler.send(.pub(subject: subject, payload: payload))
            handler.ping(promise)
        }
        return promise.futureResult
    }

    /// Publishes and returns once the server has it, within the timeout.
    public func publishAndWait(_ subject: String, _ payload: [UInt8]) async throws {
        try await withTimeout(publish(subject, payload))
    }

    /// Returns once the server has processed everything sent before (PING, PONG).
    public func flush() async throws {
        try await withTimeout(enqueueFlush())
    }

    /// A PING queued after what was sent before, and its PONG to come.
    public func enqueueFlush() -> EventLoopFuture<Void> {
        let handler = self.handler
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute { handler.ping(promise) }
        return promise.futureResult
    }

    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    public func close() async {
        try? await channel.close()
    }

    func withTimeout<Value: Sendable>(_ future: EventLoopFuture<Value>) async throws -> Value {
        let channel = self.channel
        let handler = self.handler
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            // A server that does not answer in time is treated as gone.
            handler.failAll(NATSError.timedOut)
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        return try await future.get()
    }
}

/// The connection's protocol, on its event loop.
final class NATSHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase { case awaitingInfo, awaitingPong, open, closed }

    private let name: String
    private let pingInterval: TimeAmount
    private let logger: Logger
    private let onMessage: @Sendable (NATSMessage) -> Void
    let ready: EventLoopPromise<Void>
    let info = Mutex<NATSInfo?>(nil)
    private var context: ChannelHandlerContext?
    private var parser = NATSParser()
    private var buffer = ByteBuffer()
    private var phase = Phase.awaitingInfo
    /// Flushes awaiting their PONG, in order (the handshake's own PING is first).
    private var pongs = CircularBuffer<EventLoopPromise<Void>?>()
    private var pingTask: RepeatedTask?
    private var unansweredPings = 0

    init(name: String, pingInterval: TimeAmount, logger: Logger, onMessage: @escaping @Sendable (NATSMessage) -> Void) {
        self.name = name
        self.pingInterval = pingInterval
        self.logger = logger
        self.onMessage = onMessage
        self.ready = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        do {
            while let op = try parser.next(&buffer) { try handle(op) }
        } catch {
            logger.warning("closing a NATS connection: \(error)")
            failAll(NATSError.protocolError("\(error)"))
            context.close(promise: nil)
        }
        buffer.discardReadBytes()
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        pingTask?.cancel()
        failAll(NATSError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func handle(_ op: NATSServerOp) throws {
        switch op {
        case .info(let json):
            let decoded = try? JSONDecoder().decode(NATSInfo.self, from: Data(json))
            guard let decoded else { throw NATSError.protocolError("INFO that is not JSON") }
            info.withLock { $0 = decoded }
            if let maxPayload = decoded.maxPayload, maxPayload > 0 { parser.maxPayload = max(maxPayload, 1024) + 65536 }
            guard phase == .awaitingInfo else { return }  // a later INFO updates the cluster's URLs
            let connect: [String: any Sendable] = [
                "verbose": false, "pedantic": false, "echo": false, "headers": true, "no_responders": false,
                "lang": "swift", "version": "1", "protocol": 1, "name": name,
            ]
            let json = (try? JSONSerialization.data(withJSONObject: connect, options: [.sortedKeys])) ?? Data("{}".utf8)
            phase = .awaitingPong
            send(.connect(Array(json)))
            pongs.append(nil)
            send(.ping)
        case .ping:
            send(.pong)
        case .pong:
            unansweredPings = 0
            guard let waiter = pongs.popFirst() else { return }
            if phase == .awaitingPong {
                phase = .open
                ready.succeed()
                startPings()
            }
            waiter?.succeed()
        case .msg(let subject, let sid, _, _, let payload):
            onMessage(NATSMessage(subject: subject, sid: sid, payload: payload))
        case .ok:
            return
        case .err(let message):
            // Most errors end the connection (the server closes it); a permissions error does not.
            logger.warning("the NATS server said: \(message)")
            if phase != .open { failAll(NATSError.server(message)) }
        }
    }

    func send(_ op: NATSClientOp) {
        guard let context, phase != .closed else { return }
        var out = context.channel.allocator.buffer(capacity: 64)
        op.write(to: &out)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    func ping(_ promise: EventLoopPromise<Void>) {
        guard phase == .open else { return promise.fail(NATSError.connectionClosed) }
        pongs.append(promise)
        send(.ping)
    }

    func failAll(_ error: any Error) {
        ready.fail(error)
        while let waiter = pongs.popFirst() { waiter?.fail(error) }
    }

    /// Our PING every interval; two unanswered close the connection.
    private func startPings() {
        guard let context else { return }
        pingTask = context.eventLoop.scheduleRepeatedTask(initialDelay: pingInterval, delay: pingInterval) { [self] _ in
            if unansweredPings >= 2 {
                logger.warning("the NATS server did not answer two PINGs; closing the connection")
                failAll(NATSError.timedOut)
                self.context?.close(promise: nil)
                return
            }
            unansweredPings += 1
            pongs.append(nil)
            send(.ping)
        }
    }
}
