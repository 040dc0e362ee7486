import Logging
import NIOCore
import NIOPosix
import SwitchboardCore
import Synchronization

/// Commands to a Redis Cluster. Each goes to the master that owns its key's slot, over that
/// master's own pipelined connection (a `RedisClient`, which reconnects by itself), so commands
/// to one slot keep their order. The slot map comes from `CLUSTER SLOTS`, asked of any node
/// known (the masters, then the seeds), at start, every `refreshInterval`, and whenever a reply
/// says the map moved:
///
/// - `MOVED slot host:port`: the slot lives there now: the map is refreshed and the command sent
///   there;
/// - `ASK slot host:port`: the slot is migrating and this key is already there: `ASKING` and the
///   command go there, once, on one connection;
/// - `TRYAGAIN`, `CLUSTERDOWN`, or a master that cannot be reached (a failover under way): the
///   command is retried with backoff until `retryDeadline`, refreshing the map between tries.
///
/// A command's key is what routes it: the first key of `EVAL`/`EVALSHA`/`FCALL` (every key of
/// one script must share a slot, which our names' hash tags ensure), else the first argument.
/// Commands without a key (`PING`, `SCRIPT LOAD`) go to any master, or to every master (`all`).
public final class RedisClusterClient: RedisCommanding {
    public struct Configuration: Sendable {
        public var seeds: [ClusterSlotMap.Node]
        public var connectTimeout: TimeAmount = .seconds(2)
        public var commandTimeout: TimeAmount = .seconds(5)
        /// CLUSTER SLOTS is asked this often anyway (cheap): a failover is seen within it even by
        /// a node that sent nothing to the master that died.
        public var refreshInterval: Duration = .seconds(1)
        /// How long a command may keep being retried through a failover or a migration.
        public var retryDeadline: Duration = .seconds(10)
        public var maxRedirections = 8

        public init(seeds: [ClusterSlotMap.Node]) {
            self.seeds = seeds
        }
    }

    struct State {
        var map = ClusterSlotMap()
        var clients: [ClusterSlotMap.Node: RedisClient] = [:]
        var stopped = false
    }

    public let configuration: Configuration
    private let state = Mutex(State())
    private let logger: Logger
    /// Work for `run`: each new master's client, a retired one's stop, registering again.
    private let jobs = BackgroundJobs()
    private let mapChanged = ConditionSignal()
    private let refreshWanted = Mutex(false)
    /// Called each time a master's connection is up (first and again): to write again what the
    /// owner keeps there, with `send`.
    private let onShardConnect: @Sendable () async -> Void

    public init(configuration: Configuration, logger: Logger, onShardConnect: @escaping @Sendable () async -> Void = {}) {
        self.configuration = configuration
        self.logger = logger
        self.onShardConnect = onShardConnect
    }

    /// The current map (for tests and diagnostics).
    public var slotMap: ClusterSlotMap { state.withLock { $0.map } }

    // MARK: Running

    /// Keeps the map fresh and every master's connection up, until cancelled or stopped.
    public func run() async {
        await jobs.run(alongside: { await self.keepRefreshing() })
    }

    public func stop() async {
        let clients = state.withLock { state in
            state.stopped = true
            return Array(state.clients.values)
        }
        mapChanged.poke()
        jobs.finish()
        for client in clients { await client.stop() }
    }

    /// Returns once a complete map is known and its masters are connected (or stopped).
    public func waitUntilConnected() async {
        _ = await mapChanged.wait {
            self.state.withLock { state in
                state.stopped || (state.map.isComplete && state.map.masters.allSatisfy { state.clients[$0]?.isConnected == true })
            }
        }
    }

    /// The map is known and some master answers: worth trying a command (it rides out the rest).
    public var isConnected: Bool {
        state.withLock { state in state.map.isComplete && state.map.masters.contains { state.clients[$0]?.isConnected == true } }
    }

