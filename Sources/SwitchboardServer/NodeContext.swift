import Logging
import NIOCore
import SwitchboardCore
import Synchronization

/// Where a node is in its life: `/readyz` answers 200 only when `ready`.
enum NodePhase: UInt8 {
    case starting = 0
    case ready = 1
    case draining = 2
}

/// What every part of a node shares: its configuration, router, metrics and phase.
final class NodeContext: Sendable {
    let configuration: NodeConfiguration
    let router: MessageRouter<ChannelDelivery>
    let metrics: NodeMetrics
    let logger: Logger
    let identifiers = Identifiers()
    let tokens: TokenVerifier?
    let heartbeats: Heartbeats
    /// Client WebSockets admitted and not yet closed, per node and per user.
    let admissions: AdmissionLedger
    /// Every open TCP connection, capped 256 above the WebSocket limit.
    let sockets: SocketCap
    /// Shared by every client connection.
    let connectionSettings: ConnectionSettings
    /// Poked whenever a connection leaves the router: drain waits on it.
    let connectionLeft = ConditionSignal()
    private let phaseValue = Atomic<UInt8>(NodePhase.starting.rawValue)
    /// When the node was made, in milliseconds since the epoch (the admin page's uptime).
    let startedAt = wallClockMilliseconds()

    init(configuration: NodeConfiguration, backplane: any Backplane, logger: Logger) {
        self.configuration = configuration
        let metrics = NodeMetrics()
        self.metrics = metrics
        self.router = MessageRouter(backplane: backplane, delivery: ChannelDelivery(deliveries: metrics.deliveries))
        self.logger = logger
        self.tokens = configuration.tokens.isEmpty ? nil : TokenVerifier(keys: configuration.tokens)
        self.heartbeats = Heartbeats(period: .seconds(Int64(configuration.heartbeatSeconds)))
        self.admissions = AdmissionLedger(
            maxConnections: configuration.maxConnections, maxPerUser: configuration.maxConnectionsPerUser)
        self.sockets = SocketCap(limit: configuration.maxConnections + 256, gauge: metrics.tcpConnections)
        self.connectionSettings = ConnectionSettings(maxBufferedBytes: configuration.maxBufferedBytes, metrics: metrics, logger: logger)
    }

    var phase: NodePhase {
        get { NodePhase(rawValue: phaseValue.load(ordering: .acquiring))! }
        set { phaseValue.store(newValue.rawValue, ordering: .releasing) }
    }

    /// Makes an envelope for `data` and routes it; returns once the cluster has it.
    func publish(from sender: String, to address: Address, data: RawJSON) async throws {
        try await submit(from: sender, to: address, data: data).wait()
    }

    /// Delivers locally and queues the message on the backplane; see `MessageRouter.submit`.
    func submit(from sender: String, to address: Address, data: RawJSON) -> PendingPublish {
        let envelope = Envelope(
            id: identifiers.messageID(), from: sender, address: address, data: data,
            timestamp: wallClockMilliseconds())
        let pending = router.submit(envelope)
        let published = metrics.messagesPublished
        return PendingPublish {
            try await pending.wait()
            published.increment()  // counted once the cluster has it, as before pipelining
        }
    }
}
