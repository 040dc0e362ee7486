import NIOCore
import Synchronization

/// The encoded frames waiting to go out on one link between nodes (a mesh link, a link to the
/// hub), in order, for the link's one writer. The writer takes everything that queued up while
/// it was writing (`next`), up to `batchBytes`, and sends it as one link message: a burst of
/// changes then costs one WebSocket message and one system call, not one each.
public final class LinkOutbox: Sendable {
    private struct State {
        var queued: [ByteBuffer] = []
        var queuedBytes = 0
        var closed = false
        /// The writer, waiting for frames.
        var writer: CheckedContinuation<[ByteBuffer]?, Never>?
    }

    /// At most this many bytes of frames are taken at once (a larger frame goes alone).
    public let batchBytes: Int
    /// Past this many bytes waiting, `post` refuses: a peer that stops reading cannot make the
    /// queue grow without bound.
    public let maxQueuedBytes: Int
    private let state = Mutex(State())

    public init(batchBytes: Int = 64 << 10, maxQueuedBytes: Int = .max) {
        self.batchBytes = batchBytes
        self.maxQueuedBytes = maxQueuedBytes
    }

    /// Queues a frame; false when the outbox is closed or over its bound.
    @discardableResult
    public func post(_ frame: ByteBuffer) -> Bool {
        let (queued, writer, batch) = state.withLock { state -> (Bool, CheckedContinuation<[ByteBuffer]?, Never>?, [ByteBuffer]) in
            guard !state.closed, state.queuedBytes + frame.readableBytes <= maxQueuedBytes else { return (false, nil, []) }
            state.queued.append(frame)
            state.queuedBytes += frame.readableBytes
            guard let writer = state.writer else { return (true, nil, []) }
            state.writer = nil
            return (true, writer, take(from: &state))
        }
        writer?.resume(returning: batch)
        return queued
    }

    /// For the link's one writer: the next frames to write, in order, waiting for some; nil
    /// once the outbox is closed and all it queued is taken.
    public func next() async -> [ByteBuffer]? {
        await withCheckedContinuation { (writer: CheckedContinuation<[ByteBuffer]?, Never>) in
            let ready = state.withLock { state -> [ByteBuffer]?? in
                if !state.queued.isEmpty { return .some(take(from: &state)) }
                if state.closed { return .some(nil) }
                state.writer = writer
                return nil
            }
            if let ready { writer.resume(returning: ready) }
        }
    }

    /// Takes no more frames; what is queued is still handed to the writer, then nil.
    public func close() {
        let writer = state.withLock { state in
            state.closed = true
            defer { state.writer = nil }
            return state.writer
        }
        writer?.resume(returning: nil)  // it waits only when nothing is queued
    }

    /// The oldest queued frames, up to `batchBytes` (at least one).
    private func take(from state: inout State) -> [ByteBuffer] {
        var bytes = state.queued[0].readableBytes
        var count = 1
        while count < state.queued.count, bytes + state.queued[count].readableBytes <= batchBytes {
            bytes += state.queued[count].readableBytes
            count += 1
        }
        state.queuedBytes -= bytes
        guard count < state.queued.count else {
            defer { state.queued = [] }
            return state.queued
        }
        defer { state.queued.removeFirst(count) }
        return Array(state.queued[..<count])
    }
}
