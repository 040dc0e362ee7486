/// History kept in memory: one ring of at most `policy.size` messages per stream, none older
/// than `policy.ttlSeconds`. The embedded backplane and the hub keep one each.
///
/// Memory stays bounded: a message leaves its ring when it is pushed out or its TTL passes, and
/// a stream with no message for `policy.lifetimeSeconds` is forgotten altogether (its epoch with
/// it, so a client that comes back later gets `recovered:false`). A sweep at most once a second,
/// on the next write or read, does both. Reading a stream nobody wrote to stores nothing.
///
/// Epochs: a stream takes the epoch of the *generation* in which its first message came, the
/// store's random epoch and the number of lifetimes since the store began. A stream nobody wrote
/// to reads as the current generation's, top 0, so a client that joined an empty room resumes
/// once its first messages come in the same generation. A forgotten stream comes back in a
/// later generation (it was silent for a whole lifetime), so never with its old epoch.
public struct StreamStore: Sendable {
    private struct Stream {
        var epoch: String
        var top: Int64 = 0
        var ring: Ring
        /// When its last message was written (ms): a stream silent for its lifetime is forgotten.
        var lastWrite: Int64
    }

    public let policy: HistoryPolicy
    private var streams: [Address: Stream] = [:]
    private var lastSweep: Int64 = 0
    private let baseEpoch = StreamPosition.newEpoch()
    /// When the store was first used (ms); generations count from it.
    private var origin: Int64?

    public init(policy: HistoryPolicy) {
        self.policy = policy
    }

    /// Streams remembered and messages held, for metrics and tests.
    public var streamCount: Int { streams.count }
    public var messageCount: Int { streams.values.reduce(0) { $0 + $1.ring.count } }

    /// Gives `envelope` the next offset of its stream and keeps it; returns it with its position.
    public mutating func append(_ envelope: Envelope, now: Int64) -> Envelope {
        sweepIfDue(now: now)
        var stream = streams.removeValue(forKey: envelope.address) ?? newStream(now: now)
        stream.top += 1
        var stored = envelope
        stored.position = StreamPosition(epoch: stream.epoch, offset: stream.top)
        stream.ring.push(Stored(envelope: stored, storedAt: now), limit: policy.size)
        stream.lastWrite = now
        streams[envelope.address] = stream
        return stored
    }

    /// The stream's top and the messages still kept: those after `after`, or (without it) the
    /// last ones; at most `limit`, oldest first.
    public mutating func read(_ address: Address, after: Int64?, limit: Int, now: Int64) -> StreamRead {
        sweepIfDue(now: now)
        guard let stream = streams[address] else {
            return StreamRead(top: StreamPosition(epoch: epoch(now: now), offset: 0), messages: [])
        }
        let oldest = now - Int64(policy.ttlSeconds) * 1000
        var kept = stream.ring.elements.filter { $0.storedAt >= oldest }.map(\.envelope)
        if let after { kept.removeAll { ($0.position?.offset ?? 0) <= after } }
        let count = max(0, min(limit, kept.count))
        let chosen = after == nil ? Array(kept.suffix(count)) : Array(kept.prefix(count))
        return StreamRead(top: StreamPosition(epoch: stream.epoch, offset: stream.top), messages: chosen)
    }

    /// Drops expired messages and forgets silent streams, at most once a second.
    public mutating func sweepIfDue(now: Int64) {
        guard now - lastSweep >= 1000 else { return }
        lastSweep = now
        let oldest = now - Int64(policy.ttlSeconds) * 1000
        let forgotten = now - Int64(policy.lifetimeSeconds) * 1000
        for (address, var stream) in streams {
            if stream.lastWrite < forgotten {
                streams[address] = nil
            } else if let first = stream.ring.first, first.storedAt < oldest {
                stream.ring.dropFirst(while: { $0.storedAt < oldest })
                streams[address] = stream
            }
        }
    }

    private mutating func newStream(now: Int64) -> Stream {
        Stream(epoch: epoch(now: now), ring: Ring(), lastWrite: now)
    }

    /// The epoch of a stream begun now.
    private mutating func epoch(now: Int64) -> String {
        let origin = self.origin ?? now
        self.origin = origin
        let generation = max(0, now - origin) / (Int64(policy.lifetimeSeconds) * 1000)
        return "\(baseEpoch)-\(generation)"
    }
}

/// A message in a store, with the store's own time of writing (for its TTL).
struct Stored: Sendable {
    var envelope: Envelope
    var storedAt: Int64
}

/// A ring buffer: pushing past the limit drops the oldest, without moving the others.
struct Ring: Sendable {
    private var storage: [Stored] = []
    private var start = 0

    var count: Int { storage.count }
    var first: Stored? { storage.isEmpty ? nil : storage[start] }

    /// Oldest first.
    var elements: [Stored] {
        Array(storage[start...] + storage[..<start])
    }

    /// Until the ring is full, `start` stays 0 and pushing appends; once full, the oldest is
    /// overwritten.
    mutating func push(_ element: Stored, limit: Int) {
        guard limit > 0 else { return }
        if storage.count < limit {
            storage.append(element)
        } else {
            storage[start] = element
            start = (start + 1) % storage.count
        }
    }

    mutating func dropFirst(while expired: (Stored) -> Bool) {
        var kept = elements
        kept.removeFirst(kept.prefix(while: expired).count)
        storage = kept
        start = 0
    }
}
