import EmbeddedBackplane
import SwitchboardCore
import Synchronization

/// The embedded backplane, made to fail `publish` on demand: how a node behaves when its
/// cluster layer refuses a message (Redis down, say). It can also hold registrations
/// (`userOnline`) until released: a cluster layer that is slow to answer.
package final class FailingBackplane: Backplane {
    package struct Unavailable: Error {}

    package let base: EmbeddedBackplane
    package let failing = Mutex(false)
    /// While true, `userOnline` waits.
    package let holdingRegistrations = Mutex(false)
    /// Registrations that are waiting now.
    package let heldRegistrations = Mutex(0)
    private let released = ConditionSignal()

    package init(_ base: EmbeddedBackplane) {
        self.base = base
    }

    package func publish(_ envelope: Envelope) async throws {
        if failing.withLock({ $0 }) { throw Unavailable() }
        try await base.publish(envelope)
    }

    package func run() async { await base.run() }
    package func join(node: NodeInfo, receiver: any ClusterReceiver) async throws { try await base.join(node: node, receiver: receiver) }
    package func leave() async { await base.leave() }
    package func userOnline(_ user: String) async throws {
        if holdingRegistrations.withLock({ $0 }) {
            heldRegistrations.withLock { $0 += 1 }
            _ = await released.wait { !self.holdingRegistrations.withLock { $0 } }
            heldRegistrations.withLock { $0 -= 1 }
        }
        try await base.userOnline(user)
    }

    package func releaseRegistrations() {
        holdingRegistrations.withLock { $0 = false }
        released.poke()
    }
    package func userOffline(_ user: String) async throws { try await base.userOffline(user) }
    package func roomJoined(_ room: String, user: String) async throws { try await base.roomJoined(room, user: user) }
    package func roomLeft(_ room: String, user: String) async throws { try await base.roomLeft(room, user: user) }
    package func members(of room: String) async throws -> [String] { try await base.members(of: room) }
    package func nodes(of user: String) async throws -> [String] { try await base.nodes(of: user) }
    package func nodes() async throws -> [NodeStatus] { try await base.nodes() }
    package func report(_ load: NodeLoad) async { await base.report(load) }
}
