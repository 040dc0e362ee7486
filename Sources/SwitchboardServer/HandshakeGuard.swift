import HummingbirdCore
import Logging
import NIOCore
import Synchronization

/// Protects a node from sockets that connect and say nothing: each accepted connection must send
/// its first bytes within `timeout`, and at most `maxPending` connections may be waiting to do so
/// at once (a flood of silent sockets is closed on arrival, not held).
struct HandshakeGuardChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let limits: HandshakeLimits

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(HandshakeGuardHandler(limits: limits), position: .first)
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Base.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Shared by every connection of a node.
final class HandshakeLimits: Sendable {
    let timeout: TimeAmount
    let maxPending: Int
    let pending = Atomic<Int>(0)
    let refused: @Sendable () -> Void

    init(timeout: TimeAmount, maxPending: Int, refused: @escaping @Sendable () -> Void) {
        self.timeout = timeout
        self.maxPending = maxPending
        self.refused = refused
    }
}

/// Lives at the front of one connection's pipeline until its first bytes arrive.
final class HandshakeGuardHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny

    private let limits: HandshakeLimits
    private var timer: Scheduled<Void>?
    private var counted = false

    init(limits: HandshakeLimits) {
        self.limits = limits
    }

    // Counted from activation: the pipeline is set up before the socket is active, and a close
    // during setup would be lost.
    func channelActive(context: ChannelHandlerContext) {
        guard limits.pending.wrappingAdd(1, ordering: .relaxed).newValue <= limits.maxPending else {
            limits.pending.wrappingSubtract(1, ordering: .relaxed)
            limits.refused()
            context.close(promise: nil)
            return
        }
        counted = true
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: limits.timeout) { [limits] in
            limits.refused()
            channel.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        settle()
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        settle()
        context.fireChannelInactive()
    }

    private func settle() {
        timer?.cancel()
        timer = nil
        if counted {
            counted = false
            limits.pending.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}
