import Testing

@testable import SwitchboardServer

@Suite("Session state machine")
struct SessionStateMachineTests {
    @Test func strikesCloseAtTheLimitAndAGoodFrameClearsThem() {
        var machine = SessionStateMachine(maxStrikes: 3)
        #expect(!machine.mayRunCommands, "no command runs before the router has the connection")
        machine.registered()
        #expect(machine.strike() == .none)
        #expect(machine.strike() == .none)
        machine.frameAccepted()
        #expect(machine.state == .active(strikes: 0))
        #expect(machine.strike() == .none)
        #expect(machine.strike() == .none)
        #expect(machine.strike() == .close)
        #expect(!machine.mayRunCommands)
        #expect(machine.strike() == .none, "an ended session is not closed twice")
        #expect(machine.socketClosed() == .count(leaveRouter: false), "the node made it leave already")
        #expect(machine.state == .gone)
    }

    @Test func aSocketClosedWhileActiveLeavesTheRouterOnce() {
        var machine = SessionStateMachine(maxStrikes: 3)
        machine.registered()
        #expect(machine.socketClosed() == .count(leaveRouter: true))
        #expect(machine.socketClosed() == .none)
    }

    @Test func aConnectionNeverRegisteredCountsNothing() {
        var machine = SessionStateMachine(maxStrikes: 3)
        machine.registrationFailed()
        #expect(!machine.mayRunCommands)
        machine.registered()
        #expect(machine.state == .ended(registered: false), "too late to register")
        #expect(machine.socketClosed() == .none)
    }
}
