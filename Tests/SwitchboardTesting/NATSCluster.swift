import Foundation

/// A real NATS cluster: `count` nats-server processes (Debian's) on free ports, each with routes
/// to the others, started and stopped by the test by PID.
package final class NATSCluster: @unchecked Sendable {
    /// Client port and route port of each server.
    package let ports: [(client: Int, route: Int)]
    private var processes: [Process?]

    private init(ports: [(client: Int, route: Int)]) {
        self.ports = ports
        self.processes = Array(repeating: nil, count: ports.count)
    }

    package static func start(_ count: Int = 3) async throws -> NATSCluster {
        var ports: [(Int, Int)] = []
        for _ in 0..<count {
            let base = try await freePorts(2)
            ports.append((base, base + 1))
        }
        let cluster = NATSCluster(ports: ports)
        do {
            for index in 0..<count { try cluster.launch(index) }
            for index in 0..<count { try await cluster.waitUntilRouted(index) }
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    package func url(_ index: Int) -> String { "nats://127.0.0.1:\(ports[index].client)" }

    /// Starts server `index` again (after `kill9`) on its ports.
    package func restart(_ index: Int) async throws {
        try launch(index)
        try await waitUntilRouted(index)
    }

    private func launch(_ index: Int) throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/nats-server") else { throw Missing() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/nats-server")
        let routes = ports.enumerated().filter { $0.offset != index }.map { "nats://127.0.0.1:\($0.element.route)" }
        process.arguments = [
            "-a", "127.0.0.1", "-p", "\(ports[index].client)", "-n", "sb-\(ports[index].client)",
            "-cluster", "nats://127.0.0.1:\(ports[index].route)", "-cluster_name", "sb-test", "-routes", routes.joined(separator: ","),
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        processes[index] = process
    }

    /// Waits until server `index` accepts clients and has a route to every other running server
    /// (its INFO then lists their client URLs).
    private func waitUntilRouted(_ index: Int) async throws {
        let others = processes.enumerated().filter { $0.offset != index && $0.element?.isRunning == true }.count
        try await eventually("nats-server \(index + 1) to accept clients and route to \(others) other(s)", timeout: .seconds(20)) {
            guard self.processes[index]?.isRunning == true else { throw Exited() }
            guard let info = Self.info(port: self.ports[index].client) else { return false }
            let urls = (info["connect_urls"] as? [String]) ?? []
            return urls.count >= others + (others > 0 ? 1 : 0)
        }
    }

    /// kill -9 of server `index`.
    package func kill9(_ index: Int) async throws {
        guard let process = processes[index] else { return }
        kill(process.processIdentifier, SIGKILL)
        try await eventually("nats-server to exit") { !process.isRunning }
        processes[index] = nil
    }

    package func stop() {
        for process in processes.compactMap({ $0 }) {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        processes = processes.map { _ in nil }
    }

    /// The INFO a server sends first, as JSON.
    static func info(port: Int) -> [String: Any]? {
        withLoopbackSocket(port: port) { fd in
            var bytes = [UInt8](repeating: 0, count: 8192)
            let count = read(fd, &bytes, bytes.count)
            guard count > 5 else { return nil }
            let line = bytes[..<count]
            guard line.starts(with: Array("INFO ".utf8)), let end = line.firstIndex(of: 13) else { return nil }
            return (try? JSONSerialization.jsonObject(with: Data(line[5..<end]))) as? [String: Any]
        }
    }

    package struct Missing: Error, CustomStringConvertible {
        package var description: String { "nats-server is not installed (apt-get install -y nats-server); .ci/run installs it" }
    }

    package struct Exited: Error, CustomStringConvertible {
        package var description: String { "nats-server exited while starting" }
    }
}

/// Runs `body` with a fresh three-server NATS cluster and always stops it.
package func withNATSCluster(_ body: (NATSCluster) async throws -> Void) async throws {
    let cluster = try await NATSCluster.start()
    do {
        try await body(cluster)
    } catch {
        cluster.stop()
        throw error
    }
    cluster.stop()
}
