import EmbeddedBackplane
import Logging
import ServiceLifecycle
import SwitchboardClient
import SwitchboardCore
import SwitchboardServer

/// N real nodes in this process on free ports, joined by the embedded backplane.
package struct TestCluster {
    package let embedded: EmbeddedCluster
    package let nodes: [SwitchboardNode]
    package let ports: [Int]
    /// One service group per node, so that a test can stop one node alone.
    private let groups: [ServiceGroup]
    private let tasks: [Task<Void, any Error>]

    package static func start(
        nodes count: Int = 3, history: HistoryPolicy = .standard, configure: (inout NodeConfiguration) -> Void = { _ in },
        backplane: (EmbeddedCluster) -> any Backplane = { $0.backplane() }
    ) async throws -> TestCluster {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let embedded = EmbeddedCluster(history: history)
        var nodes: [SwitchboardNode] = []
        for index in 1...count {
            var configuration = NodeConfiguration(nodeID: "n\(index)")
            configuration.port = 0
            configure(&configuration)
            nodes.append(try SwitchboardNode(configuration: configuration, backplane: backplane(embedded), logger: logger))
        }
        let groups = nodes.map { ServiceGroup(services: $0.services, logger: logger) }
        let tasks = groups.map { group in Task { try await group.run() } }
        var ports: [Int] = []
        for node in nodes { ports.append(await node.listening()) }
        // Joined too: a client that connects before its node has joined the cluster is refused.
        try await eventually("the nodes to join") { nodes.allSatisfy(\.isReady) }
        return TestCluster(embedded: embedded, nodes: nodes, ports: ports, groups: groups, tasks: tasks)
    }

    /// `ws://` URL of node `index` (0-based), with `query` appended.
    package func ws(_ index: Int, _ query: String = "") -> String {
        "ws://127.0.0.1:\(ports[index])/ws" + (query.isEmpty ? "" : "?" + query)
    }

    package func http(_ index: Int, _ path: String) -> String {
        "http://127.0.0.1:\(ports[index])\(path)"
    }

    package func connect(_ index: Int, user: String) async throws -> TestClient {
        try await TestClient(SwitchboardClient.connect(to: ws(index, "user=\(user)")))
    }

    /// Drains every node (as SIGTERM would) and waits for them to stop.
    package func stop() async throws {
        for index in nodes.indices { await groups[index].triggerGracefulShutdown() }
        for task in tasks { try await task.value }
    }

    /// Starts draining node `index` and returns at once.
    package func beginStopping(_ index: Int) async {
        await groups[index].triggerGracefulShutdown()
    }

    /// Drains node `index` and waits until it has stopped.
    package func stopNode(_ index: Int) async throws {
        await groups[index].triggerGracefulShutdown()
        try await tasks[index].value
    }
}

/// Runs `body` against a fresh cluster and always stops it.
package func withCluster(
    nodes: Int = 3, history: HistoryPolicy = .standard, configure: (inout NodeConfiguration) -> Void = { _ in },
    backplane: (EmbeddedCluster) -> any Backplane = { $0.backplane() },
    _ body: (TestCluster) async throws -> Void
) async throws {
    let cluster = try await TestCluster.start(nodes: nodes, history: history, configure: configure, backplane: backplane)
    do {
        try await body(cluster)
    } catch {
        try? await cluster.stop()
        throw error
    }
    try await cluster.stop()
}
