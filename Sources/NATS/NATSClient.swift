import Logging
import NIOCore
import SwitchboardCore
import Synchronization

/// A NATS client that stays connected to one server of a cluster: it tries the servers it was
/// given and those the cluster advertises (`connect_urls`) in turn, with capped backoff and
/// jitter after each round; after every (re)connect it subscribes again to every subject it
/// holds, then calls `onConnect`. While no server is reachable, `publish` fails at once: nothing
/// is buffered. Losing and regaining the servers is logged once each.
public final class NATSClient: Sendable {
    public struct Server: Hashable, Sendable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { "\(host):\(port)" }

        /// `nats://HOST:PORT` (or `HOST:PORT`); nil when it is not one.
        public init?(url: String) {
            var rest = Substring(url)
            if rest.hasPrefix("nats://") { rest = rest.dropFirst("nats://".count) }
            if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
            let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, let host = parts.first, !host.isEmpty, !host.contains("/") else { return nil }
            let port = parts.count == 2 ? Int(parts[1]) : 4222
            guard let port, (1...65535).contains(port) else { return nil }
            self.init(host: String(host), port: port)
        }
    }

    public struct Configuration: Sendable {
        public var servers: [Server]
        public var name = "switchboard"
        public var pingInterval: TimeAmount = .seconds(5)
        public var timeout: TimeAmount = .seconds(5)
        public var minimumBackoff: Duration = .milliseconds(100)
        public var maximumBackoff: Duration = .seconds(2)

        public init(servers: [Server]) {
            self.servers = servers
        }
    }

    struct State {
        /// The connection in use: what publishes go to.
        var connection: NATSConnection?
        /// The connection being set up or in use: what subscriptions go to, from the moment
        /// its own subscribing again starts, so that none made meanwhile is missed.
        var subscribing: NATSConnection?
        /// sid -> subject: what is subscribed again after a reconnect.
        var subscriptions: [String: String] = [:]
        var nextSID = 1
        /// The seeds, then what the cluster advertised.
        var servers: [Server]
        var next = 0
        var stopped = false
    }

    public let configuration: Configuration
    private let state: Mutex<State>
    private let logger: Logger
    private let onMessage: @Sendable (NATSMessage) -> Void
    private let onConnect: @Sendable (NATSConnection) async throws -> Void
    private let connected = ConditionSignal()

    public init(
        configuration: Configuration, logger: Logger, onMessage: @escaping @Sendable (NATSMessage) -> Void,
        onConnect: @escaping @Sendable (NATSConnection) async throws -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onMessage = onMessage
        self.onConnect = onConnect
        self.state = Mutex(State(servers: configuration.servers))
    }

    public var isConnected: Bool { state.withLock { $0.connection != nil } }

    /// The server connected to, if any.
    public var server: String? { state.withLock { $0.connection.map { "\($0.channel.remoteAddress.map { "\($0)" } ?? "?")" } } }

    /// Keeps a connection until the task is cancelled or `stop()`.
    public func run() async {
        var failedRounds = 0
        var failuresInRound = 0
        var down = false
        while !state.withLock({ $0.stopped }), !Task.isCancelled {
            let (server, roundSize) = state.withLock { state -> (Server, Int) in
                let server = state.servers[state.next % state.servers.count]
                state.next += 1
                return (server, state.servers.count)
            }
            do {
                let connection = try await NATSConnection.connect(
                    host: server.host, port: server.port, name: configuration.name, pingInterval: configuration.pingInterval,
                    timeout: configuration.timeout, logger: logger, onMessage: onMessage)
                learn(connection.info?.connectURLs ?? [])
                // Every subscription again, in the lock so that later changes queue after them.
                state.withLock { state in
                    state.subscribing = connection
                    for (sid, subject) in state.subscriptions.sorted(by: { $0.key < $1.key }) {
                        connection.send(.sub(subject: subject, sid: sid))
                    }
                }
                do {
                    try await connection.flush()
                    try await onConnect(connection)
                } catch {
                    state.withLock { $0.subscribing = nil }
                    await connection.close()
                    throw error
                }
                let stopped = state.withLock { state in
                    state.connection = connection
                    return state.stopped
                }
                connected.poke()
                if stopped {
                    await connection.close()
                    break
                }
                if down { logger.notice("NATS is reachable again, at \(server)") } else { logger.info("connected to NATS at \(server)") }
                down = false
                failedRounds = 0
                failuresInRound = 0
                try? await connection.closeFuture.get()
                state.withLock { state in
                    state.connection = nil
                    state.subscribing = nil
                }
                if state.withLock({ $0.stopped }) { break }
                logger.warning("lost the connection to NATS at \(server); trying the cluster's servers in turn")
                down = true
                continue  // the next server at once
            } catch {
                if !down {
                    logger.warning("NATS at \(server) is unreachable (\(error)); trying the cluster's servers in turn")
                    down = true
                }
            }
            failuresInRound += 1
            if failuresInRound >= roundSize {
                failuresInRound = 0
                try? await Task.sleep(
                    for: Backoff(minimum: configuration.minimumBackoff, maximum: configuration.maximumBackoff).delay(attempt: failedRounds))
                failedRounds += 1
            }
        }
    }

    public func stop() async {
        let connection = state.withLock { state in
            state.stopped = true
            return state.connection
        }
        connected.poke()
        await connection?.close()
    }

    /// Adds the servers a cluster advertises to the list (once each).
    private func learn(_ urls: [String]) {
        state.withLock { state in
            for url in urls {
                guard let server = Server(url: url), !state.servers.contains(server) else { continue }
                state.servers.append(server)
            }
        }
    }

    public func waitUntilConnected() async {
        _ = await connected.wait { self.state.withLock { $0.connection != nil || $0.stopped } }
    }

    /// Subscribes (now if connected, and again after every reconnect); returns the sid once the
    /// server has the subscription, or at once while disconnected.
    @discardableResult
    public func subscribe(_ subject: String) async throws -> String {
        let (sid, connection) = state.withLock { state -> (String, NATSConnection?) in
            let sid = String(state.nextSID)
            state.nextSID += 1
            state.subscriptions[sid] = subject
            state.subscribing?.send(.sub(subject: subject, sid: sid))
            return (sid, state.subscribing)
        }
        try? await connection?.flush()
        return sid
    }

    public func unsubscribe(_ sid: String) async {
        let connection = state.withLock { state -> NATSConnection? in
            guard state.subscriptions.removeValue(forKey: sid) != nil else { return nil }
            state.subscribing?.send(.unsub(sid: sid))
            return state.subscribing
        }
        try? await connection?.flush()
    }

    /// Publishes; the future succeeds once the server has it. Fails at once while disconnected.
    public func publish(_ subject: String, _ payload: [UInt8]) -> EventLoopFuture<Void>? {
        state.withLock { $0.connection }?.publish(subject, payload)
    }

    /// The current connection, if any.
    public var connection: NATSConnection? { state.withLock { $0.connection } }
}
