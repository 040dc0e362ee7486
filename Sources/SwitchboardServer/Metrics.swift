import Prometheus

/// This node's metrics. One registry per node, so that several nodes in one process (the
/// `cluster` command, tests) keep separate counts.
public final class NodeMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let connectionsOpened: Counter
    let connectionsClosed: Counter
    let framesReceived: Counter
    let badFrames: Counter
    let rateLimited: Counter
    let messagesPublished: Counter
    let deliveries: Counter
    let slowConsumersClosed: Counter
    let connections: Gauge
    let backplaneEventsReceived: Counter
    let commandsFailed: Counter
    let refusedHandshakes: Counter
    let roomLimitRefusals: Counter
    let tooLarge: Counter
    let backplaneEventsRefused: Counter
    let badHTTPRequests: Counter
    let resumesRecovered: Counter
    let resumesNotRecovered: Counter

    init() {
        connectionsOpened = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "connections_opened", unitName: "total", helpText: "WebSocket sessions opened"))
        connectionsClosed = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "connections_closed", unitName: "total", helpText: "WebSocket sessions closed"))
        framesReceived = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "frames_received", unitName: "total", helpText: "Client frames received"))
        badFrames = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "bad_frames", unitName: "total", helpText: "Client frames answered with an error"))
        rateLimited = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "rate_limited", unitName: "total", helpText: "Client frames refused by the rate limit"
            ))
        messagesPublished = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "messages_published", unitName: "total",
                helpText: "Messages handed to the cluster by this node"))
        deliveries = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "deliveries", unitName: "total", helpText: "Frames written to local connections"))
        slowConsumersClosed = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "slow_consumers_closed", unitName: "total",
                helpText: "Connections closed because their outbound buffer overflowed"))
        backplaneEventsReceived = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "backplane_events_received", unitName: "total",
                helpText: "Messages and presence events this node received from the backplane"))
        commandsFailed = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "commands_failed", unitName: "total",
                helpText: "Commands and API calls answered 'internal' because the cluster failed"))
        refusedHandshakes = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "handshakes_refused", unitName: "total",
                helpText: "WebSocket upgrades refused (token, origin, limits)"))
        roomLimitRefusals = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "room_limit_refusals", unitName: "total",
                helpText: "Joins refused because the connection is in too many rooms"))
        tooLarge = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "messages_too_large", unitName: "total",
                helpText: "Connections closed (1009) for a message over the size limit"))
        backplaneEventsRefused = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "backplane_events_refused", unitName: "total",
                helpText: "Messages from the backplane dropped because their data was not well-formed UTF-8 JSON"))
        badHTTPRequests = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "bad_http_requests", unitName: "total",
                helpText: "Malformed or oversized HTTP requests answered 400 or 431 and closed"))
        resumesRecovered = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "resumes_recovered", unitName: "total",
                helpText: "Joins and connects with since that got every missed message (recovered:true)"))
        resumesNotRecovered = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "resumes_not_recovered", unitName: "total",
                helpText: "Joins and connects with since answered recovered:false (history gone, wrong epoch)"))
        connections = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "switchboard", metricName: "connections", unitName: "", helpText: "Open WebSocket sessions"))
    }

    /// Counts the outcome of a resume; nil (no `since`) counts nothing.
    func resumes(_ recovered: Bool?) {
        switch recovered {
        case true?: resumesRecovered.increment()
        case false?: resumesNotRecovered.increment()
        case nil: break
        }
    }

    func render() -> [UInt8] {
        registry.emitToBuffer()
    }
}
