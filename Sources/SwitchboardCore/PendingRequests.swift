/// Requests sent to a peer and waiting for its answer, each with a deadline: what a link to a
/// hub or a mesh peer keeps. A pure value; the owner holds it under its lock and completes what
/// `remove`, `removeExpired` and `removeAll` hand back (a continuation, a reply) outside it.
public struct PendingRequests<Waiter: Sendable>: Sendable {
    private var waiting: [UInt32: (deadline: ContinuousClock.Instant, waiter: Waiter)] = [:]
    private var lastID: UInt32 = 0

    public init() {}

    public var count: Int { waiting.count }

    /// Adds a waiter and returns its request id: never 0, which stands for "no answer wanted".
    public mutating func add(_ waiter: Waiter, deadline: ContinuousClock.Instant) -> UInt32 {
        repeat { lastID &+= 1 } while lastID == 0 || waiting[lastID] != nil
        waiting[lastID] = (deadline, waiter)
        return lastID
    }

    /// Adds a waiter under an id the caller numbered (a link's sequence number).
    public mutating func insert(_ waiter: Waiter, id: UInt32, deadline: ContinuousClock.Instant) {
        waiting[id] = (deadline, waiter)
    }

    /// The waiter of `id`, if it is still waiting.
    @discardableResult
    public mutating func remove(_ id: UInt32) -> Waiter? {
        waiting.removeValue(forKey: id)?.waiter
    }

    /// The waiters whose deadline has passed.
    public mutating func removeExpired(now: ContinuousClock.Instant) -> [Waiter] {
        let late = waiting.filter { $0.value.deadline <= now }
        for id in late.keys { waiting[id] = nil }
        return late.values.map(\.waiter)
    }

    /// Every waiter (the link is gone).
    public mutating func removeAll() -> [Waiter] {
        defer { waiting = [:] }
        return waiting.values.map(\.waiter)
    }
}
