/// The life of one client's session, apart from any I/O: `Session` feeds it what happens and
/// does what it answers.
///
///     registering ──registered──▶ active(strikes) ──too many strikes──▶ ended ──socket closed──▶ gone
///          └──registration failed──▶ ended                  └────────socket closed────────────▶ gone
///
/// - registering: the router is taking the connection; no command runs yet.
/// - active: commands run. Consecutive bad or refused frames are strikes; a good one clears them.
/// - ended: the node closed the connection (strikes, or it could not register it). No command
///   runs; the socket's close is still to come.
/// - gone: the socket closed; the connection left the router.
struct SessionStateMachine {
    enum State: Equatable {
        case registering
        case active(strikes: Int)
        /// Whether the router had taken the connection (so the close is counted).
        case ended(registered: Bool)
        case gone
    }

    private(set) var state = State.registering
    let maxStrikes: Int

    init(maxStrikes: Int) {
        self.maxStrikes = maxStrikes
    }

    /// Commands run only while active.
    var mayRunCommands: Bool {
        if case .active = state { true } else { false }
    }

    mutating func registered() {
        guard case .registering = state else { return }
        state = .active(strikes: 0)
    }

    mutating func registrationFailed() {
        guard case .registering = state else { return }
        state = .ended(registered: false)
    }

    /// A frame was understood and allowed.
    mutating func frameAccepted() {
        guard case .active = state else { return }
        state = .active(strikes: 0)
    }

    enum StrikeAction: Equatable {
        case none
        /// The last strike: close with 1008 and leave the router.
        case close
    }

    /// A frame was bad or over the rate.
    mutating func strike() -> StrikeAction {
        guard case .active(let strikes) = state else { return .none }
        guard strikes + 1 >= maxStrikes else {
            state = .active(strikes: strikes + 1)
            return .none
        }
        state = .ended(registered: true)
        return .close
    }

    enum CloseAction: Equatable {
        /// Never registered: nothing to undo.
        case none
        /// Count the close; leave the router unless the node already made it leave.
        case count(leaveRouter: Bool)
    }

    mutating func socketClosed() -> CloseAction {
        let action: CloseAction
        switch state {
        case .registering, .ended(registered: false), .gone: action = .none
        case .active: action = .count(leaveRouter: true)
        case .ended(registered: true): action = .count(leaveRouter: false)
        }
        state = .gone
        return action
    }
}
