import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization

/// Protects a node or a hub from connections that hold it without finishing a request.
///
/// Three handlers share the job, one per layer of the pipeline:
/// - `RequestDeadlineHandler`, on the raw bytes (after TLS): a connection must complete each
///   request within `timeout`, counted from its accept and again from the end of each response
///   (so an idle keep-alive is closed too), and at most `maxPending` may be waiting for their
///   first bytes at once (a flood of silent sockets is closed on arrival).
/// - `HTTPErrorResponder`, right after NIO's request decoder: a malformed request gets 400, a
///   head over `maxRequestHead` bytes 431, and the connection is closed.
/// - `RequestProgressHandler`, on the HTTP parts of a connection that was not upgraded: tells the
///   deadline when a request is complete and when its response is written.
/// An upgrade ends the deadline: a WebSocket has its own heartbeat.
package struct HTTPGuardChannel<Base: ServerChildChannel>: ServerChildChannel {
    package typealias Value = Base.Value

    let base: Base
    let limits: HandshakeLimits

    package init(base: Base, limits: HandshakeLimits) {
        self.base = base
        self.limits = limits
    }

    package func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(RequestDeadlineHandler(limits: limits))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }.flatMapThrowing { value in
            // A base that sets up its HTTP decoder later (on its first bytes) calls `guardDecoder` then.
            if (try? channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)) != nil {
                try limits.guardDecoder(of: channel)
            }
            return value
        }
    }

    package func handle(value: Base.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Shared by every connection of a node or a hub.
package final class HandshakeLimits: Sendable {
    /// The largest request head (request line and headers) read; more gets 431.
    package static let maxRequestHead = 64 << 10

    let timeout: TimeAmount
    let maxPending: Int
    let pending = Atomic<Int>(0)
    /// A connection closed for silence or by the pending cap.
    let refused: @Sendable () -> Void
    /// A request answered 400 or 431.
    let badRequest: @Sendable () -> Void

    package init(
        timeout: TimeAmount, maxPending: Int, refused: @escaping @Sendable () -> Void = {},
        badRequest: @escaping @Sendable () -> Void = {}
    ) {
        self.timeout = timeout
        self.maxPending = maxPending
        self.refused = refused
        self.badRequest = badRequest
    }

    /// Puts the error responder right after the channel's HTTP request decoder.
    package func guardDecoder(of channel: any Channel) throws {
        let pipeline = channel.pipeline.syncOperations
        let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        try pipeline.addHandler(HTTPErrorResponder(limits: self), position: .after(decoder))
    }

    /// Decoder limits that make NIO's parser stop at `maxRequestHead` (the URL counts too).
    package static func apply(to decoder: inout NIOHTTPDecoderLimitConfiguration) {
        decoder.maxHeaderListSize = maxRequestHead
        decoder.maxHeaderFieldSize = maxRequestHead
    }
}

/// The deadline of one connection. Its state is touched only on the channel's event loop.
package final class RequestDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    package typealias InboundIn = NIOAny

    private let limits: HandshakeLimits
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    /// Counted among the connections waiting for their first bytes.
    private var counted = false
    /// Requests read whose response is not written yet; below zero while a response was written
    /// before its request's end was read (a server may answer a GET as soon as its head is in).
    private var inFlight = 0
    /// A response head is written and its end is not: an error can no longer be answered.
    private(set) var responding = false
    /// A response was written and nothing was read since: a close now is an idle keep-alive's
    /// (browsers keep them), not a refusal, and is not counted as one.
    private var idleAfterResponse = false

    init(limits: HandshakeLimits) {
        self.limits = limits
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        settle()
        self.context = nil
    }

    // Counted from activation: the pipeline is set up before the socket is active, and a close
    // during setup would be lost.
    package func channelActive(context: ChannelHandlerContext) {
        guard limits.pending.wrappingAdd(1, ordering: .relaxed).newValue <= limits.maxPending else {
            limits.pending.wrappingSubtract(1, ordering: .relaxed)
            limits.refused()
            context.close(promise: nil)
            return
        }
        counted = true
        arm()
        context.fireChannelActive()
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        uncount()
        idleAfterResponse = false
        context.fireChannelRead(data)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        settle()
        context.fireChannelInactive()
    }

    /// A whole request has been read.
    func requestCompleted() {
        inFlight += 1
        // Answered already: the idle deadline armed by that response stands (cancelling it here
        // left an idle keep-alive open for good, seen under load in CI).
        guard inFlight > 0 else { return }
        timer?.cancel()
        timer = nil
    }

    func responseStarted() {
        responding = true
    }

    /// A response is written: the next request must complete within the timeout.
    func responseCompleted() {
        responding = false
        inFlight -= 1
        if inFlight <= 0 {
            idleAfterResponse = true
            arm()
        }
    }

    /// The connection is a WebSocket now: no deadline, and neither guard handler stays in its
    /// pipeline (an idle socket keeps only what it needs).
    package func upgraded() {
        guard let context else { return }
        let pipeline = context.pipeline.syncOperations
        if let responder = try? pipeline.handler(type: HTTPErrorResponder.self) {
            pipeline.removeHandler(responder, promise: nil)
        }
        pipeline.removeHandler(context: context, promise: nil)
    }

    private func arm() {
        guard let context else { return }
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: limits.timeout) { [limits, self] in
            if !self.idleAfterResponse { limits.refused() }
            channel.close(promise: nil)
        }
    }

    private func uncount() {
        guard counted else { return }
        counted = false
        limits.pending.wrappingSubtract(1, ordering: .relaxed)
    }

    private func settle() {
        timer?.cancel()
        timer = nil
        uncount()
    }

    /// The deadline handler of `channel`, if it still has one. On the channel's event loop.
    package static func of(_ channel: any Channel) -> RequestDeadlineHandler? {
        try? channel.pipeline.syncOperations.handler(type: RequestDeadlineHandler.self)
    }
}

