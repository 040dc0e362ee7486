import NIOCore
import Prometheus
import Synchronization

/// Counts the client WebSockets of a node, per node and per user, from the moment an upgrade is
/// admitted until its socket closes. The check and the count are one step under one lock, so
/// concurrent upgrades cannot all pass a check made before any of them is counted.
final class AdmissionLedger: Sendable {
    enum Refusal: Equatable {
        case nodeFull
        case userFull
    }

    private struct Counts {
        var total = 0
        var perUser: [String: Int] = [:]
    }

    private let maxConnections: Int
    private let maxPerUser: Int
    private let counts = Mutex(Counts())

    init(maxConnections: Int, maxPerUser: Int) {
        self.maxConnections = maxConnections
        self.maxPerUser = maxPerUser
    }

    /// Reserves a place for `user` on `channel`, given back when the channel closes, whatever
    /// happens to the upgrade in between (or to the STOMP CONNECT that asked).
    func reserve(_ user: String, on channel: any Channel) -> Refusal? {
        let refusal = reserve(user)
        if refusal == nil {
            channel.closeFuture.whenComplete { _ in self.release(user) }
        }
        return refusal
    }

    /// Reserves a place that the caller gives back with `release`: an upgrade decided on the
    /// event loop, whose socket handler releases it when it leaves the pipeline (one callback
    /// fewer held per idle socket).
    func reserve(_ user: String) -> Refusal? {
        counts.withLock { counts -> Refusal? in
            guard counts.total < maxConnections else { return .nodeFull }
            let held = counts.perUser[user, default: 0]
            guard held < maxPerUser else { return .userFull }
            counts.total += 1
            counts.perUser[user] = held + 1
            return nil
        }
    }

    var total: Int { counts.withLock { $0.total } }

    func release(_ user: String) {
        counts.withLock { counts in
            counts.total -= 1
            let left = counts.perUser[user, default: 1] - 1
            counts.perUser[user] = left > 0 ? left : nil
        }
    }
}

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
