import Logging
import NIOCore
import SwitchboardCore
import Synchronization

/// A Redis connection that comes back by itself. `run()` keeps a connection open, reconnecting
/// with capped exponential backoff and jitter; each new connection is first handed to
/// `onConnect` (to re-subscribe, re-register), then offered to `send`. While there is no
/// connection, `send` fails at once with `RedisError.unavailable`: callers decide what to do.
/// Losing and regaining Redis is logged once each, not once per command.
public final class RedisClient: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var connectTimeout: TimeAmount = .seconds(2)
        public var commandTimeout: TimeAmount = .seconds(5)
        public var minimumBackoff: Duration = .milliseconds(100)
        public var maximumBackoff: Duration = .seconds(5)

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// Parses `redis://HOST:PORT`.
        public init(url: String) throws {
            guard url.hasPrefix("redis://") else { throw RedisConfigurationError(message: "expected redis://HOST:PORT, got \(url)") }
            let rest = url.dropFirst("redis://".count).split(separator: "/").first ?? ""
            let parts = rest.split(separator: ":")
            guard let host = parts.first, !host.isEmpty else { throw RedisConfigurationError(message: "no host in \(url)") }
            let port = parts.count > 1 ? Int(parts[1]) : 6379
            guard let port, (1...65535).contains(port) else { throw RedisConfigurationError(message: "bad port in \(url)") }
            self.init(host: String(host), port: port)
        }
    }

    private struct State {
        var connection: RedisConnection?
        var stopped = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    public let configuration: Configuration
    private let state = Mutex(State())
    private let logger: Logger
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private let onConnect: @Sendable (RedisConnection) async throws -> Void
    private let onDisconnect: @Sendable () -> Void

    public init(
        configuration: Configuration, logger: Logger,
        onPush: (@Sendable (RESPValue) -> Void)? = nil,
        onConnect: @escaping @Sendable (RedisConnection) async throws -> Void = { _ in },
        onDisconnect: @escaping @Sendable () -> Void = {}
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onPush = onPush
        self.onConnect = onConnect
        self.onDisconnect = onDisconnect
    }

    public var isConnected: Bool { state.withLock { $0.connection != nil } }

    /// Keeps a connection until `stop()` (or the task is cancelled).
    public func run() async {
        var attempt = 0
        var down = false
        let address = "\(configuration.host):\(configuration.port)"
        while !state.withLock({ $0.stopped }), !Task.isCancelled {
            do {
                let connection = try await RedisConnection.connect(
                    host: configuration.host, port: configuration.port, connectTimeout: configuration.connectTimeout,
                    commandTimeout: configuration.commandTimeout, onPush: onPush)
                do {
                    // RESP3 when the server speaks it (Redis 6+); RESP2 otherwise.
                    if (try? await connection.send(["HELLO", "3"])) != nil { connection.resp3.store(true, ordering: .relaxed) }
                    try await onConnect(connection)
                } catch {
                    await connection.close()
                    throw error
                }
                let (waiters, stopped) = state.withLock { state in
                    state.connection = connection
                    defer { state.waiters = [] }
                    return (state.waiters, state.stopped)
                }
                for waiter in waiters { waiter.resume() }
                if stopped {
                    await connection.close()
                    break
                }
                if down { logger.notice("Redis at \(address) is reachable again") } else { logger.info("connected to Redis at \(address)") }
                down = false
                attempt = 0
                try? await connection.closeFuture.get()
                state.withLock { $0.connection = nil }
                onDisconnect()
                if state.withLock({ $0.stopped }) { break }
                logger.warning("lost the connection to Redis at \(address); reconnecting")
                down = true
            } catch {
                if !down {
                    logger.warning("Redis at \(address) is unreachable (\(error)); retrying in the background")
                    down = true
                }
            }
            attempt += 1
            try? await Task.sleep(for: backoff(attempt: attempt))
        }
    }

    /// Capped exponential backoff with jitter: a random delay between half and all of
    /// min(maximum, minimum * 2^attempt), so that many nodes do not reconnect in step.
    func backoff(attempt: Int) -> Duration {
        Backoff(minimum: configuration.minimumBackoff, maximum: configuration.maximumBackoff).delay(attempt: attempt)
    }

    /// Sends a command on the current connection.
    @discardableResult
    public func send(_ arguments: [RESPArgument]) async throws -> RESPValue {
        guard let connection = state.withLock({ $0.connection }) else { throw RedisError.unavailable }
        return try await connection.send(arguments)
    }

    /// Queues a command on the current connection without waiting (see `RedisConnection.enqueue`).
    public func enqueue(_ arguments: [RESPArgument]) throws -> EventLoopFuture<RESPValue> {
        guard let connection = state.withLock({ $0.connection }) else { throw RedisError.unavailable }
        return connection.enqueue(arguments)
    }

    /// Sends the commands back to back on the current connection (see `RedisConnection.pipeline`).
    public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        guard let connection = state.withLock({ $0.connection }) else { throw RedisError.unavailable }
        return try await connection.pipeline(commands)
    }

    /// The current connection, if any.
    public var connection: RedisConnection? { state.withLock { $0.connection } }

    /// Waits until a connection is up (or the client stops).
    public func waitUntilConnected() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.connection != nil || state.stopped { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    public func stop() async {
        let (connection, waiters) = state.withLock { state in
            state.stopped = true
            defer { state.waiters = [] }
            return (state.connection, state.waiters)
        }
        for waiter in waiters { waiter.resume() }
        await connection?.close()
    }
}

public struct RedisConfigurationError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
