import Prometheus
import Synchronization

/// This node's metrics. One registry per node, so that several nodes in one process (the
/// `cluster` command, tests) keep separate counts.
public final class NodeMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let connectionsOpened: Tally
    let connectionsClosed: Tally
    let framesReceived: Tally
    let badFrames: Tally
    let rateLimited: Tally
    let messagesPublished: Tally
    let deliveries: Tally
    let slowConsumersClosed: Tally
    let connections: Gauge
    let tcpConnections: Gauge
    let backplaneEventsReceived: Tally
    let commandsFailed: Tally
    let refusedHandshakes: Tally
    let roomLimitRefusals: Tally
    let tooLarge: Tally
    let backplaneEventsRefused: Tally
    let badHTTPRequests: Tally
    let resumesRecovered: Tally
    let resumesNotRecovered: Tally
    let presenceEventsWithheld: Tally

    init() {
        connectionsOpened = Tally(registry, "connections_opened", "WebSocket sessions opened")
        connectionsClosed = Tally(registry, "connections_closed", "WebSocket sessions closed")
        framesReceived = Tally(registry, "frames_received", "Client frames received")
        badFrames = Tally(registry, "bad_frames", "Client frames answered with an error")
        rateLimited = Tally(registry, "rate_limited", "Client frames refused by the rate limit")
        messagesPublished = Tally(registry, "messages_published", "Messages handed to the cluster by this node")
        deliveries = Tally(registry, "deliveries", "Frames written to local connections")
        slowConsumersClosed = Tally(registry, "slow_consumers_closed", "Connections closed because their outbound buffer overflowed")
        backplaneEventsReceived = Tally(
            registry, "backplane_events_received", "Messages and presence events this node received from the backplane")
        commandsFailed = Tally(registry, "commands_failed", "Commands and API calls answered 'internal' because the cluster failed")
        refusedHandshakes = Tally(registry, "handshakes_refused", "WebSocket upgrades refused (token, origin, limits)")
        roomLimitRefusals = Tally(registry, "room_limit_refusals", "Joins refused because the connection is in too many rooms")
        tooLarge = Tally(registry, "messages_too_large", "Connections closed (1009) for a message over the size limit")
        backplaneEventsRefused = Tally(
            registry, "backplane_events_refused", "Messages from the backplane dropped because their data was not well-formed UTF-8 JSON")
        badHTTPRequests = Tally(registry, "bad_http_requests", "Malformed or oversized HTTP requests answered 400 or 431 and closed")
        resumesRecovered = Tally(
            registry, "resumes_recovered", "Joins and connects with since that got every missed message (recovered:true)")
        resumesNotRecovered = Tally(
            registry, "resumes_not_recovered", "Joins and connects with since answered recovered:false (history gone, wrong epoch)")
        presenceEventsWithheld = Tally(
            registry, "presence_events_withheld",
            "joined/left events not delivered to a room's local subscribers over --presence-events-limit")
        connections = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "connections", unitName: "", helpText: "Open WebSocket sessions"))
        tcpConnections = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "tcp_connections", unitName: "",
                helpText: "Open TCP connections of every kind, capped at --max-connections + 256"))
    }

    /// Counts the outcome of a resume; nil (no `since`) counts nothing.
    func resumes(_ recovered: Bool?) {
        switch recovered {
        case true?: resumesRecovered.increment()
        case false?: resumesNotRecovered.increment()
        case nil: break
        }
    }

    /// Every counter, in the order the admin stats list them.
    var tallies: [Tally] {
        [
            messagesPublished, deliveries, framesReceived, connectionsOpened, connectionsClosed, backplaneEventsReceived,
            badFrames, rateLimited, refusedHandshakes, roomLimitRefusals, tooLarge, slowConsumersClosed, commandsFailed,
            backplaneEventsRefused, badHTTPRequests, resumesRecovered, resumesNotRecovered, presenceEventsWithheld,
        ]
    }

    func render() -> [UInt8] {
        registry.emitToBuffer()
    }
}

/// A Prometheus counter whose value this process can read back too (the admin stats show it;
/// swift-prometheus keeps its own total write-only). One relaxed atomic add more per increment.
final class Tally: Sendable {
    let name: String
    private let counter: Counter
    private let total = Atomic<Int64>(0)

    init(_ registry: PrometheusCollectorRegistry, _ name: String, _ help: String) {
        self.name = name
        counter = registry.makeCounter(
            descriptor: MetricNameDescriptor(namespace: "switchboard", metricName: name, unitName: "total", helpText: help))
    }

    func increment(by amount: Int64 = 1) {
        counter.increment(by: amount)
        total.wrappingAdd(amount, ordering: .relaxed)
    }

    var value: Int64 { total.load(ordering: .relaxed) }
}
