import NIOCore
import NIOPosix
import Synchronization

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
    private let outbox = RESPOutbox()
    let commandTimeout: TimeAmount
    /// Set once `HELLO 3` was answered: a subscribed connection may then run any command.
    let resp3 = Atomic<Bool>(false)
    public var speaksRESP3: Bool { resp3.load(ordering: .relaxed) }

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
        let reply = try await pipeline([arguments])[0]
        if case .error(let message) = reply { throw RedisError.server(message) }
        return reply
    }

    /// Writes a command whose answer comes as a push (SUBSCRIBE and friends in RESP3).
    func sendWithoutReply(_ arguments: [RESPArgument]) async throws {
        _ = try await replies([arguments], expectsReply: false)
    }

    /// Sends the commands back to back and returns their replies, error replies included, in
    /// one round trip; a lost connection or a timeout throws. The task waiting here is resumed
    /// once, by the last reply, on no other hop: awaiting each command's future would hop to
    /// the event loop once per command (a future's callbacks are added there).
    public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        try await replies(commands, expectsReply: true)
    }

    private func replies(_ commands: [[RESPArgument]], expectsReply: Bool) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        return try await withUnsafeThrowingContinuation { continuation in
            enqueue(commands, expectsReply: expectsReply) { continuation.resume(with: $0) }
        }
    }

    /// Queues commands behind those queued before them (from this thread); `completion` is
    /// called once, on the event loop, with all their replies or the first failure. Without
    /// `expectsReply` (SUBSCRIBE and friends), a command is done once written.
    public func enqueue(
        _ commands: [[RESPArgument]], expectsReply: Bool = true,
        completion: @escaping @Sendable (Result<[RESPValue], any Error>) -> Void
    ) {
        let batch = ReplyBatch(count: commands.count, completion: completion)
        schedule(
            commands.enumerated().map { index, arguments in
                OutboundCommand(arguments: arguments, expectsReply: expectsReply, reply: .batch(batch, index))
            })
    }

    /// Queues a command behind those queued before it (from this thread) and returns its reply
    /// to come: the caller may queue more before waiting (pipelining). Commands queued while
    /// the event loop is busy go out together, in one write: under load, one wake-up of the
    /// loop and one system call carry many commands.
    public func enqueue(_ arguments: [RESPArgument], expectsReply: Bool = true) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        schedule([OutboundCommand(arguments: arguments, expectsReply: expectsReply, reply: .promise(promise))])
        return promise.futureResult
    }

    /// Only the first command after a drain wakes the event loop.
    private func schedule(_ commands: [OutboundCommand]) {
        guard outbox.add(commands) else { return }
        let handler = self.handler
        let outbox = self.outbox
        let timeout = commandTimeout
        channel.eventLoop.execute { handler.send(outbox.takeAll(), timeout: timeout) }
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
        let reply: ReplyTarget
        let deadline: NIODeadline
    }

    private let parser = RESPParser()
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private var buffer = ByteBuffer()
    private var pending = CircularBuffer<Pending>()
    private var context: ChannelHandlerContext?
    private var closed = false
    /// One timer at a time, for the oldest command still unanswered.
    private var deadlineTimer: Scheduled<Void>?

    init(onPush: (@Sendable (RESPValue) -> Void)?) {
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Writes the commands in one buffer with one flush. A command with no reply of its own
    /// (SUBSCRIBE and friends) is done once written.
    func send(_ commands: [OutboundCommand], timeout: TimeAmount) {
        guard let context, !closed else {
            for command in commands { command.reply.fail(RedisError.connectionClosed) }
            return
        }
        var out = context.channel.allocator.buffer(capacity: 64 * commands.count)
        let deadline = NIODeadline.now() + timeout
        var written: [ReplyTarget] = []
        for command in commands {
            RESPEncoder.encode(command.arguments, into: &out)
            if command.expectsReply {
                pending.append(Pending(reply: command.reply, deadline: deadline))
            } else {
                written.append(command.reply)
            }
        }
        let write = context.writeAndFlush(NIOAny(out))
        if !written.isEmpty {
            write.whenComplete { [written] result in
                for reply in written {
                    switch result {
                    case .success: reply.succeed(.null)
                    case .failure(let error): reply.fail(error)
                    }
                }
            }
        }
        armDeadline(context: context)
    }

    /// A Redis that does not answer in time is treated as gone: the connection is closed, which
    /// fails every pending command and lets the owner reconnect.
    private func armDeadline(context: ChannelHandlerContext) {
        guard deadlineTimer == nil, let oldest = pending.first else { return }
        let loop = context.eventLoop
        let bound = NIOLoopBound(context, eventLoop: loop)
        deadlineTimer = loop.scheduleTask(deadline: oldest.deadline) { [self] in
            deadlineTimer = nil
            guard let oldest = pending.first else { return }
            if oldest.deadline <= .now() {
                failAll(RedisError.timedOut)
                bound.value.close(promise: nil)
            } else {
                armDeadline(context: bound.value)
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
            next.reply.succeed(value)
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
            // A switch, not an array literal's `contains`: this runs for every message a
            // subscriber receives, and the literal was an allocation each time.
            switch values.first?.string {
            case "message", "smessage", "pmessage", "subscribe", "ssubscribe", "psubscribe", "unsubscribe", "sunsubscribe", "punsubscribe":
                return true
            default: return false
            }
        default: return false
        }
    }

    func failAll(_ error: any Error) {
        closed = true
        deadlineTimer?.cancel()
        deadlineTimer = nil
        while let next = pending.popFirst() {
            next.reply.fail(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A socket error (a reset) is the connection closing, to every caller: an outage.
        // A malformed reply stays itself.
        failAll(error is RESPProtocolError ? error : RedisError.connectionClosed)
        context.close(promise: nil)
    }
}

/// A command on its way from any thread to the connection's event loop.
struct OutboundCommand: Sendable {
    let arguments: [RESPArgument]
    let expectsReply: Bool
    let reply: ReplyTarget
}

/// Where a command's reply goes: its own promise, or its place in a batch.
enum ReplyTarget: Sendable {
    case promise(EventLoopPromise<RESPValue>)
    case batch(ReplyBatch, Int)

    func succeed(_ value: RESPValue) {
        switch self {
        case .promise(let promise): promise.succeed(value)
        case .batch(let batch, let index): batch.succeed(index, value)
        }
    }

    func fail(_ error: any Error) {
        switch self {
        case .promise(let promise): promise.fail(error)
        case .batch(let batch, _): batch.fail(error)
        }
    }
}

/// The replies of commands queued together, handed over in one call once the last is in (or
/// at the first failure). Used only on the connection's event loop, after the queueing thread
/// handed it over through the outbox's lock.
final class ReplyBatch: @unchecked Sendable {
    private var replies: [RESPValue]
    private var remaining: Int
    private var completion: (@Sendable (Result<[RESPValue], any Error>) -> Void)?

    init(count: Int, completion: @escaping @Sendable (Result<[RESPValue], any Error>) -> Void) {
        replies = Array(repeating: .null, count: count)
        remaining = count
        self.completion = completion
    }

    func succeed(_ index: Int, _ value: RESPValue) {
        replies[index] = value
        remaining -= 1
        if remaining == 0, let completion {
            self.completion = nil
            completion(.success(replies))
        }
    }

    func fail(_ error: any Error) {
        guard let completion else { return }
        self.completion = nil
        completion(.failure(error))
    }
}

/// Commands queued for the event loop, in the order they were queued. `add` says whether the
/// caller must schedule a drain: only the first command after one does.
final class RESPOutbox: Sendable {
    private let queue = Mutex<[OutboundCommand]>([])

    /// Whether the queue was empty before: the caller then schedules a drain.
    func add(_ commands: [OutboundCommand]) -> Bool {
        queue.withLock {
            let wasEmpty = $0.isEmpty
            $0.append(contentsOf: commands)
            return wasEmpty
        }
    }

    func takeAll() -> [OutboundCommand] {
        queue.withLock {
            let all = $0
            $0.removeAll(keepingCapacity: true)
            return all
        }
    }
}
