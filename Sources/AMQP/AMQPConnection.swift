import Logging
import NIOCore
import NIOPosix

/// Where a broker is: `amqp://USER:PASS@HOST:PORT[/VHOST]` (the vhost percent-decoded; `/` when
/// left out).
public struct AMQPAddress: Equatable, Sendable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var virtualHost: String

    public init(host: String, port: Int = 5672, user: String = "guest", password: String = "guest", virtualHost: String = "/") {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.virtualHost = virtualHost
    }

    /// Parses an `amqp://` URL; nil when it is not one.
    public init?(url: String) {
        guard url.hasPrefix("amqp://") else { return nil }
        var rest = Substring(url.dropFirst("amqp://".count))
        var virtualHost = "/"
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let decoded = String(path).removingPercentEncodingAMQP() else { return nil }
                virtualHost = decoded
            }
            rest = rest[..<slash]
        }
        var user = "guest"
        var password = "guest"
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            let parts = credentials.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = String(parts[0])
            password = parts.count > 1 ? String(parts[1]) : ""
            rest = rest[rest.index(after: at)...]
        }
        let hostPort = rest.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let host = hostPort.first, !host.isEmpty else { return nil }
        let port = hostPort.count > 1 ? Int(hostPort[1]) : 5672
        guard let port, (1...65535).contains(port) else { return nil }
        self.init(host: String(host), port: port, user: user, password: password, virtualHost: virtualHost)
    }
}

extension String {
    /// `%2F` → `/`; nil for a malformed escape.
    func removingPercentEncodingAMQP() -> String? {
        var out: [UInt8] = []
        var bytes = Array(utf8)[...]
        while let byte = bytes.popFirst() {
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard bytes.count >= 2, let value = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else { return nil }
            out.append(value)
            bytes = bytes.dropFirst(2)
        }
        return String(validating: out, as: UTF8.self)
    }
}

public enum AMQPConnectionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The broker closed the connection or a channel: its reply code and text.
    case closedByBroker(code: UInt16, text: String)
    /// The broker refused a published message (basic.nack).
    case notConfirmed
    /// The broker asked us to stop publishing (connection.blocked).
    case blocked(String)
    case connectionClosed
    case timedOut
    case protocolError(String)

    public var description: String {
        switch self {
        case .closedByBroker(let code, let text): "the broker closed: \(code) \(text)"
        case .notConfirmed: "the broker did not confirm the message"
        case .blocked(let reason): "the broker blocked publishing: \(reason)"
        case .connectionClosed: "the AMQP connection closed"
        case .timedOut: "the broker did not answer in time"
        case .protocolError(let message): "AMQP protocol error: \(message)"
        }
    }
}

/// A message the broker delivered to our consumer.
public struct AMQPDelivery: Sendable {
    public var exchange: String
    public var routingKey: String
    public var properties: AMQPProperties
    public var body: [UInt8]
}

/// One connection to a broker with one channel (channel 1) in confirm mode: what a backplane
/// needs. Synchronous methods (declare, bind, consume, ...) are answered in order; publishes are
/// confirmed by delivery tag; deliveries go to `onDelivery` on the connection's event loop;
/// heartbeats go both ways. Any error of the broker's closes the whole connection (its owner
/// reconnects): a channel error leaves nothing worth keeping here.
public final class AMQPConnection: Sendable {
    public let channel: any Channel
    private let handler: AMQPHandler
    private let timeout: TimeAmount

    private init(channel: any Channel, handler: AMQPHandler, timeout: TimeAmount) {
        self.channel = channel
        self.handler = handler
        self.timeout = timeout
    }

