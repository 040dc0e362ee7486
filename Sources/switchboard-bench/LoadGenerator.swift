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

    init(threads: Int, sourceAddresses: Int, batch: Bool) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        loops = Array(group.makeIterator())
        recorders = loops.map { _ in Recorder() }
        self.sourceAddresses = max(1, sourceAddresses)
        self.batch = batch
    }

    /// Counts a message: a bench payload is a delivery (latency recorded), `ok` a reply.
    func record(_ bytes: UnsafeRawBufferPointer, on recorder: Recorder) {
        if let stamp = bytes.benchStamp(), bytes.starts(with: "{\"type\":\"message\"") {
            let now = nanos()
            recorder.received += 1
            recorder.lastReceipt = now
            _ = recorder.latency.record(now > stamp.sent ? now - stamp.sent : 0)
            totals.received.add(1, ordering: .relaxed)
        } else if bytes.starts(with: "{\"type\":\"ok\"") {
            recorder.replies += 1
            totals.replies.add(1, ordering: .relaxed)
        } else if bytes.starts(with: "{\"type\":\"error\"") {
            recorder.errors += 1
        } else if bytes.starts(with: "{\"type\":\"welcome\"") {
            totals.welcomed.add(1, ordering: .relaxed)
        } else if bytes.starts(with: "{\"type\":\"joined\"") || bytes.starts(with: "{\"type\":\"left\"") {
            totals.presence.add(1, ordering: .relaxed)
        }
    }

    /// Opens `count` connections; `user(i)` names each, `target(i)` picks its node. Returns once
    /// all are upgraded (or throws with how many failed).
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

    private func connect(
        _ index: Int, user: String, target: Target, onOpen: @escaping @Sendable (Int, any Channel) -> Void,
        onReply: (@Sendable (Int, any Channel) -> Void)?
    ) async throws -> any Channel {
        let loopIndex = index % loops.count
        let recorder = recorders[loopIndex]
        let upgraded = loops[loopIndex].makePromise(of: Void.self)
        let path = target.path("user=\(user)" + (batch ? "&batch=1" : ""))
        let source = try SocketAddress(ipAddress: "127.0.0.\(1 + index % sourceAddresses)", port: 0)
        let totals = self.totals
        let channel = try await ClientBootstrap(group: loops[loopIndex])
            .channelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .bind(to: source)
            .channelInitializer { channel in
                let handler = LoadConnection(
                    host: target.host, port: target.port, path: path,
                    onOpen: {
                        totals.opened.add(1, ordering: .relaxed)
                        onOpen(index, channel)
                        upgraded.succeed()
                    },
                    onMessage: { bytes in
                        self.record(bytes, on: recorder)
                        if let onReply, bytes.starts(with: "{\"type\":\"ok\"") { onReply(index, channel) }
                    },
                    onClose: {
                        totals.closed.add(1, ordering: .relaxed)
                        upgraded.fail(BenchError("closed before the upgrade"))
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
            let snapshot = try await loop.submit { (recorder.received, recorder.replies, recorder.errors, recorder.latency, recorder.lastReceipt) }.get()
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

/// Client commands, encoded once as zero-masked frames.
enum Commands {
    static func join(_ room: String) -> [UInt8] { Array("{\"type\":\"join\",\"room\":\"\(room)\"}".utf8) }

    /// `data` is `[seq,sentNanos,"pad"]`, padded so that `data` is `payload` bytes long.
    static func data(seq: Int, sent: UInt64, payload: Int) -> String {
        let head = "[\(seq),\(sent),\""
        let pad = max(0, payload - head.utf8.count - 2)
        return head + String(repeating: "x", count: pad) + "\"]"
    }

    static func publish(room: String, seq: Int, payload: Int) -> [UInt8] {
        Array("{\"type\":\"publish\",\"room\":\"\(room)\",\"data\":\(data(seq: seq, sent: nanos(), payload: payload))}".utf8)
    }

    static func send(to user: String, seq: Int, payload: Int) -> [UInt8] {
        Array("{\"type\":\"send\",\"to\":\"\(user)\",\"data\":\(data(seq: seq, sent: nanos(), payload: payload))}".utf8)
    }
}

extension Channel {
    func sendText(_ payload: [UInt8], flush: Bool = true) {
        let frame = LoadConnection.frame(payload, allocator: allocator)
        if flush { writeAndFlush(frame, promise: nil) } else { write(frame, promise: nil) }
    }
}
