import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import SwitchboardServer

/// A client socket's life as the node writes to it: the state machine on its own, then
/// `Connection` on NIO's `EmbeddedChannel`, reading back the exact bytes it would send.
@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    static let allocator = ByteBufferAllocator()

    static func frame(_ text: String) -> EncodedFrame {
        EncodedFrame(Array(text.utf8), allocator: allocator)
    }

    @Test func deliveriesAndPongsWaitForWelcome() {
        var machine = ConnectionStateMachine()
        #expect(machine.deliver(Self.frame("a")) == .held)
        #expect(machine.pingReceived(ByteBuffer(string: "1")) == .held)
        #expect(machine.pingReceived(ByteBuffer(string: "2")) == .held)
        #expect(machine.deliver(Self.frame("b")) == .held)
        #expect(!machine.mayWriteMessages && machine.mayWriteControl)
        let held = machine.welcome()
        #expect(held?.early.map { String(buffer: $0.payload) } == ["a", "b"])
        #expect(held?.pong == ByteBuffer(string: "2"), "only the latest ping is answered")
        #expect(machine.welcome() == nil, "welcome happens once")
        #expect(machine.deliver(Self.frame("c")) == .write)
        #expect(machine.pingReceived(ByteBuffer()) == .answer)
    }

    @Test func nothingFollowsOurCloseFrame() {
        var machine = ConnectionStateMachine()
        _ = machine.welcome()
        #expect(machine.closeRequested() == true)
        #expect(machine.closeRequested() == false, "only the first close counts")
        #expect(machine.deliver(Self.frame("late")) == .drop)
        #expect(machine.pingReceived(ByteBuffer()) == .drop)
        #expect(machine.heartbeatDue() == .none)
        #expect(machine.peerCloseReceived() == .shut, "the peer's close ends our handshake")
        machine.socketClosed()
        #expect(machine.peerCloseReceived() == .none)
        #expect(machine.overflowed() == false)
    }

    @Test func aCloseBeforeWelcomeDropsWhatWasHeld() {
        var machine = ConnectionStateMachine()
        _ = machine.deliver(Self.frame("a"))
        #expect(machine.closeRequested() == true)
        #expect(machine.welcome() == nil)
    }

    @Test func thePeersCloseIsEchoedOnce() {
        var machine = ConnectionStateMachine()
        _ = machine.welcome()
        #expect(machine.peerCloseReceived() == .echo)
        #expect(machine.peerCloseReceived() == .shut)
        #expect(machine.closeRequested() == false)
    }

    @Test func aMissedPongClosesAtTheNextHeartbeat() {
        var machine = ConnectionStateMachine()
        _ = machine.welcome()
        #expect(machine.heartbeatDue() == .ping)
        machine.pongReceived()
        #expect(machine.heartbeatDue() == .ping)
        #expect(machine.awaitingPong)
        #expect(machine.heartbeatDue() == .close)
    }

    @Test func aSlowConsumerIsDroppedOnce() {
        var machine = ConnectionStateMachine()
        _ = machine.welcome()
        #expect(machine.overflowed() == true)
        #expect(machine.overflowed() == false)
        #expect(!machine.mayWriteControl)
        #expect(machine.deliver(Self.frame("x")) == .drop)
    }

    // MARK: Connection on an EmbeddedChannel

    /// A connection on an embedded channel with the node's write path (the context of the
    /// socket's last handler, lent to the connection), and what it has written so far as server frames.
    final class Harness {
        /// Lends its context to the connection, as `ClientSocketHandler` does.
        final class Lender: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            let connection: Connection
            init(_ connection: Connection) { self.connection = connection }
            func handlerAdded(context: ChannelHandlerContext) { connection.context = context }
            func handlerRemoved(context: ChannelHandlerContext) { connection.context = nil }
        }

        let channel = EmbeddedChannel()
        let connection: Connection

        init(batch: Bool = false) throws {
            connection = Connection(
                session: "s", identity: Identity(user: "alice", rooms: nil, mayBroadcast: false), channel: channel,
                settings: ConnectionSettings(maxBufferedBytes: 1 << 20, metrics: NodeMetrics(), logger: Logger(label: "test")),
                options: ClientOptions(batch: batch))
            try channel.pipeline.syncOperations.addHandler(Lender(connection))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        /// Every frame written since the last call: opcode and payload.
        func written() throws -> [(opcode: UInt8, payload: [UInt8])] {
            channel.embeddedEventLoop.run()
            var bytes = ByteBuffer()
            while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
            var frames: [(UInt8, [UInt8])] = []
            while let first = bytes.readInteger(as: UInt8.self), let second = bytes.readInteger(as: UInt8.self) {
                var length = Int(second & 0x7F)
                if length == 126 { length = Int(bytes.readInteger(as: UInt16.self)!) }
                if length == 127 { length = Int(bytes.readInteger(as: UInt64.self)!) }
                frames.append((first & 0x0F, bytes.readBytes(length: length)!))
            }
            return frames
        }
    }

    @Test func welcomeIsTheFirstFrameAndHeldDeliveriesFollowIt() throws {
        let harness = try Harness()
        let connection = harness.connection
        harness.channel.embeddedEventLoop.execute {
            connection.write(Self.frame("early"))
            connection.pong(ByteBuffer(string: "p"))
        }
        #expect(try harness.written().isEmpty)
        connection.open(welcome: Array("welcome".utf8))
        let frames = try harness.written()
        #expect(frames.map { String(decoding: $0.payload, as: UTF8.self) } == ["welcome", "early", "p"])
        #expect(frames.map(\.opcode) == [0x1, 0x1, 0xA])
    }

    @Test func afterCloseNothingIsWrittenAndThePeersCloseShutsTheSocket() throws {
        let harness = try Harness()
        let connection = harness.connection
        connection.open(welcome: Array("welcome".utf8))
        _ = try harness.written()
        connection.close(.policyViolation, reason: "bye")
        let close = try harness.written()
        #expect(close.count == 1 && close.first?.opcode == 0x8)
        #expect(close.first?.payload == [0x03, 0xF0] + Array("bye".utf8))
        connection.send(Array("late".utf8))
        harness.channel.embeddedEventLoop.execute {
            connection.pong(ByteBuffer())
            connection.heartbeat()
        }
        #expect(try harness.written().isEmpty, "nothing follows our close frame")
        #expect(harness.channel.isActive)
        harness.channel.embeddedEventLoop.execute { connection.peerClosed(.echo(1000)) }
        harness.channel.embeddedEventLoop.run()
        #expect(!harness.channel.isActive)
    }

    @Test func thePeersCloseIsEchoedWithItsCode() throws {
        let harness = try Harness()
        let connection = harness.connection
        connection.open(welcome: Array("welcome".utf8))
        _ = try harness.written()
        harness.channel.embeddedEventLoop.execute { connection.peerClosed(.echo(4001)) }
        let echo = try harness.written()
        #expect(echo.count == 1 && echo.first?.opcode == 0x8)
        #expect(echo.first?.payload == [0x0F, 0xA1])
        #expect(!harness.channel.isActive)
    }

    /// A client that pings while not reading: while the socket is backed up its pings are not
    /// answered, and enough of them in a row close it as a slow consumer.
    @Test func pingsWhileBackedUpAreNotAnsweredAndCloseASlowConsumer() throws {
        let harness = try Harness()
        let connection = harness.connection
        connection.open(welcome: Array("welcome".utf8))
        _ = try harness.written()
        harness.channel.isWritable = false
        harness.channel.embeddedEventLoop.execute {
            for _ in 0..<(Connection.maxUnansweredPings - 1) { connection.pong(ByteBuffer(string: "p")) }
        }
        #expect(try harness.written().isEmpty, "no pong queued behind a backlog")
        harness.channel.isWritable = true
        harness.channel.embeddedEventLoop.execute { connection.pong(ByteBuffer(string: "q")) }
        #expect(try harness.written().map(\.opcode) == [0xA], "answered again once it reads")
        harness.channel.isWritable = false
        harness.channel.embeddedEventLoop.execute {
            for _ in 0..<Connection.maxUnansweredPings { connection.pong(ByteBuffer(string: "p")) }
        }
        let close = try harness.written()
        #expect(close.map(\.opcode) == [0x8])
        #expect(close.first.map { Array($0.payload.prefix(2)) } == [0x03, 0xF0])
        #expect(!harness.channel.isActive)
    }

    @Test func aHeartbeatWithoutAPongClosesWith1001() throws {
        let harness = try Harness()
        let connection = harness.connection
        connection.open(welcome: Array("welcome".utf8))
        _ = try harness.written()
        harness.channel.embeddedEventLoop.execute { connection.heartbeat() }
        #expect(try harness.written().map(\.opcode) == [0x9])
        harness.channel.embeddedEventLoop.execute {
            connection.heardPong()
            connection.heartbeat()
        }
        #expect(try harness.written().map(\.opcode) == [0x9])
        harness.channel.embeddedEventLoop.execute { connection.heartbeat() }
        let close = try harness.written()
        #expect(close.map(\.opcode) == [0x8])
        #expect(close.first.map { Array($0.payload.prefix(2)) } == [0x03, 0xE9])
    }
}
