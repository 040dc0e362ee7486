import NIOCore
import Synchronization

/// How a connection's first request ended, told by its event loop to the listener (which gives
/// the connection a task unless it became a client socket) and then to that task
/// (`NodeChannel.handle`). Not a future: a task awaiting a future adds its callback on the loop,
/// one more hop per connection; this is read under a lock, and is settled before the task runs.
final class UpgradeOutcome: Sendable {
    typealias Observer = @Sendable (Result<NodeChannel.Upgraded, any Error>) -> Void
    private enum State {
        case waiting(CheckedContinuation<NodeChannel.Upgraded, any Error>?, Observer?)
        case settled(Result<NodeChannel.Upgraded, any Error>)
    }
    private let state = Mutex(State.waiting(nil, nil))

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
        let (waiter, observer) = state.withLock { state -> (CheckedContinuation<NodeChannel.Upgraded, any Error>?, Observer?) in
            guard case .waiting(let waiter, let observer) = state else { return (nil, nil) }
            state = .settled(result)
            return (waiter, observer)
        }
        observer?(result)
        waiter?.resume(with: result)
    }

    /// Calls `observer` once settled (at once if it is), on the thread that settles it: how the
    /// listener learns whether the connection needs a task. One observer only.
    func whenSettled(_ observer: @escaping Observer) {
        let settled = state.withLock { state -> Result<NodeChannel.Upgraded, any Error>? in
            switch state {
            case .settled(let result): return result
            case .waiting(let waiter, _):
                state = .waiting(waiter, observer)
                return nil
            }
        }
        if let settled { observer(settled) }
    }

    /// Returns once settled; one caller only.
    func value() async throws -> NodeChannel.Upgraded {
        if case .settled(let result) = state.withLock({ $0 }) { return try result.get() }
        return try await withCheckedThrowingContinuation { waiter in
            let result = state.withLock { state -> Result<NodeChannel.Upgraded, any Error>? in
                switch state {
                case .settled(let result): return result
                case .waiting(_, let observer):
                    state = .waiting(waiter, observer)
                    return nil
                }
            }
            if let result { waiter.resume(with: result) }
        }
    }
}
