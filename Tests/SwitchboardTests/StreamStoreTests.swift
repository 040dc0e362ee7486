import SwitchboardCore
import Testing

/// History kept in memory (`StreamStore`) and the recovery decision (`StreamRead.recovers`).
@Suite("Stream store")
struct StreamStoreTests {
    static func envelope(_ n: Int, to address: Address = .room("r")) -> Envelope {
        Envelope(id: "m\(n)", from: "a", address: address, data: RawJSON("\(n)"), timestamp: 0)
    }

    @Test func offsetsAreGaplessPerStreamAndTheRingKeepsTheLast() {
        var store = StreamStore(policy: HistoryPolicy(size: 3, ttlSeconds: 60))
        let offsets = (1...5).map { store.append(Self.envelope($0), now: 1000).position!.offset }
        #expect(offsets == [1, 2, 3, 4, 5])
        #expect(store.append(Self.envelope(1, to: .user("u")), now: 1000).position?.offset == 1, "each stream counts alone")
        let read = store.read(.room("r"), after: nil, limit: 10, now: 1000)
        #expect(read.top.offset == 5 && read.messages.map(\.id) == ["m3", "m4", "m5"])
        #expect(store.read(.room("r"), after: nil, limit: 2, now: 1000).messages.map(\.id) == ["m4", "m5"])
        #expect(store.read(.room("r"), after: 3, limit: 10, now: 1000).messages.map(\.id) == ["m4", "m5"])
        #expect(store.read(.room("r"), after: 3, limit: 1, now: 1000).messages.map(\.id) == ["m4"])
        // The epoch of a stream does not change while it is kept.
        #expect(read.top.epoch == store.read(.room("r"), after: nil, limit: 0, now: 1000).top.epoch)
    }

    @Test func messagesExpireAndSilentStreamsAreForgotten() {
        var store = StreamStore(policy: HistoryPolicy(size: 10, ttlSeconds: 5))
        _ = store.append(Self.envelope(1), now: 0)
        _ = store.append(Self.envelope(2), now: 4000)
        let epoch = store.read(.room("r"), after: nil, limit: 10, now: 4000).top.epoch
        // At 6 s the first is past its TTL: not served, and swept.
        let later = store.read(.room("r"), after: nil, limit: 10, now: 6000)
        #expect(later.messages.map(\.id) == ["m2"] && later.top.offset == 2)
        #expect(store.messageCount == 1)
        // After its lifetime (an hour at least) with no message, the stream is forgotten: a new
        // epoch, numbering from 1 again. Memory stays bounded.
        store.sweepIfDue(now: 4000 + 3_600_000 + 1000)
        #expect(store.streamCount == 0)
        let reborn = store.read(.room("r"), after: nil, limit: 10, now: 4000 + 3_600_000 + 1000)
        #expect(reborn.top.offset == 0 && reborn.top.epoch != epoch)
        #expect(store.append(Self.envelope(3), now: 4000 + 3_600_000 + 2000).position?.epoch == reborn.top.epoch)
    }

    @Test func aStreamNobodyWroteToCostsNothingAndKeepsTheEpochItWasReadWith() {
        var store = StreamStore(policy: HistoryPolicy(size: 10, ttlSeconds: 60))
        let empty = store.read(.user("u"), after: nil, limit: 0, now: 0)
        #expect(empty.top.offset == 0 && store.streamCount == 0)
        // Its first message comes in the same generation: a resume from top 0 recovers it.
        let first = store.append(Self.envelope(1, to: .user("u")), now: 60_000)
        #expect(first.position == StreamPosition(epoch: empty.top.epoch, offset: 1))
        let resumed = store.read(.user("u"), after: 0, limit: 10, now: 60_000)
        #expect(resumed.recovers(empty.top) && resumed.after(0).map(\.id) == ["m1"])
    }

    @Test func recoveryNeedsTheSameEpochAndEveryMissedOffset() {
        var store = StreamStore(policy: HistoryPolicy(size: 3, ttlSeconds: 60))
        for n in 1...5 { _ = store.append(Self.envelope(n), now: 0) }
        let epoch = store.read(.room("r"), after: nil, limit: 0, now: 0).top.epoch
        func read(after offset: Int64) -> StreamRead { store.read(.room("r"), after: offset, limit: 3, now: 0) }
        #expect(read(after: 2).recovers(StreamPosition(epoch: epoch, offset: 2)))
        #expect(read(after: 2).after(2).map(\.id) == ["m3", "m4", "m5"])
        #expect(read(after: 5).recovers(StreamPosition(epoch: epoch, offset: 5)), "nothing missed")
        #expect(!read(after: 1).recovers(StreamPosition(epoch: epoch, offset: 1)), "offset 2 is no longer kept")
        #expect(!read(after: 2).recovers(StreamPosition(epoch: "other", offset: 2)), "a wrong epoch")
        #expect(!read(after: 9).recovers(StreamPosition(epoch: epoch, offset: 9)), "ahead of the top")
        // A read with a hole in it (a message past its TTL in Redis) does not recover.
        var holed = read(after: 2)
        holed.messages.remove(at: 1)
        #expect(!holed.recovers(StreamPosition(epoch: epoch, offset: 2)))
    }

    @Test func historyOffKeepsNothingAndBroadcastsHaveNoStream() {
        #expect(!HistoryPolicy.off.keeps(.room("r")))
        #expect(!HistoryPolicy.standard.keeps(.everyone))
        #expect(HistoryPolicy.standard.keeps(.user("u")))
        var store = StreamStore(policy: HistoryPolicy(size: 0, ttlSeconds: 0))
        #expect(store.append(Self.envelope(1), now: 0).position?.offset == 1, "a store of size 0 still numbers")
        #expect(store.messageCount == 0)
    }
}
