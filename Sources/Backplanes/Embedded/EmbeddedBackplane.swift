import SwitchboardCore
import Synchronization

/// One node's handle on an `EmbeddedCluster`.
public final class EmbeddedBackplane: Backplane {
    public let cluster: EmbeddedCluster
    private let nodeID = Mutex<String?>(nil)

    init(cluster: EmbeddedCluster) {
        self.cluster = cluster
    }

    private func id() throws -> String {
        guard let id = nodeID.withLock({ $0 }) else { throw EmbeddedClusterError.notJoined }
        return id
    }

    public func join(node: NodeInfo, receiver: any ClusterReceiver) async throws {
        try await cluster.join(node, receiver: receiver)
        nodeID.withLock { $0 = node.id }
    }

    public func leave() async {
        guard let id = nodeID.withLock({ $0 }) else { return }
        await cluster.leave(id)
    }

    public func publish(_ envelope: Envelope) async throws {
        await cluster.publish(envelope, from: try id())
    }

    public func userOnline(_ user: String) async throws {
        await cluster.userOnline(user, on: try id())
    }

    public func userOffline(_ user: String) async throws {
        await cluster.userOffline(user, on: try id())
    }

    public func roomJoined(_ room: String, user: String) async throws {
        await cluster.roomJoined(room, user: user, on: try id())
    }

    public func roomLeft(_ room: String, user: String) async throws {
        await cluster.roomLeft(room, user: user, on: try id())
    }

    public func members(of room: String) async throws -> [String] {
        await cluster.members(of: room)
    }

    public func nodes(of user: String) async throws -> [String] {
        await cluster.nodes(of: user)
    }

    public func nodes() async throws -> [NodeStatus] {
        await cluster.nodes()
    }

    public var history: HistoryPolicy { cluster.history }

    public func read(_ stream: Address, after: Int64?, limit: Int) async throws -> StreamRead {
        guard history.isOn else { throw HistoryError.unsupported }
        return await cluster.read(stream, after: after, limit: limit)
    }

    public func report(_ load: NodeLoad) async {
        guard let id = nodeID.withLock({ $0 }) else { return }
        await cluster.report(load, for: id)
    }
}
