import NIOCore

/// The life of one client WebSocket as this node writes to it, apart from any I/O: `Connection`
/// feeds it what happens and does what it answers.
///
///     opening ──welcome──▶ open ──close / peer's close──▶ closing ──socket gone──▶ closed
///        └───────────────────────┴──── slow consumer, or socket gone ──────────────▶ closed
///
/// - opening: the router has not welcomed the client yet. Deliveries and the answer to a ping
///   wait, so `welcome` is always the first message.
/// - open: everything is written.
/// - closing: our close frame (or our echo of the peer's) is out; nothing follows it (RFC 6455
///   5.5.1). The peer's close, or the timeout, shuts the socket.
/// - closed: the socket is gone, or was dropped for not reading; nothing is written.
///
/// Apart from that, the heartbeat: a ping out and no pong back yet (`awaitingPong`).
struct ConnectionStateMachine {
    /// A plain tag, so that the check made for every delivery is one comparison.
    enum State: UInt8 {
        case opening
        case open
        case closing
        case closed
    }

    private(set) var state = State.opening
    private(set) var awaitingPong = false
    /// While opening: what waits for `welcome`.
    private var early: [EncodedFrame] = []
    private var earlyPong: ByteBuffer?

    /// Messages may be written: open.
    var mayWriteMessages: Bool { state == .open }

    /// Pings and pongs may be written: opening or open.
    var mayWriteControl: Bool {
        switch state {
        case .opening, .open: true
        case .closing, .closed: false
        }
    }

    enum DeliveryAction: Equatable {
        case write
        /// Kept until `welcome`.
        case held
        case drop
    }

    mutating func deliver(_ frame: EncodedFrame) -> DeliveryAction {
        switch state {
        case .open: return .write
        case .opening:
            early.append(frame)
            return .held
        case .closing, .closed: return .drop
        }
    }

    /// The client is welcomed: write the welcome, then what was held. Nil when it is too late
    /// (closing or closed) and nothing is to be written.
    mutating func welcome() -> (early: [EncodedFrame], pong: ByteBuffer?)? {
        guard state == .opening else { return nil }
        state = .open
        defer { (early, earlyPong) = ([], nil) }
        return (early, earlyPong)
    }

    enum PingAction: Equatable {
        case answer
        /// Answered after `welcome`: only the latest ping needs one.
        case held
        case drop
    }

    mutating func pingReceived(_ payload: ByteBuffer) -> PingAction {
        switch state {
        case .opening:
            earlyPong = payload
            return .held
        case .open: return .answer
        case .closing, .closed: return .drop
        }
    }

    mutating func pongReceived() {
        awaitingPong = false
    }

    enum HeartbeatAction: Equatable {
        case ping
        /// The last ping went unanswered: close (1001).
        case close
        case none
    }

    mutating func heartbeatDue() -> HeartbeatAction {
        guard mayWriteControl else { return .none }
        if awaitingPong { return .close }
        awaitingPong = true
        return .ping
    }

    /// We close: true if our close frame is to be sent now (only the first close counts).
    mutating func closeRequested() -> Bool {
        switch state {
        case .opening, .open:
            state = .closing
            dropHeld()
            return true
        case .closing, .closed:
            return false
        }
    }

    enum PeerCloseAction: Equatable {
        /// Answer with our close frame, then shut the socket.
        case echo
        /// We began the handshake: this is its end, shut the socket.
        case shut
        case none
    }

    mutating func peerCloseReceived() -> PeerCloseAction {
        switch state {
        case .opening, .open:
            state = .closing
            dropHeld()
            return .echo
        case .closing: return .shut
        case .closed: return .none
        }
    }

    /// The client does not read what it is sent: true if the connection is to be dropped now.
    mutating func overflowed() -> Bool {
        switch state {
        case .opening, .open, .closing:
            state = .closed
            dropHeld()
            return true
        case .closed:
            return false
        }
    }

    mutating func socketClosed() {
        state = .closed
        dropHeld()
    }

    private mutating func dropHeld() {
        early = []
        earlyPong = nil
    }
}
