import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardProtocol
import Synchronization

/// One Switchboard node: the HTTP API and the `/ws` endpoint on one port, joined to a cluster
/// through a backplane. Run `services` in a ServiceGroup (in this order): the backplane's
/// background work, the server, and the drain. On graceful shutdown (in reverse order) the node
/// drains first (readyz 503, sockets closed with 1001, cluster left), then the server stops, then
/// the backplane's work.
public final class SwitchboardNode: Sendable {
    let context: NodeContext
    private enum Listening {
        case waiting([CheckedContinuation<Int, Never>])
        case bound(Int)
    }
    private let listeningState = Mutex(Listening.waiting([]))
    /// Poked once the server is bound.
    private let bound = ConditionSignal()
    /// Called once the server accepts connections, with the address it serves (the command line
    /// prints it; a library prints nothing).
    private let onListening: @Sendable (_ address: String) -> Void
    /// What every accepted connection goes through, TLS and request guards included.
    private let accepting: NodeChannel
    private let setUp: @Sendable (any Channel) -> EventLoopFuture<NodeChannel.Value>

    /// Throws `NodeConfigurationError` for a value the node cannot run with, or when the TLS
    /// configuration cannot make a TLS context (bad certificate or key).
    public init(
        configuration: NodeConfiguration, backplane: any Backplane, logger: Logger,
        onListening: @escaping @Sendable (_ address: String) -> Void = { _ in }
    ) throws {
        try configuration.validate()
        self.onListening = onListening
        let logger = logger.with(node: configuration.nodeID)
        let context = NodeContext(configuration: configuration, backplane: backplane, logger: logger)
        self.context = context
        let limits = HandshakeLimits(
            timeout: .seconds(Int64(configuration.handshakeTimeoutSeconds)), maxPending: configuration.maxPendingHandshakes,
            refused: { context.metrics.refusedHandshakes.increment() },
            badRequest: { context.metrics.badHTTPRequests.increment() })
        let accepting = NodeChannel(
            responder: HTTPAPI.router(context).connectionResponder(serverName: "switchboard", logger: logger), node: context,
            limits: limits)
        self.accepting = accepting
        let guarded = HTTPGuardChannel(base: accepting, limits: limits)
        if let tls = configuration.tls {
            let secured = try TLSChannel(guarded, tlsConfiguration: tls)
            setUp = { secured.setup(channel: $0, logger: logger) }
        } else {
            setUp = { guarded.setup(channel: $0, logger: logger) }
        }
    }

    public var id: String { context.configuration.nodeID }
    /// In the cluster and not draining: what `/readyz` says.
    public var isReady: Bool { context.phase == .ready }
    public var metrics: NodeMetrics { context.metrics }

    /// The services that make up the node, in the order a ServiceGroup must run them.
    public var services: [any Service] {
        [BackplaneService(node: self), makeListener(), DrainService(node: self)]
    }

    /// The bound port once the server accepts connections, or nil if the task is cancelled
    /// first (the server could not bind, say, and the node is stopping).
    func boundPort() async -> Int? {
        let port: @Sendable () -> Int? = {
            self.listeningState.withLock { state in
                if case .bound(let port) = state { port } else { nil }
            }
        }
        guard await bound.wait(until: { port() != nil }) else { return nil }
        return port()
    }

    /// Waits until the server is accepting connections; returns the bound port.
    public func listening() async -> Int {
        await withCheckedContinuation { continuation in
            let port = listeningState.withLock { state -> Int? in
                switch state {
                case .bound(let port):
                    return port
                case .waiting(let waiters):
                    state = .waiting(waiters + [continuation])
                    return nil
                }
            }
            if let port { continuation.resume(returning: port) }
        }
    }

    private func makeListener() -> NodeListener {
        let configuration = context.configuration
        let accepting = self.accepting
        let logger = context.logger
        return NodeListener(
            host: configuration.host, port: configuration.port, backlog: 4096, setup: setUp,
            handle: { await accepting.handle(value: $0, logger: logger) },
            onListening: { [self] channel in await self.started(channel) }, logger: logger)
    }

