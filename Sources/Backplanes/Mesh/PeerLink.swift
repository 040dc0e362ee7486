import ClusterLink
import NIOCore
import SwitchboardCore
import Synchronization

/// This node's sending side of one link to a peer: an ordered queue of frames that the link's
/// writer drains in batches (`outbox`), and the requests waiting for the peer's ack. Frames that
/// need an ack carry a sequence number; the peer acks each after applying it.
final class PeerLink: Sendable {
    private struct State {
        var nextSeq: UInt32 = 0
        var pending = PendingRequests<PeerReply>()
        var closed = false
        /// The peer has applied our full sync: from then on its view of us is complete.
        var synced = false
        var syncSeq: UInt32?
    }

    let peer: String
    let outbox = LinkOutbox()
    private let state = Mutex(State())

    init(peer: String) {
        self.peer = peer
    }

    var isSynced: Bool { state.withLock { $0.synced } }

    /// Queues a frame that needs no answer.
    func post(_ frame: MeshFrame) {
        outbox.post(frame.encoded())
    }

    /// Queues this node's whole interest, in parts; the ack of the last part marks the link synced.
    func enqueueSync(_ parts: [(UInt32) -> MeshFrame]) {
        state.withLock { state in
            guard !state.closed else { return }
            for part in parts {
                state.nextSeq &+= 1
                outbox.post(part(state.nextSeq).encoded())
            }
            state.syncSeq = state.nextSeq
        }
    }

    /// Queues a numbered frame now, in call order, and returns what the peer will answer: its
    /// ack once it has applied the frame. `build` makes the frame's bytes for its number (see
    /// `MeshFrame.numbered`).
    func send(timeout: Duration, _ build: (UInt32) -> ByteBuffer) -> PeerReply {
        let reply = PeerReply()
        let queued = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.nextSeq &+= 1
            state.pending.insert(reply, id: state.nextSeq, deadline: .now + timeout)
            // Numbering and queueing under one lock keep the queue in sequence order.
            outbox.post(build(state.nextSeq))
            return true
        }
        if !queued { reply.complete(.failure(MeshError.unreachable([peer]))) }
        return reply
    }

    /// The peer applied frame `seq`.
    func acked(_ seq: UInt32) {
        let reply = state.withLock { state in
            if seq == state.syncSeq { state.synced = true }
            return state.pending.remove(seq)
        }
        reply?.complete(.success(()))
    }

    /// Fails requests the peer has not answered in time.
    func expire(now: ContinuousClock.Instant) {
        let overdue = state.withLock { $0.pending.removeExpired(now: now) }
        for reply in overdue { reply.complete(.failure(MeshError.unreachable([peer]))) }
    }

    /// Ends the link: queued frames are still written, waiting requests fail.
    func close() {
        let waiting = state.withLock { state in
            state.closed = true
            state.synced = false
            return state.pending.removeAll()
        }
        outbox.close()
        for reply in waiting { reply.complete(.failure(MeshError.unreachable([peer]))) }
    }
}

/// A peer's answer to one request. It may come before anyone waits for it (a sender with
/// several messages on their way waits for them in turn), so it is kept until then.
final class PeerReply: Sendable {
    private enum State {
        case pending(waiter: CheckedContinuation<Void, any Error>?)
        case answered(Result<Void, any Error>)
    }
    private let state = Mutex(State.pending(waiter: nil))

    func complete(_ result: Result<Void, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard case .pending(let waiter) = state else { return nil }
            state = .answered(result)
            return waiter
        }
        waiter?.resume(with: result)
    }

    /// Returns once answered; one caller only.
    func wait() async throws {
        try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
            let answer = state.withLock { state -> Result<Void, any Error>? in
                switch state {
                case .answered(let result): return result
                case .pending: state = .pending(waiter: waiter); return nil
                }
            }
            if let answer { waiter.resume(with: answer) }
        }
    }
}

public enum MeshError: Error, CustomStringConvertible {
    /// These peers have a recipient but no working link to this node right now.
    case unreachable([String])
    case refused(String)
    case timedOut

    public var description: String {
        switch self {
        case .unreachable(let peers): "no link to node \(peers.sorted().joined(separator: ", ")) right now"
        case .refused(let why): "the peer refused the link: \(why)"
        case .timedOut: "the peer did not answer in time"
        }
    }
}