/// Answers what NIO's request decoder cannot parse: 431 for a head over the limit, 400 for the
/// rest (bad request line, NUL or bare LF in a header, Content-Length with Transfer-Encoding,
/// ...), then closes. A response already under way cannot be answered: the connection is closed.
final class HTTPErrorResponder: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundOut = HTTPServerResponsePart

    private let limits: HandshakeLimits
    private var answered = false

    init(limits: HandshakeLimits) {
        self.limits = limits
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            return context.fireErrorCaught(error)
        }
        // A socket closed mid-request (by its deadline, or by the peer) makes the decoder
        // fail on what it holds: nothing to answer there.
        guard !answered, context.channel.isActive else { return }
        answered = true
        limits.badRequest()
        let responding = RequestDeadlineHandler.of(context.channel)?.responding ?? false
        guard !responding else {
            context.close(promise: nil)
            return
        }
        let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
        let code = parserError == .headerOverflow ? "too_large" : "bad_request"
        let body = #"{"error":"\#(code)","message":"\#(Self.explain(parserError))"}"#
        let head = HTTPResponseHead(
            version: .http1_1, status: status,
            headers: ["Content-Type": "application/json", "Content-Length": "\(body.utf8.count)", "Connection": "close"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    private static func explain(_ error: HTTPParserError) -> String {
        error == .headerOverflow
            ? "the request head is larger than \(HandshakeLimits.maxRequestHead) bytes" : "malformed HTTP request"
    }
}

/// Tells the connection's deadline where its requests and responses are. Sits after the HTTP
/// codec of a connection that was not upgraded.
package final class RequestProgressHandler: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    package typealias InboundIn = HTTPRequestPart
    package typealias InboundOut = HTTPRequestPart
    package typealias OutboundIn = HTTPResponsePart
    package typealias OutboundOut = HTTPResponsePart

    private var deadline: RequestDeadlineHandler?

    package init() {}

    package func handlerAdded(context: ChannelHandlerContext) {
        deadline = RequestDeadlineHandler.of(context.channel)
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { deadline?.requestCompleted() }
        context.fireChannelRead(data)
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head: deadline?.responseStarted()
        case .body: break
        case .end: deadline?.responseCompleted()
        }
        context.write(data, promise: promise)
    }
}
