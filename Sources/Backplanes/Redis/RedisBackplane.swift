import Logging
import NIOCore
import RESP
import SwitchboardCore
import Synchronization

/// Nodes on any machines joined through one Redis.
///
/// Routing: sharded pub/sub. A node subscribes to one channel per room and per user it holds,
/// plus the broadcast channel, so a message reaches only nodes with a recipient. Presence: a
/// room's members and a user's nodes in keys (see `RedisNames`), changed by scripts so that
/// `joined`/`left` are sent exactly once. Liveness: each node holds a lease in a sorted set,
/// renewed every heartbeat for two heartbeats; a survivor that finds a lapsed lease claims the
/// clean-up (SET NX), removes the dead node's presence and sends its `left` events, so a dead
/// node's users are gone within three heartbeats.
///
/// Redis down: this node keeps serving its own clients; what it registers is remembered and
/// written again, and every channel re-subscribed, once Redis is back. `publish` fails while
/// Redis is away (the client hears `internal`), since the message cannot reach the cluster.
public final class RedisBackplane: Backplane {
    public struct Configuration: Sendable {
        public var redis: RedisClient.Configuration
        /// Set for a Redis Cluster: its members to ask for the slot map (`redis` is then unused).
        public var clusterSeeds: [ClusterSlotMap.Node]?
        public var heartbeat: Duration
        public var prefix = "sb"
        /// History kept in Redis, per room and per inbox.
        public var history: HistoryPolicy

        public init(redis: RedisClient.Configuration, heartbeat: Duration, history: HistoryPolicy = .standard) {
            self.redis = redis
            self.heartbeat = heartbeat
            self.history = history
        }
    }

    private struct State {
        var node: NodeInfo?
        var receiver: (any ClusterReceiver)?
        /// What this node holds: registered again after Redis comes back.
        var local = Interest()
        var load = NodeLoad(connections: 0, users: 0)
        /// The position of the last message delivered, per sequenced stream this node follows:
        /// what to fill in from the history after the subscriptions were lost, and what a late
        /// copy is a duplicate of.
        var seen: [Address: StreamPosition] = [:]
    }

