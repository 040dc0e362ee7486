import NIOCore
import NIOWebSocket

/// One frame from a client, as read off the wire (RFC 6455 5.2), its payload unmasked.
package struct ClientFrame: Equatable, Sendable {
    package var fin: Bool
    /// Any of RSV1-3: no extension is negotiated, so a set bit is a protocol error.
    package var reservedBits: Bool
    package var opcode: UInt8
    /// Clients must mask every frame (RFC 6455 5.1).
    package var masked: Bool
    package var payload: ByteBuffer

    package static let continuation: UInt8 = 0x0
    package static let text: UInt8 = 0x1
    package static let binary: UInt8 = 0x2
    package static let close: UInt8 = 0x8
    package static let ping: UInt8 = 0x9
    package static let pong: UInt8 = 0xA

    package var isControl: Bool { opcode >= 0x8 }
}

/// Why a client's bytes are not frames we take; each closes the connection.
package enum FrameReadError: Error, Equatable {
    /// A frame's payload is over the limit (1009), said by its header before it arrives.
    case tooLarge
    /// A control frame longer than 125 bytes or fragmented, or a 64-bit length with its top bit set (1002).
    case malformed(String)
}

/// Cuts a client's byte stream into frames. Our own, in place of NIO's decoder stack (a
/// `ByteToMessageHandler` with its two ring buffers, the decoder, and an error handler, ~500
/// bytes per idle connection): between frames it holds nothing, and a partial frame only
/// until the rest arrives. Limits are checked on the header, before the payload is buffered.
package struct WebSocketFrameReader {
    package let maxFrameBytes: Int
    /// The start of a frame not yet whole.
    private var partial: ByteBuffer?

    package init(maxFrameBytes: Int) {
        self.maxFrameBytes = maxFrameBytes
    }

    /// Bytes held for a frame still arriving.
    package var bufferedBytes: Int { partial?.readableBytes ?? 0 }

    /// Reads every whole frame in what has arrived, in order, keeping the rest for next time.
    /// After a throw, the reader must not be used again.
    package mutating func read(_ bytes: ByteBuffer, _ frame: (ClientFrame) -> Void) throws(FrameReadError) {
        var buffer: ByteBuffer
        if var held = partial {
            partial = nil
            var bytes = bytes
            held.writeBuffer(&bytes)
            buffer = held
        } else {
            buffer = bytes
        }
        while let next = try Self.frame(from: &buffer, maxFrameBytes: maxFrameBytes) {
            frame(next)
        }
        if buffer.readableBytes > 0 { partial = buffer }
    }

    /// The first whole frame of `buffer`, consumed; nil (nothing consumed) when it is not all there.
    static func frame(from buffer: inout ByteBuffer, maxFrameBytes: Int) throws(FrameReadError) -> ClientFrame? {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self), let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }
        let opcode = first & 0x0F
        let masked = second & 0x80 != 0
        var headerLength = 2
        var length: UInt64
        switch second & 0x7F {
        case 126:
            guard let extended = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = UInt64(extended)
            headerLength += 2
        case 127:
            guard let extended = buffer.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            guard extended >> 63 == 0 else { throw .malformed("a 64-bit payload length with its top bit set") }
            length = extended
            headerLength += 8
        case let short:
            length = UInt64(short)
        }
        if opcode >= 0x8 {
            guard length <= 125 else { throw .malformed("a control frame longer than 125 bytes") }
            guard first & 0x80 != 0 else { throw .malformed("a fragmented control frame") }
        }
        guard length <= UInt64(maxFrameBytes) else { throw .tooLarge }
        var maskKey: WebSocketMaskingKey?
        if masked {
            guard let key = buffer.getBytes(at: start + headerLength, length: 4) else { return nil }
            maskKey = WebSocketMaskingKey(key)
            headerLength += 4
        }
        guard buffer.readableBytes >= headerLength + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength)
        var payload = buffer.readSlice(length: Int(length))!
        if let maskKey { payload.webSocketUnmask(maskKey) }
        return ClientFrame(fin: first & 0x80 != 0, reservedBits: first & 0x70 != 0, opcode: opcode, masked: masked, payload: payload)
    }
}
