import BrokerMembership
import Logging
import NATS
import NIOCore
import SwitchboardCore
import Synchronization

/// Nodes on any machines joined through a NATS cluster.
///
/// - Routing by subject (`NATSSubjects`): each node subscribes to the subject of each room and
///   user it holds a recipient for, to broadcasts, to membership and to its own node subject; a
///   message is one PUB on the subject of its address, so only nodes with a recipient get it.
///   `ok` means the server has it: a PING after the PUB was answered.
/// - Presence and membership: announces, deltas and beats (`BrokerMembership`) on the membership
///   subject, as the RabbitMQ backplane does.
/// - Failover: the client (`NATSClient`) moves to another server of the cluster by itself,
///   subscribes again to everything, and the node announces itself again, asking for replies.
///   While no server is reachable, cross-node messages are refused (`internal`).
///
/// History is not kept (JetStream could; see docs/ARCHITECTURE.md).
public final class NATSBackplane: Backplane {
    public struct Configuration: Sendable {
        public var servers: [NATSClient.Server]
        public var heartbeat: Duration
        public var missedHeartbeats = 3
        public var subjects = NATSSubjects(prefix: "sb")
        public var timeout: Duration = .seconds(5)

        public init(servers: [NATSClient.Server], heartbeat: Duration) {
            self.servers = servers
            self.heartbeat = heartbeat
        }
    }

    struct State {
        var receiver: (any ClusterReceiver)?
        var joined = false
        var stopped = false
        /// The sid of each address this node subscribes to.
        var sids: [Address: String] = [:]
    }

