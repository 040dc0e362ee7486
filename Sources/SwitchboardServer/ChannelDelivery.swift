import NIOCore
import SwitchboardCore
import SwitchboardProtocol
import Synchronization

/// Delivers cluster events to local connections: the frame, WebSocket header included, is encoded
/// once into one buffer, and each event loop gets one task that writes that buffer to all of its
/// connections. Flushing is
/// deferred to the end of the loop's current batch of work: however many events reach a socket
/// in one turn, it is flushed once (one write system call), and a `?batch=1` socket gets them
/// packed into one frame.
final class ChannelDelivery: LocalDelivery {
    let allocator = ByteBufferAllocator()
    private let flushers = Mutex<[ObjectIdentifier: LoopFlusher]>([:])
    /// Where the flushers count what they flushed.
    private let deliveries: Tally

    init(deliveries: Tally) {
        self.deliveries = deliveries
    }

    func deliver(_ event: ClusterEvent, to connections: [Connection]) {
        // JSON clients share one frame; STOMP clients share one per subscription (see
        // StompMessageCache), encoded on their loop, where their subscriptions live.
        let json = connections.contains { $0.stomp == nil } ? Self.jsonFrame(event, allocator: allocator) : nil
        if connections.count == 1 {
            let connection = connections[0]
            let flusher = flusher(for: connection.eventLoop)
            let allocator = self.allocator
            connection.eventLoop.execute {
                var stomp = StompMessageCache(event, allocator: allocator)
                Self.write(json, &stomp, to: connection)
                flusher.schedule(connection)
            }
            return
        }
        // Each loop takes the whole list and writes to its own connections: no per-message
        // regrouping (arrays built, endpoints retained) for a room's fan-out.
        for (loopID, loop) in Self.loops(of: connections) {
            let flusher = flusher(for: loop)
            let allocator = self.allocator
            loop.execute {
                var stomp = StompMessageCache(event, allocator: allocator)
                for connection in connections where connection.loopID == loopID {
                    Self.write(json, &stomp, to: connection)
                    flusher.schedule(connection)
                }
            }
        }
    }

    static func jsonFrame(_ event: ClusterEvent, allocator: ByteBufferAllocator) -> EncodedFrame {
        switch event {
        case .message(let envelope): EncodedFrame(message: envelope, allocator: allocator)
        case .joined, .left: EncodedFrame(ServerFrame.event(event), allocator: allocator)
        }
    }

    /// On the connection's event loop.
    private static func write(_ json: EncodedFrame?, _ stomp: inout StompMessageCache, to connection: Connection) {
        guard let subscriptions = connection.stomp else {
            if let json { connection.write(json) }
            return
        }
        for subscription in subscriptions.matching(stomp.event) {
            connection.write(stomp.frame(for: subscription))
        }
    }

    private func flusher(for loop: any EventLoop) -> LoopFlusher {
        flushers.withLock { flushers in
            if let flusher = flushers[ObjectIdentifier(loop)] { return flusher }
            let flusher = LoopFlusher(loop: loop, deliveries: deliveries)
            flushers[ObjectIdentifier(loop)] = flusher
            return flusher
        }
    }

    /// The distinct event loops of `connections`. There are few (one per core), so a linear scan
    /// over them beats hashing.
    static func loops(of connections: [Connection]) -> [(ObjectIdentifier, any EventLoop)] {
        var loops: [(ObjectIdentifier, any EventLoop)] = []
        for connection in connections where !loops.contains(where: { $0.0 == connection.loopID }) {
            loops.append((connection.loopID, connection.eventLoop))
        }
        return loops
    }
}

/// The connections of one event loop written to since its last flush. Touched only on `loop`.
final class LoopFlusher: @unchecked Sendable {
    let loop: any EventLoop
    private let deliveries: Tally
    private var dirty: [Connection] = []
    /// The list being flushed: the two swap places each turn, so neither is allocated again.
    private var flushing: [Connection] = []

    init(loop: any EventLoop, deliveries: Tally) {
        self.loop = loop
        self.deliveries = deliveries
    }

    /// Flushes `connection` once the loop has run what is queued now (tasks run in order, so the
    /// flush comes after every delivery already waiting).
    func schedule(_ connection: Connection) {
        guard connection.markDirty() else { return }
        dirty.append(connection)
        if dirty.count == 1 {
            loop.execute { self.flushAll() }
        }
    }

    private func flushAll() {
        swap(&dirty, &flushing)
        var flushed = 0
        for connection in flushing { flushed += connection.flushPending(countsDeliveries: false) }
        flushing.removeAll(keepingCapacity: true)
        if flushed > 0 { deliveries.increment(by: Int64(flushed)) }
    }
}