    /// Connects, authenticates (PLAIN), tunes, opens the vhost and channel 1, and selects
    /// publisher confirms.
    public static func connect(
        to address: AMQPAddress, heartbeatSeconds: UInt16 = 10, timeout: TimeAmount = .seconds(5), logger: Logger,
        onDelivery: @escaping @Sendable (AMQPDelivery) -> Void = { _ in },
        onBlocked: @escaping @Sendable (String?) -> Void = { _ in }
    ) async throws -> AMQPConnection {
        let handler = AMQPHandler(
            address: address, heartbeatSeconds: heartbeatSeconds, confirmTimeout: timeout, logger: logger, onDelivery: onDelivery,
            onBlocked: onBlocked)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(timeout)
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
                }
                .connect(host: address.host, port: address.port).get()
        } catch {
            // No socket, no handshake: the handshake's promise is settled here (NIO traps on a
            // promise left pending), and the caller hears why.
            handler.failAll(error)
            throw error
        }
        let connection = AMQPConnection(channel: channel, handler: handler, timeout: timeout)
        do {
            try await connection.withTimeout(handler.opened.futureResult)
            try await connection.call(.channelOpen)
            try await connection.call(.confirmSelect)
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return connection
    }

    /// Sends a synchronous method on channel 1 and returns its reply.
    @discardableResult
    public func call(_ method: AMQPMethod) async throws -> AMQPMethod {
        try await withTimeout(enqueueCall(method))
    }

    /// Queues a synchronous method in call order (calls made one after another, or under one
    /// lock, reach the broker in that order) and returns its reply to come.
    public func enqueueCall(_ method: AMQPMethod) -> EventLoopFuture<AMQPMethod> {
        let handler = self.handler
        let promise = channel.eventLoop.makePromise(of: AMQPMethod.self)
        channel.eventLoop.execute { handler.call(method, promise: promise) }
        return promise.futureResult
    }

    /// Publishes on channel 1; returns once the broker confirmed it (basic.ack), throws if it
    /// refused it, is blocked, or the connection is gone.
    public func publish(exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties = AMQPProperties()) async throws {
        try await withTimeout(enqueuePublish(exchange: exchange, routingKey: routingKey, body: body, properties: properties))
    }

    /// Queues a publish in call order (from one thread) and returns its confirmation to come.
    public func enqueuePublish(exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties = AMQPProperties())
        -> EventLoopFuture<Void>
    {
        let handler = self.handler
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute {
            handler.publish(exchange: exchange, routingKey: routingKey, body: body, properties: properties, promise: promise)
        }
        return promise.futureResult
    }

    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Closes politely (connection.close, then close-ok), or at once after the timeout.
    public func close() async {
        let handler = self.handler
        let done = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute { handler.closeGracefully(done) }
        _ = try? await withTimeout(done.futureResult)
        try? await channel.close()
    }

    private func withTimeout<Value: Sendable>(_ future: EventLoopFuture<Value>) async throws -> Value {
        let channel = self.channel
        let handler = self.handler
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            // A broker that does not answer in time is treated as gone.
            handler.failAll(AMQPConnectionError.timedOut)
            channel.close(promise: nil)
        }
        defer { timer.cancel() }
        return try await future.get()
    }
}