    let configuration: Configuration
    let membership: BrokerMembership
    let client: NATSClient
    let logger: Logger
    private let state = Mutex(State())
    private let changed = ConditionSignal()
    /// Changes of one address run one at a time, so a SUB and an UNSUB of the same subject reach
    /// the server in the order their changes were made.
    private let subscriptions = KeyedAsyncMutex()

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let membership = BrokerMembership(
            heartbeat: configuration.heartbeat, missedHeartbeats: configuration.missedHeartbeats, logger: logger)
        self.membership = membership
        let box = Mutex<NATSBackplane?>(nil)
        var clientConfiguration = NATSClient.Configuration(servers: configuration.servers)
        clientConfiguration.timeout = TimeAmount(configuration.timeout)
        clientConfiguration.pingInterval = .seconds(Int64(max(1, min(configuration.heartbeat.components.seconds, 5))))
        self.client = NATSClient(
            configuration: clientConfiguration, logger: logger,
            onMessage: { message in box.withLock { $0 }?.deliver(message) },
            onConnect: { connection in
                // Subscribed again already; now: who is out there? Everyone answers.
                guard let frame = membership.announcement(wantsReplies: true) else { return }
                try await connection.publishAndWait(configuration.subjects.members, frame.bytes)
            })
        box.withLock { $0 = self }
    }

    // MARK: Running, joining and leaving

    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.client.run() }
            group.addTask {
                await self.membership.keepBeating { beat in
                    guard self.state.withLock({ $0.joined }) else { return }
                    _ = self.client.publish(self.configuration.subjects.members, beat.bytes)
                }
            }
            await untilCancelled()
            state.withLock { $0.stopped = true }
            changed.poke()
            await client.stop()
            group.cancelAll()
        }
    }

    public func join(node: NodeInfo, receiver: any ClusterReceiver) async throws {
        membership.start(as: MemberRecord(id: node.id, url: node.url, incarnation: wallClockMilliseconds()), receiver: receiver)
        state.withLock { $0.receiver = receiver }
        let subjects = configuration.subjects
        for subject in [subjects.everyone, subjects.members, subjects.node(node.id)] {
            try await client.subscribe(subject)
        }
        // Ready once a server has our subscriptions and our announce: until then /readyz says 503.
        await client.waitUntilConnected()
        if let frame = membership.announcement(wantsReplies: true), let sent = client.publish(subjects.members, frame.bytes) {
            try? await sent.get()
        }
        state.withLock { $0.joined = true }
        logger.info("joined the cluster through NATS", metadata: ["nats": "\(client.server ?? "?")"])
    }

    public func leave() async {
        state.withLock { $0.stopped = true }
        // Goodbye first: the others drop our users from presence at once instead of waiting.
        if let bye = membership.goodbye(), let sent = client.publish(configuration.subjects.members, bye.bytes) {
            try? await sent.get()
        }
        await client.stop()
    }

    // MARK: Receiving

    /// On the connection's event loop, in the order the server sent.
    private func deliver(_ message: NATSMessage) {
        guard let frame = BrokerFrame.decode(message.payload) else {
            logger.warning("dropped a malformed record from NATS", metadata: ["subject": "\(message.subject)"])
            return
        }
        guard case .message(let origin, let envelope) = frame else {
            for reply in membership.receive(frame) { answer(reply) }
            return
        }
        // `echo:false` keeps our own messages from us; a record naming us is not ours to deliver.
        guard origin != membership.me?.id else { return }
        guard configuration.subjects.subject(envelope.address) == message.subject else {
            logger.warning("dropped a message whose address is not its subject", metadata: ["subject": "\(message.subject)"])
            return
        }
        state.withLock { $0.receiver }?.receive(.message(envelope))
    }

    private func answer(_ reply: BrokerMembership.Reply) {
        switch reply {
        case .announce(let id, let wantsReplies):
            guard let frame = membership.announcement(wantsReplies: wantsReplies) else { return }
            _ = client.publish(configuration.subjects.node(id), frame.bytes)
        }
    }

    // MARK: Backplane

    public func publish(_ envelope: Envelope) async throws {
        try await submit(envelope).wait()
    }

    public func submit(_ envelope: Envelope) -> PendingPublish {
        guard let me = membership.me,
            let sent = client.publish(
                configuration.subjects.subject(envelope.address), BrokerFrame.message(origin: me.id, envelope).bytes)
        else {
            return PendingPublish { throw NATSError.unavailable }
        }
        return PendingPublish { try await sent.get() }
    }

    public func userOnline(_ user: String) async throws { await change(.online(user: user)) }
    public func userOffline(_ user: String) async throws { await change(.offline(user: user)) }
    public func roomJoined(_ room: String, user: String) async throws { await change(.joined(room: room, user: user)) }
    public func roomLeft(_ room: String, user: String) async throws { await change(.left(room: room, user: user)) }

    /// Applies a change to our interest: subscribes to the address's subject before announcing
    /// a first recipient, unsubscribes after the last one went. The delta's PUB is awaited (the
    /// server has it, and has passed it on to the nodes on it). While no server is reachable the
    /// subscription is kept for the next connection, which announces everything we hold.
    private func change(_ delta: InterestDelta) async {
        let address = delta.address
        await subscriptions.withLock(configuration.subjects.subject(address)) {
            let (frame, holds) = membership.changeLocal(delta)
            if holds == true {
                let sid = try? await client.subscribe(configuration.subjects.subject(address))
                state.withLock { $0.sids[address] = sid }
            }
            if let frame, let sent = client.publish(configuration.subjects.members, frame.bytes) {
                try? await sent.get()
            }
            if holds == false, let sid = state.withLock({ $0.sids.removeValue(forKey: address) }) {
                await client.unsubscribe(sid)
            }
        }
    }

    public func members(of room: String) async throws -> [String] {
        membership.users(in: room)
    }

    /// Before saying nobody holds `user`, this node catches up with its server (a PING: the
    /// PONG comes after everything the server had for us), so a user whose node's delta reached
    /// our server is not reported offline. Across servers of a NATS cluster a delta still on a
    /// route between servers is not waited for.
    public func nodes(of user: String) async throws -> [String] {
        let nodes = membership.nodes(of: user)
        guard nodes.isEmpty, let connection = client.connection else { return nodes }
        try? await connection.flush()
        return membership.nodes(of: user)
    }

    public func nodes() async throws -> [NodeStatus] {
        membership.nodes(selfAlive: client.isConnected && !state.withLock { $0.stopped })
    }

    public func report(_ load: NodeLoad) async {
        membership.report(load)
    }
}

/// The subjects of a cluster: `<prefix>.r.<room>`, `<prefix>.u.<user>`, `<prefix>.all`,
/// `<prefix>.members` and `<prefix>.n.<node>`, with names escaped into single tokens
/// (`natsToken`: a `.` in a name is `%2E`).
public struct NATSSubjects: Sendable {
    public var prefix: String

    public init(prefix: String) {
        self.prefix = prefix
    }

    public var everyone: String { prefix + ".all" }
    public var members: String { prefix + ".members" }
    public func node(_ id: String) -> String { prefix + ".n." + natsToken(id) }

    public func subject(_ address: Address) -> String {
        switch address {
        case .everyone: everyone
        case .room(let room): prefix + ".r." + natsToken(room)
        case .user(let user): prefix + ".u." + natsToken(user)
        }
    }
}