    let configuration: Configuration
    let names: RedisNames
    let commands: any RedisCommanding
    let subscriber: any RedisSubscribing
    let logger: Logger
    private let state = Mutex(State())
    private let gate = Mutex(DeliveryGate())
    /// Backfills after lost subscriptions, as child tasks of `run`.
    private let jobs = BackgroundJobs()
    /// The scripts' SHA1s once loaded (`SCRIPT LOAD`), so that commands send `EVALSHA` and not
    /// the scripts' text.
    let loadedScripts = Mutex(LoadedScripts())

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.names = RedisNames(prefix: configuration.prefix)
        self.logger = logger
        var subscriptionsLogger = logger
        subscriptionsLogger[metadataKey: "redis.connection"] = "subscriptions"
        var commandsLogger = logger
        commandsLogger[metadataKey: "redis.connection"] = "commands"
        let box = Mutex<RedisBackplane?>(nil)
        if let seeds = configuration.clusterSeeds {
            let cluster = RedisClusterClient(
                configuration: RedisClusterClient.Configuration(seeds: seeds), logger: commandsLogger,
                onShardConnect: {
                    // A master is up (again, or new after a failover): the scripts on it, and
                    // this node's entries written again wherever they belong.
                    guard let backplane = box.withLock({ $0 }) else { return }
                    do {
                        try await backplane.loadScripts(using: { try await backplane.commands.loadScript($0) })
                        try await backplane.register(using: { try await backplane.commands.send($0) })
                    } catch {
                        backplane.logger.debug("could not register again on a master that came up: \(error)")
                    }
                })
            self.commands = cluster
            self.subscriber = RedisClusterSubscriber(commands: cluster, logger: subscriptionsLogger)
        } else {
            self.subscriber = RedisSubscriber(configuration: configuration.redis, sharded: true, logger: subscriptionsLogger)
            self.commands = RedisClient(
                configuration: configuration.redis, logger: commandsLogger,
                onConnect: { connection in
                    let backplane = box.withLock { $0 }
                    // The scripts are loaded first, so every command after may name them.
                    try await backplane?.loadScripts(using: { text in
                        guard let sha = try await connection.send(["SCRIPT", "LOAD", RESPArgument(text)]).string else {
                            throw RedisError.server("SCRIPT LOAD did not answer a SHA")
                        }
                        return sha
                    })
                    // After a reconnect (Redis restarted, say), write this node's entries again.
                    try await backplane?.register(using: { try await connection.send($0) })
                })
        }
        box.withLock { $0 = self }
        subscriber.sink.deliver(to: { event in box.withLock { $0 }?.arrived(event) })
    }

    private var nodeID: String { state.withLock { $0.node?.id ?? "" } }

    private var redisName: String {
        if let seeds = configuration.clusterSeeds { return "Redis Cluster " + seeds.map(\.description).joined(separator: ",") }
        return "\(configuration.redis.host):\(configuration.redis.port)"
    }

    // MARK: Running, joining and leaving

    /// The two connections (each reconnecting by itself), the heartbeat and any backfill, until
    /// cancelled. What the subscriptions receive is handled on their connection's event loop
    /// (`arrived`).
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.commands.run() }
            group.addTask { await self.subscriber.run() }
            group.addTask { await self.heartbeats() }
            group.addTask { await self.jobs.run() }
            await untilCancelled()
            jobs.finish()
            await commands.stop()
            await subscriber.stop()
            group.cancelAll()
        }
    }

    public func join(node: NodeInfo, receiver: any ClusterReceiver) async throws {
        state.withLock {
            $0.node = node
            $0.receiver = receiver
        }
        try await subscriber.subscribe(names.channel(.everyone))
        // Ready only once Redis answers: until then /readyz stays 503.
        await commands.waitUntilConnected()
        await subscriber.waitUntilConnected()
        // A previous life of this node id may have left entries behind: clear them first.
        try await cleanUp(node: node.id)
        try await register(using: { try await self.commands.send($0) })
        logger.info("joined the cluster through Redis", metadata: ["redis": "\(redisName)"])
    }

    public func leave() async {
        try? await cleanUp(node: nodeID)
        // Nothing more is registered: the connections stop with `run`.
        state.withLock { $0.node = nil }
    }

    // MARK: Messages

    public func publish(_ envelope: Envelope) async throws {
        try await submit(envelope).wait()
    }

    /// Queued on the command connection at once, so one sender's messages keep their order
    /// while several are on their way to Redis. With history, the append script numbers, keeps
    /// and publishes the message in one step (`HistoryScripts`).
    public func submit(_ envelope: Envelope) -> PendingPublish {
        let channel = RESPArgument(names.channel(envelope.address))
        let history = configuration.history
        let command: [RESPArgument]
        if history.keeps(envelope.address) {
            command =
                script(.append) + [
                    "3", RESPArgument(names.streamMeta(envelope.address)),
                    RESPArgument(names.streamLog(envelope.address)), channel,
                    RESPArgument(bytes: WireEvent.encodeUnsequenced(envelope, origin: nodeID)),
                    RESPArgument(StreamPosition.newEpoch()), RESPArgument(history.size), RESPArgument(history.ttlSeconds * 1000),
                    RESPArgument(history.lifetimeSeconds * 1000),
                ]
        } else {
            command = ["SPUBLISH", channel, RESPArgument(bytes: WireEvent.encode(.message(envelope), origin: nodeID))]
        }
        let reply: Result<EventLoopFuture<RESPValue>, any Error> = Result { try commands.enqueue(command) }
        return PendingPublish {
            let value = try await reply.get().get()
            guard case .error(let message) = value else { return }
            // A server without the script (flushed, or a replica just promoted in a cluster):
            // the text goes once more, now.
            try await self.commands.send(self.scriptAgain(command, after: message))
        }
    }

    /// An event from the subscriptions, on their connection's event loop. Every delivery holds
    /// the gate's lock, so that deliveries from several connections (the old one's last, a
    /// cluster's shards) and from a backfill never interleave between a message's acceptance
    /// and its hand-over.
    private func arrived(_ event: RedisSubscriberEvent) {
        switch event {
        case .message(let message):
            gate.withLock { gate in
                if gate.arrived(message) { deliver(message) }
            }
        case .resubscribing:
            guard gate.withLock({ $0.resubscribing() }) else { return }
            jobs.spawn { await self.restore() }
        }
    }

    /// Fills in what the lost subscriptions missed, then hands on what arrived meanwhile, in
    /// order, before the gate opens again.
    private func restore() async {
        var again = true
        while again {
            await backfill()
            again = gate.withLock { gate -> Bool in
                while true {
                    switch gate.next() {
                    case .deliver(let messages): for message in messages { deliver(message) }
                    case .backfill: return true
                    case .done: return false
                    }
                }
            }
        }
    }

    private func deliver(_ message: RedisMessage) {
        let me = nodeID
        guard let address = names.address(ofChannel: message.channel),
            let (event, origin, sequenced) = WireEvent.decode(message.payload, address: address)
        else {
            logger.warning("dropped a malformed record from Redis", metadata: ["channel": "\(message.channel)"])
            return
        }
        // Our own unsequenced messages were delivered locally already; presence events and
        // sequenced messages were not.
        if case .message = event, origin == me, !sequenced { return }
        if case .message(let envelope) = event, let position = envelope.position, !accept(position, of: address) { return }
        state.withLock { $0.receiver }?.receive(event)
    }

    /// Whether a sequenced message is new to this node (and it is now the last seen).
    private func accept(_ position: StreamPosition, of stream: Address) -> Bool {
        state.withLock { state in
            if let last = state.seen[stream], last.epoch == position.epoch, position.offset <= last.offset { return false }
            // Only streams this node still follows are remembered (see roomLeft, userOffline).
            if state.local.hasRecipient(for: stream) { state.seen[stream] = position }
            return true
        }
    }

    /// The subscription connection was lost and is back: what was published meanwhile on the
    /// streams this node follows was not received. Once the subscriptions are in effect again,
    /// each stream is read from the last message seen and the missing ones are delivered, in
    /// order, before any live one (the pump waits). What the history no longer holds is lost for
    /// this node's clients: logged, and their next resume says `recovered:false`.
    private func backfill() async {
        let streams = state.withLock { $0.seen }
        guard !streams.isEmpty, configuration.history.isOn else { return }
        do {
            try await subscriber.barrier()
        } catch {
            logger.warning("could not fill in what the subscriptions missed: \(error)")
            return
        }
        var filled = 0
        var lost: [Address] = []
        for (stream, last) in streams {
            guard let read = try? await read(stream, after: last.offset, limit: configuration.history.size), read.recovers(last) else {
                lost.append(stream)
                continue
            }
            filled += gate.withLock { _ in
                var delivered = 0
                for envelope in read.after(last.offset) where accept(envelope.position!, of: stream) {
                    state.withLock { $0.receiver }?.receive(.message(envelope))
                    delivered += 1
                }
                return delivered
            }
        }
        if filled > 0 { logger.notice("delivered \(filled) message(s) published while the subscriptions were being restored") }
        if !lost.isEmpty {
            logger.warning(
                "\(lost.count) stream(s) lost messages while the subscriptions were being restored; the history could not fill them")
        }
    }

    // MARK: Presence

    public func userOnline(_ user: String) async throws {
        _ = try await userOnline(user, thenRead: false)
    }

    /// Subscribes the user's channel, then registers the user; with `thenRead`, the inbox's
    /// history read rides behind the registration, after the subscription took effect.
    public func userOnline(_ user: String, thenRead: Bool) async throws -> StreamRead? {
        state.withLock { _ = $0.local.apply(.online(user: user)) }
        return try await afterSubscribing(
            names.channel(.user(user)),
            [
                ["SADD", RESPArgument(names.userNodes(user)), RESPArgument(nodeID)],
                ["SADD", RESPArgument(names.nodeUsers(nodeID)), RESPArgument(user)],
            ], thenReadingTopOf: thenRead ? .user(user) : nil)
    }

    public func userOffline(_ user: String) async throws {
        state.withLock { state in
            _ = state.local.apply(.offline(user: user))
            state.seen[.user(user)] = nil
        }
        let channel = names.channel(.user(user))
        let registry: [[RESPArgument]] = [
            ["SREM", RESPArgument(names.userNodes(user)), RESPArgument(nodeID)],
            ["SREM", RESPArgument(names.nodeUsers(nodeID)), RESPArgument(user)],
        ]
        // Independent of each other: on the subscriber's connection, one round trip for both.
        // An outage is tolerated: the channel is already forgotten, the registry rewritten on
        // reconnect.
        var sent = false
        try await tolerateOutage {
            guard let replies = try await self.subscriber.send(registry, after: .unsubscribe(channel)) else { return }
            sent = true
            _ = try await self.settle(registry, replies, read: nil, of: nil)
        }
        if sent { return }
        async let unsubscribed: Void = subscriber.unsubscribe(channel)
        try await tolerateOutage { try await self.pipelined(registry) }
        try await unsubscribed
    }

    /// Subscribes to `channel`, then sends `commands` (and the read of `stream`'s top) once the
    /// subscription is in effect, so that nothing published to the channel after they ran is
    /// missed: in one round trip on the subscriber's connection where it can, else one after
    /// the other. An outage is tolerated, as Redis going away just after would be: the channel
    /// is subscribed and the commands written again on reconnect, and the recipients learn of
    /// any gap from the resubscription.
    private func afterSubscribing(
        _ channel: String, _ commands: [[RESPArgument]], thenReadingTopOf stream: Address?
    ) async throws -> StreamRead? {
        let read = readCommand(ofTopOf: stream)
        var top: StreamRead?
        var sent = false
        try await tolerateOutage {
            guard let replies = try await self.subscriber.send(read.map { commands + [$0] } ?? commands, after: .subscribe(channel))
            else { return }
            sent = true
            top = try await self.settle(commands, replies, read: read, of: stream)
        }
        if sent { return top }
        try await subscriber.subscribe(channel)
        try await tolerateOutage { top = try await self.pipelined(commands, thenReadingTopOf: stream) }
        return top
    }

    public func roomJoined(_ room: String, user: String) async throws {
        try await roomChanged(room, [.joined(user: user)])
    }

    public func roomLeft(_ room: String, user: String) async throws {
        try await roomChanged(room, [.left(user: user)])
    }

    public func roomChanged(_ room: String, _ changes: [RoomChange]) async throws {
        _ = try await roomChanged(room, changes, thenRead: false)
    }

    /// The whole batch in one round trip: each change's registry entry and presence script
    /// (which announces it), in order, and with `thenRead` the room's history read behind them
    /// (its top, for the joins' `ok`). The room's channel is subscribed before, when the batch
    /// makes it this node's room, so the read comes after the subscription took effect; it is
    /// unsubscribed after, when the batch leaves none here.
    public func roomChanged(_ room: String, _ changes: [RoomChange], thenRead: Bool) async throws -> StreamRead? {
        let (first, last) = state.withLock { state -> (Bool, Bool) in
            let before = state.local.rooms[room] != nil
            for change in changes { state.local.apply(change.delta(in: room)) }
            let after = state.local.rooms[room] != nil
            if !after { state.seen[.room(room)] = nil }
            return (!before && after, before && !after)
        }
        let node = nodeID
        var commands: [[RESPArgument]] = []
        commands.reserveCapacity(2 * changes.count)
        for change in changes {
            switch change {
            case .joined(let user):
                commands.append(["SADD", RESPArgument(names.nodeRooms(node)), RESPArgument(room + "|" + user)])
                commands.append(presenceCommand(.enter, room, user: user, node: node, announcing: .joined(room: room, user: user)))
            case .left(let user):
                commands.append(presenceCommand(.exit, room, user: user, node: node, announcing: .left(room: room, user: user)))
                commands.append(["SREM", RESPArgument(names.nodeRooms(node)), RESPArgument(room + "|" + user)])
            }
        }
        let stream: Address? = thenRead ? .room(room) : nil
        if first { return try await afterSubscribing(names.channel(.room(room)), commands, thenReadingTopOf: stream) }
        var top: StreamRead?
        try await tolerateOutage { top = try await self.pipelined(commands, thenReadingTopOf: stream) }
        if last { try await subscriber.unsubscribe(names.channel(.room(room))) }
        return top
    }

    public func members(of room: String) async throws -> [String] {
        let reply = try await commands.send(["HKEYS", RESPArgument(names.roomUsers(room))])
        return (reply.elements ?? []).compactMap(\.string).sorted()
    }

    public func nodes(of user: String) async throws -> [String] {
        let holders = try await commands.send(["SMEMBERS", RESPArgument(names.userNodes(user))]).elements ?? []
        let live = Set(try await liveNodeIDs())
        return holders.compactMap(\.string).filter(live.contains).sorted()
    }

    public func nodes() async throws -> [NodeStatus] {
        let reply = try await commands.send(["ZRANGE", RESPArgument(names.nodes), "0", "-1", "WITHSCORES"])
        // RESP3 answers [member, score] pairs; RESP2 a flat list.
        let items = (reply.elements ?? []).flatMap { $0.elements ?? [$0] }
        var result: [NodeStatus] = []
        let now = wallClockMilliseconds()
        var index = 0
        while index + 1 < items.count {
            guard let id = items[index].string else { break }
            let deadline: Int64
            if case .double(let score) = items[index + 1] {
                deadline = Int64(score)
            } else {
                deadline = Int64(items[index + 1].string.flatMap(Double.init) ?? 0)
            }
            index += 2
            let info = try await commands.send(["HGETALL", RESPArgument(names.nodeInfo(id))])
            let fields = Self.fields(info)
            result.append(
                NodeStatus(
                    info: NodeInfo(id: id, url: fields["url"] ?? ""),
                    load: NodeLoad(connections: Int(fields["connections"] ?? "") ?? 0, users: Int(fields["users"] ?? "") ?? 0),
                    alive: deadline > now))
        }
        return result.sorted { $0.info.id < $1.info.id }
    }

    public func report(_ load: NodeLoad) async {
        state.withLock { $0.load = load }
    }

    // MARK: Registry

    /// Writes this node's lease, info and every presence entry it holds (idempotent).
    func register(using send: @escaping @Sendable ([RESPArgument]) async throws -> RESPValue) async throws {
        let (node, users, rooms, load) = state.withLock { ($0.node, $0.local.users, $0.local.rooms, $0.load) }
        guard let node else { return }
        try await renewLease(node: node, load: load, send: send)
        for user in users {
            _ = try await send(["SADD", RESPArgument(names.userNodes(user)), RESPArgument(node.id)])
            _ = try await send(["SADD", RESPArgument(names.nodeUsers(node.id)), RESPArgument(user)])
        }
        for (room, members) in rooms {
            for user in members {
                _ = try await send(["SADD", RESPArgument(names.nodeRooms(node.id)), RESPArgument(room + "|" + user)])
                _ = try await sendScript(presenceCommand(.enter, room, user: user, node: node.id, announcing: nil), using: send)
            }
        }
    }

    private func renewLease(node: NodeInfo, load: NodeLoad, send: @Sendable ([RESPArgument]) async throws -> RESPValue) async throws {
        let period = Self.milliseconds(configuration.heartbeat)
        let deadline = wallClockMilliseconds() + 2 * period
        _ = try await send(["ZADD", RESPArgument(names.nodes), RESPArgument(Int(deadline)), RESPArgument(node.id)])
        _ = try await send([
            "HSET", RESPArgument(names.nodeInfo(node.id)), "url", RESPArgument(node.url),
            "connections", RESPArgument(load.connections), "users", RESPArgument(load.users),
        ])
        _ = try await send(["PEXPIRE", RESPArgument(names.nodeInfo(node.id)), RESPArgument(Int(3 * period))])
    }

    /// Every heartbeat: renew the lease, and clean up after nodes whose lease lapsed.
    private func heartbeats() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.heartbeat)
            guard commands.isConnected, let node = state.withLock({ $0.node }) else { continue }
            do {
                try await renewLease(node: node, load: state.withLock { $0.load }, send: { try await self.commands.send($0) })
                let lapsed = try await commands.send([
                    "ZRANGEBYSCORE", RESPArgument(names.nodes), "-inf", RESPArgument(Int(wallClockMilliseconds())),
                ])
                for id in (lapsed.elements ?? []).compactMap(\.string) where id != node.id {
                    let claim = try await commands.send([
                        "SET", RESPArgument(names.nodeCleanupClaim(id)), RESPArgument(node.id), "NX", "PX", "60000",
                    ])
                    guard claim == .simpleString("OK") else { continue }
                    logger.warning("node \(id) stopped renewing its lease; removing it from the cluster")
                    try await cleanUp(node: id)
                }
            } catch {
                // The client logs outages once; a failed round is retried next heartbeat.
            }
        }
    }

    /// Removes a node's presence (sending `left` where a user is now gone) and its registry entry.
    private func cleanUp(node id: String) async throws {
        let roomEntries = try await commands.send(["SMEMBERS", RESPArgument(names.nodeRooms(id))]).elements ?? []
        for entry in roomEntries.compactMap(\.string) {
            let parts = entry.split(separator: "|", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            _ = try await sendScript(
                presenceCommand(.exit, parts[0], user: parts[1], node: id, announcing: .left(room: parts[0], user: parts[1])),
                using: commands.send)
        }
        for user in (try await commands.send(["SMEMBERS", RESPArgument(names.nodeUsers(id))]).elements ?? []).compactMap(\.string) {
            try await commands.send(["SREM", RESPArgument(names.userNodes(user)), RESPArgument(id)])
        }
        try await commands.send([
            "DEL", RESPArgument(names.nodeRooms(id)), RESPArgument(names.nodeUsers(id)), RESPArgument(names.nodeInfo(id)),
        ])
        try await commands.send(["ZREM", RESPArgument(names.nodes), RESPArgument(id)])
    }

    /// Runs a presence script for "user|node" in `room`; with `announcing`, the script publishes
    /// that event to the room's channel if it changes who is in the room.
    private func presenceCommand(_ script: RedisScript, _ room: String, user: String, node: String, announcing event: ClusterEvent?)
        -> [RESPArgument]
    {
        // Built in one array: this runs for every join and leave, and joining arrays made one
        // each time.
        var command = self.script(script)
        command.reserveCapacity(command.count + 7)
        command.append(RESPArgument(event == nil ? 2 : 3))
        command.append(RESPArgument(names.roomMembers(room)))
        command.append(RESPArgument(names.roomUsers(room)))
        if let event { command.append(RESPArgument(names.channel(event.address))) }
        command.append(RESPArgument(user))
        command.append(RESPArgument(node))
        if let event { command.append(RESPArgument(bytes: WireEvent.encode(event, origin: nodeID))) }
        return command
    }

    /// Sends commands back to back on the command connection and waits for all their replies
    /// (one round trip); an error reply throws, as `send` does. With `stream` (and history
    /// kept for it), that stream's top is read behind the commands,
    /// in the same round trip; nil when it was not read or the read failed (the caller then
    /// reads with `read`, which also sends a flushed script's text again).
    @discardableResult
    private func pipelined(_ commands: [[RESPArgument]], thenReadingTopOf stream: Address? = nil) async throws -> StreamRead? {
        let read = readCommand(ofTopOf: stream)
        let replies = try await self.commands.pipeline(read.map { commands + [$0] } ?? commands)
        return try await settle(commands, replies, read: read, of: stream)
    }

    /// The read of a stream's top, where history keeps it.
    private func readCommand(ofTopOf stream: Address?) -> [RESPArgument]? {
        stream.flatMap { history.keeps($0) ? readCommand($0, after: nil, limit: 0) : nil }
    }

    /// What the replies to `commands` (and `read`, last) call for: a script the server no longer
    /// held did not run, and goes again with its text, now, before the batch is done (a user's
    /// changes stay in order); any other error reply throws. Returns the read's result.
    private func settle(_ commands: [[RESPArgument]], _ replies: [RESPValue], read: [RESPArgument]?, of stream: Address?) async throws
        -> StreamRead?
    {
        var again: [[RESPArgument]] = []
        for (command, reply) in zip(commands, replies) {
            if case .error(let message) = reply { again.append(try scriptAgain(command, after: message)) }
        }
        for reply in try await self.commands.pipeline(again) {
            if case .error(let message) = reply { throw failure(message) }
        }
        guard let stream, read != nil, let value = replies.last else { return nil }
        if case .error(let message) = value {
            _ = failure(message)  // NOSCRIPT: the next read sends the script's text
            return nil
        }
        return try? parseRead(value, of: stream)
    }

    /// Runs registry writes; an outage is not an error here (they are written again on reconnect).
    private func tolerateOutage(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as RedisError where error != .unavailable && !Self.isOutage(error) {
            throw error
        } catch is RedisError {
        }
    }

    private static func isOutage(_ error: RedisError) -> Bool {
        switch error {
        case .unavailable, .connectionClosed, .timedOut: true
        case .server: false
        }
    }

    private func liveNodeIDs() async throws -> [String] {
        let reply = try await commands.send([
            "ZRANGEBYSCORE", RESPArgument(names.nodes), RESPArgument(Int(wallClockMilliseconds())), "+inf",
        ])
        return (reply.elements ?? []).compactMap(\.string)
    }

    static func fields(_ reply: RESPValue) -> [String: String] {
        var result: [String: String] = [:]
        switch reply {
        case .map(let pairs):
            for pair in pairs { if let key = pair.key.string { result[key] = pair.value.string } }
        default:
            let items = reply.elements ?? []
            var index = 0
            while index + 1 < items.count {
                if let key = items[index].string { result[key] = items[index + 1].string }
                index += 2
            }
        }
        return result
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

}
