import Logging
import NIOCore
import SwitchboardCore
import Synchronization

/// Sharded pub/sub on a Redis Cluster: one subscriber connection per master (`RedisSubscriber`,
/// SSUBSCRIBE), each channel subscribed on the master that owns its slot, as the command
/// client's map says. The channels follow the map: when a slot moves (the server drops its
/// channels by itself, with an `sunsubscribe` of its own, told apart from ours) or a master
/// fails over (a new map), they are subscribed again on their new owner, and a `.resubscribing`
/// event says that messages may have been missed meanwhile. Every shard's messages come out of
/// one sink (`events`, or a handler).
public final class RedisClusterSubscriber: RedisSubscribing {
    public let sink = SubscriberEvents()
    public var events: AsyncStream<RedisSubscriberEvent> { sink.stream }
    private let commands: RedisClusterClient
    private let logger: Logger

    struct State {
        /// Every channel we want, and the master it is subscribed on (nil: not yet).
        var channels: [String: ClusterSlotMap.Node?] = [:]
        var shards: [ClusterSlotMap.Node: RedisSubscriber] = [:]
        var stopped = false
        /// A channel was asked for before the map knew its owner.
        var unplaced = false
    }

    private let state = Mutex(State())
    /// Each shard subscriber's run (their events go straight into `sink`), as child tasks of `run`.
    private let jobs = BackgroundJobs()
    /// Poked, with `droppedSome` set, when a server dropped a channel.
    private let moved = ConditionSignal()
    private let droppedSome = Mutex(false)

    public init(commands: RedisClusterClient, logger: Logger) {
        self.commands = commands
        self.logger = logger
    }

    public func run() async {
        await jobs.run(alongside: { await self.keepFollowingTheMap() })
        sink.finish()
    }

    public func stop() async {
        let shards = state.withLock { state in
            state.stopped = true
            return Array(state.shards.values)
        }
        jobs.finish()
        for shard in shards { await shard.stop() }
    }

    /// Returns once the map is known and every master's subscriber connection is up, so that a
    /// node is ready only when its subscriptions can take effect at once.
    public func waitUntilConnected() async {
        await commands.waitUntilConnected()
        let shards = state.withLock { state in commands.slotMap.masters.map { self.shard(for: $0, in: &state) } }
        for shard in shards { await shard.waitUntilConnected() }
    }

    public func subscribe(_ channel: String) async throws {
        guard
            state.withLock({ state in
                guard state.channels[channel] == nil else { return false }
                state.channels[channel] = .some(nil)
                return true
            })
        else { return }
        try await place(channel)
    }

    public func unsubscribe(_ channel: String) async throws {
        guard let placed = state.withLock({ $0.channels.removeValue(forKey: channel) }) else { return }
        if let node = placed, let shard = state.withLock({ $0.shards[node] }) {
            try await shard.unsubscribe(channel)
        }
    }

    public func barrier() async throws {
        let shards = state.withLock { state in Set(state.channels.values.compactMap { $0 }).compactMap { state.shards[$0] } }
        for shard in shards { try await shard.barrier() }
    }

    /// Subscribes `channel` on the master that owns its slot now (leaving the old one, if any).
    private func place(_ channel: String) async throws {
        guard let owner = commands.slotMap.owner(ofSlot: ClusterSlot.of(channel)) else {
            state.withLock { $0.unplaced = true }
            return
        }
        let (previous, shard) = state.withLock { state -> (ClusterSlotMap.Node?, RedisSubscriber?) in
            guard let placed = state.channels[channel], !state.stopped else { return (nil, nil) }
            if placed == owner { return (nil, nil) }
            state.channels[channel] = owner
            return (placed, self.shard(for: owner, in: &state))
        }
        guard let shard else { return }
        if let previous, let old = state.withLock({ $0.shards[previous] }) { try? await old.unsubscribe(channel) }
        try await shard.subscribe(channel)
        // A subscriber whose connection is still coming up takes the channel with the rest it
        // subscribes again; the caller returns once that is in effect (within 5 s), as it does
        // once a connected subscriber confirms.
        if !shard.isConnected {
            for _ in 0..<100 where !shard.isConnected { try? await Task.sleep(for: .milliseconds(50)) }
            if shard.isConnected { try? await shard.barrier() }
        }
    }

    /// The subscriber of `node`, made (and run) if there is none.
    private func shard(for node: ClusterSlotMap.Node, in state: inout State) -> RedisSubscriber {
        if let shard = state.shards[node] { return shard }
        var logger = self.logger
        logger[metadataKey: "redis.shard"] = "\(node)"
        let shard = RedisSubscriber(
            configuration: RedisClient.Configuration(host: node.host, port: node.port), sharded: true, logger: logger,
            sharing: sink, onDropped: { [weak self] channel in self?.dropped(channel, by: node) })
        state.shards[node] = shard
        jobs.spawn { await shard.run() }
        return shard
    }

    /// The server of `node` dropped `channel` (its slot moved): place it again.
    private func dropped(_ channel: String, by node: ClusterSlotMap.Node) {
        state.withLock { state in
            if state.channels[channel] == node { state.channels[channel] = .some(nil) }
        }
        droppedSome.withLock { $0 = true }
        moved.poke()
    }

    /// Every 100 ms, or at once when a channel was dropped: if the map changed, a channel was
    /// dropped, one waits for the map, or 2 s went by, channels not on their slot's current
    /// owner are moved there; shards that are no longer masters are stopped. (Looking at every channel only
    /// then keeps a node with many rooms from hashing them all ten times a second.)
    private func keepFollowingTheMap() async {
        var lastMasters: [ClusterSlotMap.Node] = []
        var lastScanned: ClusterSlotMap?
        var idleRounds = 0
        while !state.withLock({ $0.stopped }), !Task.isCancelled {
            _ = await moved.wait(until: { self.droppedSome.withLock { $0 } }, timeout: .milliseconds(100))
            let dropped = droppedSome.withLock { value in
                defer { value = false }
                return value
            }
            let map = commands.slotMap
            guard map.isComplete else { continue }
            // A master that does not answer may be failing over: look again.
            if state.withLock({ state in map.masters.contains { state.shards[$0]?.isConnected == false } }) {
                commands.requestRefresh()
            }
            let unplaced = state.withLock { $0.unplaced }
            idleRounds += 1
            // Every 2 s regardless, as a safety net.
            guard dropped || unplaced || map != lastScanned || idleRounds >= 20 else { continue }
            lastScanned = map
            idleRounds = 0
            let misplaced = state.withLock { state in
                state.unplaced = false
                return state.channels.filter { channel, placed in placed != map.owner(ofSlot: ClusterSlot.of(channel)) }
            }
            if !misplaced.isEmpty {
                // Placed before and elsewhere now: moved (not merely made before the map was known).
                let moved = misplaced.values.filter { $0 != nil }.count
                if moved > 0 { logger.notice("moving \(moved) subscription(s) to their slots' new masters") }
                for channel in misplaced.keys { try? await place(channel) }
                // Whatever was published to them meanwhile was not received here.
                if moved > 0 { sink.emit(.resubscribing) }
            }
            if map.masters != lastMasters {
                lastMasters = map.masters
                let retired = state.withLock { state in
                    let gone = state.shards.keys.filter { !map.masters.contains($0) }
                    return gone.compactMap { state.shards.removeValue(forKey: $0) }
                }
                for shard in retired { await shard.stop() }
            }
        }
    }
}
