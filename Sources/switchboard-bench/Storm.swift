import ArgumentParser
import Foundation
import Glibc
import NIOCore
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A reconnect storm: C clients, each in a few rooms, spread over the nodes; a probe room with a
/// publisher and subscribers on the survivors; then one node is killed (or drained) and its
/// clients reconnect to the others at once and join their rooms again. Reports how long until
/// all are back, until presence is exact again, the connect failures, the probe's latency
/// during the storm (clients that never left) and the survivors' memory peak.
struct Storm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Kill (or drain) one node; its clients come back to the others at once.")
    @OptionGroup var load: LoadOptions
    @Option(help: "Clients in all, spread over the targets.") var clients = 15000
    @Option(help: "Rooms each client is in.") var roomsPerClient = 3
    @Option(help: "Rooms in all.") var rooms = 1000
    @Option(help: "The target (0-based) to kill; its clients move.") var victim = 2
    @Option(help: "PIDs of the nodes, in target order (comma-separated).") var serverPids: String
    @Option(help: "Signal to send: KILL (a crash) or TERM (a drain).") var signal = "KILL"
    @Option(help: "Probe messages/s, published on the first target during the storm.") var probeRate = 100
    @Option(help: "Seconds to wait for everything to be back.") var timeout = 120

    func run() async throws {
        let targets = try load.parsedTargets()
        let pids = serverPids.split(separator: ",").compactMap { Int32($0) }
        guard pids.count == targets.count, targets.count >= 2, victim < targets.count else {
            throw ValidationError("--server-pids needs one PID per target, and at least two targets")
        }
        let (roomsPerClient, rooms) = (self.roomsPerClient, self.rooms)
        let roomsOf: @Sendable (Int) -> [String] = { client in (0..<roomsPerClient).map { "storm-\((client &* 7 &+ $0 &* 131) % rooms)" } }
        let joinAll: @Sendable (Int, any Channel) -> Void = { client, channel in
            for room in roomsOf(client) { channel.sendText(load.dialect.join(room), flush: false) }
            channel.flush()
        }
        let generator = load.generator(threads: 2, sources: 4)
        let user: @Sendable (Int) -> String = { "storm-user-\($0)" }
        let crowd = try await generator.open(clients, user: user, target: { targets[$0 % targets.count] }, onOpen: joinAll)
        let joins = clients * roomsPerClient
        guard await generator.wait(upTo: .seconds(timeout), { generator.totals.replies.load(ordering: .relaxed) >= joins }) else {
            throw BenchError("only \(generator.totals.replies.load(ordering: .relaxed)) of \(joins) joins were answered")
        }
        await settle(generator)

        // The probe: subscribers on the survivors, a publisher on the first target.
        let survivors = targets.indices.filter { $0 != victim }
        let probe = load.generator(threads: 1, sources: 1)
        let probeSubscribers = try await probe.open(
            100, user: { "storm-probe-\($0)" }, target: { targets[survivors[$0 % survivors.count]] },
            onOpen: { _, channel in channel.sendText(probe.dialect.join("storm-probe")) })
        _ = await probe.wait(upTo: .seconds(30)) { probe.totals.replies.load(ordering: .relaxed) >= 100 }
        let publisher = try await probe.open(1, user: { _ in "storm-probe-publisher" }, target: { _ in targets[survivors[0]] })[0]
        try await probe.reset()
        let probeSeq = Atomic(0)
        let interval = TimeAmount.nanoseconds(1_000_000_000 / Int64(max(1, probeRate)))
        let payload = load.payload
        let probing = publisher.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: interval) { _ in
            let seq = probeSeq.add(1, ordering: .relaxed).newValue
            publisher.sendText(probe.dialect.publish(room: "storm-probe", data: benchData(seq: seq, payload: payload)))
        }

        // The survivors' memory, sampled until the end.
        let peakRSS = Mutex([Int](repeating: 0, count: pids.count))
        let sampling = publisher.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(100)) { _ in
            for (index, pid) in pids.enumerated() where index != self.victim {
                if let stats = try? ProcessStats(pid: pid) { peakRSS.withLock { $0[index] = max($0[index], stats.rssKiB) } }
            }
        }

        progress("\(clients) clients in \(joins) room memberships; killing target \(victim) with SIG\(signal)")
        // The storm.
        let movers = Array(stride(from: victim, to: clients, by: targets.count))
        // (`open` returns channels in the order they opened: the victim's are found by port.)
        let victimPort = targets[victim].port
        let victimClosed = crowd.filter { $0.remoteAddress?.port == victimPort }.map(\.closeFuture)
        let repliesBefore = generator.totals.replies.load(ordering: .relaxed)
        let started = ContinuousClock.now
        kill(pids[victim], signal == "TERM" ? SIGTERM : SIGKILL)
        for closed in victimClosed { try? await closed.get() }
        progress("the victim's \(movers.count) clients are closed after \(ContinuousClock.now - started)")
        let failures = Atomic(0)
        var waiting = movers
        var round = 0
        while !waiting.isEmpty, ContinuousClock.now - started < .seconds(timeout) {
            // Each client goes to the next survivor, round robin; one that fails tries again.
            let attempt = round
            let outcome = await generator.openEach(
                waiting, user: user, target: { targets[survivors[($0 + attempt) % survivors.count]] }, onOpen: joinAll)
            waiting = outcome.failed
            progress("round \(round + 1): \(outcome.opened.count) back, \(waiting.count) failed")
            failures.add(waiting.count, ordering: .relaxed)
            round += 1
            if !waiting.isEmpty { try await Task.sleep(for: .milliseconds(100)) }
        }
        let rejoins = movers.count * roomsPerClient
        let rejoined = await generator.wait(upTo: .seconds(timeout)) {
            generator.totals.replies.load(ordering: .relaxed) - repliesBefore >= rejoins
        }
        let rejoinsAnswered = generator.totals.replies.load(ordering: .relaxed) - repliesBefore
        // Only if every moved client is welcomed again and every one of its joins answered.
        let allBack = waiting.isEmpty && rejoined ? ContinuousClock.now - started : nil
        progress(
            "\(movers.count - waiting.count) of \(movers.count) moved clients back, \(rejoinsAnswered) of \(rejoins) joins answered (\(round) round(s)); checking presence"
        )
        // Presence is read through Switchboard's HTTP API; the peers have none alike.
        let exact =
            load.dialect == .switchboard
            ? try await waitForExactPresence(
                targets: targets, survivors: survivors, movers: movers, user: user, roomsOf: roomsOf, started: started) : nil
        probing.cancel()
        sampling.cancel()
        await drain(probe, expected: probeSeq.load(ordering: .relaxed) * probeSubscribers.count)
        let seen = try await probe.collect()

        var report = Report(scenario: "storm", label: load.label)
        report["clients"] = clients
        report["moved"] = movers.count
        report["signal"] = signal
        report["rooms_per_client"] = roomsPerClient
        report["all_back_s"] = allBack.map(\.seconds)
        report["rejoins"] = rejoins
        report["rejoins_answered"] = rejoinsAnswered
        report["presence_exact_s"] = exact.map(\.seconds)
        report["reconnect_rounds"] = round
        report["connect_failures"] = failures.load(ordering: .relaxed)
        report["still_away"] = waiting.count
        report["join_errors"] = try await generator.collect().errors
        report["probe_sent"] = probeSeq.load(ordering: .relaxed)
        report["probe_delivered"] = seen.received
        report["survivor_peak_rss_kib"] = peakRSS.withLock { $0.enumerated().filter { $0.offset != victim }.map(\.element) }
        report.latency(seen.latency)
        report.print()
        await probe.shutdown(probeSubscribers + [publisher])
        await generator.shutdown(crowd)
    }

    /// Polls the survivors' HTTP API until, for a sample of the moved users, each is online on
    /// survivors only, and a sample of their rooms lists exactly the users that are in it.
    /// Returns the time since `started`, or nil if that did not happen within the timeout.
    private func waitForExactPresence(
        targets: [Target], survivors: [Int], movers: [Int], user: (Int) -> String, roomsOf: (Int) -> [String],
        started: ContinuousClock.Instant
    ) async throws -> Duration? {
        let api = "http://\(targets[survivors[0]].host):\(targets[survivors[0]].port)"
        let victimURL = "ws://\(targets[victim].host):\(targets[victim].port)"
        let sample = Array(movers.prefix(100))
        var expected: [String: Set<String>] = [:]
        for client in 0..<clients { for room in roomsOf(client) { expected[room, default: []].insert(user(client)) } }
        let sampledRooms = Array(Set(sample.flatMap(roomsOf)).prefix(50))
        while ContinuousClock.now - started < .seconds(timeout) {
            // The victim's id, as /api/nodes names it (a drained node is gone from the list).
            let nodes = try? await getJSON("\(api)/api/nodes")?["nodes"] as? [[String: Any]]
            let victimID = nodes?.first { ($0["url"] as? String)?.hasPrefix(victimURL) == true }?["id"] as? String
            var exact = true
            for client in sample where exact {
                let answer = try? await getJSON("\(api)/api/users/\(user(client))")
                let on = answer?["nodes"] as? [String] ?? []
                if answer?["online"] as? Bool != true || on.isEmpty || (victimID.map { on.contains($0) } ?? false) { exact = false }
            }
            for room in sampledRooms where exact {
                let users = try? await getJSON("\(api)/api/presence/\(room)")?["users"] as? [String]
                if Set(users ?? []) != expected[room] { exact = false }
            }
            if exact { return ContinuousClock.now - started }
            try await Task.sleep(for: .milliseconds(200))
        }
        return nil
    }

    private func getJSON(_ url: String) async throws -> [String: Any]? {
        guard let url = URL(string: url) else { return nil }
        let (data, _) = try await URLSession.shared.data(from: url)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any]
    }
}

/// A line on standard error, for whoever watches a long scenario.
func progress(_ line: String) {
    FileHandle.standardError.write(Data(("  " + line + "\n").utf8))
}
