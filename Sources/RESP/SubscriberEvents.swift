import Synchronization

/// Where a subscriber's events go: into `stream`, or, once `deliver(to:)` has named a handler,
/// straight to that handler, called on the subscriber connection's event loop. A backplane
/// handles messages there, with no task woken between Redis and its clients' sockets.
public final class SubscriberEvents: Sendable {
    public let stream: AsyncStream<RedisSubscriberEvent>
    private let continuation: AsyncStream<RedisSubscriberEvent>.Continuation
    /// In a struct: a bare closure kept in a generic `Mutex` and read through `withLock` came
    /// back wrapped in two more reabstraction thunks after every read (each write-back of the
    /// inout value re-wraps it), so each event cost more than the last.
    private struct Handler {
        let call: @Sendable (RedisSubscriberEvent) -> Void
    }
    private let handler = Mutex<Handler?>(nil)

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: RedisSubscriberEvent.self)
    }

    /// From now on, every event goes to `handler` and none into `stream`.
    public func deliver(to handler: @escaping @Sendable (RedisSubscriberEvent) -> Void) {
        self.handler.withLock { $0 = Handler(call: handler) }
    }

    func emit(_ event: RedisSubscriberEvent) {
        if let handler = handler.withLock({ $0 }) {
            handler.call(event)
        } else {
            continuation.yield(event)
        }
    }

    func finish() {
        continuation.finish()
    }
}
