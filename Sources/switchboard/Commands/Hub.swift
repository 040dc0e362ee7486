import ArgumentParser
import Foundation
import Logging
import SwitchboardHub

struct Hub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a cluster hub: nodes started with --hub relay cross-node traffic through it.")

    @Option(help: "Address to listen on (default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on (default 9000).") var port: Int?
    @Option(help: "Shared secret nodes must present (required).") var clusterSecret: String?
    @Option(help: "Seconds between pings to nodes; a node silent for two is dropped (default 25).") var heartbeat: Int?
    @Option(help: "How /api/assign picks a node: fewest-connections (default) or round-robin.") var assign: String?
    @Option(help: "Seconds a connection may take to send a complete request (default 10).") var handshakeTimeout: Int?
    @Option(help: "Accepted sockets that have sent nothing yet, at most (default 1000).") var maxPendingHandshakes: Int?
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        guard let secret = try Environment.secret(clusterSecret, "cluster-secret") else {
            throw ValidationError("--cluster-secret is required: the hub admits only nodes that present it")
        }
        let logger = try logging.bootstrap()
        var configuration = HubConfiguration(secret: secret)
        configuration.host = Environment.string(host, "host") ?? configuration.host
        configuration.port = try Environment.int(port, "port", default: configuration.port)
        configuration.heartbeatSeconds = try Environment.int(heartbeat, "heartbeat", default: configuration.heartbeatSeconds)
        configuration.handshakeTimeoutSeconds = try Environment.int(
            handshakeTimeout, "handshake-timeout", default: configuration.handshakeTimeoutSeconds)
        configuration.maxPendingHandshakes = try Environment.int(
            maxPendingHandshakes, "max-pending-handshakes", default: configuration.maxPendingHandshakes)
        guard configuration.heartbeatSeconds >= 1, configuration.handshakeTimeoutSeconds >= 1, configuration.maxPendingHandshakes >= 1
        else {
            throw ValidationError("--heartbeat, --handshake-timeout and --max-pending-handshakes must be at least 1")
        }
        if let name = Environment.string(assign, "assign") {
            guard let policy = HubConfiguration.AssignPolicy(rawValue: name) else {
                throw ValidationError("--assign must be fewest-connections or round-robin")
            }
            configuration.assign = policy
        }
        try await runUntilSignalled(
            [HubServer(configuration: configuration, logger: logger) { announce("listening on \($0) (hub)") }.service], logger: logger)
    }
}
