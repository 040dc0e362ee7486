import Logging
import NIOCore
import NIOWebSocket
import STOMP
import SwitchboardCore
import SwitchboardProtocol
import Synchronization

extension StompSession {
    // MARK: Heart-beats

    /// STOMP 1.2 "Heart-beating": the client offers `cx,cy` (it can send every cx ms, wants to
    /// hear every cy ms); the node offers its heartbeat period both ways. Each side then beats
    /// at the larger of what one can and the other wants, or not at all when either says 0.
    func heartbeats(_ header: String?) -> (server: (sends: Int, wants: Int), sendEvery: Int, expectEvery: Int) {
        let period = node.configuration.heartbeatSeconds * 1000
        let parts = (header ?? "0,0").split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) ?? 0 }
        let (clientSends, clientWants) = parts.count == 2 ? (max(0, parts[0]), max(0, parts[1])) : (0, 0)
        let sendEvery = clientWants == 0 ? 0 : max(period, clientWants)
        let expectEvery = clientSends == 0 ? 0 : max(period, clientSends)
        return ((period, period), sendEvery, expectEvery)
    }

    func startHeartbeats(send: Int, expect: Int) {
        let loop = connection.eventLoop
        var timers: [RepeatedTask] = []
        if send > 0 {
            timers.append(
                loop.scheduleRepeatedTask(initialDelay: .milliseconds(Int64(send)), delay: .milliseconds(Int64(send))) { [connection] _ in
                    connection.send([0x0A])
                })
        }
        if expect > 0 {
            // Twice the period, as the specification's tolerance suggests; then the client is gone.
            let grace = Int64(expect) * 2
            timers.append(
                loop.scheduleRepeatedTask(initialDelay: .milliseconds(Int64(expect)), delay: .milliseconds(Int64(expect))) {
                    [self] task in
                    guard Self.now() - lastHeard.load(ordering: .relaxed) > grace else { return }
                    task.cancel()
                    logger.debug("STOMP client silent past its heart-beat", metadata: ["session": "\(connection.session)"])
                    inbox.receive(.expired("no heart-beat for \(grace) ms"), on: connection.channel, run: run)
                })
        }
        state.withLock { $0.timers = timers }
    }

    static func now() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000)
    }
}
