import Foundation
import RESP
import SwitchboardClient
import SwitchboardCore
import SwitchboardProtocol
import SwitchboardTesting
import Testing

/// Three `switchboard serve --redis` processes on a real Redis Cluster (3 masters, 3 replicas,
/// node timeout 2 s), each seeded with other members: n1 with one address (it finds out by
/// itself that it is a cluster), n2 with two, n3 with a replica's.
@Suite("Redis Cluster backplane, three processes on six redis-servers", .serialized)
struct RedisClusterBackplaneTests {
    func withClusterNodes(
        heartbeat: Int = 5, logLevel: String = "warning", _ body: (RedisClusterServers, [NodeProcess]) async throws -> Void
    ) async throws {
        try await withRedisCluster { servers in
            var nodes: [NodeProcess] = []
            defer { for node in nodes { node.killNow() } }
            let seeds = [servers.url(0), servers.url(2) + "," + servers.url(3), servers.url(4)]
            for (index, seed) in seeds.enumerated() {
                nodes.append(try await NodeProcess.start("n\(index + 1)", redis: seed, heartbeat: heartbeat, logLevel: logLevel))
            }
            for node in nodes { try await node.waitUntilReady() }
            try await body(servers, nodes)
        }
    }

    @Test func everyProtocolRowAcrossThreeNodes() async throws {
        try await withClusterNodes(logLevel: "info") { _, nodes in
            #expect(nodes[0].printed.contains("is a member of a Redis Cluster"))
            try await exerciseProtocolRows(nodes)
            try await exerciseHistoryRows(nodes)
        }
    }

    /// The master of a room's slot is killed: its replica takes over, and delivery, presence and
    /// history resume within 10 s, by themselves.
    @Test func aMasterKilledFailsOverToItsReplica() async throws {
        try await withClusterNodes(logLevel: "info") { servers, nodes in
            let alice = try await nodes[0].connect(user: "alice")
            let bob = try await nodes[1].connect(user: "bob")
            for client in [alice, bob] { try await client.client.join("r") }
            try await alice.client.publish("r", data: "\"before\"")
            _ = try await bob.message { $0.data == .string("before") }
            let seen = try #require(try await bob.client.history("r").top)

            let owner = try await Self.master(of: "sb:{r:r}", in: servers)
            // What this test checks survives is what was replicated: under a loaded machine the
            // replica may lag, and a stream it never got is a new epoch (the documented loss).
            try await Self.waitUntilReplicated(master: owner)
            try await servers.kill9(port: owner)
            let killed = ContinuousClock.now
            try await eventually("delivery to resume", timeout: .seconds(10)) {
                let reply = try await alice.client.request(.publish(room: "r", data: RawJSON("\"after\"")))
                guard reply.type == "ok" else { return false }
                return (try? await bob.message(timeout: .seconds(2)) { $0.data == .string("after") }) != nil
            }
            #expect(ContinuousClock.now - killed < .seconds(12))
            #expect(try await bob.client.presence("r") == ["alice", "bob"])
            let carol = try await nodes[2].connect(user: "carol")
            try await carol.client.join("r")
            _ = try await alice.next { $0.type == "joined" && $0.user == "carol" }
            try await bob.client.send(to: "carol", data: "\"dm\"")
            _ = try await carol.message { $0.data == .string("dm") }
            // History survived the failover (what was written well before it was replicated; the
            // tail a dying master had not passed on could be lost: see docs/ARCHITECTURE.md): a
            // resume from before the kill, on another node, gets what came after, recovered.
            // (Just after a failover a read may still fail: that resume is told recovered:false,
            // honestly, and a later one recovers.)
            var attempts: [String] = []
            try await eventually("a resume from before the kill to recover") {
                let resumer = try await nodes[2].connect(user: "resumer\(attempts.count)")
                defer { Task { await resumer.client.close() } }
                let resumed = try await resumer.client.join("r", since: seen)
                attempts.append("\(resumed.json)")
                guard resumed.recovered == true else { return false }
                #expect(resumed.epoch == seen.epoch)
                _ = try await resumer.message { $0.data == .string("after") }
                return true
            }
            #expect(attempts.count <= 3, "\(attempts)")
            // The outage is logged once per connection to the dead master, not per command.
            for node in nodes {
                let lost = node.printed.split(separator: "\n").filter { $0.contains("lost the connection to Redis at 127.0.0.1:\(owner)") }
                #expect(lost.count <= 2, "\(node.nodeID): \(lost.count)")
            }
        }
    }

