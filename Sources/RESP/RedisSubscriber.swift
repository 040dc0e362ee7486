import Logging
import NIOCore
import Synchronization

/// A message received on a subscribed channel.
public struct RedisMessage: Sendable, Hashable {
    public var channel: String
    public var payload: [UInt8]
}

/// What a subscriber delivers, in the order it happened.
public enum RedisSubscriberEvent: Sendable, Hashable {
    case message(RedisMessage)
    /// A new connection is subscribing again: whatever was published on the channels while
    /// there was none was not received (messages before this came on the old connection).
    case resubscribing
}

/// A subscriber connection: keeps a set of channels subscribed, across reconnects, and delivers
/// what arrives on them, and each reconnection, to its sink (`events`, or a handler called on
/// the connection's event loop). Sharded pub/sub (SSUBSCRIBE, Redis 7) by default.
public final class RedisSubscriber: Sendable {
    /// What arrives, in order: into `events`, or to a handler (`deliver(to:)`).
    public let sink: SubscriberEvents
    private let ownsSink: Bool
    public let client: RedisClient
    private let sharded: Bool
    private let confirmationTimeout: Duration
    private let state = Mutex(State())
    /// Told of a channel the server unsubscribed us from by itself: on a Redis Cluster, its slot
    /// moved to another shard (or this one is no longer a master). The channel is forgotten here.
    private let onDropped: @Sendable (String) -> Void

    private struct State {
        var channels: Set<String> = []
        /// The connection subscribing again or subscribed: what new subscriptions go to, from the
        /// moment its own subscribing again starts (before the client offers it to others), so
        /// that none made in between is missed.
        var connection: RedisConnection?
        /// Waiting for the server to confirm a (un)subscription, by "kind channel".
        var confirmations: [String: [Waiter]] = [:]
        var lastWaiter: UInt64 = 0
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
        /// Armed once the command is written.
        var timer: Scheduled<Void>?
    }

    /// `sink`, when given, is shared with other subscribers (one per shard of a cluster): its
    /// events go there directly, and it is left open when this one ends.
    public init(
        configuration: RedisClient.Configuration, sharded: Bool = true, logger: Logger,
        sharing sink: SubscriberEvents? = nil,
        confirmationTimeout: Duration = .seconds(5), onDropped: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.sink = sink ?? SubscriberEvents()
        ownsSink = sink == nil
        self.onDropped = onDropped
        self.sharded = sharded
        self.confirmationTimeout = confirmationTimeout
        let box = Mutex<RedisSubscriber?>(nil)
        client = RedisClient(
            configuration: configuration, logger: logger,
            onPush: { value in box.withLock { $0 }?.handle(value) },
            onConnect: { connection in try await box.withLock { $0 }?.resubscribe(on: connection) },
            onDisconnect: {
                guard let subscriber = box.withLock({ $0 }) else { return }
                subscriber.state.withLock { $0.connection = nil }
                subscriber.failConfirmations(RedisError.connectionClosed)
            })
        box.withLock { $0 = self }
    }

