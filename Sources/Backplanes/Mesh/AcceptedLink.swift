import NIOCore
import NIOWebSocket

/// The accepting side of a link, run straight on the frames of the channel the node upgraded:
/// binary messages in (fragments joined up to the link limit, pings answered, a close ends it),
/// binary messages and a close out. The dialling side is hummingbird-websocket's client.
final class AcceptedLink: Sendable {
    fileprivate let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>

    init(outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>) {
        self.outbound = outbound
    }

    func send(_ frame: MeshFrame) async throws {
        try await send(bytes: frame.encoded())
    }

    func send(bytes: ByteBuffer) async throws {
        try await outbound.write(WebSocketFrame(fin: true, opcode: .binary, data: bytes))
    }

    /// Sends a close frame and ends our side; what the peer sends after it is not read.
    func close(_ code: WebSocketErrorCode, reason: String? = nil) async throws {
        var payload = ByteBuffer()
        payload.write(webSocketErrorCode: code)
        if let reason { payload.writeString(reason) }
        try? await outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload))
        outbound.finish()
    }

    /// Reads the link's frames as mesh frames.
    struct Reader {
        var frames: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator
        let link: AcceptedLink
        let maxMessage: Int
        private var fragments: ByteBuffer?

        init(frames: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator, link: AcceptedLink, maxMessage: Int) {
            self.frames = frames
            self.link = link
            self.maxMessage = maxMessage
        }

        /// The next mesh frame; nil at the end of the link. A malformed one ends the link.
        mutating func next() async throws -> MeshFrame? {
            while let frame = try await frames.next() {
                var data = frame.unmaskedData
                switch frame.opcode {
                case .binary where frame.fin && fragments == nil:
                    return try Self.decode(data)
                case .binary where fragments == nil:
                    fragments = data
                case .continuation where fragments != nil:
                    guard fragments!.readableBytes + data.readableBytes <= maxMessage else {
                        throw MeshError.refused("link message larger than \(maxMessage) bytes")
                    }
                    fragments!.writeBuffer(&data)
                    if frame.fin, let message = fragments {
                        fragments = nil
                        return try Self.decode(message)
                    }
                case .ping:
                    try await link.outbound.write(WebSocketFrame(fin: true, opcode: .pong, data: data))
                case .pong:
                    continue
                case .connectionClose:
                    try? await link.close(.normalClosure)
                    return nil
                default:
                    throw MeshError.refused("unexpected WebSocket frame on a link")
                }
            }
            return nil
        }

        private static func decode(_ buffer: ByteBuffer) throws -> MeshFrame {
            guard let frame = MeshFrame.decode(buffer) else { throw MeshError.refused("malformed link frame") }
            return frame
        }
    }
}