    /// The server is bound: announce it (the backplane service joins the cluster then).
    private func started(_ channel: any Channel) async {
        let port = channel.localAddress?.port ?? context.configuration.port
        let host = context.configuration.host
        onListening("\(context.configuration.tls == nil ? "http" : "https")://\(host):\(port)")
        let waiters = listeningState.withLock { state in
            defer { state = .bound(port) }
            if case .waiting(let waiters) = state { return waiters }
            return []
        }
        for waiter in waiters { waiter.resume(returning: port) }
        bound.poke()
    }

    /// Drains the node: readyz turns 503, every socket is closed with 1001, the node leaves the
    /// cluster (its users leave presence at once).
    func drain() async {
        context.phase = .draining
        context.logger.info("draining")
        let connections = context.router.endpoints
        for connection in connections {
            connection.close(.goingAway, reason: "node is shutting down")
        }
        // Sessions clean up as their sockets close; wait for that, within a bound.
        let router = context.router
        _ = await context.connectionLeft.wait(
            until: { router.load.connections == 0 }, timeout: .seconds(context.configuration.drainTimeoutSeconds))
        for connection in context.router.endpoints {
            connection.channel.close(promise: nil)
        }
        await context.router.backplane.leave()
        context.logger.info("left the cluster")
    }
}

extension Logger {
    fileprivate func with(node: String) -> Logger {
        var logger = self
        logger[metadataKey: "node"] = "\(node)"
        return logger
    }
}

/// Hands what the backplane delivers to the router, counting it: the count shows what crossed
/// to this node (`switchboard_backplane_events_received_total`). It drops messages whose data is
/// not well-formed, and, over `--presence-events-limit`, a large room's `joined`/`left`.
final class CountingReceiver: ClusterReceiver {
    let context: NodeContext

    init(context: NodeContext) {
        self.context = context
    }

    func receive(_ event: ClusterEvent) {
        context.metrics.backplaneEventsReceived.increment()
        // Every byte a node writes in a text frame is UTF-8 JSON, whatever a peer or broker sent.
        if case .message(let envelope) = event, !envelope.data.isWellFormed {
            context.metrics.backplaneEventsRefused.increment()
            if !warned.exchange(true, ordering: .relaxed) {
                context.logger.warning(
                    "dropped a message from the cluster whose data is not well-formed UTF-8 JSON (logged once; counted in switchboard_backplane_events_refused_total)",
                    metadata: ["id": "\(envelope.id)", "from": "\(envelope.from)"])
            }
            return
        }
        if let room = Self.presenceRoom(event), context.configuration.presenceEventsLimit > 0,
            context.router.connectionCount(in: room) > context.configuration.presenceEventsLimit
        {
            context.metrics.presenceEventsWithheld.increment()
            return
        }
        context.router.receive(event)
    }

    private static func presenceRoom(_ event: ClusterEvent) -> String? {
        switch event {
        case .joined(let room, _), .left(let room, _): room
        case .message: nil
        }
    }

    private let warned = Atomic(false)
}

/// The backplane's background work, and joining the cluster once the server is bound. Joining
/// may wait for the cluster (Redis down at start): the node serves its own clients meanwhile,
/// and /readyz says 503 until it has joined. Runs first in the ServiceGroup, so it stops last,
/// after the drain has left the cluster.
struct BackplaneService: Service {
    let node: SwitchboardNode

    func run() async throws {
        let context = node.context
        let backplane = context.router.backplane
        await withDiscardingTaskGroup { group in
            group.addTask { await backplane.run() }
            group.addTask {
                // Not `listening()`: a server that never binds must not keep this service, and
                // so the process, from stopping.
                guard let port = await node.boundPort() else { return }
                let info = NodeInfo(id: node.id, url: context.configuration.webSocketURL(boundPort: port))
                do {
                    try await backplane.join(node: info, receiver: CountingReceiver(context: context))
                    if context.phase == .starting { context.phase = .ready }
                    context.logger.info("joined the cluster", metadata: ["url": "\(info.url)"])
                } catch  where context.phase == .draining || Task.isCancelled {
                    context.logger.info("stopped before joining the cluster")
                } catch {
                    context.logger.error("could not join the cluster", metadata: ["error": "\(error)"])
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }
}

/// Waits for graceful shutdown, then drains its node. Runs after the Application in the
/// ServiceGroup, so it is shut down (and drains) before the server stops.
struct DrainService: Service {
    let node: SwitchboardNode

    func run() async throws {
        try? await gracefulShutdown()
        await node.drain()
    }
}
