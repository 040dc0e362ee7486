import ArgumentParser
import Foundation
import Glibc
import Logging
import RESP
import RedisBackplane
import SwitchboardCore
import Synchronization

/// The Redis backplane on its own, without WebSockets: N backplanes in this process act as N
/// nodes, R rooms are joined spread over them, and messages are published from a node other than
/// the room's, many at once. It measures what the Redis side carries (the append script, the
/// sharded publish, the subscriber connections), which on a small machine the WebSocket nodes
/// hide: there, the nodes run out of CPU long before Redis does.
struct BackplaneRooms: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backplane",
        abstract: "The Redis backplane alone: R rooms over N in-process nodes, messages/s it carries.")
    @Option(help: "Redis address(es); several, or one member of a Redis Cluster, mean a cluster.") var redis: String
    @Option(help: "Backplanes (nodes) in this process.") var nodes = 2
    @Option(help: "Rooms (one member each, spread over the nodes).") var rooms = 10000
    @Option(help: "Messages in all.") var messages = 200_000
    @Option(help: "Publishes on their way at once.") var window = 256
    @Option(help: "Publishes queued together by one task before it waits for them.") var batch = 32
    @Option(help: "Messages kept per stream (0: history off).") var historySize = 100
    @Option(help: "Payload bytes.") var payload = 64
    @Option(help: "A label for the report.") var label = "backplane"
    @Option(help: "PIDs of the redis-servers (comma-separated), to report their CPU while publishing.") var redisPids = ""

    func run() async throws {
        let seeds = try redis.split(separator: ",").map { try RedisClient.Configuration(url: String($0)) }
        guard let first = seeds.first else { throw ValidationError("--redis needs an address") }
        let cluster: Bool
        if seeds.count > 1 {
            cluster = true
        } else {
            cluster = await RedisClusterClient.isClusterMember(host: first.host, port: first.port) ?? false
        }
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let counter = DeliveryCounter()
        let backplanes = (0..<nodes).map { _ in
            var configuration = RedisBackplane.Configuration(
                redis: first, heartbeat: .seconds(2),
                history: historySize > 0 ? HistoryPolicy(size: historySize, ttlSeconds: 300) : .off)
            if cluster { configuration.clusterSeeds = seeds.map { ClusterSlotMap.Node(host: $0.host, port: $0.port) } }
            return RedisBackplane(configuration: configuration, logger: logger)
        }
        let data = RawJSON("\"" + String(repeating: "x", count: max(0, payload - 2)) + "\"")
        let (nodes, rooms, messages, window, batch) = (self.nodes, self.rooms, self.messages, self.window, self.batch)
        try await withThrowingDiscardingTaskGroup { group in
            for backplane in backplanes { group.addTask { await backplane.run() } }
            for (index, backplane) in backplanes.enumerated() {
                try await backplane.join(node: NodeInfo(id: "bench-\(index)", url: "ws://127.0.0.1:1/ws"), receiver: counter)
            }
            // Joins in parallel per node: presence for 10k rooms is setup, not what is measured.
            try await withThrowingDiscardingTaskGroup { joins in
                for (index, backplane) in backplanes.enumerated() {
                    joins.addTask {
                        for room in stride(from: index, to: rooms, by: nodes) {
                            try await backplane.roomJoined("room-\(room)", user: "member-\(room)")
                        }
                    }
                }
            }
            let started = ContinuousClock.now
            let startNanos = nanos()
            let startCPU = cpuSeconds(ofProcess: Int(getpid()))
            let redisPIDs = redisPids.split(separator: ",").compactMap { Int($0) }
            let redisStart = redisPIDs.map(cpuSeconds(ofProcess:))
            let tally = PublishTally()
            // `workers` tasks, each queueing `batch` publishes at once and then awaiting them: a
            // message goes out from the node after the one that holds its room, so every message
            // crosses Redis.
            try await withThrowingDiscardingTaskGroup { workers in
                for _ in 0..<max(1, window / batch) {
                    workers.addTask {
                        while true {
                            var pending: [PendingPublish] = []
                            for _ in 0..<batch {
                                let seq = tally.next.add(1, ordering: .relaxed).newValue
                                guard seq <= messages else { break }
                                let room = (seq &* 7919) % rooms
                                let envelope = Envelope(
                                    id: "m\(seq)", from: "bench", address: .room("room-\(room)"), data: data,
                                    timestamp: Int64(seq))
                                pending.append(backplanes[(room + 1) % nodes].submit(envelope))
                            }
                            if pending.isEmpty { return }
                            for publish in pending {
                                do { try await publish.wait() } catch { tally.errors.add(1, ordering: .relaxed) }
                            }
                        }
                    }
                }
            }
            let published = started.duration(to: .now)
            let accepted = messages - tally.errors.load(ordering: .relaxed)
            let deadline = ContinuousClock.now + .seconds(30)
            while counter.messages.load(ordering: .relaxed) < accepted, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let seconds = Double(counter.lastAt.load(ordering: .relaxed) &- startNanos) / 1e9
            var report = Report(scenario: "backplane-rooms", label: label)
            report["rooms"] = rooms
            report["nodes"] = nodes
            report["window"] = window
            report["batch"] = batch
            report["history_size"] = historySize
            report["cluster"] = cluster
            report["expected"] = messages
            report["errors"] = tally.errors.load(ordering: .relaxed)
            report["delivered"] = counter.messages.load(ordering: .relaxed)
            report["lost"] = accepted - counter.messages.load(ordering: .relaxed)
            report["publish_seconds"] = published.seconds
            report["seconds"] = seconds
            if !redisPIDs.isEmpty {
                let used = zip(redisPIDs.map(cpuSeconds(ofProcess:)), redisStart).map { $0 - $1 }
                report["redis_cpu_us_per_message"] = used.reduce(0, +) * 1e6 / Double(max(1, accepted))
                report["busiest_redis_cpu_share"] = (used.max() ?? 0) / seconds
            }
            // This process's CPU (both "nodes", their Redis clients): what a message costs here.
            report["client_cpu_us_per_message"] = (cpuSeconds(ofProcess: Int(getpid())) - startCPU) * 1e6 / Double(max(1, accepted))
            report["messages_per_s"] = Double(counter.messages.load(ordering: .relaxed)) / seconds
            report.print()
            for backplane in backplanes { await backplane.leave() }
            group.cancelAll()
        }
    }
}

/// Counts the messages the backplanes hand to their nodes, and when the last came.
final class DeliveryCounter: ClusterReceiver {
    let messages = Atomic(0)
    let lastAt = Atomic<UInt64>(0)

    func receive(_ event: ClusterEvent) {
        guard case .message = event else { return }
        messages.add(1, ordering: .relaxed)
        lastAt.store(nanos(), ordering: .relaxed)
    }
}

final class PublishTally: Sendable {
    let next = Atomic(0)
    let errors = Atomic(0)
}

/// User and system CPU a process used so far, in seconds (0 if it cannot be read).
func cpuSeconds(ofProcess pid: Int) -> Double {
    guard let stats = try? ProcessStats(pid: Int32(pid)) else { return 0 }
    return Double(stats.cpuTicks) / ProcessStats.ticksPerSecond
}
