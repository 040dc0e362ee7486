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

    /// A user's online/offline changes are serialised per user, not per node: a change to one
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

    /// A user's connections on one node: one is held alone, more in a list; a message to the
    /// user reaches each that is left, and the user is offline only when the last one goes.
    @Test func aUsersConnectionsOnOneNodeComeAndGoInAnyOrder() async throws {
        let (cluster, nodes) = try await makeNodes(2)
        let connections = (0..<3).map { _ in Endpoint("alice") }
        for connection in connections { try await nodes[0].connect(connection) }
        #expect(nodes[0].connectionCount(of: "alice") == 3)
        func messages(_ endpoint: Endpoint) -> Int { endpoint.events.filter { if case .message = $0 { true } else { false } }.count }

        try await nodes[1].route(envelope(.user("alice")))
        #expect(connections.map(messages) == [1, 1, 1])
        await nodes[0].disconnect(connections[1])
        try await nodes[1].route(envelope(.user("alice")))
        #expect(connections.map(messages) == [2, 1, 2])
        await nodes[0].disconnect(connections[0])
        #expect(nodes[0].connectionCount(of: "alice") == 1)
        try await nodes[1].route(envelope(.user("alice")))
        #expect(connections.map(messages) == [2, 1, 3])
        #expect(try await nodes[1].backplane.nodes(of: "alice") == ["n1"])
        await nodes[0].disconnect(connections[2])
        #expect(nodes[0].connectionCount(of: "alice") == 0)
        #expect(try await nodes[1].backplane.nodes(of: "alice").isEmpty)
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

/// A room's joins and leaves go to the backplane as a group commit (`RoomCommits`): one batch
/// out at a time per room, in order, with what came meanwhile in the next batch.
@Suite("Room membership batches")
struct RoomBatchTests {
    typealias Endpoint = RouterTests.Endpoint

    /// The embedded backplane, with each `roomChanged` batch recorded and held until released;
    /// a released batch may be made to fail.
    final class GatedBackplane: Backplane {
        struct Refused: Error {}
        private struct Gate {
            var batches: [[RoomChange]] = []
            /// Whether each batch was asked to read the room's top.
            var reads: [Bool] = []
            var held: [CheckedContinuation<Bool, Never>] = []
        }
        let base: EmbeddedBackplane
        private let gate = Mutex(Gate())

        init(_ base: EmbeddedBackplane) { self.base = base }

        var batches: [[RoomChange]] { gate.withLock { $0.batches } }
        var reads: [Bool] { gate.withLock { $0.reads } }
        var heldCount: Int { gate.withLock { $0.held.count } }

        /// Lets the oldest held batch through, or fails it.
        func release(failing: Bool = false) {
            let next = gate.withLock { $0.held.removeFirst() }
            next.resume(returning: failing)
        }

        func roomChanged(_ room: String, _ changes: [RoomChange]) async throws {
            let fails = await withCheckedContinuation { continuation in
                gate.withLock { gate in
                    gate.batches.append(changes)
                    gate.held.append(continuation)
                }
            }
            if fails { throw Refused() }
            for change in changes {
                switch change {
                case .joined(let user): try await base.roomJoined(room, user: user)
                case .left(let user): try await base.roomLeft(room, user: user)
                }
            }
        }

        /// Asked to read, a batch answers with a top of its own: offset = its number.
        func roomChanged(_ room: String, _ changes: [RoomChange], thenRead: Bool) async throws -> StreamRead? {
            let number = gate.withLock { gate in
                gate.reads.append(thenRead)
                return gate.reads.count
            }
            try await roomChanged(room, changes)
            return thenRead ? StreamRead(top: StreamPosition(epoch: "e", offset: Int64(number)), messages: []) : nil
        }

        func publish(_ envelope: Envelope) async throws { try await base.publish(envelope) }
        func run() async { await base.run() }
        func join(node: NodeInfo, receiver: any ClusterReceiver) async throws { try await base.join(node: node, receiver: receiver) }
        func leave() async { await base.leave() }
        func userOnline(_ user: String) async throws { try await base.userOnline(user) }
        func userOffline(_ user: String) async throws { try await base.userOffline(user) }
        func roomJoined(_ room: String, user: String) async throws { try await roomChanged(room, [.joined(user: user)]) }
        func roomLeft(_ room: String, user: String) async throws { try await roomChanged(room, [.left(user: user)]) }
        func members(of room: String) async throws -> [String] { try await base.members(of: room) }
        func nodes(of user: String) async throws -> [String] { try await base.nodes(of: user) }
        func nodes() async throws -> [NodeStatus] { try await base.nodes() }
        func report(_ load: NodeLoad) async { await base.report(load) }
    }

    let cluster = EmbeddedCluster()

    func makeRouter() async throws -> (MessageRouter<RouterTests.Collecting>, GatedBackplane) {
        let backplane = GatedBackplane(cluster.backplane())
        let router = MessageRouter(backplane: backplane, delivery: RouterTests.Collecting())
        try await backplane.join(node: NodeInfo(id: "n1", url: "ws://n1"), receiver: router)
        return (router, backplane)
    }

    func connected(_ router: MessageRouter<RouterTests.Collecting>, _ users: [String]) async throws -> [Endpoint] {
        var endpoints: [Endpoint] = []
        for user in users {
            let endpoint = Endpoint(user)
            try await router.connect(endpoint)
            endpoints.append(endpoint)
        }
        return endpoints
    }

    /// Starts a join and returns once it is made here and queued (the router counts it a member
    /// at once; the call returns when its batch is answered).
    func startJoin(_ router: MessageRouter<RouterTests.Collecting>, _ endpoint: Endpoint) async throws -> Task<Bool, any Error> {
        let task = Task { try await router.join(endpoint, room: "r") }
        try await eventually("the join of \(endpoint.user) is queued") { router.isMember(endpoint, of: "r") }
        return task
    }

    /// `startJoin`, asking for the room's top.
    func startJoinReadingTop(
        _ router: MessageRouter<RouterTests.Collecting>, _ endpoint: Endpoint
    ) async throws -> Task<StreamRead?, any Error> {
        let task = Task { try await router.join(endpoint, room: "r", readingTop: true).top }
        try await eventually("the join of \(endpoint.user) is queued") { router.isMember(endpoint, of: "r") }
        return task
    }

    /// A batch reads the room's top once, after its changes, when any join in it asks, and hands
    /// that top to each join that asked; a join whose batch changed nothing gets none (its
    /// session reads the top itself).
    @Test(.timeLimit(.minutes(1))) func aBatchReadsTheTopOnceForTheJoinsThatAsk() async throws {
        let (router, backplane) = try await makeRouter()
        let endpoints = try await connected(router, ["u0", "u1", "u2", "u3", "u0"])
        let first = try await startJoin(router, endpoints[0])
        try await eventually("the first batch is out") { backplane.heldCount == 1 }
        let asking1 = try await startJoinReadingTop(router, endpoints[1])
        let quiet = try await startJoin(router, endpoints[2])
        let asking3 = try await startJoinReadingTop(router, endpoints[3])
        backplane.release()
        _ = try await first.value
        try await eventually("the second batch is out") { backplane.heldCount == 1 }
        backplane.release()
        #expect(try await asking1.value == StreamRead(top: StreamPosition(epoch: "e", offset: 2), messages: []))
        #expect(try await asking3.value == StreamRead(top: StreamPosition(epoch: "e", offset: 2), messages: []))
        #expect(try await quiet.value)
        #expect(backplane.reads == [false, true])
        // u0's second connection changes no presence: no batch goes out, so no top comes back.
        #expect(try await router.join(endpoints[4], room: "r", readingTop: true).top == nil)
        #expect(backplane.reads == [false, true])
    }

    @Test(.timeLimit(.minutes(1))) func joinsWhileABatchIsOutGoTogetherInOrder() async throws {
        let (router, backplane) = try await makeRouter()
        let endpoints = try await connected(router, ["u0", "u1", "u2", "u3", "u1"])
        let first = try await startJoin(router, endpoints[0])
        try await eventually("the first batch is out") { backplane.heldCount == 1 }
        var later: [Task<Bool, any Error>] = []
        for endpoint in endpoints.dropFirst() { later.append(try await startJoin(router, endpoint)) }
        // Nothing more goes out while the first batch is held.
        #expect(backplane.batches == [[.joined(user: "u0")]])
        backplane.release()
        #expect(try await first.value)
        try await eventually("the second batch is out") { backplane.heldCount == 1 }
        // u1's second connection changes no presence: it only waits for the batch.
        #expect(backplane.batches.last == [.joined(user: "u1"), .joined(user: "u2"), .joined(user: "u3")])
        backplane.release()
        for task in later { #expect(try await task.value) }
        #expect(try await backplane.members(of: "r") == ["u0", "u1", "u2", "u3"])

        // Leaves go the same way; the last connection of u1 is the one that tells.
        async let leftA = router.leave(endpoints[1], room: "r")
        async let leftB = router.leave(endpoints[4], room: "r")
        try await eventually("a leave is out") { backplane.heldCount == 1 }
        backplane.release()
        _ = try await (leftA, leftB)
        #expect(backplane.batches.last == [.left(user: "u1")])
        #expect(try await backplane.members(of: "r") == ["u0", "u2", "u3"])
    }

    @Test(.timeLimit(.minutes(1))) func aFailedBatchUndoesItsJoinsAndALaterConnectionJoinsInstead() async throws {
        let (router, backplane) = try await makeRouter()
        let endpoints = try await connected(router, ["u0", "x", "x", "y", "y"])
        let (u0, x1, x2, y1, y2) = (endpoints[0], endpoints[1], endpoints[2], endpoints[3], endpoints[4])
        let first = try await startJoin(router, u0)
        try await eventually("the first batch is out") { backplane.heldCount == 1 }
        let joinX = try await startJoin(router, x1)
        let joinY1 = try await startJoin(router, y1)
        let joinY2 = try await startJoin(router, y2)
        backplane.release()
        _ = try await first.value
        try await eventually("the second batch is out") { backplane.heldCount == 1 }
        #expect(backplane.batches.last == [.joined(user: "x"), .joined(user: "y")])
        // x's second connection arrives while that batch is out, and waits for it.
        let joinX2 = try await startJoin(router, x2)
        backplane.release(failing: true)
        // Everyone in the failed batch hears of it, and none of them is a member any more.
        for task in [joinX, joinY1, joinY2] {
            await #expect(throws: GatedBackplane.Refused.self) { try await task.value }
        }
        #expect(!router.isMember(x1, of: "r") && !router.isMember(y1, of: "r") && !router.isMember(y2, of: "r"))
        // x's second connection is now x's first join here: its batch tells the backplane.
        try await eventually("the third batch is out") { backplane.heldCount == 1 }
        #expect(backplane.batches.last == [.joined(user: "x")])
        backplane.release()
        #expect(try await joinX2.value)
        #expect(try await backplane.members(of: "r") == ["u0", "x"])
        #expect(router.recipients(for: .room("r")).count == 2)
    }
}
