import AMQP
import BrokerMembership
import Logging
import NIOCore
import SwitchboardCore
import Synchronization

/// Nodes on any machines joined through one RabbitMQ broker (design 4 of BACKGROUND.md), doing
/// better than sending everything everywhere:
///
/// - Routing: one direct exchange. Each node has its own exclusive, auto-delete queue, bound to
///   a key per room and per user it holds a recipient for (`RabbitMQKeys`), to the broadcast
///   key, the membership key and its own node key. A message is one publish with one key, so
///   only nodes with a recipient get it; `ok` means the broker confirmed it (publisher confirms).
/// - Presence and membership: announces, deltas and beats (`BrokerMembership`) on the
///   membership key, which every node consumes; each node keeps the merged view and answers
///   presence from it, as the mesh does.
/// - The broker away: this node keeps serving its own clients; cross-node messages are refused
///   (the client hears `internal`); the connection comes back by itself with backoff, the queue
///   and every binding are declared again and the node announces itself again, asking the others
///   for theirs. The node's queue goes with its connection, so a killed node's queue goes too.
/// - Two connections to the broker, as RabbitMQ advises: one consumes and changes bindings, the
///   other publishes (messages, announces, deltas, beats). The broker's flow control blocks only
///   connections that publish, so joins and deliveries go on while it blocks; publishes are
///   refused at once meanwhile (`connection.blocked`), or once unconfirmed for `timeout`, rather
///   than buffered, and our whole interest is announced again when it unblocks.
///
/// History is not kept (RabbitMQ streams could; see docs/ARCHITECTURE.md).
public final class RabbitMQBackplane: Backplane {
    public struct Configuration: Sendable {
        public var broker: AMQPAddress
        /// Beats go out this often; a member silent for `missedHeartbeats` of them is dropped.
        public var heartbeat: Duration
        public var missedHeartbeats = 3
        public var exchange = "switchboard"
        public var minimumBackoff: Duration = .milliseconds(100)
        public var maximumBackoff: Duration = .seconds(2)
        /// How long the broker may take to answer a connect or a declare.
        public var timeout: Duration = .seconds(5)

        public init(broker: AMQPAddress, heartbeat: Duration) {
            self.broker = broker
            self.heartbeat = heartbeat
        }

        /// AMQP's own heartbeat, which finds a broker that stopped answering: the node's, at most 10 s.
        var amqpHeartbeatSeconds: UInt16 {
            UInt16(clamping: max(1, min(heartbeat.components.seconds, 10)))
        }
    }

    /// The two connections of one life of the link to the broker, and our queue on it.
    struct Link: Sendable {
        let consumer: AMQPConnection
        let publisher: AMQPConnection
        var queue: String

        func close() async {
            await publisher.close()
            await consumer.close()
        }
    }

    struct State {
        var node: NodeInfo?
        var receiver: (any ClusterReceiver)?
        /// The link whose queue, bindings and consumer are in place: what publishes use.
        var ready: Link?
        /// The link being set up or ready: what binding changes go to.
        var current: Link?
        var stopped = false
    }

