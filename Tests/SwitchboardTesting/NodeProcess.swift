import Foundation
import SwitchboardClient
import Synchronization

/// A `switchboard serve` process, started and stopped by the test.
package final class NodeProcess: Sendable {
    package let nodeID: String
    package let port: Int
    package let arguments: [String]
    private let process = Mutex<Process?>(nil)
    private let output = Mutex("")

    /// Variables added to the test's environment for the process.
    package let environment: [String: String]

    package init(nodeID: String, port: Int, arguments: [String], environment: [String: String] = [:]) {
        self.nodeID = nodeID
        self.port = port
        self.arguments = arguments
        self.environment = environment
    }

    /// Starts the node and waits for its `listening on` line.
    package static func start(
        _ nodeID: String, redis: String, heartbeat: Int = 5, logLevel: String = "warning", options: [String] = []
    ) async throws -> NodeProcess {
        try await start(
            nodeID, ["serve", "--node-id", nodeID, "--redis", redis, "--heartbeat", "\(heartbeat)", "--log-level", logLevel] + options)
    }

    /// Any `switchboard` subcommand with these arguments, on a free port (or `port`). A port
    /// taken in the meantime makes the process exit: then another is tried.
    package static func start(
        _ nodeID: String, _ arguments: [String], port: Int? = nil, environment: [String: String] = [:]
    ) async throws -> NodeProcess {
        for attempt in 1...3 {
            let chosen = if let port { port } else { try await freePorts(1) }
            let node = NodeProcess(
                nodeID: nodeID, port: chosen, arguments: arguments + ["--port", "\(chosen)"], environment: environment)
            do {
                try await node.start()
                return node
            } catch is ExitedEarly where port == nil && attempt < 3 {
                continue
            }
        }
        throw ExitedEarly(output: "")
    }

    package struct ExitedEarly: Error, CustomStringConvertible {
        package let output: String
        package var description: String { "the process exited before listening: \(output)" }
    }

    package func start() async throws {
        let process = Process()
        process.executableURL = switchboardExecutable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, given in given }
        }
        let pipe = Pipe()
        process.standardOutput = pipe
        // Not the test's own stderr: a stray child must never hold the runner's output open.
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            self.output.withLock { $0 += text }
        }
        output.withLock { $0 = "" }
        try process.run()
        self.process.withLock { $0 = process }
        // A debug build starting while the full suite loads both cores once took more than 10 s.
        try await eventually("\(nodeID) to listen", timeout: .seconds(30)) {
            self.output.withLock { $0.contains("listening on") } || !process.isRunning
        }
        guard process.isRunning else { throw ExitedEarly(output: printed) }
    }

    /// Up to 30 s, as for listening: a mesh node is ready once it has joined its peers, and
    /// with every suite loading both cores that once took more than 10 s (seen in CI).
    package func waitUntilReady() async throws {
        do {
            try await eventually("\(nodeID) to be ready", timeout: .seconds(30)) {
                (try? await SwitchboardTesting.http("GET", self.http("/readyz")).status) == 200
            }
        } catch is TimedOut {
            // What the node said is what tells why (twice seen in CI with a mesh node).
            let readyz = (try? await SwitchboardTesting.http("GET", self.http("/readyz")).body) ?? "no answer"
            throw TimedOut(what: "\(nodeID) to be ready (/readyz: \(readyz)); it printed:\n\(printed.suffix(3000))")
        }
    }

    /// What the process printed (standard output and error).
    package var printed: String { output.withLock { $0 } }

    package var isRunning: Bool { process.withLock { $0?.isRunning ?? false } }

    package var pid: Int32? { process.withLock { $0?.processIdentifier } }

    /// Resident memory in bytes and open file descriptors, from /proc.
    package func resources() throws -> (rss: Int, files: Int) {
        guard let pid else { return (0, 0) }
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        let files = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        return (kilobytes * 1024, files)
    }

    package func ws(_ query: String) -> String { "ws://127.0.0.1:\(port)/ws?\(query)" }
    package func http(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    package func connect(user: String) async throws -> TestClient {
        try await TestClient(SwitchboardClient.connect(to: ws("user=\(user)")))
    }

    /// The value of a metric in this node's /metrics.
    package func metric(_ name: String) async throws -> Double {
        let text = try await SwitchboardTesting.http("GET", http("/metrics")).body
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.split(separator: " ").last ?? "") ?? 0
        }
        return 0
    }

    /// kill -9 without waiting, for `defer`: the test process may end before a task would run.
    package func killNow() {
        guard let process = process.withLock({ $0 }), process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
    }

    /// kill -9: the node dies without a word.
    package func kill9() async throws {
        guard let process = process.withLock({ $0 }) else { return }
        kill(process.processIdentifier, SIGKILL)
        try await eventually("\(nodeID) to die") { !process.isRunning }
    }

    /// SIGSTOP: the process freezes; its sockets stay open but it answers nothing.
    package func freeze() {
        guard let process = process.withLock({ $0 }) else { return }
        kill(process.processIdentifier, SIGSTOP)
    }

    /// SIGCONT: a frozen process runs again.
    package func thaw() {
        guard let process = process.withLock({ $0 }) else { return }
        kill(process.processIdentifier, SIGCONT)
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    @discardableResult
    package func terminate() async throws -> Int32 {
        guard let process = process.withLock({ $0 }), process.isRunning else { return 0 }
        process.terminate()
        try await eventually("\(nodeID) to exit", timeout: .seconds(20)) { !process.isRunning }
        return process.terminationStatus
    }
}

/// A redis-server and `count` nodes on it; everything is stopped afterwards.
package func withRedisNodes(
    _ count: Int = 3, heartbeat: Int = 5, options: [String] = [], _ body: (RedisServer, [NodeProcess]) async throws -> Void
) async throws {
    try await withRedis { redis in
        var nodes: [NodeProcess] = []
        do {
            for index in 1...count {
                nodes.append(try await NodeProcess.start("n\(index)", redis: redis.url, heartbeat: heartbeat, options: options))
            }
            for node in nodes { try await node.waitUntilReady() }
            try await body(redis, nodes)
        } catch {
            for node in nodes { try? await node.kill9() }
            throw error
        }
        for node in nodes { try? await node.kill9() }
    }
}
