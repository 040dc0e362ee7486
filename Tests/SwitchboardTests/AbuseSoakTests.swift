import Foundation
import SwitchboardClient
import SwitchboardProtocol
import SwitchboardTesting
import Synchronization
import Testing

/// One node process under every kind of abuse at once for a minute (SWITCHBOARD_SOAK_SECONDS):
/// ping floods that read nothing, silent and half-sent requests, malformed HTTP, bad-JSON floods,
/// oversized messages and connection churn. Its memory and file descriptors stay bounded, and a
/// client alongside keeps every round trip.
@Suite("Abuse soak")
struct AbuseSoakTests {
    static var seconds: Int {
        ProcessInfo.processInfo.environment["SWITCHBOARD_SOAK_SECONDS"].flatMap(Int.init) ?? 60
    }

    @Test func aNodeUnderAbuseStaysBoundedAndServesOthers() async throws {
        let node = try await NodeProcess.start(
            "soaked",
            [
                "serve", "--node-id", "soaked", "--handshake-timeout", "2", "--max-buffered", "1048576", "--max-frame", "4096",
                "--max-pending-handshakes", "300", "--log-level", "critical",
            ])
        defer { node.killNow() }
        try await node.waitUntilReady()
        let probe = try await node.connect(user: "probe")
        try await probe.client.join("soak")
        let publisher = try await node.connect(user: "publisher")
        let baseline = try node.resources()

        let deadline = ContinuousClock.now + .seconds(Self.seconds)
        let attacks = Attacks(port: node.port, deadline: deadline)
        var peak = baseline
        var roundTrips = 0
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await attacks.pingFloods() }
            group.addTask { await attacks.silentAndHalfSentRequests() }
            group.addTask { await attacks.malformedRequests() }
            group.addTask { await attacks.badJSONFloods() }
            group.addTask { await attacks.oversizedMessages() }
            group.addTask { await attacks.churn() }
            // The bystander: a publish and its delivery, five times a second, each within 10 s.
            while ContinuousClock.now < deadline {
                roundTrips += 1
                let marker = JSONValue.number("\(roundTrips)")
                try await publisher.client.publish("soak", data: "\(roundTrips)")
                _ = try await probe.message(timeout: .seconds(10)) { $0.data == marker }
                let now = try node.resources()
                peak = (max(peak.rss, now.rss), max(peak.files, now.files))
                try await Task.sleep(for: .milliseconds(200))
            }
            try await group.waitForAll()
        }
        let attempts = attacks.counts.withLock { $0 }
        print(
            "soak: \(Self.seconds) s, \(roundTrips) round trips, attacks \(attempts), RSS \(baseline.rss >> 20) -> peak \(peak.rss >> 20) MiB, files \(baseline.files) -> peak \(peak.files)"
        )
        #expect(node.isRunning)
        // Each round trip finished within 10 s (or the test failed above); under the abuse on
        // two shared cores they run about two a second.
        #expect(roundTrips >= Self.seconds / 2)
        // Bounded: every abusive socket is closed by a limit, so what a node holds stays small.
        #expect(peak.rss < baseline.rss + (256 << 20), "RSS \(baseline.rss >> 20) -> \(peak.rss >> 20) MiB")
        #expect(peak.files < baseline.files + 2500, "files \(baseline.files) -> \(peak.files)")
        for attack in ["ping flood", "silent or half-sent", "malformed HTTP", "bad JSON flood", "oversized message", "churn"] {
            #expect(attempts[attack, default: 0] > 0, "\(attack) never ran: \(attempts)")
        }
        // Once the abuse stops, its sockets are all gone.
        try await eventually("the abusive sockets closed", timeout: .seconds(15)) {
            try node.resources().files <= baseline.files + 5
        }
        do {
            try await probe.client.ping()
        } catch {
            // Seen once in a fresh-clone CI run (closed, no code): say what the node saw.
            let slow = try await node.metric("switchboard_slow_consumers_closed_total")
            let tooLarge = try await node.metric("switchboard_messages_too_large_total")
            Issue.record(
                "the probe was closed (\(error), code \(await probe.client.closeCode().map(String.init) ?? "none")); node: slow consumers closed \(slow), too large \(tooLarge)"
            )
        }
    }
}

