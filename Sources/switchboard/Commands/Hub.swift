import ArgumentParser
import Foundation
import Logging
import SwitchboardHub

struct Hub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a cluster hub: nodes started with --hub relay cross-node traffic through it.")

    private static let defaults = HubConfiguration(secret: "defaults")

    @Option(help: "Address to listen on.") var host = Self.defaults.host
    @Option(help: "Port to listen on.") var port = Self.defaults.port
    @Option(help: "Shared secret nodes must present (required).") var clusterSecret: String?
    @Option(help: "Seconds between pings to nodes; a node silent for two is dropped.") var heartbeat = Self.defaults.heartbeatSeconds
    @Option(help: "How /api/assign picks a node: fewest-connections or round-robin.") var assign = Self.defaults.assign.rawValue
    @Option(help: "Seconds a connection may take to send a complete request.") var handshakeTimeout = Self.defaults.handshakeTimeoutSeconds
    @Option(help: "Accepted sockets that have sent nothing yet, at most.") var maxPendingHandshakes = Self.defaults.maxPendingHandshakes
    @OptionGroup var history: HistoryOptions
    @OptionGroup var logging: LoggingOptions
    @OptionGroup var configFile: ConfigFileOptions

    func run() async throws {
        guard let secret = clusterSecret else {
            throw ValidationError("--cluster-secret is required: the hub admits only nodes that present it")
        }
        let logger = try logging.bootstrap()
        var configuration = HubConfiguration(secret: secret)
        configuration.host = host
        configuration.port = port
        configuration.heartbeatSeconds = heartbeat
        configuration.handshakeTimeoutSeconds = handshakeTimeout
        configuration.maxPendingHandshakes = maxPendingHandshakes
        configuration.history = try history.policy()
        guard configuration.heartbeatSeconds >= 1, configuration.handshakeTimeoutSeconds >= 1, configuration.maxPendingHandshakes >= 1
        else {
            throw ValidationError("--heartbeat, --handshake-timeout and --max-pending-handshakes must be at least 1")
        }
        guard let policy = HubConfiguration.AssignPolicy(rawValue: assign) else {
            throw ValidationError("--assign must be fewest-connections or round-robin")
        }
        configuration.assign = policy
        try await runUntilSignalled(
            [HubServer(configuration: configuration, logger: logger) { announce("listening on \($0) (hub)") }.service], logger: logger)
    }
}
