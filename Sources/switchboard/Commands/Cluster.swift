import ArgumentParser
import EmbeddedBackplane
import Foundation
import Logging
import ServiceLifecycle
import SwitchboardServer

struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run N nodes in one process, joined by the embedded backplane (no outside service).")

    @Option(help: "How many nodes (default 3).") var nodes: Int?
    @Option(help: "Port of node n1; node i listens on base-port + i - 1 (default 8080).") var basePort: Int?
    @Option(help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "Seconds between server pings (default 25).") var heartbeat: Int?
    @Option(help: "Largest client message in bytes (default 65536).") var maxFrame: Int?
    @Option(help: "Protects /api/* with Authorization: Bearer KEY.") var apiKey: String?
    @Option(help: "HS256 secret for client tokens.") var jwtSecret: String?
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let count = try Environment.int(nodes, "nodes", default: 3)
        guard (1...64).contains(count) else { throw ValidationError("--nodes must be between 1 and 64") }
        let firstPort = try Environment.int(basePort, "base-port", default: 8080)
        let logger = try logging.bootstrap()
        let cluster = EmbeddedCluster()
        var services: [any Service] = []
        for index in 1...count {
            var configuration = NodeConfiguration(nodeID: "n\(index)")
            configuration.host = Environment.string(host, "host") ?? configuration.host
            configuration.port = firstPort + index - 1
            configuration.apiKey = try Environment.secret(apiKey, "api-key")
            configuration.jwtSecret = try Environment.secret(jwtSecret, "jwt-secret")
            configuration.heartbeatSeconds = try Environment.int(heartbeat, "heartbeat", default: configuration.heartbeatSeconds)
            configuration.maxFrameBytes = try Environment.int(maxFrame, "max-frame", default: configuration.maxFrameBytes)
            try checkLimits(configuration)
            if index == 1 { warnIfOpen(configuration, logger: logger) }
            let id = configuration.nodeID
            services += try SwitchboardNode(configuration: configuration, backplane: cluster.backplane(), logger: logger) {
                announce("listening on \($0) (node \(id))")
            }.services
        }
        try await runUntilSignalled(services, logger: logger)
    }
}