    private var subscribeCommand: RESPArgument { sharded ? "SSUBSCRIBE" : "SUBSCRIBE" }
    private var unsubscribeCommand: RESPArgument { sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE" }

    public func run() async {
        await client.run()
        if ownsSink { sink.finish() }
    }

    public func stop() async {
        await client.stop()
    }

    public var events: AsyncStream<RedisSubscriberEvent> { sink.stream }

    public var channels: Set<String> { state.withLock { $0.channels } }

    public var isConnected: Bool { client.isConnected }

    /// Returns once every subscription sent so far on the current connection is in effect: a
    /// PING on that connection is answered after them (Redis answers a connection in order).
    public func barrier() async throws {
        await client.waitUntilConnected()
        _ = try await client.send(["PING"])
    }

    /// Subscribes and waits for Redis to confirm. Without a connection it returns at once: the
    /// channel is subscribed as soon as the connection is back; so it is when the connection
    /// closes before the confirmation (`RedisError.connectionClosed`).
    public func subscribe(_ channel: String) async throws {
        let (inserted, connection) = state.withLock { ($0.channels.insert(channel).inserted, $0.connection) }
        guard inserted, let connection else { return }
        do {
            try await confirmed(kind: sharded ? "ssubscribe" : "subscribe", channel: channel, command: subscribeCommand, on: connection)
        } catch RedisError.connectionClosed {
        }
    }

    /// Unsubscribes and waits for Redis to confirm; returns at once without a connection, and
    /// when the connection closes first (no connection holds the channel then).
    public func unsubscribe(_ channel: String) async throws {
        let (removed, connection) = state.withLock { ($0.channels.remove(channel) != nil, $0.connection) }
        guard removed, let connection else { return }
        do {
            try await confirmed(
                kind: sharded ? "sunsubscribe" : "unsubscribe", channel: channel, command: unsubscribeCommand, on: connection)
        } catch RedisError.connectionClosed {
        }
    }

    /// Sends `commands` on the subscriber's own connection right behind a change of
    /// subscription, in one write, and returns their replies: Redis answers a connection in
    /// order, so when they are in, the change is in effect too, and it took one round trip, not
    /// two (RESP3 lets a subscribed connection run any command). nil, with nothing sent or
    /// changed, when there is no such connection, or the change changes nothing: the caller
    /// then makes the change and sends the commands itself.
    public func send(_ commands: [[RESPArgument]], after change: SubscriptionChange) async throws -> [RESPValue]? {
        let connection = state.withLock { state -> RedisConnection? in
            guard let connection = state.connection, connection.speaksRESP3, !commands.isEmpty else { return nil }
            switch change {
            case .subscribe(let channel): return state.channels.insert(channel).inserted ? connection : nil
            case .unsubscribe(let channel): return state.channels.remove(channel) != nil ? connection : nil
            }
        }
        guard let connection else { return nil }
        let command: [RESPArgument] =
            switch change {
            case .subscribe(let channel): [subscribeCommand, RESPArgument(channel)]
            case .unsubscribe(let channel): [unsubscribeCommand, RESPArgument(channel)]
            }
        return try await withUnsafeThrowingContinuation { continuation in
            // Both from this thread: queued, and written, in this order.
            connection.enqueue([command], expectsReply: false) { _ in }
            connection.enqueue(commands) { continuation.resume(with: $0) }
        }
    }

    /// Writes the (un)subscription and waits for the server's confirmation push, at most
    /// `confirmationTimeout` from the write. No task is made for it, and nothing here wakes
    /// the event loop but the write itself: joins and leaves are the churn's hot path.
    private func confirmed(kind: String, channel: String, command: RESPArgument, on connection: RedisConnection) async throws {
        let key = kind + " " + channel
        let id = state.withLock { state -> UInt64 in
            state.lastWaiter &+= 1
            return state.lastWaiter
        }
        let loop = connection.channel.eventLoop
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            state.withLock { $0.confirmations[key, default: []].append(Waiter(id: id, continuation: continuation)) }
            connection.enqueue([[command, RESPArgument(channel)]], expectsReply: false) { written in
                // On the event loop, right after the write: the confirmation is read later.
                switch written {
                case .success: self.armTimeout(key, id: id, on: loop)
                // Not written: the connection is going; the channel is subscribed on the next.
                case .failure: self.resume(key, id: id, with: .failure(RedisError.connectionClosed))
                }
            }
        }
    }

    private func armTimeout(_ key: String, id: UInt64, on loop: any EventLoop) {
        let timer = loop.scheduleTask(in: TimeAmount(confirmationTimeout)) { self.resume(key, id: id, with: .failure(RedisError.timedOut)) }
        let waiting = state.withLock { state -> Bool in
            guard let index = state.confirmations[key]?.firstIndex(where: { $0.id == id }) else { return false }
            state.confirmations[key]![index].timer = timer
            return true
        }
        if !waiting { timer.cancel() }
    }

    /// Resumes the waiters of `key` (only the one numbered `id`, if given).
    private func resume(_ key: String, id: UInt64? = nil, with result: Result<Void, any Error>) {
        let waiters = state.withLock { state -> [Waiter] in
            guard let id else { return state.confirmations.removeValue(forKey: key) ?? [] }
            guard var list = state.confirmations[key], let index = list.firstIndex(where: { $0.id == id }) else { return [] }
            let waiter = list.remove(at: index)
            state.confirmations[key] = list.isEmpty ? nil : list
            return [waiter]
        }
        for waiter in waiters {
            waiter.timer?.cancel()
            waiter.continuation.resume(with: result)
        }
    }

    private func failConfirmations(_ error: any Error) {
        let all = state.withLock { state in
            defer { state.confirmations = [:] }
            return state.confirmations.values.flatMap { $0 }
        }
        for waiter in all {
            waiter.timer?.cancel()
            waiter.continuation.resume(throwing: error)
        }
    }

    private func resubscribe(on connection: RedisConnection) async throws {
        // Before the first subscription: every message after this is the new connection's.
        sink.emit(.resubscribing)
        let channels = state.withLock { state in
            state.connection = connection
            return state.channels
        }
        do {
            for channel in channels {
                try await connection.sendWithoutReply([subscribeCommand, RESPArgument(channel)])
            }
        } catch {
            state.withLock { $0.connection = nil }
            throw error
        }
    }

    private func handle(_ value: RESPValue) {
        guard let parts = value.elements, let kind = parts.first?.string, parts.count >= 3 else { return }
        switch kind {
        case "message", "smessage":
            guard let channel = parts[1].string, let payload = parts[2].bytes else { return }
            sink.emit(.message(RedisMessage(channel: channel, payload: payload)))
        case "sunsubscribe":
            guard let channel = parts[1].string else { return }
            let key = kind + " " + channel
            // Not asked for: the server dropped the channel (its slot moved).
            let unsolicited = state.withLock { state in
                guard state.confirmations[key] == nil, state.channels.contains(channel) else { return false }
                state.channels.remove(channel)
                return true
            }
            if unsolicited { onDropped(channel) } else { resume(key, with: .success(())) }
        case "subscribe", "ssubscribe", "unsubscribe":
            if let channel = parts[1].string { resume(kind + " " + channel, with: .success(())) }
        default:
            break
        }
    }
}
