import NIOCore
import SwitchboardCore
import Testing

@testable import SwitchboardServer

/// The seam between replayed and live messages, for one connection (`StreamGates`).
@Suite("Stream gates")
struct StreamGatesTests {
    static let room = Address.room("r")

    static func frame(_ offset: Int64, epoch: String = "e", address: Address = room) -> EncodedFrame {
        let envelope = Envelope(
            id: "m\(offset)", from: "a", address: address, data: RawJSON("\(offset)"), timestamp: 0,
            position: StreamPosition(epoch: epoch, offset: offset))
        return EncodedFrame(message: envelope, allocator: ByteBufferAllocator())
    }

    @Test func heldMessagesAtOrBelowTheTopAreDroppedAndTheRestFollowTheReplay() {
        var gates = StreamGates()
        gates.hold(Self.room)
        #expect(gates.deliver(Self.frame(4)) == .held)
        #expect(gates.deliver(Self.frame(5)) == .held)
        #expect(gates.deliver(Self.frame(6)) == .held)
        // Another stream, and a broadcast, are not held.
        #expect(gates.deliver(Self.frame(1, address: .room("other"))) == .write)
        #expect(gates.deliver(EncodedFrame(Array("{}".utf8), allocator: ByteBufferAllocator())) == .write)
        // The read found top 5: 4 and 5 came with it, 6 goes out after the replay.
        let released = gates.release(Self.room, top: StreamPosition(epoch: "e", offset: 5))
        #expect(released.map { $0.position?.offset } == [6])
        // Something newer went out: no floor is needed, the gate is gone.
        #expect(gates.isEmpty)
    }

    @Test func aFloorDropsLateDuplicatesUntilTheStreamMovesOn() {
        var gates = StreamGates()
        gates.hold(Self.room)
        #expect(gates.release(Self.room, top: StreamPosition(epoch: "e", offset: 10)).isEmpty)
        // A store that answered on one connection and publishes on another: 9 and 10 arrive late.
        #expect(gates.deliver(Self.frame(9)) == .drop)
        #expect(gates.deliver(Self.frame(10)) == .drop)
        #expect(gates.deliver(Self.frame(11)) == .write)
        #expect(gates.isEmpty)
        #expect(gates.deliver(Self.frame(3)) == .write, "past the floor, nothing is judged any more")
    }

    @Test func aNewEpochPassesTheFloorAndAFailedReadReleasesEverything() {
        var gates = StreamGates()
        gates.hold(Self.room)
        _ = gates.release(Self.room, top: StreamPosition(epoch: "e", offset: 10))
        // The store lost the stream: offsets start again in another epoch.
        #expect(gates.deliver(Self.frame(1, epoch: "f")) == .write)
        #expect(gates.isEmpty)

        gates.hold(Self.room)
        #expect(gates.deliver(Self.frame(1)) == .held)
        #expect(gates.deliver(Self.frame(2)) == .held)
        #expect(gates.release(Self.room, top: nil).map { $0.position?.offset } == [1, 2])
        #expect(gates.isEmpty)
    }

    @Test func aFloorLastsTwoHeartbeatsAndAnEmptyStreamNeedsNone() {
        var gates = StreamGates()
        gates.hold(Self.room)
        _ = gates.release(Self.room, top: StreamPosition(epoch: "e", offset: 10))
        gates.age()
        #expect(gates.deliver(Self.frame(10)) == .drop, "one heartbeat on, the floor holds")
        gates.age()
        #expect(gates.isEmpty, "an idle connection keeps no floor")
        gates.hold(Self.room)
        #expect(gates.release(Self.room, top: StreamPosition(epoch: "e", offset: 0)).isEmpty)
        #expect(gates.isEmpty, "nothing is at or below offset 0")
    }

    @Test func leavingForgetsTheFloor() {
        var gates = StreamGates()
        gates.hold(Self.room)
        _ = gates.release(Self.room, top: StreamPosition(epoch: "e", offset: 10))
        #expect(!gates.isEmpty)
        gates.forget(Self.room)
        #expect(gates.isEmpty)
        #expect(gates.release(Self.room, top: nil).isEmpty, "releasing what is not held is harmless")
    }
}
