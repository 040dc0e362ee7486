import EmbeddedBackplane
import SwitchboardCore
import SwitchboardTesting
import Synchronization
import Testing

/// The router and the embedded backplane, without sockets.
@Suite("Router and embedded backplane")
struct RouterTests {
    final class Endpoint: LocalEndpoint {
        let user: String
        let received = Mutex<[ClusterEvent]>([])
        init(_ user: String) { self.user = user }
        var events: [ClusterEvent] { received.withLock { $0 } }
    }

    struct Collecting: LocalDelivery {
        func deliver(_ event: ClusterEvent, to endpoints: [Endpoint]) {
            for endpoint in endpoints { endpoint.received.withLock { $0.append(event) } }
        }
    }

    actor Log {
        var items: [Int] = []
        func add(_ item: Int) { items.append(item) }
    }

    /// Membership changes are serialised per user and per room, not per node: a change to one
    /// key waits only for changes to that key, in arrival order.
    @Test(.timeLimit(.minutes(1))) func keyedLocksSerialiseOneKeyAndOverlapOthers() async throws {
        let locks = KeyedAsyncMutex()
        let log = Log()
        let (aHeld, aHeldSignal) = AsyncStream.makeStream(of: Void.self)
        let (bRan, bRanSignal) = AsyncStream.makeStream(of: Void.self)
        let (secondWaits, secondWaitsSignal) = AsyncStream.makeStream(of: Void.self)
        // Holds "a" until a body under "b" has run: with one lock for every key, it never would.
        let first = Task {
            await locks.withLock("a") {
                aHeldSignal.yield()
                var ran = bRan.makeAsyncIterator()
                _ = await ran.next()
                await log.add(1)
            }
        }
        var held = aHeld.makeAsyncIterator()
        _ = await held.next()
        let second = Task {
            secondWaitsSignal.yield()
            await locks.withLock("a") { await log.add(2) }
        }
        var waits = secondWaits.makeAsyncIterator()
        _ = await waits.next()
        await locks.withLock("b") { _ = bRanSignal.yield() }
        await first.value
        await second.value
        #expect(await log.items == [1, 2])
    }

    func makeNodes(_ count: Int) async throws -> (EmbeddedCluster, [MessageRouter<Collecting>]) {
        let cluster = EmbeddedCluster()
        var routers: [MessageRouter<Collecting>] = []
        for index in 1...count {
            let router = MessageRouter(backplane: cluster.backplane(), delivery: Collecting())
            try await router.backplane.join(node: NodeInfo(id: "n\(index)", url: "ws://n\(index)"), receiver: router)
            routers.append(router)
        }
        return (cluster, routers)
    }

    func envelope(_ address: Address, _ id: String = "m") -> Envelope {
        Envelope(id: id, from: "x", address: address, data: RawJSON("1"), timestamp: 0)
    }

    @Test func roomMessagesCrossOnlyToNodesWithSubscribers() async throws {
        let (cluster, nodes) = try await makeNodes(3)
        let subscriber = Endpoint("bob")
        try await nodes[1].connect(subscriber)
        try await nodes[1].join(subscriber, room: "r")
        let before = await cluster.crossings
        try await nodes[0].route(envelope(.room("r")))
        // One crossing: to n2. n3 has no subscriber and gets nothing.
        #expect(await cluster.crossings - before == 1)
        // The cluster keeps history by default: the message arrives numbered.
        #expect(subscriber.events.contains { if case .message(let got) = $0 { got.id == "m" && got.position?.offset == 1 } else { false } })

        try await nodes[0].route(envelope(.room("empty")))
        #expect(await cluster.crossings - before == 1)
        try await nodes[0].route(envelope(.user("bob")))
        #expect(await cluster.crossings - before == 2)
        try await nodes[0].route(envelope(.everyone))
        #expect(await cluster.crossings - before == 4)
    }

    @Test func presenceCountsUsersNotConnections() async throws {
        let (cluster, nodes) = try await makeNodes(2)
        let watcher = Endpoint("w")
        try await nodes[0].connect(watcher)
        try await nodes[0].join(watcher, room: "r")
        let first = Endpoint("alice"), second = Endpoint("alice")
        try await nodes[0].connect(first)
        try await nodes[1].connect(second)
        try await nodes[0].join(first, room: "r")
        try await nodes[1].join(second, room: "r")
        #expect(watcher.events.filter { $0 == .joined(room: "r", user: "alice") }.count == 1)
        #expect(try await nodes[1].backplane.members(of: "r") == ["alice", "w"])
        #expect(try await nodes[1].backplane.nodes(of: "alice") == ["n1", "n2"])

        await nodes[0].disconnect(first)
        #expect(!watcher.events.contains(.left(room: "r", user: "alice")))
        await nodes[1].disconnect(second)
        #expect(watcher.events.filter { $0 == .left(room: "r", user: "alice") }.count == 1)
        #expect(try await nodes[0].isOnline("alice") == false)
        _ = cluster
    }

    @Test func aNodeThatLeavesTakesItsUsersOutOfPresence() async throws {
        let (_, nodes) = try await makeNodes(2)
        let watcher = Endpoint("w"), leaver = Endpoint("z")
        try await nodes[0].connect(watcher)
        try await nodes[0].join(watcher, room: "r")
        try await nodes[1].connect(leaver)
        try await nodes[1].join(leaver, room: "r")
        await nodes[1].backplane.leave()
        #expect(watcher.events.filter { $0 == .left(room: "r", user: "z") }.count == 1)
        #expect(try await nodes[0].backplane.members(of: "r") == ["w"])
        let status = try await nodes[0].backplane.nodes()
        #expect(status.map(\.alive) == [true, false])
    }
}
