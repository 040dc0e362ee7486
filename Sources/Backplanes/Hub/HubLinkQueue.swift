import NIOCore
import Synchronization

/// The frames waiting to go out on one link to the hub, in order, drained by the link's writer.
/// Bounded by bytes: a hub that stops reading makes `post` refuse, never lets the queue grow.
final class HubLinkQueue: Sendable {
    let frames: AsyncStream<ByteBuffer>
    private let continuation: AsyncStream<ByteBuffer>.Continuation
    private let queuedBytes = Atomic<Int>(0)
    private let maxQueuedBytes: Int

    init(maxQueuedBytes: Int) {
        self.maxQueuedBytes = maxQueuedBytes
        let (stream, continuation) = AsyncStream.makeStream(of: ByteBuffer.self)
        self.continuation = continuation
        self.frames = stream
    }

    /// Queues a frame; false when the queue is over its bound or finished.
    @discardableResult
    func post(_ frame: HubFrame) -> Bool {
        let bytes = frame.encoded()
        let size = bytes.readableBytes
        guard queuedBytes.add(size, ordering: .relaxed).newValue <= maxQueuedBytes else {
            queuedBytes.subtract(size, ordering: .relaxed)
            return false
        }
        if case .terminated = continuation.yield(bytes) {
            queuedBytes.subtract(size, ordering: .relaxed)
            return false
        }
        return true
    }

    /// The writer took `frame` off the queue.
    func written(_ frame: ByteBuffer) {
        queuedBytes.subtract(frame.readableBytes, ordering: .relaxed)
    }

    /// Ends the queue: the writer writes what is queued, then stops.
    func finish() {
        continuation.finish()
    }
}
