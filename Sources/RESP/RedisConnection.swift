import NIOCore
import NIOPosix

public enum RedisError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Redis answered with an error reply.
    case server(String)
    /// There is no connection to Redis right now.
    case unavailable
    case connectionClosed
    case timedOut

    public var description: String {
        switch self {
        case .server(let message): "Redis error: \(message)"
        case .unavailable: "Redis is unavailable"
        case .connectionClosed: "the Redis connection closed"
        case .timedOut: "Redis did not answer in time"
        }
    }
}

/// One TCP connection to Redis. Commands are pipelined: each is written at once and its reply
/// is matched by order. Pushes (pub/sub) go to `onPush` instead.
public final class RedisConnection: Sendable {
    public let channel: any Channel
    private let handler: RESPHandler
    let commandTimeout: TimeAmount

    private init(channel: any Channel, handler: RESPHandler, commandTimeout: TimeAmount) {
        self.channel = channel
        self.handler = handler
        self.commandTimeout = commandTimeout
    }

    public static func connect(
        host: String, port: Int, connectTimeout: TimeAmount = .seconds(2), commandTimeout: TimeAmount = .seconds(5),
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws -> RedisConnection {
        let handler = RESPHandler(onPush: onPush)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(connectTimeout)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: host, port: port).get()
        return RedisConnection(channel: channel, handler: handler, commandTimeout: commandTimeout)
    }

    /// Sends a command and returns its reply; an error reply throws `RedisError.server`.
    @discardableResult
    public func send(_ arguments: [RESPArgument]) async throws -> RESPValue {
        let reply = try await sendRaw(arguments, expectsReply: true)
        if case .error(let message) = reply { throw RedisError.server(message) }
        return reply
    }

    /// Writes a command whose answer comes as a push (SUBSCRIBE and friends in RESP3).
    func sendWithoutReply(_ arguments: [RESPArgument]) async throws {
        _ = try await sendRaw(arguments, expectsReply: false)
    }

    private func sendRaw(_ arguments: [RESPArgument], expectsReply: Bool) async throws -> RESPValue {
        try await enqueue(arguments, expectsReply: expectsReply).get()
    }

    /// Queues a command behind those queued before it (from this thread) and returns its reply
    /// to come: the caller may queue more before waiting (pipelining).
    public func enqueue(_ arguments: [RESPArgument], expectsReply: Bool = true) -> EventLoopFuture<RESPValue> {
        let loop = channel.eventLoop
        let promise = loop.makePromise(of: RESPValue.self)
        let handler = self.handler
        let channel = self.channel
        let timeout = commandTimeout
        loop.execute {
            handler.send(arguments, expectsReply: expectsReply, promise: promise)
            // A Redis that does not answer in time is treated as gone: the connection is closed,
            // which fails every pending command and lets the owner reconnect.
            let timer = loop.scheduleTask(in: timeout) {
                handler.failAll(RedisError.timedOut)
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
        }
        return promise.futureResult
    }

    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    public func close() async {
        try? await channel.close()
    }
}

/// Parses replies and matches them to commands. Lives on the channel's event loop.
final class RESPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private struct Pending {
        let promise: EventLoopPromise<RESPValue>
    }

    private let parser = RESPParser()
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private var buffer = ByteBuffer()
    private var pending = CircularBuffer<Pending>()
    private var context: ChannelHandlerContext?
    private var closed = false

    init(onPush: (@Sendable (RESPValue) -> Void)?) {
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func send(_ arguments: [RESPArgument], expectsReply: Bool, promise: EventLoopPromise<RESPValue>) {
        guard let context, !closed else {
            promise.fail(RedisError.connectionClosed)
            return
        }
        var out = context.channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(arguments, into: &out)
        if expectsReply {
            pending.append(Pending(promise: promise))
            context.writeAndFlush(NIOAny(out), promise: nil)
        } else {
            context.writeAndFlush(NIOAny(out)).whenComplete { result in
                promise.completeWith(result.map { .null })
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        do {
            while let value = try parser.parse(&buffer) {
                dispatch(value, context: context)
            }
            buffer.discardReadBytes()
        } catch {
            failAll(error)
            context.close(promise: nil)
        }
    }

    private func dispatch(_ value: RESPValue, context: ChannelHandlerContext) {
        if let onPush, Self.isPush(value) {
            onPush(value)
        } else if let next = pending.popFirst() {
            next.promise.succeed(value)
        } else {
            // A reply nobody asked for: the stream is out of step; start over.
            failAll(RESPProtocolError(message: "unexpected reply"))
            context.close(promise: nil)
        }
    }

    /// RESP3 pushes, and in RESP2 the arrays a subscribed connection receives.
    static func isPush(_ value: RESPValue) -> Bool {
        switch value {
        case .push: return true
        case .array(let values):
            guard let kind = values.first?.string else { return false }
            return [
                "message", "smessage", "pmessage", "subscribe", "ssubscribe", "psubscribe", "unsubscribe", "sunsubscribe", "punsubscribe",
            ]
            .contains(kind)
        default: return false
        }
    }

    func failAll(_ error: any Error) {
        closed = true
        while let next = pending.popFirst() {
            next.promise.fail(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }
}
