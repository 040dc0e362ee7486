import Foundation
import NIOPosix
import RESP

/// A real Redis Cluster: six redis-server processes (Debian's 7) with `--cluster-enabled yes` on
/// free ports, made into 3 masters with a replica each by `redis-cli --cluster create`, started
/// and stopped by the test by PID. Each server's cluster bus is its port + 10000.
package final class RedisClusterServers: @unchecked Sendable {
    package let ports: [Int]
    private let directory: URL
    private var processes: [Int: Process] = [:]

    private init(ports: [Int]) {
        self.ports = ports
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sb-redis-cluster-\(ports[0])-\(UUID().uuidString.prefix(8))")
    }

    package static func start(nodeTimeoutMilliseconds: Int = 2000) async throws -> RedisClusterServers {
        let base = try await Self.freeClusterPorts(6)
        let servers = RedisClusterServers(ports: Array(base..<(base + 6)))
        do {
            try FileManager.default.createDirectory(at: servers.directory, withIntermediateDirectories: true)
            for port in servers.ports { try servers.launch(port, nodeTimeout: nodeTimeoutMilliseconds) }
            for port in servers.ports { try await RedisServer.waitUntilAnswering(port: port) }
            try runTool(
                "/usr/bin/redis-cli",
                ["--cluster", "create"] + servers.ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "1", "--cluster-yes"])
            try await eventually("the cluster to be ok on every node", timeout: .seconds(30)) {
                for port in servers.ports where try await servers.info(port)["cluster_state"] != "ok" { return false }
                return true
            }
            // A replica that has not synced with its master yet would not take over from it.
            try await eventually("every replica to be in sync with its master", timeout: .seconds(30)) {
                for port in servers.ports {
                    let replication = try await servers.info(port, section: "replication")
                    if replication["role"] == "slave" && replication["master_link_status"] != "up" { return false }
                }
                return true
            }
        } catch {
            servers.stop()
            throw error
        }
        return servers
    }

    /// `redis://127.0.0.1:PORT` of server `index`.
    package func url(_ index: Int) -> String { "redis://127.0.0.1:\(ports[index])" }

    /// The ports of the servers that are masters now.
    package func masters() async throws -> [Int] {
        var masters: [Int] = []
        for port in ports where processes[port] != nil {
            if try await info(port, section: "replication")["role"] == "master" { masters.append(port) }
        }
        return masters
    }

    /// kill -9 of one server.
    package func kill9(port: Int) async throws {
        guard let process = processes.removeValue(forKey: port) else { return }
        kill(process.processIdentifier, SIGKILL)
        try await eventually("redis-server \(port) to exit") { !process.isRunning }
    }

    package func stop() {
        for process in processes.values {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        processes = [:]
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs `redis-cli` with these arguments against the cluster (e.g. `--cluster reshard`).
    package func cli(_ arguments: [String]) throws {
        try runTool("/usr/bin/redis-cli", arguments)
    }

    /// `INFO section` of one server, as fields.
    package func info(_ port: Int, section: String = "cluster") async throws -> [String: String] {
        let connection = try await RedisConnection.local(port: port)
        defer { Task { await connection.close() } }
        let command: [RESPArgument] = section == "cluster" ? ["CLUSTER", "INFO"] : ["INFO", RESPArgument(section)]
        let text = try await connection.send(command).string ?? ""
        var fields: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]).trimmingCharacters(in: .whitespaces) }
        }
        return fields
    }

    private func launch(_ port: Int, nodeTimeout: Int) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try RedisServer.executable())
        process.arguments = [
            "--port", "\(port)", "--bind", "127.0.0.1", "--cluster-enabled", "yes",
            "--cluster-config-file", directory.appendingPathComponent("nodes-\(port).conf").path,
            "--cluster-node-timeout", "\(nodeTimeout)", "--save", "", "--appendonly", "no", "--dir", directory.path,
            "--loglevel", "warning",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        processes[port] = process
    }

    /// Six consecutive free ports whose bus ports (+10000) are free too, below the ephemeral range.
    static func freeClusterPorts(_ count: Int) async throws -> Int {
        for _ in 0..<50 {
            let base = try await freePorts(count)
            guard base + 10000 + count < 32768 else { continue }
            var free = true
            for port in (base + 10000)..<(base + 10000 + count) {
                guard
                    let channel = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .bind(host: "127.0.0.1", port: port).get()
                else {
                    free = false
                    break
                }
                try await channel.close()
            }
            if free { return base }
        }
        throw TimedOut(what: "free ports for a Redis Cluster")
    }
}

/// Runs `body` with a fresh Redis Cluster (3 masters, 3 replicas) and always stops it.
package func withRedisCluster(_ body: (RedisClusterServers) async throws -> Void) async throws {
    let servers = try await RedisClusterServers.start()
    do {
        try await body(servers)
    } catch {
        servers.stop()
        throw error
    }
    servers.stop()
}
