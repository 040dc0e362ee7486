import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardProtocol

/// The NIO end of one client WebSocket, and its only handler: it reads the frames
/// (`WebSocketFrameReader`), reassembles fragmented messages, answers pings and the close
/// handshake, notes pongs for the heartbeat, and hands each whole message to the session; its
/// context is the one the connection writes through (lent to `Connection.context`). It holds no Swift task: an
/// idle client costs only its objects.
///
/// A frame or message over `maxFrameBytes` closes with 1009 (a frame as soon as its header
/// says so); invalid UTF-8 in a text message closes with 1007; an unmasked frame, a broken
/// fragment sequence, reserved bits, an unknown opcode, a long or fragmented control frame or a
/// malformed close frame with 1002 (RFC 6455). Every frame but a close counts against the rate
/// limit, pings included; pongs go out through the connection, under its outbound limit.
final class ClientSocketHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private let connection: Connection
    /// Nil for a socket refused after the upgrade (bad user name): it is only being closed.
    private let session: (any ClientSession)?
    private let node: NodeContext
    private var reader: WebSocketFrameReader
    /// The bytes stopped being frames: nothing after that is looked at.
    private var stopped = false
    /// A fragmented message being put together, and whether it is text.
    private var fragments: ByteBuffer?
    private var fragmentsAreText = false
    /// Frames per connection, every opcode but close; checked on the event loop as they arrive.
    private var limiter: RateLimiter
    /// Some frame of the message being read came over the rate.
    private var overRate = false
    /// Whether this handler gives the user's admission back when it leaves the pipeline (an
    /// upgrade decided on the loop), rather than a close callback (see `AdmissionLedger`).
    private let releasesAdmission: Bool

    init(connection: Connection, session: (any ClientSession)?, node: NodeContext, releasesAdmission: Bool) {
        self.connection = connection
        self.session = session
        self.node = node
        self.releasesAdmission = releasesAdmission
        self.reader = WebSocketFrameReader(maxFrameBytes: node.configuration.maxFrameBytes)
        self.limiter = RateLimiter(burst: node.configuration.rateBurst, perSecond: node.configuration.ratePerSecond)
    }

    /// Wires an upgraded channel: this handler, last in the pipeline, reads and writes frames.
    /// From here on the handler owns the socket's place under the node's cap (`SocketCap`), and
    /// with `releasesAdmission` the user's reserved admission; it gives both back when it leaves
    /// the pipeline. If this throws, it owns neither.
    static func install(
        on channel: any Channel, identity: Identity, options: ClientOptions, node: NodeContext, releasesAdmission: Bool = false
    ) throws {
        let pipeline = channel.pipeline.syncOperations
        let connection = Connection(
            session: Identifiers.random(15), identity: identity, channel: channel, settings: node.connectionSettings, options: options)
        if options.stomp {
            // A STOMP client names itself in CONNECT (StompSession).
            let session = StompSession(connection: connection, node: node, options: options)
            try pipeline.addHandler(ClientSocketHandler(connection: connection, session: session, node: node, releasesAdmission: false))
            node.heartbeats.watch(connection)
            session.start()
            return
        }
        let session = Name.isValidUser(identity.user) ? Session(connection: connection, node: node) : nil
        try pipeline.addHandler(
            ClientSocketHandler(connection: connection, session: session, node: node, releasesAdmission: releasesAdmission))
        node.heartbeats.watch(connection)
        if let session {
            session.start(inboxSince: options.inboxSince)
        } else {
            // No session for a bad name: say why, then close (policy violation).
            connection.open(
                welcome: ServerFrame.error(
                    ProtocolError(
                        code: .invalidName, message: "user must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -, and not 'server'")))
            connection.close(.policyViolation, reason: "invalid user id")
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        connection.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connection.context = nil
        node.sockets.give()
        if releasesAdmission { node.admissions.release(connection.user) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !stopped else { return }
        do {
            try reader.read(unwrapInboundIn(data)) { frame in
                if !stopped { handle(frame) }
            }
        } catch {
            // The stream cannot be read past this point, so no close handshake: the close frame
            // goes out and the socket is shut.
            stopped = true
            switch error {
            case .tooLarge:
                node.metrics.tooLarge.increment()
                connection.abort(.messageTooLarge, reason: "frame larger than \(node.configuration.maxFrameBytes) bytes")
            case .malformed(let why):
                connection.abort(.protocolError, reason: why)
            }
        }
    }

    private func handle(_ frame: ClientFrame) {
        // RFC 6455 5.1: a client masks every frame; a server must close on one that is not.
        guard frame.masked else {
            return connection.close(.protocolError, reason: "client frames must be masked")
        }
        guard !frame.reservedBits else {
            return connection.close(.protocolError, reason: "reserved bits set without an extension")
        }
        // Every frame but a close takes a token: pings and empty fragments cost like messages.
        let withinRate = frame.opcode == ClientFrame.close || limiter.allow()
        if !withinRate { overRate = true }
        switch frame.opcode {
        case ClientFrame.text, ClientFrame.binary:
            guard fragments == nil else {
                return connection.close(.protocolError, reason: "a new message began before the last one ended")
            }
            if frame.fin {
                return receive(frame.payload, text: frame.opcode == ClientFrame.text)
            }
            fragments = frame.payload
            fragmentsAreText = frame.opcode == ClientFrame.text
        case ClientFrame.continuation:
            guard var message = fragments else {
                return connection.close(.protocolError, reason: "a continuation frame without a message to continue")
            }
            var more = frame.payload
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
        case ClientFrame.ping:
            guard withinRate else { return strikeOverRate() }
            connection.pong(frame.payload)
        case ClientFrame.pong:
            guard withinRate else { return strikeOverRate() }
            connection.heardPong()
        case ClientFrame.close:
            connection.peerClosed(PeerClose(frame.payload))
        default:
            connection.close(.protocolError, reason: "unknown opcode")
        }
    }

    /// A control frame over the rate is not answered; it counts as a strike (see `Session`).
    private func strikeOverRate() {
        overRate = false
        session?.receive(.overRate(nil))
    }

    private func receive(_ message: ByteBuffer, text: Bool) {
        let overRate = self.overRate
        self.overRate = false
        guard let session else { return }
        let bytes = Array(message.readableBytesView)
        if text, !UTF8Check.isValid(bytes) {
            return connection.close(.dataInconsistentWithMessage, reason: "text message is not valid UTF-8")
        }
        if overRate { return session.receive(.overRate(text ? bytes : nil)) }
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
            // Asked to stop: the node's drain closes client sockets itself; this is for a
            // pipeline that sends the event (the listener sends it only to HTTP and links).
            connection.close(.goingAway, reason: "node is shutting down")
        }
        context.fireUserInboundEventTriggered(event)
    }

}

/// What the socket hands its client's session: a JSON `Session` or a `StompSession`.
protocol ClientSession: AnyObject, Sendable {
    typealias Inbound = Session.Inbound
    /// A whole message, a refusal over the rate, or the close. On the event loop.
    func receive(_ message: Inbound)
}

extension Session: ClientSession {}

/// What a client's close frame asks for (RFC 6455 5.5.1, 7.4): the code to echo, or a protocol
/// error for a one-byte payload, a code a client may not send, or a reason that is not UTF-8.
enum PeerClose: Equatable {
    case echo(UInt16?)
    case protocolError

    init(_ payload: ByteBuffer) {
        var payload = payload
        guard payload.readableBytes > 0 else {
            self = .echo(nil)
            return
        }
        guard let code = payload.readInteger(as: UInt16.self), Self.mayBeSent(code),
            UTF8Check.isValid(Array(payload.readableBytesView))
        else {
            self = .protocolError
            return
        }
        self = .echo(code)
    }

    /// Codes a client may put in a close frame: 1004-1006 and 1015 are reserved for reporting.
    static func mayBeSent(_ code: UInt16) -> Bool {
        (1000...1003).contains(code) || (1007...1014).contains(code) || (3000...4999).contains(code)
    }
}
