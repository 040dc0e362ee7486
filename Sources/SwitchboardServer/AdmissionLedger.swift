import NIOCore
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
