import Foundation
import Logging
import SwitchboardTesting
import Testing

@testable import RESP

/// The cluster-aware RESP client: slots and hash tags as Redis computes them, the slot map and
/// redirections parsed, and against a real Redis Cluster (3 masters, 3 replicas): keys spread
/// over the masters, a script on its slot's master, MOVED after slots were moved, and a master
/// killed (its replica takes over while commands keep being retried).
@Suite("Redis Cluster client", .serialized)
struct RedisClusterClientTests {
    @Test func slotsAndHashTagsAsRedisComputesThem() {
        #expect(ClusterSlot.of("123456789") == 0x31C3)  // the CRC16/XMODEM check value
        #expect(ClusterSlot.of("foo") == 12182)
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("{user1000}.followers"))
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("user1000"))
        #expect(ClusterSlot.of("foo{}{bar}") == ClusterSlot.of(Array("foo{}{bar}".utf8)))
        #expect(ClusterSlot.of("foo{{bar}}zap") == ClusterSlot.of("{bar"))
        #expect(ClusterSlot.of("foo{bar}{zap}") == ClusterSlot.of("bar"))
        // Our names: a room's channel and its keys share the slot of their tag.
        #expect(ClusterSlot.of("sb:{r:lobby}") == ClusterSlot.of("sb:{r:lobby}:m"))
    }

    /// Each command goes to the master of its key, read from its bytes in any letter case: a
    /// script's first key, the first argument of the rest, none for keyless commands.
    @Test func commandsAreRoutedByTheirKey() {
        func key(_ arguments: [RESPArgument]) -> String? {
            RedisClusterClient.routingKey(arguments).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(key(["EVALSHA", "abc", "2", "sb:{r:a}:s", "sb:{r:a}:h", "x"]) == "sb:{r:a}:s")
        #expect(key(["evalsha", "abc", "1", "k"]) == "k")
        #expect(key(["Eval", "return 1", "1", "k"]) == "k")
        #expect(key(["EVALSHA_RO", "abc", "1", "k"]) == "k")
        #expect(key(["EVAL", "return 1", "0"]) == nil)
        #expect(key(["EVAL", "return 1", "x", "k"]) == nil)
        #expect(key(["spublish", "sb:{r:a}", "m"]) == "sb:{r:a}")
        #expect(key(["SADD", "s", "m"]) == "s")
        for keyless: [RESPArgument] in [["PING"], ["ping"], ["SCRIPT", "LOAD", "x"], ["cluster", "slots"], ["INFO"]] {
            #expect(key(keyless) == nil)
        }
        #expect(key([]) == nil)
    }

    @Test func redirectionsAndSlotMapsParse() {
        let node = ClusterSlotMap.Node(host: "10.0.0.2", port: 7001)
        #expect(ClusterRedirection(error: "MOVED 3999 10.0.0.2:7001", fallbackHost: "x") == .moved(slot: 3999, to: node))
        #expect(ClusterRedirection(error: "ASK 3999 10.0.0.2:7001", fallbackHost: "x") == .ask(slot: 3999, to: node))
        #expect(ClusterRedirection(error: "MOVED 3999 :7001", fallbackHost: "10.0.0.2") == .moved(slot: 3999, to: node))
        for bad in ["MOVED", "MOVED 99999 h:1", "MOVED 1 h:0", "MOVED x h:1", "ERR wrong", "ASK 1 h"] {
            #expect(ClusterRedirection(error: bad, fallbackHost: "x") == nil, "\(bad)")
        }
        let reply = RESPValue.array([
            .array([.integer(0), .integer(8191), .array([.bulkString(Array("10.0.0.1".utf8)), .integer(7000)])]),
            .array([
                .integer(8192), .integer(16383), .array([.bulkString([]), .integer(7001)]),
                .array([.bulkString(Array("r".utf8)), .integer(7004)]),
            ]),
        ])
        let map = ClusterSlotMap(clusterSlots: reply, fallbackHost: "10.0.0.2")
        #expect(map?.isComplete == true)
        #expect(map?.owner(ofSlot: 0) == ClusterSlotMap.Node(host: "10.0.0.1", port: 7000))
        #expect(map?.owner(ofSlot: 16383) == node)
        #expect(
            ClusterSlotMap(
                clusterSlots: .array([.array([.integer(5), .integer(1), .array([.bulkString([]), .integer(1)])])]), fallbackHost: "h")
                == nil)
        #expect(ClusterSlotMap(clusterSlots: .array([]), fallbackHost: "h")?.isComplete == false)
    }

    static func client(_ servers: RedisClusterServers, seed: Int = 0) -> (RedisClusterClient, Task<Void, Never>) {
        var configuration = RedisClusterClient.Configuration(seeds: [ClusterSlotMap.Node(host: "127.0.0.1", port: servers.ports[seed])])
        configuration.retryDeadline = .seconds(20)
        let client = RedisClusterClient(configuration: configuration, logger: Logger(label: "cluster-test"))
        return (client, Task { await client.run() })
    }

    @Test func keysSpreadOverTheMastersAndFollowMovesAndFailovers() async throws {
        try await withRedisCluster { servers in
            let (client, task) = Self.client(servers, seed: 4)
            defer { task.cancel() }
            await client.waitUntilConnected()
            #expect(client.slotMap.masters.count == 3)
            // Pipelined writes to many slots, read back.
            let writes = (0..<300).map { client.enqueue(["SET", RESPArgument("key:\($0)"), RESPArgument("\($0)")]) }
            for write in writes { #expect(try await write.get() == .simpleString("OK")) }
            for n in 0..<300 { #expect(try await client.send(["GET", RESPArgument("key:\(n)")]).string == "\(n)") }
            var perMaster: [Int] = []
            for port in try await servers.masters() {
                let connection = try await RedisConnection.local(port: port)
                perMaster.append(Int(try await connection.send(["DBSIZE"]).int ?? 0))
                await connection.close()
            }
            #expect(perMaster.count == 3 && perMaster.allSatisfy { $0 > 0 } && perMaster.reduce(0, +) == 300)
            // A script runs on the master of its keys' slot.
            let script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[2])"
            #expect(try await client.send(["EVAL", RESPArgument(script), "2", "{t}:a", "{t}:b", "v"]) == .null)
            #expect(try await client.send(["GET", "{t}:a"]).string == "v")

            // Slots moved behind the client's back: MOVED, a fresh map, the same answers.
            let masters = try await servers.masters()
            let source = masters[0], target = masters[1]
            let ids = try await [source, target].asyncMap { port in
                let connection = try await RedisConnection.local(port: port)
                defer { Task { await connection.close() } }
                return try await connection.send(["CLUSTER", "MYID"]).string ?? ""
            }
            try servers.cli([
                "--cluster", "reshard", "127.0.0.1:\(source)", "--cluster-from", ids[0], "--cluster-to", ids[1], "--cluster-slots", "2000",
                "--cluster-yes",
            ])
            for n in 0..<300 { #expect(try await client.send(["GET", RESPArgument("key:\(n)")]).string == "\(n)") }

            // A master killed: its replica takes over (node timeout 2 s) while commands are retried.
            try await servers.kill9(port: target)
            for n in 0..<300 { #expect(try await client.send(["GET", RESPArgument("key:\(n)")]).string == "\(n)") }
            try await eventually("the map to list the promoted replica") { !client.slotMap.masters.contains { $0.port == target } }
            await client.stop()
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
