/// Where a message sits in its stream: a room's messages, or one user's inbox. Offsets count
/// 1, 2, 3, ... within an epoch; the epoch changes whenever the stream's history was lost (the
/// store restarted, or forgot a stream nobody used), so an offset means nothing without it.
public struct StreamPosition: Hashable, Sendable, CustomStringConvertible {
    public var epoch: String
    public var offset: Int64

    public init(epoch: String, offset: Int64) {
        self.epoch = epoch
        self.offset = offset
    }

    public var description: String { "\(epoch):\(offset)" }

    /// A new epoch: random, short enough to be stored inline in a Swift string. Every publish
    /// with history offers one (used only if the stream is new), so it costs one random draw:
    /// 36^10 is below 2^64, and one draw gives all ten characters.
    public static func newEpoch() -> String {
        var draw = UInt64.random(in: 0...UInt64.max)
        var characters: [UInt8] = []
        characters.reserveCapacity(10)
        for _ in 0..<10 {
            characters.append(epochAlphabet[Int(draw % 36)])
            draw /= 36
        }
        return String(decoding: characters, as: UTF8.self)
    }

    private static let epochAlphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
}

/// How much history a backplane keeps per stream. Off (`size` 0): messages carry no offset.
public struct HistoryPolicy: Hashable, Sendable {
    /// Messages kept per stream.
    public var size: Int
    /// Seconds a message is kept.
    public var ttlSeconds: Int

    public init(size: Int, ttlSeconds: Int) {
        self.size = size
        self.ttlSeconds = ttlSeconds
    }

    public static let off = HistoryPolicy(size: 0, ttlSeconds: 0)
    /// The defaults of `--history-size` and `--history-ttl`.
    public static let standard = HistoryPolicy(size: 100, ttlSeconds: 300)

    public var isOn: Bool { size > 0 }

    /// How long a stream's epoch and top are remembered after its last message: long enough
    /// that a client away for a while, in a quiet room, still resumes; short enough that streams
    /// nobody uses are forgotten and memory stays bounded.
    public var lifetimeSeconds: Int { max(ttlSeconds, 3600) }

    /// Which addresses have a stream: rooms and inboxes, never broadcasts.
    public func keeps(_ address: Address) -> Bool {
        guard isOn else { return false }
        if case .everyone = address { return false }
        return true
    }
}

/// What a backplane read of one stream found: its top (the last offset given out, 0 if none)
/// and the messages asked for that it still keeps, oldest first, each with its position.
public struct StreamRead: Hashable, Sendable {
    public var top: StreamPosition
    public var messages: [Envelope]

    public init(top: StreamPosition, messages: [Envelope]) {
        self.top = top
        self.messages = messages
    }

    /// Whether a client that saw everything up to `since` can be given exactly what it missed
    /// from this read (of the messages after `since.offset`): same epoch, not ahead of the
    /// top, and every offset after it still kept, with none missing.
    public func recovers(_ since: StreamPosition) -> Bool {
        guard since.epoch == top.epoch, since.offset >= 0, since.offset <= top.offset else { return false }
        let missed = messages.filter { ($0.position?.offset ?? 0) > since.offset }
        guard Int64(missed.count) == top.offset - since.offset else { return false }
        var expected = since.offset + 1
        for message in missed {
            guard message.position == StreamPosition(epoch: top.epoch, offset: expected) else { return false }
            expected += 1
        }
        return true
    }

    /// The messages after `offset`, as a replay sends them.
    public func after(_ offset: Int64) -> [Envelope] {
        messages.filter { ($0.position?.offset ?? 0) > offset }
    }
}

/// Why a history read failed.
public enum HistoryError: Error, Equatable, CustomStringConvertible {
    /// This backplane keeps no history.
    case unsupported

    public var description: String {
        switch self {
        case .unsupported: "this cluster keeps no history"
        }
    }
}