    let configuration: Configuration
    let keys: RabbitMQKeys
    let membership: BrokerMembership
    let logger: Logger
    private let state = Mutex(State())
    /// Poked when the node joins, the connection becomes ready, or the backplane stops.
    private let changed = ConditionSignal()
    /// Joins and leaves of one address run one at a time, so a bind and an unbind of the same
    /// key reach the broker in the order their changes were made.
    private let bindings = KeyedAsyncMutex()
    /// Our deltas on their way round, by change (one at a time per key, see `bindings`).
    private let echoes = Mutex<[InterestDelta: EventLoopPromise<Void>]>([:])
    /// Our markers on their way round (`catchUp`), by token.
    private let markers = Mutex<(last: Int64, waiting: [Int64: EventLoopPromise<Void>])>((0, [:]))

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.keys = RabbitMQKeys()
        self.logger = logger
        self.membership = BrokerMembership(
            heartbeat: configuration.heartbeat, missedHeartbeats: configuration.missedHeartbeats, logger: logger)
    }

    private var brokerName: String { "\(configuration.broker.host):\(configuration.broker.port)" }

    // MARK: Running, joining and leaving

    /// The connection (reconnecting by itself) and the heartbeat, until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.keepConnected() }
            group.addTask {
                await self.membership.keepBeating { beat in
                    guard let link = self.state.withLock({ $0.ready }) else { return }
                    _ = link.publisher.enqueuePublish(
                        exchange: self.configuration.exchange, routingKey: self.keys.members, body: beat.bytes)
                }
            }
            await untilCancelled()
            state.withLock { $0.stopped = true }
            changed.poke()
            if let link = state.withLock({ $0.current }) { await link.close() }
            group.cancelAll()
        }
    }

    public func join(node: NodeInfo, receiver: any ClusterReceiver) async throws {
        membership.start(as: MemberRecord(id: node.id, url: node.url, incarnation: wallClockMilliseconds()), receiver: receiver)
        state.withLock {
            $0.node = node
            $0.receiver = receiver
        }
        changed.poke()
        // Ready only once the broker has our queue and our announce: until then /readyz says 503.
        _ = await changed.wait { self.state.withLock { $0.ready != nil || $0.stopped } }
        logger.info("joined the cluster through RabbitMQ", metadata: ["rabbitmq": "\(brokerName)"])
    }

    public func leave() async {
        let link = state.withLock { state in
            defer {
                state.stopped = true
                state.ready = nil
            }
            return state.ready
        }
        changed.poke()
        // Goodbye first: the others drop our users from presence at once instead of waiting.
        if let link {
            if let bye = membership.goodbye() {
                try? await link.publisher.publish(exchange: configuration.exchange, routingKey: keys.members, body: bye.bytes)
            }
            await link.close()
        }
    }

    /// Connects, sets up, and waits for the connection to end; again with backoff, until stopped.
    private func keepConnected() async {
        guard await changed.wait(until: { self.state.withLock { $0.node != nil || $0.stopped } }) else { return }
        var attempt = 0
        var down = false
        while !state.withLock({ $0.stopped }), !Task.isCancelled {
            do {
                let link = try await connect()
                if down {
                    logger.notice("RabbitMQ at \(brokerName) is reachable again")
                } else {
                    logger.info("connected to RabbitMQ at \(brokerName)")
                }
                down = false
                attempt = 0
                // Either connection failing ends the link: the queue is the consumer's, and the
                // publisher carries our presence.
                let ended = link.consumer.channel.eventLoop.makePromise(of: Void.self)
                link.consumer.closeFuture.cascade(to: ended)
                link.publisher.closeFuture.cascade(to: ended)
                try? await ended.futureResult.get()
                state.withLock { state in
                    if state.current?.consumer === link.consumer {
                        state.current = nil
                        state.ready = nil
                    }
                }
                settleAllEchoes()
                settleAllMarkers()
                await link.close()
                if state.withLock({ $0.stopped }) { break }
                logger.warning("lost the connection to RabbitMQ at \(brokerName); cross-node messages are refused until it is back")
                down = true
            } catch {
                if !down {
                    logger.warning("RabbitMQ at \(brokerName) is unreachable (\(error)); retrying in the background")
                    down = true
                }
            }
            try? await Task.sleep(
                for: Backoff(minimum: configuration.minimumBackoff, maximum: configuration.maximumBackoff).delay(attempt: attempt))
            attempt += 1
        }
    }

    /// One link, set up: the exchange, our queue and its bindings, the consumer, our announce.
    /// Binding changes made meanwhile go to this link from the moment it is `current`; what was
    /// held before is bound from a snapshot taken after that.
    private func connect() async throws -> Link {
        let timeout = TimeAmount(configuration.timeout)
        let heartbeat = configuration.amqpHeartbeatSeconds
        let consumer = try await AMQPConnection.connect(
            to: configuration.broker, heartbeatSeconds: heartbeat, timeout: timeout, logger: logger,
            onDelivery: { [weak self] delivery in self?.deliver(delivery) })
        let publisher: AMQPConnection
        do {
            publisher = try await AMQPConnection.connect(
                to: configuration.broker, heartbeatSeconds: heartbeat, timeout: timeout, logger: logger,
                onBlocked: { [weak self] reason in self?.blocked(reason) })
        } catch {
            await consumer.close()
            throw error
        }
        do {
            let exchange = configuration.exchange
            try await consumer.call(
                .exchangeDeclare(exchange: exchange, type: "direct", passive: false, durable: false, autoDelete: false, arguments: [:]))
            let declared = try await consumer.call(
                .queueDeclare(queue: "", passive: false, durable: false, exclusive: true, autoDelete: true, arguments: [:]))
            guard case .queueDeclareOk(let queue, _, _) = declared else {
                throw AMQPConnectionError.protocolError("queue.declare answered \(declared.name)")
            }
            let link = Link(consumer: consumer, publisher: publisher, queue: queue)
            guard
                let node = state.withLock({ state -> NodeInfo? in
                    state.current = link
                    return state.node
                })
            else { throw AMQPConnectionError.connectionClosed }
            let routingKeys = [keys.everyone, keys.members, keys.node(node.id)] + membership.localAddresses.map(keys.key)
            let binds = routingKeys.map { key in
                consumer.enqueueCall(.queueBind(queue: queue, exchange: exchange, routingKey: key, arguments: [:]))
            }
            for bind in binds { _ = try await bind.get() }
            try await consumer.call(.basicConsume(queue: queue, consumerTag: "switchboard", noAck: true, exclusive: true, arguments: [:]))
            // Who is out there: every node that hears this answers with its own interest.
            if let announce = membership.announcement(wantsReplies: true) {
                try await publisher.publish(exchange: exchange, routingKey: keys.members, body: announce.bytes)
            }
            state.withLock { $0.ready = link }
            changed.poke()
            return link
        } catch {
            state.withLock { state in
                if state.current?.consumer === consumer { state.current = nil }
            }
            await publisher.close()
            await consumer.close()
            throw error
        }
    }

    private func blocked(_ reason: String?) {
        if let reason {
            logger.warning("RabbitMQ blocked publishing (\(reason)); cross-node messages are refused until it unblocks")
        } else {
            logger.notice("RabbitMQ unblocked publishing")
            // Deltas refused meanwhile are covered by our whole interest, once more.
            reannounce()
        }
    }

    /// Publishes our whole interest to every node: after a delta was refused (while blocked) or
    /// not confirmed. A link that failed needs none: the next one announces everything.
    private func reannounce(on link: Link? = nil) {
        guard let ready = state.withLock({ $0.ready }), link == nil || link?.consumer === ready.consumer,
            ready.publisher.channel.isActive, let frame = membership.announcement(wantsReplies: false)
        else { return }
        _ = ready.publisher.enqueuePublish(exchange: configuration.exchange, routingKey: keys.members, body: frame.bytes)
    }

    // MARK: Receiving

    /// On the connection's event loop, in queue order.
    private func deliver(_ delivery: AMQPDelivery) {
        guard let frame = BrokerFrame.decode(delivery.body) else {
            logger.warning("dropped a malformed record from RabbitMQ", metadata: ["routing-key": "\(delivery.routingKey)"])
            return
        }
        guard case .message(let origin, let envelope) = frame else {
            if case .delta(let id, _, let delta) = frame, id == membership.me?.id { settleEcho(of: delta) }
            if case .marker(let id, let token) = frame, id == membership.me?.id { settleMarker(token) }
            for reply in membership.receive(frame) { answer(reply) }
            return
        }
        // Our own messages were delivered locally already.
        guard origin != membership.me?.id else { return }
        guard keys.key(envelope.address) == delivery.routingKey else {
            logger.warning("dropped a message whose address is not its routing key", metadata: ["routing-key": "\(delivery.routingKey)"])
            return
        }
        state.withLock { $0.receiver }?.receive(.message(envelope))
    }

    private func answer(_ reply: BrokerMembership.Reply) {
        switch reply {
        case .announce(let id, let wantsReplies):
            guard let link = state.withLock({ $0.ready }), let frame = membership.announcement(wantsReplies: wantsReplies) else {
                return
            }
            _ = link.publisher.enqueuePublish(exchange: configuration.exchange, routingKey: keys.node(id), body: frame.bytes)
        }
    }

    // MARK: Backplane

    public func publish(_ envelope: Envelope) async throws {
        try await submit(envelope).wait()
    }

    /// Queued on the connection at once, so one sender's messages keep their order while several
    /// await their confirms.
    public func submit(_ envelope: Envelope) -> PendingPublish {
        guard let link = state.withLock({ $0.ready }), let me = membership.me else {
            return PendingPublish { throw RabbitMQBackplaneError.unavailable }
        }
        let confirmed = link.publisher.enqueuePublish(
            exchange: configuration.exchange, routingKey: keys.key(envelope.address),
            body: BrokerFrame.message(origin: me.id, envelope).bytes)
        return PendingPublish { try await confirmed.get() }
    }

    public func userOnline(_ user: String) async throws { try await change(.online(user: user)) }
    public func userOffline(_ user: String) async throws { try await change(.offline(user: user)) }
    public func roomJoined(_ room: String, user: String) async throws { try await change(.joined(room: room, user: user)) }
    public func roomLeft(_ room: String, user: String) async throws { try await change(.left(room: room, user: user)) }

    /// Applies a change to our interest: binds our queue to the address's key before announcing
    /// a first recipient (so messages reach us once the change returns), and unbinds it after
    /// the last one went. With the broker away the change is kept, and the reconnect binds and
    /// announces everything held.
    private func change(_ delta: InterestDelta) async throws {
        let key = keys.key(delta.address)
        await bindings.withLock(key) {
            let (frame, holds) = membership.changeLocal(delta)
            guard let link = state.withLock({ $0.current }) else { return }
            let exchange = configuration.exchange
            do {
                if holds == true {
                    _ = try await link.consumer.enqueueCall(
                        .queueBind(queue: link.queue, exchange: exchange, routingKey: key, arguments: [:])
                    )
                    .get()
                }
                // The change returns once its delta came back through our own queue: then it is in
                // every node's queue, ahead of anything a client may do next (a user reported
                // offline a moment after its welcome, say). A delta the broker refuses is covered
                // by announcing everything again.
                if let frame {
                    let loop = link.consumer.channel.eventLoop
                    let echo = loop.makePromise(of: Void.self)
                    echoes.withLock { $0[delta] = echo }
                    link.publisher.enqueuePublish(exchange: exchange, routingKey: keys.members, body: frame.bytes).whenFailure {
                        [weak self] _ in
                        self?.settleEcho(of: delta, echo.futureResult)
                        self?.reannounce(on: link)
                    }
                    let timer = loop.scheduleTask(in: TimeAmount(configuration.timeout)) { [weak self] in
                        self?.settleEcho(of: delta, echo.futureResult)
                    }
                    try? await echo.futureResult.get()
                    timer.cancel()
                }
                if holds == false {
                    _ = try await link.consumer.enqueueCall(
                        .queueUnbind(queue: link.queue, exchange: exchange, routingKey: key, arguments: [:])
                    ).get()
                }
            } catch {
                // The link failed: the next one binds and announces everything we hold.
                logger.debug("a binding change did not reach RabbitMQ; it is made again on reconnect", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Completes the wait for a delta's echo, once, whoever gets here first.
    private func settleEcho(of delta: InterestDelta, _ future: EventLoopFuture<Void>? = nil) {
        let promise = echoes.withLock { echoes -> EventLoopPromise<Void>? in
            guard let waiting = echoes[delta], future == nil || waiting.futureResult === future else { return nil }
            return echoes.removeValue(forKey: delta)
        }
        promise?.succeed()
    }

    private func settleAllEchoes() {
        let all = echoes.withLock { echoes in
            defer { echoes = [:] }
            return Array(echoes.values)
        }
        for promise in all { promise.succeed() }
    }

    public func members(of room: String) async throws -> [String] {
        membership.users(in: room)
    }

    /// A user nobody holds as far as this node knows may have just come online elsewhere, its
    /// delta still in our queue (the other node's change returned once the delta was in every
    /// queue, not once every node took it). So before saying nobody, this node catches up with
    /// its queue: `offline` is never older than another node's welcome.
    public func nodes(of user: String) async throws -> [String] {
        let nodes = membership.nodes(of: user)
        guard nodes.isEmpty else { return nodes }
        await catchUp()
        return membership.nodes(of: user)
    }

    /// Returns once a marker published to our own node key came back through our queue (one
    /// queue is first in, first out: what was in it before the marker has been taken), or after
    /// `timeout`, or at once without a link.
    private func catchUp() async {
        guard let link = state.withLock({ $0.ready }), let me = membership.me else { return }
        let loop = link.consumer.channel.eventLoop
        let back = loop.makePromise(of: Void.self)
        let token = markers.withLock { markers in
            markers.last += 1
            markers.waiting[markers.last] = back
            return markers.last
        }
        link.publisher.enqueuePublish(
            exchange: configuration.exchange, routingKey: keys.node(me.id), body: BrokerFrame.marker(from: me.id, token: token).bytes
        ).whenFailure { [weak self] _ in self?.settleMarker(token) }
        let timer = loop.scheduleTask(in: TimeAmount(configuration.timeout)) { [weak self] in self?.settleMarker(token) }
        try? await back.futureResult.get()
        timer.cancel()
    }

    private func settleMarker(_ token: Int64) {
        markers.withLock { $0.waiting.removeValue(forKey: token) }?.succeed()
    }

    private func settleAllMarkers() {
        let all = markers.withLock { markers in
            defer { markers.waiting = [:] }
            return Array(markers.waiting.values)
        }
        for promise in all { promise.succeed() }
    }

    public func nodes() async throws -> [NodeStatus] {
        membership.nodes(selfAlive: state.withLock { $0.ready != nil && !$0.stopped })
    }

    public func report(_ load: NodeLoad) async {
        membership.report(load)
    }
}

public enum RabbitMQBackplaneError: Error, CustomStringConvertible {
    case unavailable

    public var description: String { "RabbitMQ is unreachable: the message cannot reach the other nodes" }
}
