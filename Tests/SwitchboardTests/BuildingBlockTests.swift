import EmbeddedBackplane
import Logging
import SwitchboardCore
import SwitchboardTesting
import Synchronization
import Testing

@testable import SwitchboardServer

/// The pieces every backplane shares, without sockets.
@Suite("Cluster building blocks")
struct BuildingBlockTests {
    @Test func pendingRequestsExpireByDeadlineAndNeverUseIDZero() async throws {
        final class Table: Sendable {
            let requests = Mutex(PendingRequests<CheckedContinuation<Int, any Error>>())
            func withLock<T>(_ body: (inout PendingRequests<CheckedContinuation<Int, any Error>>) -> T) -> T {
                requests.withLock { body(&$0) }
            }
        }
        let table = Table()
        let start = ContinuousClock.now
        // Three waiters, added in turn: one answered, one expired by the sweep, one failed when
        // the link goes.
        var waiting: [Task<Int, any Error>] = []
        for (index, deadline) in [start + .seconds(60), start + .seconds(1), start + .seconds(60)].enumerated() {
            waiting.append(
                Task {
                    try await withCheckedThrowingContinuation { waiter in
                        table.withLock { _ = $0.add(waiter, deadline: deadline) }
                    }
                })
            try await eventually("waiter \(index + 1) added") { table.withLock { $0.count } == index + 1 }
        }
        let (answered, expired, orphaned) = (waiting[0], waiting[1], waiting[2])
        table.withLock { $0.remove(1) }?.resume(returning: 7)
        #expect(try await answered.value == 7)
        #expect(table.withLock { $0.removeExpired(now: start) }.isEmpty, "nothing is due before its deadline")
        for waiter in table.withLock({ $0.removeExpired(now: start + .seconds(2)) }) { waiter.resume(throwing: CancellationError()) }
        await #expect(throws: CancellationError.self) { try await expired.value }
        for waiter in table.withLock({ $0.removeAll() }) { waiter.resume(throwing: CancellationError()) }
        await #expect(throws: CancellationError.self) { try await orphaned.value }
        #expect(table.withLock { $0.count } == 0)
        #expect(table.withLock { $0.remove(1) } == nil, "an answer that comes too late finds no waiter")
    }

    @Test func interestTracksUsersAndRoomsAndDropsEmptyRooms() {
        var interest = Interest()
        #expect(apply(&interest, .online(user: "a")))
        #expect(!apply(&interest, .online(user: "a")))
        #expect(apply(&interest, .joined(room: "r", user: "a")))
        #expect(apply(&interest, .joined(room: "r", user: "b")))
        #expect(!apply(&interest, .joined(room: "r", user: "b")))
        #expect(interest.hasRecipient(for: .room("r")) && interest.hasRecipient(for: .user("a")) && interest.hasRecipient(for: .everyone))
        #expect(!interest.hasRecipient(for: .user("b")) && !interest.hasRecipient(for: .room("s")))
        #expect(Set(interest.pairs) == [RoomMember(room: "r", user: "a"), RoomMember(room: "r", user: "b")])
        #expect(apply(&interest, .left(room: "r", user: "a")))
        #expect(!apply(&interest, .left(room: "r", user: "a")))
        #expect(!apply(&interest, .left(room: "nowhere", user: "a")))
        #expect(apply(&interest, .left(room: "r", user: "b")))
        #expect(interest.rooms["r"] == nil, "an empty room leaves no entry behind")
        #expect(apply(&interest, .offline(user: "a")))
        #expect(interest == Interest())
        #expect(Interest(users: ["a"], rooms: [RoomMember(room: "r", user: "a")]).contains("a", in: "r"))
    }

    private func apply(_ interest: inout Interest, _ delta: InterestDelta) -> Bool {
        interest.apply(delta)
    }

    @Test func backoffGrowsIsCappedAndJitters() {
        let backoff = Backoff(minimum: .milliseconds(100), maximum: .seconds(5))
        #expect(backoff.ceiling(attempt: 0) == .milliseconds(100))
        #expect(backoff.ceiling(attempt: 3) == .milliseconds(800))
        #expect(backoff.ceiling(attempt: 10) == .seconds(5))
        #expect(backoff.ceiling(attempt: 1_000_000) == .seconds(5))
        #expect(backoff.ceiling(attempt: -1) == .milliseconds(100))
        for attempt in 0..<30 {
            let delay = backoff.delay(attempt: attempt)
            #expect(delay >= backoff.ceiling(attempt: attempt) / 2 && delay <= backoff.ceiling(attempt: attempt))
        }
    }

