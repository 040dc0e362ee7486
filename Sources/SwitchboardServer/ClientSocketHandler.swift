import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardProtocol

/// The NIO end of one client WebSocket, after NIO's frame decoder: it reassembles fragmented
/// messages, answers pings and the close handshake, notes pongs for the heartbeat, and hands each
/// whole message to the session. It holds no Swift task: an idle client costs only its objects.
///
/// A message over `maxFrameBytes` closes with 1009 (a single oversized frame is caught earlier
/// by NIO's decoder, which answers 1009 itself; it is counted here); invalid UTF-8 in a text
/// message closes with 1007; a broken fragment sequence or reserved bits with 1002 (RFC 6455).
final class ClientSocketHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let connection: Connection
    /// Nil for a socket refused after the upgrade (bad user name): it is only being closed.
    private let session: Session?
    private let node: NodeContext
    /// A fragmented message being put together, and whether it is text.
    private var fragments: ByteBuffer?
    private var fragmentsAreText = false

    init(connection: Connection, session: Session?, node: NodeContext) {
        self.connection = connection
        self.session = session
        self.node = node
    }

    /// Wires an upgraded channel: the wire writer below the frame encoder, this handler right
    /// after the frame decoder (so it sees the decoder's errors before NIO's error handler).
    static func install(on channel: any Channel, identity: Identity, batch: Bool, node: NodeContext) throws {
        let pipeline = channel.pipeline.syncOperations
        let wire = WireWriter()
        try pipeline.addHandler(wire, position: .before(try pipeline.handler(type: WebSocketFrameEncoder.self)))
        let connection = Connection(
            session: Identifiers.random(16), identity: identity, channel: channel, wire: wire,
            maxBufferedBytes: node.configuration.maxBufferedBytes, metrics: node.metrics, logger: node.logger,
            batch: batch)
        let session = Name.isValid(identity.user) ? Session(connection: connection, node: node) : nil
        let handler = ClientSocketHandler(connection: connection, session: session, node: node)
        let decoder = try pipeline.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
        try pipeline.addHandler(handler, position: .after(decoder))
        node.heartbeats.watch(connection)
        if let session {
            session.start()
        } else {
            // No session for a bad name: say why, then close (policy violation).
            connection.open(welcome: ServerFrame.error(ProtocolError(
                code: .invalidName, message: "user must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -")))
            connection.close(.policyViolation, reason: "invalid user id")
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            return connection.close(.protocolError, reason: "reserved bits set without an extension")
        }
        switch frame.opcode {
        case .text, .binary:
            guard fragments == nil else {
                return connection.close(.protocolError, reason: "a new message began before the last one ended")
            }
            if frame.fin {
                return receive(frame.unmaskedData, text: frame.opcode == .text)
            }
            fragments = frame.unmaskedData
            fragmentsAreText = frame.opcode == .text
        case .continuation:
            guard var message = fragments else {
                return connection.close(.protocolError, reason: "a continuation frame without a message to continue")
            }
            var more = frame.unmaskedData
            guard message.readableBytes + more.readableBytes <= node.configuration.maxFrameBytes else {
                fragments = nil
                node.metrics.tooLarge.increment()
                return connection.close(.messageTooLarge, reason: "message larger than \(node.configuration.maxFrameBytes) bytes")
            }
            fragments = nil  // keep `message` the buffer's only owner while it grows
            message.writeBuffer(&more)
            if frame.fin {
                receive(message, text: fragmentsAreText)
            } else {
                fragments = message
            }
        case .ping:
            guard frame.fin else { return connection.close(.protocolError, reason: "fragmented control frame") }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            connection.heardPong()
        case .connectionClose:
            connection.peerClosed(frame.unmaskedData)
        default:
            connection.close(.protocolError, reason: "unknown opcode")
        }
    }

    private func receive(_ message: ByteBuffer, text: Bool) {
        guard let session else { return }
        let bytes = Array(message.readableBytesView)
        if text, String(validating: bytes, as: UTF8.self) == nil {
            return connection.close(.dataInconsistentWithMessage, reason: "text message is not valid UTF-8")
        }
        session.receive(text ? .text(bytes) : .binary)
    }

    func channelInactive(context: ChannelHandlerContext) {
        node.heartbeats.forget(connection)
        connection.closed()
        session?.receive(.closed)
        context.fireChannelInactive()
    }

    /// The peer finished sending (the server allows half-closure): a WebSocket has nothing left
    /// to do once its client stops talking, so the socket is closed rather than held.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
            return
        }
        if event is ChannelShouldQuiesceEvent {
            // The server is stopping (the node drains before that, so this is a backstop).
            connection.close(.goingAway, reason: "node is shutting down")
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError, error == .invalidFrameLength {
            node.metrics.tooLarge.increment()
        }
        context.fireErrorCaught(error)
    }
}
