import NIOCore
import Synchronization

/// Pings every client socket once per heartbeat period from one timer per event loop, not one
/// per connection: a socket that has not answered the previous ping by the next is closed with
/// 1001 (so a dead peer is noticed within two periods). The timer of a loop stops when the loop
/// has no sockets left.
final class Heartbeats: Sendable {
    private let period: TimeAmount
    private let loops = Mutex<[ObjectIdentifier: LoopHeartbeat]>([:])

    init(period: TimeAmount) {
        self.period = period
    }

    /// On the connection's event loop.
    func watch(_ connection: Connection) {
        loop(of: connection).add(connection)
    }

    /// On the connection's event loop.
    func forget(_ connection: Connection) {
        loop(of: connection).remove(connection)
    }

    private func loop(of connection: Connection) -> LoopHeartbeat {
        let loop = connection.eventLoop
        return loops.withLock { loops in
            if let known = loops[ObjectIdentifier(loop)] { return known }
            let added = LoopHeartbeat(loop: loop, period: period)
            loops[ObjectIdentifier(loop)] = added
            return added
        }
    }
}

/// The sockets of one event loop and their timer. Touched only on `loop`.
final class LoopHeartbeat: @unchecked Sendable {
    private let loop: any EventLoop
    private let period: TimeAmount
    private var connections: [ObjectIdentifier: Connection] = [:]
    private var timer: RepeatedTask?

    init(loop: any EventLoop, period: TimeAmount) {
        self.loop = loop
        self.period = period
    }

    func add(_ connection: Connection) {
        loop.preconditionInEventLoop()
        connections[ObjectIdentifier(connection)] = connection
        guard timer == nil else { return }
        timer = loop.scheduleRepeatedTask(initialDelay: period, delay: period) { [self] _ in
            for connection in connections.values { connection.heartbeat() }
        }
    }

    func remove(_ connection: Connection) {
        loop.preconditionInEventLoop()
        connections[ObjectIdentifier(connection)] = nil
        if connections.isEmpty {
            timer?.cancel()
            timer = nil
        }
    }
}
