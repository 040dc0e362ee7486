import NIOCore

/// What a user of Redis needs, whether it is one Redis (`RedisClient`) or a Redis Cluster
/// (`RedisClusterClient`, which routes each command to the master of its key's slot).
public protocol RedisCommanding: Sendable {
    /// Keeps the connection (or connections) up until stopped or cancelled.
    func run() async
    func stop() async
    var isConnected: Bool { get }
    func waitUntilConnected() async
    /// Sends a command and returns its reply; an error reply throws `RedisError.server`.
    @discardableResult
    func send(_ arguments: [RESPArgument]) async throws -> RESPValue
    /// Queues a command behind those queued before it (to the same slot, on a cluster) and
    /// returns its reply to come, error replies included.
    func enqueue(_ arguments: [RESPArgument]) throws -> EventLoopFuture<RESPValue>
    /// Sends the commands back to back (each behind those before it to its slot, on a cluster)
    /// and returns their replies, error replies included.
    func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue]
    /// Loads a script where it may run (every master of a cluster); returns its SHA1.
    func loadScript(_ text: String) async throws -> String
}

/// What a subscriber to channels needs, over one Redis (`RedisSubscriber`) or a Redis Cluster
/// (`RedisClusterSubscriber`, one connection per shard).
public protocol RedisSubscribing: Sendable {
    /// Where what arrives goes: `sink.stream`, or a handler named with `sink.deliver(to:)`.
    var sink: SubscriberEvents { get }
    func run() async
    func stop() async
    func waitUntilConnected() async
    func subscribe(_ channel: String) async throws
    func unsubscribe(_ channel: String) async throws
    /// Returns once every subscription sent so far is in effect.
    func barrier() async throws
    /// `commands` sent right behind `change`, in one round trip; nil where that cannot be done
    /// (nothing sent or changed): the caller changes and sends them itself.
    func send(_ commands: [[RESPArgument]], after change: SubscriptionChange) async throws -> [RESPValue]?
}

/// A subscription to make or drop (`RedisSubscribing.send(_:after:)`).
public enum SubscriptionChange: Sendable, Hashable {
    case subscribe(String)
    case unsubscribe(String)
}

extension RedisSubscribing {
    /// Not on this kind of subscriber: the commands' keys may live on other shards.
    public func send(_ commands: [[RESPArgument]], after change: SubscriptionChange) async throws -> [RESPValue]? { nil }
}

extension RedisCommanding {
    /// Each command's future awaited in turn (a cluster's commands may go to several masters).
    public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        let replies = try commands.map { try enqueue($0) }
        var values: [RESPValue] = []
        values.reserveCapacity(replies.count)
        for reply in replies { values.append(try await reply.get()) }
        return values
    }
}

extension RedisClient: RedisCommanding {
    public func loadScript(_ text: String) async throws -> String {
        guard let sha = try await send(["SCRIPT", "LOAD", RESPArgument(text)]).string else {
            throw RedisError.server("SCRIPT LOAD did not answer a SHA")
        }
        return sha
    }
}

extension RedisSubscriber: RedisSubscribing {
    public func waitUntilConnected() async {
        await client.waitUntilConnected()
    }
}
