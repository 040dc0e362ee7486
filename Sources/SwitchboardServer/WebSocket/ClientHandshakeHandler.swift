import NIOCore
import NIOHTTP1
import SwitchboardHTTP

/// The first handler of every connection: reads its first request head and, when it is a plain
/// client upgrade that `WebSocketEndpoint.admitAtOnce` admits, answers 101 and installs the
/// client's handlers itself, on the event loop. Anything else (an API call, a cluster link, an
/// upgrade that needs a token checked or must be refused, a head outside `UpgradeHead`'s strict
/// subset) is handed, bytes and all, to NIO's HTTP pipeline, which `httpPipeline` sets up.
///
/// Why: churn pays for each connection's handshake. NIO's HTTP decoder, its typed upgrade
/// handler and their removal cost about a hundred allocations per connection; a plain upgrade
/// needs none of them. Either way the handler leaves the pipeline once the connection is decided.
final class ClientHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let node: NodeContext
    private let upgraded: UpgradeOutcome
    private let httpPipeline: (any Channel) throws -> EventLoopFuture<NodeChannel.Upgraded>
    /// A head that came in pieces, until its blank line.
    private var buffered: ByteBuffer?
    private var decided = false

    init(
        node: NodeContext, upgraded: UpgradeOutcome,
        httpPipeline: @escaping (any Channel) throws -> EventLoopFuture<NodeChannel.Upgraded>
    ) {
        self.node = node
        self.upgraded = upgraded
        self.httpPipeline = httpPipeline
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else { return context.fireChannelRead(data) }
        var bytes = unwrapInboundIn(data)
        if var earlier = buffered {
            earlier.writeBuffer(&bytes)
            bytes = earlier
            buffered = nil
        }
        switch bytes.withUnsafeReadableBytes({ UpgradeHead.parse($0) }) {
        case .incomplete:
            buffered = bytes
        case .notSimple:
            handOver(context, bytes)
        case .head(let head, let length):
            guard head.asksForWebSocket, head.version == "13", let key = head.key, !key.isEmpty,
                let (headers, admission) = WebSocketEndpoint.decideAtOnce(UpgradeRequest(head), node: node),
                case .client(let identity, let options) = admission
            else { return handOver(context, bytes) }
            // A JSON client's place is reserved now, and given back by its socket handler; a
            // refusal goes to NIO's pipeline, where `admit` answers it.
            let reserves = !options.stomp
            if reserves, node.admissions.reserve(identity.user) != nil { return handOver(context, bytes) }
            decided = true
            let response = NIOAny(Self.response(key: key, headers: headers, allocator: context.channel.allocator))
            if options.stomp {
                // A STOMP client speaks first (CONNECT): it needs the 101 now.
                context.writeAndFlush(response, promise: nil)
            } else {
                // A JSON client waits for its welcome, which follows its registration: the 101
                // goes out with it, in one write (one system call and one segment fewer per
                // connection). A slow registration holds it no longer than `heldResponseLimit`.
                context.write(response, promise: nil)
                let channel = context.channel
                context.eventLoop.scheduleTask(in: Self.heldResponseLimit) { channel.flush() }
            }
            RequestDeadlineHandler.of(context.channel)?.upgraded()
            do {
                try ClientSocketHandler.install(
                    on: context.channel, identity: identity, options: options, node: node, releasesAdmission: reserves)
            } catch {
                if reserves { node.admissions.release(identity.user) }
                upgraded.fail(error)
                context.close(promise: nil)
                return
            }
            // What the client sent after its head is its first frames: they go to its handler.
            bytes.moveReaderIndex(forwardBy: length)
            if bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(bytes)) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            upgraded.succeed(.client)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The peer stopped sending before a whole head: NIO's pipeline answers what it sent.
        if !decided, let closed = event as? ChannelEvent, closed == .inputClosed {
            return handOver(context, buffered ?? context.channel.allocator.buffer(capacity: 0), then: event)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !decided {
            decided = true
            upgraded.fail(ChannelError.inputClosed)
        }
        context.fireChannelInactive()
    }

    /// Sets NIO's HTTP pipeline up behind this handler, gives it every byte read so far and leaves.
    private func handOver(_ context: ChannelHandlerContext, _ bytes: ByteBuffer, then event: Any? = nil) {
        decided = true
        buffered = nil
        do {
            upgraded.settle(by: try httpPipeline(context.channel))
        } catch {
            upgraded.fail(error)
            context.close(promise: nil)
            return
        }
        if bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(bytes)) }
        if let event { context.fireUserInboundEventTriggered(event) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// How long a JSON client's 101 may wait for its welcome.
    static let heldResponseLimit = TimeAmount.milliseconds(100)

    /// The 101, in one buffer: the handshake's headers and the admission's (a subprotocol).
    private static func response(key: String, headers: HTTPHeaders, allocator: ByteBufferAllocator) -> ByteBuffer {
        var response = allocator.buffer(capacity: 160)
        response.writeStaticString(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: ")
        WebSocketAccept.write(key: key, into: &response)
        response.writeStaticString("\r\n")
        for (name, value) in headers {
            response.writeString(name)
            response.writeStaticString(": ")
            response.writeString(value)
            response.writeStaticString("\r\n")
        }
        response.writeStaticString("\r\n")
        return response
    }
}
