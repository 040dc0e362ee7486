import EmbeddedBackplane
import Logging
import ServiceLifecycle
import SwitchboardClient
import SwitchboardServer

/// N real nodes in this process on free ports, joined by the embedded backplane.
struct TestCluster {
    let embedded: EmbeddedCluster
    let nodes: [SwitchboardNode]
    let ports: [Int]
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    static func start(nodes count: Int = 3, configure: (inout NodeConfiguration) -> Void = { _ in }) async throws -> TestCluster {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let embedded = EmbeddedCluster()
        var nodes: [SwitchboardNode] = []
        for index in 1...count {
            var configuration = NodeConfiguration(nodeID: "n\(index)")
            configuration.port = 0
            configure(&configuration)
            nodes.append(SwitchboardNode(configuration: configuration, backplane: embedded.backplane(), logger: logger))
        }
        let group = ServiceGroup(services: nodes.flatMap(\.services), logger: logger)
        let task = Task { try await group.run() }
        var ports: [Int] = []
        for node in nodes { ports.append(await node.listening()) }
        return TestCluster(embedded: embedded, nodes: nodes, ports: ports, group: group, task: task)
    }

    /// `ws://` URL of node `index` (0-based), with `query` appended.
    func ws(_ index: Int, _ query: String = "") -> String {
        "ws://127.0.0.1:\(ports[index])/ws" + (query.isEmpty ? "" : "?" + query)
    }

    func http(_ index: Int, _ path: String) -> String {
        "http://127.0.0.1:\(ports[index])\(path)"
    }

    func connect(_ index: Int, user: String) async throws -> TestClient {
        try await TestClient(SwitchboardClient.connect(to: ws(index, "user=\(user)")))
    }

    /// Drains every node (as SIGTERM would) and waits for them to stop.
    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }
}

/// Runs `body` against a fresh cluster and always stops it.
func withCluster(
    nodes: Int = 3, configure: (inout NodeConfiguration) -> Void = { _ in },
    _ body: (TestCluster) async throws -> Void
) async throws {
    let cluster = try await TestCluster.start(nodes: nodes, configure: configure)
    do {
        try await body(cluster)
    } catch {
        try? await cluster.stop()
        throw error
    }
    try await cluster.stop()
}
