import NIOCore
import SwitchboardCore
import Testing

@testable import MeshBackplane

/// A mesh link's send queue on its own: what its writer takes in one go becomes one link
/// message (`MeshFrame.batch`), so the order and the limits of those takes are what matter.
@Suite("Mesh link send queue")
struct PeerLinkQueueTests {
    /// A frame of about `kib` KiB.
    static func frame(kib: Int) -> MeshFrame {
        .sync(
            seq: 0, load: NodeLoad(connections: 0, users: 0), users: Array(repeating: String(repeating: "x", count: 1022), count: kib),
            rooms: [], final: false)
    }

    @Test func framesQueuedWhileTheWriterIsBusyComeOutTogetherInOrder() async throws {
        let link = PeerLink(peer: "n2")
        link.post(.beat(NodeLoad(connections: 1, users: 1)))
        let replies = (0..<3).map { index in
            link.send(timeout: .seconds(5)) { MeshFrame.delta(seq: $0, .online(user: "u\(index)")).encoded() }
        }
        link.post(.bye)
        let taken = try #require(await link.nextFrames()).map { MeshFrame.decode($0) }
        #expect(
            taken == [
                .beat(NodeLoad(connections: 1, users: 1)), .delta(seq: 1, .online(user: "u0")), .delta(seq: 2, .online(user: "u1")),
                .delta(seq: 3, .online(user: "u2")), .bye,
            ])
        // The acks of a batch settle each request.
        for seq in UInt32(1)...3 { link.acked(seq) }
        for reply in replies { try await reply.wait() }
    }

    @Test func aWaitingWriterIsWokenByTheFirstFrame() async throws {
        let link = PeerLink(peer: "n2")
        async let taken = link.nextFrames()
        // The writer may or may not be waiting yet when this is posted: either way it gets it.
        link.post(.bye)
        #expect(try #require(await taken).map { MeshFrame.decode($0) } == [.bye])
    }

    @Test func aBatchStopsAtItsByteLimitAndABigFrameGoesAlone() async throws {
        let link = PeerLink(peer: "n2")
        let small = Self.frame(kib: 1)
        let big = Self.frame(kib: 100)
        for _ in 0..<80 { link.post(small) }
        link.post(big)
        link.post(small)
        var batches: [[MeshFrame?]] = []
        link.close()
        while let frames = await link.nextFrames() { batches.append(frames.map { MeshFrame.decode($0) }) }
        let sizes = batches.map(\.count)
        // 80 small frames of about 1 KiB: 62 fit in 64 KiB, then the other 18; the big one
        // alone; nothing is lost or reordered.
        #expect(sizes == [62, 18, 1, 1])
        #expect(batches.joined().elementsEqual(Array(repeating: small, count: 80) + [big, small]))
    }

    @Test func closingWakesAWaitingWriterAndFailsWhatWaitsForAnAck() async throws {
        let link = PeerLink(peer: "n2")
        let reply = link.send(timeout: .seconds(5)) { MeshFrame.delta(seq: $0, .online(user: "u")).encoded() }
        #expect(try #require(await link.nextFrames()).count == 1)
        async let end = link.nextFrames()
        link.close()
        #expect(await end == nil)
        await #expect(throws: MeshError.self) { try await reply.wait() }
        // Nothing is queued on a closed link.
        link.post(.bye)
        #expect(await link.nextFrames() == nil)
    }
}