    private func keepRefreshing() async {
        var lastRefresh = ContinuousClock.now - configuration.refreshInterval
        while !state.withLock({ $0.stopped }), !Task.isCancelled {
            let wanted = refreshWanted.withLock { wanted in
                defer { wanted = false }
                return wanted
            }
            if wanted || ContinuousClock.now - lastRefresh >= configuration.refreshInterval || !state.withLock({ $0.map.isComplete }) {
                await refresh()
                lastRefresh = .now
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Asks the known nodes for `CLUSTER SLOTS` until one answers with a complete map.
    func refresh() async {
        let candidates = state.withLock { state in state.map.masters + configuration.seeds.filter { !state.map.masters.contains($0) } }
        for node in candidates {
            guard
                let connection = try? await RedisConnection.connect(
                    host: node.host, port: node.port, connectTimeout: configuration.connectTimeout,
                    commandTimeout: configuration.commandTimeout)
            else { continue }
            let reply = try? await connection.send(["CLUSTER", "SLOTS"])
            await connection.close()
            guard let reply, let map = ClusterSlotMap(clusterSlots: reply, fallbackHost: node.host), map.isComplete else { continue }
            adopt(map)
            return
        }
    }

    private func adopt(_ map: ClusterSlotMap) {
        let (changed, newMasters, retired) = state.withLock { state -> (Bool, [(ClusterSlotMap.Node, RedisClient)], [RedisClient]) in
            let changed = state.map != map
            state.map = map
            // A node that is no longer a master (it died and its replica took over) is let go.
            let gone = state.clients.keys.filter { !map.masters.contains($0) }
            let retired = gone.compactMap { state.clients.removeValue(forKey: $0) }
            var created: [(ClusterSlotMap.Node, RedisClient)] = []
            for master in map.masters where state.clients[master] == nil {
                var configuration = RedisClient.Configuration(host: master.host, port: master.port)
                configuration.connectTimeout = self.configuration.connectTimeout
                configuration.commandTimeout = self.configuration.commandTimeout
                var logger = self.logger
                logger[metadataKey: "redis.shard"] = "\(master)"
                let client = RedisClient(
                    configuration: configuration, logger: logger, onConnect: { [weak self] _ in self?.shardConnected(master) },
                    onDisconnect: {})
                state.clients[master] = client
                created.append((master, client))
            }
            return (changed, created, retired)
        }
        for client in retired { jobs.spawn { await client.stop() } }
        if changed { logger.info("Redis Cluster slot map: \(map.masters.count) master(s): \(map.masters.map(\.description).sorted())") }
        for (_, client) in newMasters {
            jobs.spawn {
                await withDiscardingTaskGroup { group in
                    group.addTask { await client.run() }
                    group.addTask {
                        await client.waitUntilConnected()
                        self.mapChanged.poke()
                    }
                }
            }
        }
        mapChanged.poke()
    }

    /// A master's connection is coming up: once it is, the owner writes again what it keeps.
    private func shardConnected(_ node: ClusterSlotMap.Node) {
        jobs.spawn {
            guard let client = self.state.withLock({ $0.clients[node] }) else { return }
            await client.waitUntilConnected()
            self.mapChanged.poke()
            await self.onShardConnect()
        }
    }

    /// Whether the Redis at `host:port` is a member of a Redis Cluster; nil when it does not answer.
    public static func isClusterMember(host: String, port: Int) async -> Bool? {
        guard let connection = try? await RedisConnection.connect(host: host, port: port, connectTimeout: .seconds(2)) else { return nil }
        defer { Task { await connection.close() } }
        guard let info = try? await connection.send(["INFO", "cluster"]).string else { return nil }
        return info.contains("cluster_enabled:1")
    }

    /// Asks for the map again soon (a subscriber's master stopped answering, say).
    public func requestRefresh() {
        wantRefresh()
    }

    private func wantRefresh() {
        refreshWanted.withLock { $0 = true }
    }

    // MARK: Commands

    /// The key that routes a command, if it has one. (Read from the bytes: it runs per command.)
    static func routingKey(_ arguments: [RESPArgument]) -> [UInt8]? {
        guard let name = arguments.first?.bytes else { return nil }
        if isOneOf(name, ["EVALSHA", "EVAL", "FCALL", "EVAL_RO", "EVALSHA_RO"]) {
            guard arguments.count > 3, let count = Int(String(decoding: arguments[2].bytes, as: UTF8.self)), count > 0 else { return nil }
            return arguments[3].bytes
        }
        if isOneOf(name, ["PING", "SCRIPT", "INFO", "CLUSTER", "HELLO", "FUNCTION"]) { return nil }
        return arguments.count > 1 ? arguments[1].bytes : nil
    }

    /// Whether `name` is one of `commands` (upper case), ignoring ASCII case.
    private static func isOneOf(_ name: [UInt8], _ commands: [StaticString]) -> Bool {
        commands.contains { command in
            command.utf8CodeUnitCount == name.count
                && command.withUTF8Buffer { expected in
                    zip(expected, name).allSatisfy { want, got in want == (got >= 97 && got <= 122 ? got - 32 : got) }
                }
        }
    }

    /// The client of the master that owns `key`'s slot (any master for no key).
    private func client(for key: [UInt8]?) -> RedisClient? {
        state.withLock { state in
            guard let key else { return state.map.masters.first.flatMap { state.clients[$0] } }
            return state.map.owner(ofSlot: ClusterSlot.of(key)).flatMap { state.clients[$0] }
        }
    }

    private func client(at node: ClusterSlotMap.Node) -> RedisClient? {
        state.withLock { $0.clients[node] }
    }

    /// Queues a command on its master's connection at once (commands to one slot keep their
    /// order) and returns its reply to come; a redirection or a failover is followed by `send`.
    public func enqueue(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPValue> {
        enqueueRouted(arguments)
    }

    private func enqueueRouted(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPValue> {
        guard let client = client(for: Self.routingKey(arguments)), let first = try? client.enqueue(arguments) else {
            let promise = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: RESPValue.self)
            promise.completeWithTask { try await self.replyOrError(arguments, after: nil) }
            return promise.futureResult
        }
        // One promise and one callback per command: the common reply passes straight through.
        let promise = first.eventLoop.makePromise(of: RESPValue.self)
        first.whenComplete { result in
            switch result {
            case .success(.error(let message)) where Self.isRedirectionOrRetry(message):
                promise.completeWithTask { try await self.replyOrError(arguments, after: message) }
            case .success(let reply):
                promise.succeed(reply)
            case .failure:
                promise.completeWithTask { try await self.replyOrError(arguments, after: nil) }
            }
        }
        return promise.futureResult
    }

    /// `send`, with an error reply returned as a value (as `enqueue` gives it).
    private func replyOrError(_ arguments: [RESPArgument], after earlier: String?) async throws -> RESPValue {
        do {
            return try await send(arguments, after: earlier)
        } catch RedisError.server(let message) {
            return .error(message)
        }
    }

    static func isRedirectionOrRetry(_ message: String) -> Bool {
        message.hasPrefix("MOVED ") || message.hasPrefix("ASK ") || message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN")
    }

    /// Sends a command to the master of its slot, following redirections and riding through
    /// failovers (see the type's comment). Another error reply throws `RedisError.server`.
    @discardableResult
    public func send(_ arguments: [RESPArgument]) async throws -> RESPValue {
        try await send(arguments, after: nil)
    }

    private func send(_ arguments: [RESPArgument], after earlier: String?) async throws -> RESPValue {
        let key = Self.routingKey(arguments)
        let deadline = ContinuousClock.now + configuration.retryDeadline
        var redirections = 0
        var attempt = 0
        var pending = earlier.flatMap { ClusterRedirection(error: $0, fallbackHost: "127.0.0.1") }
        var lastError: any Error = RedisError.unavailable
        if let earlier, pending == nil { await backOff(&attempt, because: earlier) }
        while ContinuousClock.now < deadline {
            do {
                let reply: RESPValue
                if case .ask(_, let node)? = pending {
                    guard let target = client(at: node) ?? client(for: key) else { throw RedisError.unavailable }
                    let asking = try target.enqueue(["ASKING"])
                    let answer = try target.enqueue(arguments)
                    _ = try await asking.get()
                    reply = try await answer.get()
                } else {
                    guard let target = client(for: key) else { throw RedisError.unavailable }
                    reply = try await target.enqueue(arguments).get()
                }
                pending = nil
                guard case .error(let message) = reply else { return reply }
                guard Self.isRedirectionOrRetry(message), redirections < configuration.maxRedirections else {
                    throw RedisError.server(message)
                }
                redirections += 1
                if let redirection = ClusterRedirection(error: message, fallbackHost: "127.0.0.1") {
                    if case .moved = redirection {
                        await refresh()
                    } else {
                        pending = redirection
                    }
                } else {
                    await backOff(&attempt, because: message)
                }
            } catch RedisError.server(let message) {
                throw RedisError.server(message)
            } catch {
                // No connection to that master (it died, a replica is taking over) or a timeout.
                lastError = error
                wantRefresh()
                await backOff(&attempt, because: "\(error)")
                await refresh()
            }
        }
        throw lastError
    }

    private func backOff(_ attempt: inout Int, because reason: String) async {
        try? await Task.sleep(for: Backoff(minimum: .milliseconds(50), maximum: .seconds(1)).delay(attempt: attempt))
        attempt += 1
    }

    public func loadScript(_ text: String) async throws -> String {
        let replies = try await all(["SCRIPT", "LOAD", RESPArgument(text)])
        guard let sha = replies.first?.string, replies.allSatisfy({ $0.string == sha }) else {
            throw RedisError.server("SCRIPT LOAD did not answer one SHA on every master")
        }
        return sha
    }

    /// Sends a keyless command to every master (`SCRIPT LOAD`, say); returns their replies.
    public func all(_ arguments: [RESPArgument]) async throws -> [RESPValue] {
        let clients = state.withLock { state in state.map.masters.compactMap { state.clients[$0] } }
        var replies: [RESPValue] = []
        for client in clients { replies.append(try await client.send(arguments)) }
        return replies
    }
}
