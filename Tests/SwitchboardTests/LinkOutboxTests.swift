import ClusterLink
import NIOCore
import SwitchboardCore
import Testing

@testable import MeshBackplane

/// A link's send queue on its own (`LinkOutbox`, shared by mesh links and links to the hub), and
/// the mesh's numbered sends over it: what the writer takes in one go becomes one link message,
/// so the order and the limits of those takes are what matter.
@Suite("Link outbox")
struct LinkOutboxTests {
    /// A frame of `bytes` bytes.
    static func frame(_ bytes: Int, _ fill: UInt8 = 120) -> ByteBuffer { ByteBuffer(repeating: fill, count: bytes) }

    @Test func framesQueuedWhileTheWriterIsBusyComeOutTogetherInOrder() async throws {
        let outbox = LinkOutbox()
        for index in 0..<5 { #expect(outbox.post(Self.frame(10, UInt8(index)))) }
        #expect(try #require(await outbox.next()) == (0..<5).map { Self.frame(10, UInt8($0)) })
    }

    @Test func aWaitingWriterIsWokenByTheFirstFrame() async throws {
        let outbox = LinkOutbox()
        async let taken = outbox.next()
        // The writer may or may not be waiting yet when this is posted: either way it gets it.
        outbox.post(Self.frame(3))
        #expect(try #require(await taken) == [Self.frame(3)])
    }

    @Test func aBatchStopsAtItsByteLimitAndABigFrameGoesAlone() async throws {
        let outbox = LinkOutbox(batchBytes: 1000)
        for index in 0..<25 { outbox.post(Self.frame(100, UInt8(index))) }
        outbox.post(Self.frame(5000))
        outbox.post(Self.frame(1))
        outbox.close()
        var batches: [[ByteBuffer]] = []
        while let frames = await outbox.next() { batches.append(frames) }
        // Ten of 100 bytes fit in 1000, twice, then the other five; the big one alone; nothing
        // is lost or reordered.
        #expect(batches.map(\.count) == [10, 10, 5, 1, 1])
        #expect(Array(batches.joined()) == (0..<25).map { Self.frame(100, UInt8($0)) } + [Self.frame(5000), Self.frame(1)])
    }

    @Test func aFullOutboxRefusesUntilTheWriterTakesFromIt() async throws {
        let outbox = LinkOutbox(batchBytes: 100, maxQueuedBytes: 250)
        #expect(outbox.post(Self.frame(100)) && outbox.post(Self.frame(100)))
        #expect(!outbox.post(Self.frame(100)))  // 300 > 250
        #expect(outbox.post(Self.frame(50)))
        #expect(try #require(await outbox.next()).count == 1)
        #expect(outbox.post(Self.frame(100)))
    }

    @Test func closingWakesAWaitingWriterAndRefusesMore() async throws {
        let outbox = LinkOutbox()
        async let end = outbox.next()
        outbox.close()
        #expect(await end == nil)
        #expect(!outbox.post(Self.frame(1)))
        #expect(await outbox.next() == nil)
    }

    @Test func aMeshLinksNumberedFramesGoOutInOrderAndTheirAcksSettleThem() async throws {
        let link = PeerLink(peer: "n2")
        link.post(.beat(NodeLoad(connections: 1, users: 1)))
        let replies = (0..<3).map { index in
            link.send(timeout: .seconds(5)) { MeshFrame.delta(seq: $0, .online(user: "u\(index)")).encoded() }
        }
        link.post(.bye)
        let taken = try #require(await link.outbox.next()).map { MeshFrame.decode($0) }
        #expect(
            taken == [
                .beat(NodeLoad(connections: 1, users: 1)), .delta(seq: 1, .online(user: "u0")), .delta(seq: 2, .online(user: "u1")),
                .delta(seq: 3, .online(user: "u2")), .bye,
            ])
        for seq in UInt32(1)...3 { link.acked(seq) }
        for reply in replies { try await reply.wait() }
        // Closing fails what still waits for an ack, and ends the writer.
        let unanswered = link.send(timeout: .seconds(5)) { MeshFrame.delta(seq: $0, .offline(user: "u0")).encoded() }
        #expect(try #require(await link.outbox.next()).count == 1)
        link.close()
        await #expect(throws: MeshError.self) { try await unanswered.wait() }
        #expect(await link.outbox.next() == nil)
    }
}