    /// A library user gets the command line's checks: the node refuses to be made.
    @Test func aNodeRefusesAConfigurationItCannotRunWith() {
        let broken: [(String, (inout NodeConfiguration) -> Void)] = [
            ("--node-id", { $0.nodeID = "has space" }),
            ("--max-frame", { $0.maxFrameBytes = 10 }),
            ("--max-buffered", { $0.maxBufferedBytes = 1000 }),
            ("--api-key", { $0.apiKey = "" }),
            ("token keys", { $0.jwtSecret = "short" }),
            ("limits", { $0.maxConnections = 0 }),
            ("--heartbeat", { $0.heartbeatSeconds = 0 }),
        ]
        for (option, breakIt) in broken {
            var configuration = NodeConfiguration(nodeID: "n1")
            breakIt(&configuration)
            #expect(throws: NodeConfigurationError.self, "\(option)") {
                _ = try SwitchboardNode(
                    configuration: configuration, backplane: EmbeddedCluster().backplane(), logger: Logger(label: "test"))
            }
            #expect((try? configuration.validate()) == nil)
        }
        #expect(throws: Never.self) { try NodeConfiguration(nodeID: "n1").validate() }
    }

    // MARK: The membership view

    static func record(_ id: String, _ incarnation: Int64, left: Bool = false) -> MemberRecord {
        MemberRecord(id: id, url: "ws://\(id)/ws", incarnation: incarnation, left: left)
    }

    @Test func membershipLearnsSupersedesAndIgnoresStaleRecords() {
        var view = MembershipView()
        #expect(view.merge(Self.record("b", 1)).0 == .ignored, "nothing is taken in before start")
        view.start(as: Self.record("a", 10))
        #expect(view.merge(Self.record("b", 1)).0 == .learned)
        #expect(view.merge(Self.record("b", 1)).0 == .ignored)
        #expect(view.merge(Self.record("b", 0)).0 == .ignored, "an older incarnation")
        #expect(view.merge(Self.record("has space", 1)).0 == .ignored)
        #expect(view.merge(Self.record("a", 9)).0 == .ignored, "our own id, older")
        #expect(view.merge(Self.record("a", 11)).0 == .claimsOurID)
        #expect(view.merge(Self.record("b", 1, left: true)).0 == .superseded(previous: Self.record("b", 1)), "a goodbye wins")
        #expect(view.merge(Self.record("b", 2)).0 == .superseded(previous: Self.record("b", 1, left: true)), "a restart")
        #expect(Set(view.records.map(\.id)) == ["a", "b"])
    }

    @Test func membershipPresenceChangesOnceAcrossNodes() throws {
        var view = MembershipView()
        view.start(as: Self.record("a", 1))
        _ = view.merge(Self.record("b", 1))
        #expect(view.changeLocal(.online(user: "u")) == [])
        #expect(view.changeLocal(.joined(room: "r", user: "u")) == [.joined(room: "r", user: "u")])
        // b's sync adds u to r (already present: no event) and v (new: joined).
        let synced = view.replaceInterest(
            of: "b", with: Interest(users: ["u", "v"], rooms: [RoomMember(room: "r", user: "u"), RoomMember(room: "r", user: "v")]),
            load: NodeLoad(connections: 2, users: 2))
        let sync = try #require(synced)
        #expect(sync.first)
        #expect(sync.events == [.joined(room: "r", user: "v")])
        #expect(view.users(in: "r") == ["u", "v"])
        #expect(view.nodes(of: "u") == ["a", "b"])
        #expect(view.members(withRecipientFor: .room("r")) == ["b"])
        // u leaves here but is still in r on b: no event. b forgets u: now u has left.
        #expect(view.changeLocal(.left(room: "r", user: "u")) == [])
        #expect(view.apply(.left(room: "r", user: "u"), from: "b") == [.left(room: "r", user: "u")])
        // A delta before a sync is ignored.
        _ = view.merge(Self.record("c", 1))
        #expect(view.apply(.joined(room: "r", user: "w"), from: "c") == [])
        // b goes silent and is dropped: v leaves, once.
        let later = ContinuousClock.now + .seconds(100)
        #expect(view.silent(at: later, longerThan: .seconds(15)) == ["b"], "c has no interest yet: not alive")
        #expect(view.drop("b") == [.left(room: "r", user: "v")])
        #expect(view.drop("b") == [])
        #expect(view.users(in: "r").isEmpty)
        // A restart of b drops what the old incarnation held.
        _ = view.replaceInterest(
            of: "b", with: Interest(users: ["x"], rooms: [RoomMember(room: "s", user: "x")]), load: NodeLoad(connections: 1, users: 1))
        let (outcome, events) = view.merge(Self.record("b", 2))
        #expect(outcome == .superseded(previous: Self.record("b", 1)))
        #expect(events == [.left(room: "s", user: "x")])
        let unknown = view.replaceInterest(of: "nobody", with: Interest(), load: NodeLoad(connections: 0, users: 0))
        #expect(unknown == nil)
    }

    // MARK: Waiting on a condition (drain)

    @Test func aConditionSignalWakesItsWaiterOrTimesOut() async {
        let signal = ConditionSignal()
        let count = Mutex(3)
        let waiter = Task { await signal.wait(until: { count.withLock { $0 == 0 } }, timeout: .seconds(30)) }
        for _ in 0..<3 {
            count.withLock { $0 -= 1 }
            signal.poke()
        }
        #expect(await waiter.value, "woken by the poke that made it true, long before the timeout")
        #expect(await signal.wait(until: { true }, timeout: .seconds(30)), "already true: no wait")
        #expect(!(await signal.wait(until: { false }, timeout: .milliseconds(50))), "never true: the timeout answers")
    }
}