/// The connection's protocol, on its event loop: the handshake, replies matched to calls,
/// confirms matched to publishes, deliveries assembled from their three frames, heartbeats.
final class AMQPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase { case awaitingStart, awaitingTune, awaitingOpenOk, open, closing, closed }

    private let address: AMQPAddress
    private let heartbeatSeconds: UInt16
    private let logger: Logger
    private let onDelivery: @Sendable (AMQPDelivery) -> Void
    private let onBlocked: @Sendable (String?) -> Void
    let opened: EventLoopPromise<Void>
    private var context: ChannelHandlerContext?
    private var parser = AMQPFrameParser(frameMax: AMQPFrame.minFrameMax)
    private var phase = Phase.awaitingStart
    private var frameMax: UInt32 = AMQPFrame.minFrameMax
    /// Replies awaited on channel 1, in the order the calls were sent.
    private var calls = CircularBuffer<EventLoopPromise<AMQPMethod>>()
    /// Publishes awaiting their confirm, by delivery tag.
    private var confirms: [UInt64: (promise: EventLoopPromise<Void>, deadline: NIODeadline)] = [:]
    /// How long a publish may wait for its confirm (a blocked broker stops reading before it
    /// says so): then it fails with `timedOut`, and a late confirm is ignored.
    private let confirmTimeout: TimeAmount
    private var nextTag: UInt64 = 1
    private var blocked: String?
    private var closedDone: EventLoopPromise<Void>?
    /// A delivery whose header or body is still to come.
    private var incoming: (method: AMQPMethod, header: AMQPContentHeader?, body: [UInt8])?
    private var heartbeatTask: RepeatedTask?
    private var heardSinceCheck = true
    private var wroteSinceBeat = false
    /// Heartbeat checks in a row that heard nothing from the broker.
    private var silentChecks = 0

    init(
        address: AMQPAddress, heartbeatSeconds: UInt16, confirmTimeout: TimeAmount, logger: Logger,
        onDelivery: @escaping @Sendable (AMQPDelivery) -> Void,
        onBlocked: @escaping @Sendable (String?) -> Void
    ) {
        self.address = address
        self.heartbeatSeconds = heartbeatSeconds
        self.confirmTimeout = confirmTimeout
        self.logger = logger
        self.onDelivery = onDelivery
        self.onBlocked = onBlocked
        self.opened = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: AMQPFrame.protocolHeader)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        heardSinceCheck = true
        parser.append(buffer.readableBytesView)
        do {
            while let frame = try parser.next() { try handle(frame) }
        } catch let error as AMQPError {
            fail(.protocolError(error.message), replyCode: 501)
        } catch let error as AMQPConnectionError {
            fail(error, replyCode: 505)
        } catch {
            fail(.protocolError("\(error)"), replyCode: 541)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        heartbeatTask?.cancel()
        failAll(AMQPConnectionError.connectionClosed)
        closedDone?.succeed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Frames in

    private func handle(_ frame: AMQPFrame) throws {
        switch frame {
        case .heartbeat:
            return
        case .method(let channel, let method):
            if channel == 0 { return try connectionMethod(method) }
            guard incoming == nil else { throw AMQPConnectionError.protocolError("a method while a delivery's content was due") }
            try channelMethod(method)
        case .header(_, let header):
            guard var delivery = incoming, delivery.header == nil else {
                throw AMQPConnectionError.protocolError("a content header without its method")
            }
            delivery.header = header
            incoming = delivery
            if header.bodySize == 0 { deliver() }
        case .body(_, let bytes):
            guard var delivery = incoming, let header = delivery.header else {
                throw AMQPConnectionError.protocolError("a content body without its header")
            }
            delivery.body += bytes
            guard UInt64(delivery.body.count) <= header.bodySize else {
                throw AMQPConnectionError.protocolError("a content body longer than its header said")
            }
            incoming = delivery
            if UInt64(delivery.body.count) == header.bodySize { deliver() }
        }
    }

    private func connectionMethod(_ method: AMQPMethod) throws {
        switch (phase, method) {
        case (.awaitingStart, .connectionStart(_, _, _, let mechanisms, _)):
            guard mechanisms.split(separator: " ").contains("PLAIN") else {
                throw AMQPConnectionError.protocolError("the broker offers no PLAIN authentication (\(mechanisms))")
            }
            let capabilities: AMQPTable = [
                "publisher_confirms": .bool(true), "connection.blocked": .bool(true), "consumer_cancel_notify": .bool(true),
                // An authentication failure then comes as connection.close with its reason, not a bare close.
                "authentication_failure_close": .bool(true),
            ]
            let properties: AMQPTable = ["product": .string(Array("switchboard".utf8)), "capabilities": .table(capabilities)]
            let response = [0] + Array(address.user.utf8) + [0] + Array(address.password.utf8)
            phase = .awaitingTune
            send(
                .method(
                    channel: 0, .connectionStartOk(clientProperties: properties, mechanism: "PLAIN", response: response, locale: "en_US")))
        case (.awaitingTune, .connectionTune(_, let serverFrameMax, let serverHeartbeat)):
            frameMax = serverFrameMax == 0 ? 131072 : min(serverFrameMax, 131072)
            parser.frameMax = frameMax
            let heartbeat = serverHeartbeat == 0 ? heartbeatSeconds : min(serverHeartbeat, heartbeatSeconds)
            phase = .awaitingOpenOk
            send(.method(channel: 0, .connectionTuneOk(channelMax: 1, frameMax: frameMax, heartbeat: heartbeat)))
            send(.method(channel: 0, .connectionOpen(virtualHost: address.virtualHost)))
            startHeartbeats(heartbeat)
        case (.awaitingOpenOk, .connectionOpenOk):
            phase = .open
            opened.succeed()
        case (_, .connectionClose(let close)):
            // The broker ends the connection (wrong password, vhost, forced close): say close-ok.
            send(.method(channel: 0, .connectionCloseOk))
            fail(.closedByBroker(code: close.replyCode, text: close.replyText), replyCode: nil)
        case (.closing, .connectionCloseOk):
            context?.close(promise: nil)
        case (_, .connectionBlocked(let reason)):
            blocked = reason
            logger.warning("the broker blocked publishing", metadata: ["reason": "\(reason)"])
            onBlocked(reason)
        case (_, .connectionUnblocked):
            blocked = nil
            onBlocked(nil)
        default:
            throw AMQPConnectionError.protocolError("unexpected \(method.name) on channel 0")
        }
    }

    private func channelMethod(_ method: AMQPMethod) throws {
        switch method {
        case .basicDeliver, .basicReturn:
            incoming = (method, nil, [])
        case .basicAck(let tag, let multiple):
            settle(tag, multiple: multiple) { $0.succeed() }
        case .basicNack(let tag, let multiple, _):
            settle(tag, multiple: multiple) { $0.fail(AMQPConnectionError.notConfirmed) }
        case .channelClose(let close):
            send(.method(channel: 1, .channelCloseOk))
            fail(.closedByBroker(code: close.replyCode, text: close.replyText), replyCode: nil)
        default:
            guard !calls.isEmpty else { throw AMQPConnectionError.protocolError("an unexpected \(method.name)") }
            calls.removeFirst().succeed(method)
        }
    }

    private func settle(_ tag: UInt64, multiple: Bool, _ outcome: (EventLoopPromise<Void>) -> Void) {
        if multiple {
            for key in confirms.keys where key <= tag { outcome(confirms.removeValue(forKey: key)!.promise) }
        } else if let pending = confirms.removeValue(forKey: tag) {
            outcome(pending.promise)
        }
    }

    private func deliver() {
        guard let delivery = incoming, let header = delivery.header else { return }
        incoming = nil
        guard case .basicDeliver(_, _, _, let exchange, let routingKey) = delivery.method else { return }  // returns are dropped
        onDelivery(AMQPDelivery(exchange: exchange, routingKey: routingKey, properties: header.properties, body: delivery.body))
    }

    // MARK: Frames out

    func call(_ method: AMQPMethod, promise: EventLoopPromise<AMQPMethod>) {
        guard phase == .open else { return promise.fail(AMQPConnectionError.connectionClosed) }
        calls.append(promise)
        send(.method(channel: 1, method))
    }

    func publish(exchange: String, routingKey: String, body: [UInt8], properties: AMQPProperties, promise: EventLoopPromise<Void>) {
        guard phase == .open else { return promise.fail(AMQPConnectionError.connectionClosed) }
        if let blocked { return promise.fail(AMQPConnectionError.blocked(blocked)) }
        confirms[nextTag] = (promise, .now() + confirmTimeout)
        nextTag += 1
        // The body in frames of at most frame-max, less the frame's own 8 bytes.
        var frames: [AMQPFrame] = [
            .method(channel: 1, .basicPublish(exchange: exchange, routingKey: routingKey, mandatory: false)),
            .header(channel: 1, AMQPContentHeader(bodySize: UInt64(body.count), properties: properties)),
        ]
        let chunk = Int(frameMax) - 8
        var index = 0
        while index < body.count {
            frames.append(.body(channel: 1, Array(body[index..<min(body.count, index + chunk)])))
            index += chunk
        }
        for frame in frames { send(frame, flush: false) }
        context?.flush()
    }

    func closeGracefully(_ done: EventLoopPromise<Void>) {
        guard phase == .open, context != nil else { return done.succeed() }
        phase = .closing
        closedDone = done
        send(.method(channel: 0, .connectionClose(AMQPClose(replyCode: 200, replyText: "Goodbye"))))
    }

    private func send(_ frame: AMQPFrame, flush: Bool = true) {
        guard let context, phase != .closed else { return }
        wroteSinceBeat = true
        let buffer = context.channel.allocator.buffer(bytes: frame.encoded())
        if flush {
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        } else {
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
    }

    /// Ends the connection with `error` for every waiter; with a reply code, tells the broker why.
    private func fail(_ error: AMQPConnectionError, replyCode: UInt16?) {
        guard phase != .closed else { return }
        logger.debug("AMQP connection failing", metadata: ["error": "\(error)"])
        if let replyCode, phase == .open {
            send(.method(channel: 0, .connectionClose(AMQPClose(replyCode: replyCode, replyText: "\(error)"))))
        }
        failAll(error)
        context?.close(promise: nil)
    }

    func failAll(_ error: any Error) {
        opened.fail(error)
        while let call = calls.popFirst() { call.fail(error) }
        let pending = confirms
        confirms = [:]
        for entry in pending.values { entry.promise.fail(error) }
    }

    private func expireConfirms() {
        let now = NIODeadline.now()
        for (tag, entry) in confirms where entry.deadline < now {
            confirms[tag] = nil
            entry.promise.fail(AMQPConnectionError.timedOut)
        }
    }

    /// Sends a heartbeat when nothing else went out for half a period; closes after two silent
    /// periods from the broker.
    private func startHeartbeats(_ seconds: UInt16) {
        guard seconds > 0, let context else { return }
        let half = TimeAmount.milliseconds(Int64(seconds) * 500)
        silentChecks = 0
        heartbeatTask = context.eventLoop.scheduleRepeatedTask(initialDelay: half, delay: half) { [self] _ in
            if !wroteSinceBeat { send(.heartbeat) }
            expireConfirms()
            wroteSinceBeat = false
            if heardSinceCheck {
                silentChecks = 0
            } else {
                silentChecks += 1
                if silentChecks >= 4 { fail(.timedOut, replyCode: nil) }
            }
            heardSinceCheck = false
        }
    }
}
