import Foundation
import Histogram
import NIOCore
import NIOPosix
import Synchronization

/// A node to load, from `ws://HOST:PORT/PATH`.
struct Target: Sendable {
    var host: String
    var port: Int
    var path: String

    init(_ url: String) throws {
        guard url.hasPrefix("ws://") else { throw BenchError("targets are ws:// URLs, not \(url)") }
        let rest = url.dropFirst(5)
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]) else {
            throw BenchError("\(url) has no port")
        }
        host = String(authority[..<colon])
        self.port = port
        self.path = path.isEmpty ? "/ws" : String(path)
    }

    func path(_ query: String) -> String {
        path + (path.contains("?") ? "&" : "?") + query
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What one event loop's connections saw. Touched only on that loop; merged at the end.
final class Recorder: @unchecked Sendable {
    var received = 0
    var replies = 0
    var errors = 0
    var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
    var lastReceipt: UInt64 = 0
}

/// Counters every loop adds to, for flow control and waiting.
final class Totals: Sendable {
    let received = Atomic(0)
    let replies = Atomic(0)
    let opened = Atomic(0)
    let closed = Atomic(0)
    let presence = Atomic(0)
    let welcomed = Atomic(0)
}

/// Linux's IP_BIND_ADDRESS_NO_PORT (not exported by Glibc's module).
let bindAddressNoPort = ChannelOptions.Types.SocketOption(level: .ip, name: .init(rawValue: 24))

func nanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// The load generator: an event loop group, one recorder per loop, and connections spread over
/// loops and over source addresses 127.0.0.1...127.0.0.N (one source address has ~28k ports).
final class LoadGenerator: @unchecked Sendable {
    let group: MultiThreadedEventLoopGroup
    let loops: [any EventLoop]
    let recorders: [Recorder]
    let totals = Totals()
    let sourceAddresses: Int
    let batch: Bool
    let dialect: Dialect

    init(threads: Int, sourceAddresses: Int, batch: Bool, dialect: Dialect) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        loops = Array(group.makeIterator())
        recorders = loops.map { _ in Recorder() }
        self.sourceAddresses = max(1, sourceAddresses)
        self.batch = batch
        self.dialect = dialect
    }

    /// Counts a message: a bench payload is a delivery (latency recorded), a command's answer a
    /// reply. Returns what it was, for the connection to act on.
    func record(_ bytes: UnsafeRawBufferPointer, on recorder: Recorder) -> Incoming {
        let incoming = dialect.classify(bytes)
        switch incoming {
        case .delivery:
            guard let stamp = bytes.benchStamp(after: dialect.payloadMarker) else { return .other }
            let now = nanos()
            recorder.received += 1
            recorder.lastReceipt = now
            _ = recorder.latency.record(now > stamp.sent ? now - stamp.sent : 0)
            totals.received.add(1, ordering: .relaxed)
        case .reply:
            recorder.replies += 1
            totals.replies.add(1, ordering: .relaxed)
        case .error:
            recorder.errors += 1
        case .welcome:
            totals.welcomed.add(1, ordering: .relaxed)
        case .presence:
            totals.presence.add(1, ordering: .relaxed)
        case .answer, .other:
            break
        }
        return incoming
    }

    /// Opens `count` connections; `user(i)` names each, `target(i)` picks its node. Returns once
    /// all are welcomed (or throws with how many failed); `onOpen` runs at each one's welcome.
    func open(
        _ count: Int, user: @escaping @Sendable (Int) -> String, target: @escaping @Sendable (Int) -> Target,
        onOpen: @escaping @Sendable (Int, any Channel) -> Void = { _, _ in },
        onReply: (@Sendable (Int, any Channel) -> Void)? = nil
    ) async throws -> [any Channel] {
        var channels: [any Channel] = []
        channels.reserveCapacity(count)
        var failed = 0
        // In waves, so the server's accept backlog is not overrun.
        for waveStart in stride(from: 0, to: count, by: 500) {
            let wave = waveStart..<min(count, waveStart + 500)
            let opened = await withTaskGroup(of: (any Channel)?.self) { group in
                for index in wave {
                    group.addTask {
                        try? await self.connect(index, user: user(index), target: target(index), onOpen: onOpen, onReply: onReply)
                    }
                }
                return await group.compactMap { $0 }.reduce(into: [any Channel]()) { $0.append($1) }
            }
            channels += opened
            failed += wave.count - opened.count
        }
        if failed > 0 { throw BenchError("\(failed) of \(count) connections failed") }
        return channels
    }

    /// Opens a connection for each of `indices` (in waves, like `open`), and says which failed.
    func openEach(
        _ indices: [Int], user: @escaping @Sendable (Int) -> String, target: @escaping @Sendable (Int) -> Target,
        onOpen: @escaping @Sendable (Int, any Channel) -> Void
    ) async -> (opened: [any Channel], failed: [Int]) {
        var opened: [any Channel] = []
        var failed: [Int] = []
        for waveStart in stride(from: 0, to: indices.count, by: 500) {
            let wave = indices[waveStart..<min(indices.count, waveStart + 500)]
            let results = await withTaskGroup(of: (Int, (any Channel)?).self) { group in
                for index in wave {
                    group.addTask {
                        (index, try? await self.connect(index, user: user(index), target: target(index), onOpen: onOpen, onReply: nil))
                    }
                }
                return await group.reduce(into: [(Int, (any Channel)?)]()) { $0.append($1) }
            }
            for (index, channel) in results {
                if let channel { opened.append(channel) } else { failed.append(index) }
            }
        }
        return (opened, failed)
    }

    private func connect(
        _ index: Int, user: String, target: Target, onOpen: @escaping @Sendable (Int, any Channel) -> Void,
        onReply: (@Sendable (Int, any Channel) -> Void)?
    ) async throws -> any Channel {
        let loopIndex = index % loops.count
        let recorder = recorders[loopIndex]
        let upgraded = loops[loopIndex].makePromise(of: Void.self)
        let path = dialect.path(target, user: user, batch: batch)
        let greeting = dialect.greeting
        let source = try SocketAddress(ipAddress: "127.0.0.\(1 + index % sourceAddresses)", port: 0)
        let totals = self.totals
        let channel = try await ClientBootstrap(group: loops[loopIndex])
            .channelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            // The port is picked at connect, knowing the destination. Without it, bind scans
            // every port in use (TIME_WAIT included) for each socket: churn after a run that
            // closed thousands of sockets measured that scan, not the server.
            .channelOption(bindAddressNoPort, value: 1)
            .bind(to: source)
            .channelInitializer { channel in
                let handler = LoadConnection(
                    host: target.host, port: target.port, path: path, splitsLines: self.dialect != .stomp,
                    onOpen: {
                        if let greeting { channel.sendText(greeting) }
                    },
                    onMessage: { bytes in
                        switch self.record(bytes, on: recorder) {
                        case .welcome:
                            totals.opened.add(1, ordering: .relaxed)
                            onOpen(index, channel)
                            upgraded.succeed()
                        case .reply:
                            onReply?(index, channel)
                        case .answer(let answer):
                            channel.sendText(answer)
                        default:
                            break
                        }
                    },
                    onClose: {
                        totals.closed.add(1, ordering: .relaxed)
                        upgraded.fail(BenchError("closed before the welcome"))
                    })
                return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: target.host, port: target.port).get()
        try await upgraded.futureResult.get()
        return channel
    }

    /// Sums what every loop recorded (on each loop, so nothing races).
    func collect() async throws -> (received: Int, replies: Int, errors: Int, latency: Histogram<UInt64>, lastReceipt: UInt64) {
        var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
        var received = 0, replies = 0, errors = 0
        var last: UInt64 = 0
        for (loop, recorder) in zip(loops, recorders) {
            let snapshot = try await loop.submit {
                (recorder.received, recorder.replies, recorder.errors, recorder.latency, recorder.lastReceipt)
            }.get()
            received += snapshot.0
            replies += snapshot.1
            errors += snapshot.2
            latency.add(snapshot.3)
            last = max(last, snapshot.4)
        }
        return (received, replies, errors, latency, last)
    }

    /// Forgets what was recorded (between warm-up and measurement).
    func reset() async throws {
        for (loop, recorder) in zip(loops, recorders) {
            try await loop.submit {
                recorder.received = 0
                recorder.errors = 0
                recorder.latency.reset()
            }.get()
        }
        totals.received.store(0, ordering: .relaxed)
    }

    /// Waits until `condition` holds, up to `timeout`; false if it never did.
    func wait(upTo timeout: Duration, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    func shutdown(_ channels: [any Channel]) async {
        for channel in channels { channel.close(promise: nil) }
        try? await group.shutdownGracefully()
    }
}

/// The bench payload: `[seq,sentNanos,"pad"]`, padded so that it is `payload` bytes long.
func benchData(seq: Int, payload: Int) -> String {
    let head = "[\(seq),\(nanos()),\""
    let pad = max(0, payload - head.utf8.count - 2)
    return head + String(repeating: "x", count: pad) + "\"]"
}

extension Channel {
    func sendText(_ payload: [UInt8], flush: Bool = true) {
        let frame = LoadConnection.frame(payload, allocator: allocator)
        if flush { writeAndFlush(frame, promise: nil) } else { write(frame, promise: nil) }
    }
}
