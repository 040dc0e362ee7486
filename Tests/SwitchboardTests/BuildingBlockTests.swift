import EmbeddedBackplane
import Logging
import SwitchboardCore
import SwitchboardServer
import Testing

/// The pieces every backplane shares, without sockets.
@Suite("Cluster building blocks")
struct BuildingBlockTests {
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
}
