import Foundation

/// A private rabbitmq-server (Debian's) on free ports, with its own node name, folders and epmd,
/// started and stopped by the test. Debian's wrapper switches to the `rabbitmq` user when run as
/// root, so the folder is handed to that user; the Erlang VM's PID is read from its PID file,
/// and it, the wrapper and our epmd are stopped by PID.
package final class RabbitMQServer: @unchecked Sendable {
    package let port: Int
    private let distPort: Int
    private let epmdPort: Int
    private let directory: URL
    private var epmd: Process?
    private var wrapper: Process?

    private init(base: Int) {
        port = base
        distPort = base + 1
        epmdPort = base + 2
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-rabbitmq-\(base)-\(UUID().uuidString.prefix(8))")
    }

    package var url: String { "amqp://guest:guest@127.0.0.1:\(port)" }

    package static func start() async throws -> RabbitMQServer {
        let server = try await reserve()
        try await server.start()
        return server
    }

    /// A broker on free ports, not started yet: for a node that starts before its broker.
    package static func reserve() async throws -> RabbitMQServer {
        RabbitMQServer(base: try await freePorts(3))
    }

    /// Runs `rabbitmqctl` against this broker (its node name, epmd and cookie); returns what it printed.
    @discardableResult
    package func control(_ arguments: [String]) throws -> String {
        try runTool(
            "/usr/sbin/rabbitmqctl", ["-n", "sb\(port)@localhost"] + arguments,
            environment: ["ERL_EPMD_PORT": "\(epmdPort)", "HOME": directory.path, "RABBITMQ_NODENAME": "sb\(port)@localhost"])
    }

    /// Starts (or restarts, with its data) the broker and waits until its AMQP port accepts.
    package func start() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/rabbitmq-server") else { throw Missing() }
        let files = FileManager.default
        try files.createDirectory(at: directory.appendingPathComponent("log"), withIntermediateDirectories: true)
        try Data("[].".utf8).write(to: directory.appendingPathComponent("enabled_plugins"))
        if getuid() == 0 { try runTool("/bin/chown", ["-R", "rabbitmq:rabbitmq", directory.path]) }
        if epmd == nil {
            let epmd = Process()
            epmd.executableURL = URL(fileURLWithPath: "/usr/bin/epmd")
            epmd.arguments = ["-port", "\(epmdPort)", "-address", "127.0.0.1"]
            epmd.standardOutput = FileHandle.nullDevice
            epmd.standardError = FileHandle.nullDevice
            try epmd.run()
            self.epmd = epmd
        }
        let wrapper = Process()
        wrapper.executableURL = URL(fileURLWithPath: "/usr/sbin/rabbitmq-server")
        wrapper.environment = ProcessInfo.processInfo.environment.merging([
            "RABBITMQ_NODENAME": "sb\(port)@localhost", "RABBITMQ_NODE_PORT": "\(port)", "RABBITMQ_DIST_PORT": "\(distPort)",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": "\(epmdPort)", "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": directory.appendingPathComponent("mnesia").path,
            "RABBITMQ_LOG_BASE": directory.appendingPathComponent("log").path,
            "RABBITMQ_ENABLED_PLUGINS_FILE": directory.appendingPathComponent("enabled_plugins").path,
            "RABBITMQ_PID_FILE": directory.appendingPathComponent("pid").path, "HOME": directory.path,
        ]) { $1 }
        wrapper.standardOutput = FileHandle.nullDevice
        wrapper.standardError = FileHandle.nullDevice
        try wrapper.run()
        self.wrapper = wrapper
        // A first start sets up its database: about 6 to 20 s here.
        try await eventually("rabbitmq-server to accept connections", timeout: .seconds(90)) {
            guard wrapper.isRunning else { throw Exited(log: self.log) }
            return Self.accepts(port: self.port)
        }
    }

    /// kill -9 of the Erlang VM (and the wrapper), as a crash would; the data stays for a restart.
    package func kill9() async throws {
        if let pid = vmPID { kill(pid, SIGKILL) }
        if let wrapper { kill(wrapper.processIdentifier, SIGKILL) }
        try await eventually("rabbitmq-server to exit", timeout: .seconds(20)) {
            !(self.wrapper?.isRunning ?? false) && !(self.vmPID.map { kill($0, 0) == 0 } ?? false)
        }
        wrapper = nil
    }

    /// Stops everything it started and removes its folder.
    package func stop() async throws {
        try await kill9()
        if let epmd {
            kill(epmd.processIdentifier, SIGKILL)
            try await eventually("epmd to exit") { !epmd.isRunning }
        }
        epmd = nil
        try? FileManager.default.removeItem(at: directory)
    }

    private var vmPID: pid_t? {
        (try? String(contentsOf: directory.appendingPathComponent("pid"), encoding: .utf8))
            .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    private var log: String {
        let folder = directory.appendingPathComponent("log")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.compactMap { try? String(contentsOf: folder.appendingPathComponent($0), encoding: .utf8) }.joined().suffix(2000)
            .description
    }

    static func accepts(port: Int) -> Bool {
        withLoopbackSocket(port: port) { _ in true } ?? false
    }

    package struct Missing: Error, CustomStringConvertible {
        package var description: String { "rabbitmq-server is not installed (apt-get install -y rabbitmq-server); .ci/run installs it" }
    }

    package struct Exited: Error, CustomStringConvertible {
        let log: String
        package var description: String { "rabbitmq-server exited while starting; its log ends with:\n\(log)" }
    }
}

/// Runs `body` with a fresh private broker and always stops it.
package func withRabbitMQ(_ body: (RabbitMQServer) async throws -> Void) async throws {
    let server = try await RabbitMQServer.start()
    do {
        try await body(server)
    } catch {
        try? await server.stop()
        throw error
    }
    try await server.stop()
}
