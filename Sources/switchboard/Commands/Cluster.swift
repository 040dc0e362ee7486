import ArgumentParser
import EmbeddedBackplane
import Foundation
import Logging
import ServiceLifecycle
import SwitchboardServer

struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run N nodes in one process, joined by the embedded backplane (no outside service).")

    @Option(help: "How many nodes (1 to 64).") var nodes = 3
    @Option(help: "Port of node n1; node i listens on base-port + i - 1.") var basePort = 8080
    @OptionGroup var node: NodeOptions
    @OptionGroup var logging: LoggingOptions
    @OptionGroup var configFile: ConfigFileOptions

    func run() async throws {
        guard (1...64).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 64") }
        let logger = try logging.bootstrap()
        let cluster = EmbeddedCluster(history: try node.history.policy())
        var services: [any Service] = []
        for index in 1...nodes {
            let configuration = try node.configuration(nodeID: "n\(index)", port: basePort + index - 1)
            if index == 1 { warnIfOpen(configuration, logger: logger) }
            let id = configuration.nodeID
            services += try SwitchboardNode(configuration: configuration, backplane: cluster.backplane(), logger: logger) {
                announce("listening on \($0) (node \(id))")
            }.services
        }
        try await runUntilSignalled(services, logger: logger)
    }
}
