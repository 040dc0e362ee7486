import ClusterCodec
import NIOCore
import SwitchboardCore

/// How an event travels through Redis: one record in the shared format (`ClusterCodec`), published
/// on the channel of its address. `origin` lets a node skip its own unsequenced messages (it has
/// delivered them locally already).
///
///     version kind=1 origin(string) event(message envelope, joined or left)
///     version kind=3 epoch(string) offset(i64) origin(string) event(message envelope)
///
/// Kind 3 is a sequenced message (history on): the node writes it without the epoch and offset,
/// and the append script (`HistoryScripts`) puts them in after the kind byte, so the record
/// that is published and the one kept in the stream's log are the same bytes. Every node, the
/// sender's included, delivers it from the subscription.
enum WireEvent {
    private static let kind: UInt8 = 1
    private static let sequencedKind: UInt8 = 3

    static func encode(_ event: ClusterEvent, origin: String) -> [UInt8] {
        var out = RecordWriter(kind: kind, capacity: 64 + (event.envelope?.data.bytes.count ?? 0))
        out.string(origin)
        out.event(event)
        return Array(out.buffer.readableBytesView)
    }

    /// A message for the append script: a kind 3 record still missing its position.
    static func encodeUnsequenced(_ envelope: Envelope, origin: String) -> [UInt8] {
        var out = RecordWriter(kind: sequencedKind, capacity: 64 + envelope.data.bytes.count)
        out.string(origin)
        var unnumbered = envelope
        unnumbered.position = nil
        out.event(.message(unnumbered))
        return Array(out.buffer.readableBytesView)
    }

    /// Decodes a record received on the channel of `address` (or read from its stream's log);
    /// nil for anything malformed, including a record whose address is not the channel's.
    static func decode(_ bytes: [UInt8], address: Address) -> (event: ClusterEvent, origin: String, sequenced: Bool)? {
        guard var input = RecordReader(bytes), let kind = input.byte() else { return nil }
        var position: StreamPosition?
        switch kind {
        case Self.kind:
            break
        case sequencedKind:
            guard let epoch = input.string(), !epoch.isEmpty, let offset = input.i64(), offset >= 1 else { return nil }
            position = StreamPosition(epoch: epoch, offset: offset)
        default:
            return nil
        }
        guard let origin = input.string(), var event = input.event(), input.atEnd, event.address == address else { return nil }
        if let position {
            // A sequenced record holds a message whose own position field is empty.
            guard case .message(var envelope) = event, envelope.position == nil, address != .everyone else { return nil }
            envelope.position = position
            event = .message(envelope)
        }
        return (event, origin, position != nil)
    }
}

extension ClusterEvent {
    fileprivate var envelope: Envelope? {
        if case .message(let envelope) = self { envelope } else { nil }
    }
}
