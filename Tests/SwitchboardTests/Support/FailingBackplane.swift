import EmbeddedBackplane
import SwitchboardCore
import Synchronization

/// The embedded backplane, made to fail `publish` on demand: how a node behaves when its
/// cluster layer refuses a message (Redis down, say).
final class FailingBackplane: Backplane {
    struct Unavailable: Error {}

    let base: EmbeddedBackplane
    let failing = Mutex(false)

    init(_ base: EmbeddedBackplane) {
        self.base = base
    }

    func publish(_ envelope: Envelope) async throws {
        if failing.withLock({ $0 }) { throw Unavailable() }
        try await base.publish(envelope)
    }

    func run() async { await base.run() }
    func join(node: NodeInfo, receiver: any ClusterReceiver) async throws { try await base.join(node: node, receiver: receiver) }
    func leave() async { await base.leave() }
    func userOnline(_ user: String) async throws { try await base.userOnline(user) }
    func userOffline(_ user: String) async throws { try await base.userOffline(user) }
    func roomJoined(_ room: String, user: String) async throws { try await base.roomJoined(room, user: user) }
    func roomLeft(_ room: String, user: String) async throws { try await base.roomLeft(room, user: user) }
    func members(of room: String) async throws -> [String] { try await base.members(of: room) }
    func nodes(of user: String) async throws -> [String] { try await base.nodes(of: user) }
    func nodes() async throws -> [NodeStatus] { try await base.nodes() }
    func report(_ load: NodeLoad) async { await base.report(load) }
}
