import ArgumentParser
import Foundation
import NIOCore
import Synchronization

/// C idle connections on one node: the node's memory per connection and its CPU at rest.
struct Idle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "C idle connections on one node: RSS per connection, CPU at rest.")
    @OptionGroup var load: LoadOptions
    @Option(help: "Connections.") var connections = 10000
    @Option(help: "PID of the server process that holds them (for RSS and CPU).") var serverPid: Int32
    @Option(help: "Seconds to watch the server at rest (include a few heartbeats).") var rest = 30

    func run() async throws {
        let target = try load.parsedTargets()[0]
        let generator = load.generator()
        let before = try ProcessStats(pid: serverPid)
        let channels = try await generator.open(connections, user: { "idle-\($0)" }, target: { _ in target })
        try await Task.sleep(for: .seconds(3))
        let held = try ProcessStats(pid: serverPid)
        try await Task.sleep(for: .seconds(rest))
        let after = try ProcessStats(pid: serverPid)
        let stillOpen = connections - generator.totals.closed.load(ordering: .relaxed)
        var result = Report(scenario: "idle", label: load.label)
        result["connections"] = connections
        result["still_open"] = stillOpen
        result["rss_before_kib"] = before.rssKiB
        result["rss_held_kib"] = held.rssKiB
        result["rss_per_connection_kib"] = Double(held.rssKiB - before.rssKiB) / Double(connections)
        result["cpu_at_rest_percent"] = 100 * Double(after.cpuTicks - held.cpuTicks) / ProcessStats.ticksPerSecond / Double(rest)
        result.print()
        await generator.shutdown(channels)
    }
}

/// Connect, join a room (with watchers on another node seeing presence), disconnect, again.
struct Churn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connects, joins and disconnects per second, with presence watched.")
    @OptionGroup var load: LoadOptions
    @Option(help: "Concurrent connect-join-close loops.") var workers = 20
    @Option(help: "Seconds to run.") var duration = 10
    @Option(help: "Connections in the room on the last target, receiving joined/left.") var watchers = 5

    func run() async throws {
        let targets = try load.parsedTargets()
        // Watchers apart, so that only what they see counts as presence seen.
        let observer = load.generator(threads: 1, sources: 1)
        let generator = load.generator()
        let watching = try await observer.open(
            watchers, user: { "watcher-\($0)" }, target: { _ in targets[targets.count - 1] },
            onOpen: { _, channel in channel.sendText(observer.dialect.join("churn")) })
        _ = await observer.wait(upTo: .seconds(10)) { observer.totals.replies.load(ordering: .relaxed) >= watchers }
        // The watchers' own joins are not part of the churn.
        try await Task.sleep(for: .milliseconds(500))
        observer.totals.presence.store(0, ordering: .relaxed)
        let counts = Totals()
        let deadline = ContinuousClock.now + .seconds(duration)
        let started = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var round = 0
                    while ContinuousClock.now < deadline {
                        round += 1
                        let name = "churn-\(worker)-\(round)"
                        do {
                            // Joined once the join is answered; then closed at once.
                            let channel = try await generator.open(
                                1, user: { _ in name }, target: { _ in targets[0] },
                                onOpen: { _, channel in channel.sendText(generator.dialect.join("churn")) },
                                onReply: { _, channel in channel.close(promise: nil) })[0]
                            try await channel.closeFuture.get()
                            counts.opened.add(1, ordering: .relaxed)
                        } catch {
                            counts.closed.add(1, ordering: .relaxed)
                        }
                    }
                }
            }
        }
        let seconds = (ContinuousClock.now - started).seconds
        try await Task.sleep(for: .seconds(1))
        var result = Report(scenario: "churn", label: load.label)
        result["workers"] = workers
        let cycles = counts.opened.load(ordering: .relaxed)
        result["cycles"] = cycles
        result["failures"] = counts.closed.load(ordering: .relaxed)
        result["cycles_per_s"] = Double(cycles) / seconds
        result["presence_events_seen"] = observer.totals.presence.load(ordering: .relaxed)
        result["presence_events_expected"] = 2 * watchers * cycles
        result.print()
        await observer.shutdown(watching)
        await generator.shutdown([])
    }
}

/// A process's resident memory and CPU time, from /proc.
struct ProcessStats {
    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
    var rssKiB: Int
    var cpuTicks: Int

    init(pid: Int32) throws {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        else { throw BenchError("no process \(pid)") }
        let rssLine = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        rssKiB = Int(rssLine.split(separator: " ").dropFirst().first ?? "") ?? 0
        // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        cpuTicks = (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }
}
