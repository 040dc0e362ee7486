import NIOCore
import NIOPosix

/// One load-generator WebSocket, straight on a NIO channel: it writes the upgrade request by
/// hand, parses server frames itself (they are unmasked), answers pings, and hands each text
/// message to `onMessage` on the channel's event loop. Client frames are sent with a zero mask,
/// which RFC 6455 allows and which leaves the payload as is, so frames can be encoded once.
final class LoadConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var upgraded = false
    private var pending: ByteBuffer?
    private let request: [UInt8]
    /// Text messages; with `?batch=1` one frame may hold several, split at `\n` (JSON
    /// dialects; a STOMP frame has lines of its own and is handed over whole).
    let onMessage: (UnsafeRawBufferPointer) -> Void
    private let splitsLines: Bool
    let onOpen: () -> Void
    let onClose: () -> Void
    private(set) var isOpen = false

    init(
        host: String, port: Int, path: String, splitsLines: Bool = true, onOpen: @escaping () -> Void,
        onMessage: @escaping (UnsafeRawBufferPointer) -> Void, onClose: @escaping () -> Void
    ) {
        self.splitsLines = splitsLines
        var text = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        text += "Sec-WebSocket-Key: c3dpdGNoYm9hcmRiZW5jaA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        request = Array(text.utf8)
        self.onOpen = onOpen
        self.onMessage = onMessage
        self.onClose = onClose
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: request)), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        isOpen = false
        onClose()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = pending {
            buffered.writeBuffer(&incoming)
            pending = nil
            incoming = buffered
        }
        if !upgraded {
            guard let end = incoming.readableBytesView.firstRange(of: [13, 10, 13, 10]) else {
                pending = incoming
                return
            }
            let headLength = end.upperBound - incoming.readerIndex
            let head = incoming.readString(length: headLength) ?? ""
            guard head.hasPrefix("HTTP/1.1 101") else {
                context.close(promise: nil)
                return
            }
            upgraded = true
            isOpen = true
            onOpen()
        }
        parseFrames(&incoming, context: context)
        if incoming.readableBytes > 0 { pending = incoming }
    }

    private func parseFrames(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        while buffer.readableBytes >= 2 {
            let start = buffer.readerIndex
            let first = buffer.getInteger(at: start, as: UInt8.self)!
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)!
            var length = Int(second & 0x7F)
            var header = 2
            if length == 126 {
                guard let value = buffer.getInteger(at: start + 2, as: UInt16.self) else { return }
                length = Int(value)
                header = 4
            } else if length == 127 {
                guard let value = buffer.getInteger(at: start + 2, as: UInt64.self) else { return }
                length = Int(value)
                header = 10
            }
            guard buffer.readableBytes >= header + length else { return }
            buffer.moveReaderIndex(forwardBy: header)
            let opcode = first & 0x0F
            switch opcode {
            case 0x1, 0x0:
                buffer.withUnsafeReadableBytes { bytes in
                    let payload = UnsafeRawBufferPointer(rebasing: bytes[..<length])
                    guard splitsLines else { return onMessage(payload) }
                    var lineStart = 0
                    for index in 0..<payload.count where payload[index] == 10 {
                        onMessage(UnsafeRawBufferPointer(rebasing: payload[lineStart..<index]))
                        lineStart = index + 1
                    }
                    if lineStart < payload.count { onMessage(UnsafeRawBufferPointer(rebasing: payload[lineStart...])) }
                }
            case 0x9:
                let body = buffer.getSlice(at: buffer.readerIndex, length: length) ?? ByteBuffer()
                send(opcode: 0xA, body, on: context.channel)
                context.channel.flush()
            case 0x8:
                context.close(promise: nil)
            default:
                break
            }
            buffer.moveReaderIndex(forwardBy: length)
        }
    }

    /// A masked (zero mask) client frame around `payload`.
    static func frame(opcode: UInt8 = 0x1, _ payload: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: payload.count + 14)
        out.writeInteger(0x80 | opcode)
        if payload.count < 126 {
            out.writeInteger(UInt8(0x80 | payload.count))
        } else if payload.count <= 0xFFFF {
            out.writeInteger(UInt8(0x80 | 126))
            out.writeInteger(UInt16(payload.count))
        } else {
            out.writeInteger(UInt8(0x80 | 127))
            out.writeInteger(UInt64(payload.count))
        }
        out.writeInteger(UInt32(0))
        out.writeBytes(payload)
        return out
    }

    func send(opcode: UInt8 = 0x1, _ payload: ByteBuffer, on channel: any Channel) {
        channel.write(Self.frame(opcode: opcode, Array(payload.readableBytesView), allocator: channel.allocator), promise: nil)
    }
}

extension UnsafeRawBufferPointer {
    /// Whether the bytes start with `prefix`.
    func starts(with prefix: StaticString) -> Bool {
        guard count >= prefix.utf8CodeUnitCount else { return false }
        return memcmp(baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
    }

    /// The two integers of a bench payload `[seq,sentNanos]` after `"data":`, if present.
    func benchStamp(after marker: [UInt8]) -> (seq: Int, sent: UInt64)? {
        guard count > marker.count else { return nil }
        var index = 0
        outer: while index + marker.count <= count {
            for offset in 0..<marker.count where self[index + offset] != marker[offset] {
                index += 1
                continue outer
            }
            index += marker.count
            var seq = 0
            while index < count, self[index] >= 48, self[index] <= 57 {
                seq = seq * 10 + Int(self[index] - 48)
                index += 1
            }
            guard index < count, self[index] == 44 else { return nil }
            index += 1
            var sent: UInt64 = 0
            while index < count, self[index] >= 48, self[index] <= 57 {
                sent = sent * 10 + UInt64(self[index] - 48)
                index += 1
            }
            return (seq, sent)
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#endif