    /// A room's slot migrates to another master while messages flow: the nodes follow the
    /// redirections and the subscription moves; every message answered `ok` reaches the
    /// subscriber once, in order (the history fills in what the move made it miss).
    @Test func aSlotMovedUnderLiveTraffic() async throws {
        try await withClusterNodes(logLevel: "info") { servers, nodes in
            let alice = try await nodes[0].connect(user: "alice")
            let bob = try await nodes[1].connect(user: "bob")
            try await bob.client.join("moving")
            let slot = ClusterSlot.of("sb:{r:moving}")
            let source = try await Self.master(of: "sb:{r:moving}", in: servers)
            let target = try #require(try await servers.masters().first { $0 != source })

            var answered: [Int] = []
            for n in 0..<50 {
                if try await alice.client.request(.publish(room: "moving", data: RawJSON("\(n)"))).type == "ok" { answered.append(n) }
            }
            try await Self.migrate(slot: slot, from: source, to: target, in: servers)
            for n in 50..<100 {
                if try await alice.client.request(.publish(room: "moving", data: RawJSON("\(n)"))).type == "ok" { answered.append(n) }
            }
            #expect(answered.count >= 90, "most publishes are answered ok through the move")
            var received: [Int] = []
            for _ in answered {
                let message = try await bob.message(timeout: .seconds(10)) { $0.room == "moving" }
                if case .number(let text) = message.data, let n = Int(text) { received.append(n) }
            }
            #expect(received == answered)
            #expect(try await Self.master(of: "sb:{r:moving}", in: servers) == target)
        }
    }

    /// Waits until the master's replica has acknowledged everything the master has written.
    static func waitUntilReplicated(master port: Int) async throws {
        let connection = try await RedisConnection.local(port: port)
        defer { Task { await connection.close() } }
        try await eventually("the replica of \(port) to catch up") {
            let info = try await connection.send(["INFO", "replication"]).string ?? ""
            func field(_ name: String) -> Substring? {
                info.split(whereSeparator: \.isNewline).first { $0.hasPrefix(name) }
            }
            guard let own = field("master_repl_offset:").flatMap({ Int($0.split(separator: ":")[1]) }),
                let replica = field("slave0:"),
                let offset = replica.split(separator: ",").first(where: { $0.hasPrefix("offset=") }).flatMap({ Int($0.dropFirst(7)) })
            else { return false }
            return offset >= own
        }
    }

    /// The port of the master that serves `key`'s slot.
    static func master(of key: String, in servers: RedisClusterServers) async throws -> Int {
        let slot = ClusterSlot.of(key)
        for port in try await servers.masters() {
            let connection = try await RedisConnection.local(port: port)
            defer { Task { await connection.close() } }
            let reply = try await connection.send(["CLUSTER", "SLOTS"])
            if let map = ClusterSlotMap(clusterSlots: reply, fallbackHost: "127.0.0.1"), let owner = map.owner(ofSlot: slot) {
                return owner.port
            }
        }
        throw TimedOut(what: "a master for \(key)")
    }

    /// Moves one slot by hand, as `redis-cli --cluster reshard` does for many: IMPORTING on the
    /// target, MIGRATING on the source, its keys MIGRATEd, then every master told its new owner.
    static func migrate(slot: Int, from source: Int, to target: Int, in servers: RedisClusterServers) async throws {
        let from = try await RedisConnection.local(port: source), to = try await RedisConnection.local(port: target)
        defer {
            Task {
                await from.close()
                await to.close()
            }
        }
        let sourceID = try await from.send(["CLUSTER", "MYID"]).string ?? ""
        let targetID = try await to.send(["CLUSTER", "MYID"]).string ?? ""
        try await to.send(["CLUSTER", "SETSLOT", RESPArgument(slot), "IMPORTING", RESPArgument(sourceID)])
        try await from.send(["CLUSTER", "SETSLOT", RESPArgument(slot), "MIGRATING", RESPArgument(targetID)])
        while true {
            let keys = try await from.send(["CLUSTER", "GETKEYSINSLOT", RESPArgument(slot), "100"]).elements ?? []
            if keys.isEmpty { break }
            try await from.send(
                ["MIGRATE", "127.0.0.1", RESPArgument(target), "", "0", "5000", "KEYS"]
                    + keys.compactMap(\.bytes).map { RESPArgument(bytes: $0) })
        }
        for port in try await servers.masters() {
            let connection = try await RedisConnection.local(port: port)
            try await connection.send(["CLUSTER", "SETSLOT", RESPArgument(slot), "NODE", RESPArgument(targetID)])
            await connection.close()
        }
    }
}
