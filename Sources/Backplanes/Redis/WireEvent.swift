import ClusterCodec
import NIOCore
import SwitchboardCore

/// How an event travels through Redis: one record in the shared format (`ClusterCodec`), published
/// on the channel of its address. `origin` lets a node skip its own messages (it has delivered
/// them locally already).
///
///     version kind=1 origin(string) event(message envelope, joined or left)
enum WireEvent {
    private static let kind: UInt8 = 1

    static func encode(_ event: ClusterEvent, origin: String) -> [UInt8] {
        var out = RecordWriter(kind: kind, capacity: 64 + (event.envelope?.data.bytes.count ?? 0))
        out.string(origin)
        out.event(event)
        return Array(out.buffer.readableBytesView)
    }

    /// Decodes a record received on the channel of `address`; nil for anything malformed,
    /// including a record whose address is not the channel's.
    static func decode(_ bytes: [UInt8], address: Address) -> (event: ClusterEvent, origin: String)? {
        guard var input = RecordReader(bytes), input.byte() == kind, let origin = input.string(), let event = input.event(),
            input.atEnd, event.address == address
        else { return nil }
        return (event, origin)
    }
}

extension ClusterEvent {
    fileprivate var envelope: Envelope? {
        if case .message(let envelope) = self { envelope } else { nil }
    }
}
