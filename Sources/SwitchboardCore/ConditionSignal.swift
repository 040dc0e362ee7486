import Synchronization

/// Lets a task wait until a condition holds, woken by whoever may have made it true (`poke`),
/// instead of polling it. Drain waits with it for the node's last connection to go; the mesh's
/// join, for its links to settle.
public final class ConditionSignal: Sendable {
    private struct Waiters {
        var next = 0
        var continuations: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let waiters = Mutex(Waiters())

    public init() {}

    /// Something the condition depends on changed: every waiter checks again.
    public func poke() {
        let woken = waiters.withLock { waiters in
            defer { waiters.continuations = [:] }
            return Array(waiters.continuations.values)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Returns once `condition` holds, or `timeout` has passed; false on the timeout.
    public func wait(until condition: @escaping @Sendable () -> Bool, timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await self.wait(until: condition) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Returns once `condition` holds (true), or when the task is cancelled (false).
    public func wait(until condition: @Sendable () -> Bool) async -> Bool {
        while !condition() {
            guard !Task.isCancelled else { return false }
            let id = waiters.withLock { waiters in
                waiters.next += 1
                return waiters.next
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { continuation in
                    waiters.withLock { $0.continuations[id] = continuation }
                    // Checked again once registered, so that a poke in between is not lost.
                    if condition() || Task.isCancelled { resume(id) }
                }
            } onCancel: {
                resume(id)
            }
        }
        return true
    }

    /// Resumes one waiter, if it has not been resumed already.
    private func resume(_ id: Int) {
        waiters.withLock { $0.continuations.removeValue(forKey: id) }?.resume()
    }
}

/// Suspends until the calling task is cancelled: the end of a service's `run` that has nothing
/// to do but exist.
public func untilCancelled() async {
    _ = await ConditionSignal().wait(until: { false })
}
