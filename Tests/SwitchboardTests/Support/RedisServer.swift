import Foundation
import Logging
import RESP

/// A real redis-server on a free port, as a subprocess of the test.
final class RedisServer: @unchecked Sendable {
    let port: Int
    private var process: Process?

    init(port: Int) {
        self.port = port
    }

    static func start() async throws -> RedisServer {
        let server = RedisServer(port: try await freePorts(1))
        try await server.start()
        return server
    }

    var url: String { "redis://127.0.0.1:\(port)" }
    var configuration: RedisClient.Configuration { RedisClient.Configuration(host: "127.0.0.1", port: port) }

    /// Starts (or restarts) the server on the same port and waits until it answers PING.
    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.executable())
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        try await eventually("redis-server to answer") {
            guard let connection = try? await RedisConnection.connect(host: "127.0.0.1", port: self.port) else { return false }
            defer { Task { await connection.close() } }
            return (try? await connection.send(["PING"])) == .simpleString("PONG")
        }
    }

    /// Stops the server with SIGKILL and waits for it to exit. (SIGTERM may never arrive: the
    /// child inherits the signal mask of the test thread that spawned it, which can block it.
    /// The data is throwaway, so nothing is lost.)
    func stop() async throws {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        try await eventually("redis-server to exit") { !process.isRunning }
        self.process = nil
    }

    static func executable() throws -> String {
        for path in ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw RedisMissing()
    }

    struct RedisMissing: Error, CustomStringConvertible {
        var description: String { "redis-server is not installed (apt-get install -y redis-server); .ci/run installs it" }
    }
}

/// Runs `body` with a fresh redis-server and always stops it.
func withRedis(_ body: (RedisServer) async throws -> Void) async throws {
    let server = try await RedisServer.start()
    do {
        try await body(server)
    } catch {
        try? await server.stop()
        throw error
    }
    try await server.stop()
}
