import NIOCore
import Synchronization

/// How a connection's first request ended, told by its event loop to the task that serves the
/// connection (`NodeChannel.handle`). Not a future: awaiting a future from a task adds its
/// callback on the loop, one more hop per connection; this one is read under a lock, and a
/// client upgraded on the loop before its task runs is not waited for at all.
final class UpgradeOutcome: Sendable {
    private enum State {
        case waiting(CheckedContinuation<NodeChannel.Upgraded, any Error>?)
        case settled(Result<NodeChannel.Upgraded, any Error>)
    }
    private let state = Mutex(State.waiting(nil))

    func succeed(_ upgraded: NodeChannel.Upgraded) {
        settle(.success(upgraded))
    }

    func fail(_ error: any Error) {
        settle(.failure(error))
    }

    /// Settled by `future`, on its event loop.
    func settle(by future: EventLoopFuture<NodeChannel.Upgraded>) {
        future.whenComplete { self.settle($0) }
    }

    /// The first settlement counts; later ones are ignored.
    private func settle(_ result: Result<NodeChannel.Upgraded, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<NodeChannel.Upgraded, any Error>? in
            guard case .waiting(let waiter) = state else { return nil }
            state = .settled(result)
            return waiter
        }
        waiter?.resume(with: result)
    }

    /// Returns once settled; one caller only.
    func value() async throws -> NodeChannel.Upgraded {
        if case .settled(let result) = state.withLock({ $0 }) { return try result.get() }
        return try await withCheckedThrowingContinuation { waiter in
            let result = state.withLock { state -> Result<NodeChannel.Upgraded, any Error>? in
                if case .settled(let result) = state { return result }
                state = .waiting(waiter)
                return nil
            }
            if let result { waiter.resume(with: result) }
        }
    }
}
