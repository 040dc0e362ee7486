import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardProtocol

/// An unmasked, final text frame (server to client), header and payload in one buffer.
enum WireFrame {
    /// A control frame (close 0x8, ping 0x9, pong 0xA); its payload is cut to the 125 bytes
    /// a control frame may carry.
    static func control(opcode: UInt8, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = payload.getSlice(at: payload.readerIndex, length: min(125, payload.readableBytes))!
        var frame = allocator.buffer(capacity: 2 + payload.readableBytes)
        frame.writeInteger(0x80 | opcode)
        frame.writeInteger(UInt8(payload.readableBytes))
        frame.writeBuffer(&payload)
        return frame
    }

    /// A close frame with `code` and a reason (cut to fit a control frame).
    static func close(_ code: WebSocketErrorCode?, reason: String = "", allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = allocator.buffer(capacity: 2 + reason.utf8.count)
        if let code { payload.write(webSocketErrorCode: code) }
        payload.writeString(reason)
        return control(opcode: 0x8, payload, allocator: allocator)
    }

    static func text(_ payload: some Collection<UInt8>, allocator: ByteBufferAllocator) -> ByteBuffer {
        var frame = allocator.buffer(capacity: payload.count + 10)
        writeHeader(length: payload.count, into: &frame)
        frame.writeBytes(payload)
        return frame
    }

    static func text(_ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var frame = allocator.buffer(capacity: payload.readableBytes + 10)
        writeHeader(length: payload.readableBytes, into: &frame)
        var payload = payload
        frame.writeBuffer(&payload)
        return frame
    }

    /// Bytes of the header in front of a payload of `length` bytes.
    static func headerLength(_ length: Int) -> Int {
        length < 126 ? 2 : length <= 0xFFFF ? 4 : 10
    }

    private static func writeHeader(length: Int, into frame: inout ByteBuffer) {
        frame.writeInteger(UInt8(0x81))  // FIN, text
        if length < 126 {
            frame.writeInteger(UInt8(length))
        } else if length <= 0xFFFF {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(length))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(length))
        }
    }
}

/// A text frame encoded once: `wire` for connections that take it whole, `payload` (the same
/// storage, past the header) for `?batch=1` connections that pack several into one frame.
///
/// A message of a room or an inbox names its stream and position, so that a connection that is
/// resuming that stream can hold it or drop a duplicate (`StreamGates`).
struct EncodedFrame: Sendable {
    let wire: ByteBuffer
    private let headerLength: Int
    var stream: Address?
    var position: StreamPosition?

    init(_ payload: [UInt8], allocator: ByteBufferAllocator) {
        wire = WireFrame.text(payload, allocator: allocator)
        headerLength = WireFrame.headerLength(payload.count)
    }

    /// A message's frame, with its stream and position.
    init(message envelope: Envelope, allocator: ByteBufferAllocator) {
        self.init(ServerFrame.message(envelope), allocator: allocator)
        if envelope.position != nil {
            stream = envelope.address
            position = envelope.position
        }
    }

    var payload: ByteBuffer {
        wire.getSlice(at: wire.readerIndex + headerLength, length: wire.readableBytes - headerLength)!
    }
}
