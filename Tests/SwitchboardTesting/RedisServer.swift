import Foundation
import Logging
import NIOCore
import RESP

/// A real redis-server on a free port, as a subprocess of the test.
package final class RedisServer: @unchecked Sendable {
    package let port: Int
    private var process: Process?

    package init(port: Int) {
        self.port = port
    }

    package static func start() async throws -> RedisServer {
        let server = RedisServer(port: try await freePorts(1))
        try await server.start()
        return server
    }

    package var url: String { "redis://127.0.0.1:\(port)" }
    package var configuration: RedisClient.Configuration {
        var configuration = RedisClient.Configuration(host: "127.0.0.1", port: port)
        configuration.connectTimeout = .seconds(10)  // see `RedisConnection.local`
        return configuration
    }

    /// Starts (or restarts) the server on the same port and waits until it answers PING.
    package func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.executable())
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        try await Self.waitUntilAnswering(port: port)
    }

    /// Waits until a redis-server on `port` answers PING.
    package static func waitUntilAnswering(port: Int) async throws {
        try await eventually("redis-server \(port) to answer", timeout: .seconds(20)) {
            guard let connection = try? await RedisConnection.local(port: port) else { return false }
            defer { Task { await connection.close() } }
            return (try? await connection.send(["PING"])) == .simpleString("PONG")
        }
    }

    /// Stops the server with SIGKILL and waits for it to exit. (SIGTERM may never arrive: the
    /// child inherits the signal mask of the test thread that spawned it, which can block it.
    /// The data is throwaway, so nothing is lost.)
    package func stop() async throws {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        try await eventually("redis-server to exit") { !process.isRunning }
        self.process = nil
    }

    package static func executable() throws -> String {
        for path in ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw RedisMissing()
    }

    package struct RedisMissing: Error, CustomStringConvertible {
        package var description: String { "redis-server is not installed (apt-get install -y redis-server); .ci/run installs it" }
    }
}

/// Runs `body` with a fresh redis-server and always stops it.
package func withRedis(_ body: (RedisServer) async throws -> Void) async throws {
    let server = try await RedisServer.start()
    do {
        try await body(server)
    } catch {
        try? await server.stop()
        throw error
    }
    try await server.stop()
}

extension RedisConnection {
    /// A test's own connection to a local redis-server. The connect timeout is generous: on a
    /// fully loaded CI machine a plain connect once took over 2 s, and that is not what a test is
    /// about.
    package static func local(port: Int, commandTimeout: TimeAmount = .seconds(5)) async throws -> RedisConnection {
        try await connect(host: "127.0.0.1", port: port, connectTimeout: .seconds(10), commandTimeout: commandTimeout)
    }
}