/// The abusers; each runs until the deadline and counts its attempts.
final class Attacks: Sendable {
    let port: Int
    let deadline: ContinuousClock.Instant
    let counts = Mutex<[String: Int]>([:])

    init(port: Int, deadline: ContinuousClock.Instant) {
        self.port = port
        self.deadline = deadline
    }

    private var running: Bool { ContinuousClock.now < deadline }

    private func count(_ what: String) {
        counts.withLock { $0[what, default: 0] += 1 }
    }

    /// Pings as fast as the socket takes them, reading nothing, until the node closes it.
    func pingFloods() async {
        let burst = Array([[UInt8]](repeating: RawWebSocket.frame(opcode: 0x9, [UInt8](repeating: 1, count: 125)), count: 500).joined())
        while running {
            guard let socket = try? await RawWebSocket.connect(port: port, path: "/ws?user=pinger", receiveBuffer: 4096) else { continue }
            count("ping flood")
            try? await socket.stopReading()
            // Ends when the node closes the socket (strikes for pings over the rate, then the
            // close handshake's 5 s; 10-15 s under this load) and a write fails.
            while running, !socket.isClosed, (try? await socket.write(burst)) != nil {}
            socket.close()
        }
    }

    /// Up to 200 sockets at a time that send nothing, one byte, or half a request.
    func silentAndHalfSentRequests() async {
        let starts: [[UInt8]] = [[], Array("G".utf8), Array("GET /ws?user=x HTTP/1.1\r\nHost: x\r\n".utf8)]
        var held: [RawWebSocket] = []
        while running {
            held.removeAll { $0.isClosed }
            while held.count < 200, let socket = try? await RawWebSocket.open(port: port) {
                let start = starts[held.count % starts.count]
                if !start.isEmpty { try? await socket.write(start) }
                held.append(socket)
                count("silent or half-sent")
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        for socket in held { socket.close() }
    }

    func malformedRequests() async {
        let heads = (try? Corpus.lines("http-heads.txt").map(Corpus.unescape)) ?? []
        var index = 0
        while running {
            guard let socket = try? await RawWebSocket.open(port: port) else { continue }
            try? await socket.write(heads[index % heads.count])
            index += 1
            count("malformed HTTP")
            try? await eventually("closed", timeout: .seconds(5)) { socket.isClosed || socket.received.contains("\r\n\r\n") }
            socket.close()
        }
    }

    /// Garbage text frames until the node closes the socket for its strikes.
    func badJSONFloods() async {
        let garbage = Array([[UInt8]](repeating: RawWebSocket.frame(opcode: 0x1, Array("{not json".utf8)), count: 200).joined())
        while running {
            guard let socket = try? await RawWebSocket.connect(port: port, path: "/ws?user=noisy") else { continue }
            count("bad JSON flood")
            while running, !socket.isClosed, (try? await socket.write(garbage)) != nil {}
            socket.close()
        }
    }

    /// A message over --max-frame, in fragments: closed with 1009.
    func oversizedMessages() async {
        var bytes = RawWebSocket.frame(opcode: 0x1, [UInt8](repeating: 0x61, count: 100), fin: false)
        for _ in 0..<60 { bytes += RawWebSocket.frame(opcode: 0x0, [UInt8](repeating: 0x61, count: 100), fin: false) }
        while running {
            guard let socket = try? await RawWebSocket.connect(port: port, path: "/ws?user=big") else { continue }
            count("oversized message")
            try? await socket.write(bytes)
            try? await eventually("closed", timeout: .seconds(10)) { socket.receivedClose(code: 1009) || socket.isClosed }
            socket.close()
        }
    }

    /// Connect, join, leave by dropping the socket.
    func churn() async {
        var index = 0
        while running {
            index += 1
            guard let socket = try? await RawWebSocket.connect(port: port, path: "/ws?user=churn\(index % 50)") else { continue }
            count("churn")
            try? await socket.sendText(#"{"type":"join","room":"soak-churn"}"#)
            socket.close()
            // A few hundred a second; unpaced, churn alone would take the whole machine.
            try? await Task.sleep(for: .milliseconds(2))
        }
    }
}
