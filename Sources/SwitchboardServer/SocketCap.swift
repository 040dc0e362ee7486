import Prometheus
import Synchronization

/// Caps a node's open TCP connections of every kind (client sockets, API calls, links, and
/// those still in their handshake), so that a flood of connections cannot use up the process's
/// files: one over the cap is closed as soon as it is accepted. A connection is counted from its
/// setup until whoever ends up owning it lets it go: `NodeChannel.handle` for HTTP, links and
/// failed handshakes, the client socket's handler when it leaves the pipeline (so an idle
/// socket holds no close callback for it).
final class SocketCap: Sendable {
    let limit: Int
    private let open = Atomic<Int>(0)
    /// `switchboard_tcp_connections`.
    private let gauge: Gauge

    init(limit: Int, gauge: Gauge) {
        self.limit = limit
        self.gauge = gauge
    }

    /// Counts a new connection; false, and not counted, when the node has `limit` already.
    func take() -> Bool {
        guard open.wrappingAdd(1, ordering: .relaxed).newValue <= limit else {
            open.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        gauge.increment()
        return true
    }

    func give() {
        open.wrappingSubtract(1, ordering: .relaxed)
        gauge.decrement()
    }
}
