import ClusterLink
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import SwitchboardHTTP

/// One accepted TCP connection of a node: HTTP for the API, or an upgrade to a WebSocket, either
/// a client's (`/ws`) or a peer's link (`/cluster`, for a backplane that takes links).
///
/// A plain client upgrade is read and answered by `ClientHandshakeHandler` on the event loop,
/// without NIO's HTTP pipeline; everything else goes through that pipeline (`configureHTTP`).
/// A client WebSocket is served by NIO channel handlers alone (`ClientSocketHandler`): no Swift
/// task is made for it (`NodeListener` gives one only to the other connections, which `handle`
/// serves). An idle client then costs its channel, its handlers and its `Connection`, not a
/// suspended task chain (about 20 KB of async frames per connection with Hummingbird's
/// per-connection WebSocket handler). Commands run on a task that exists only while the client
/// has some waiting (see `Session`).
struct NodeChannel: ServerChildChannel, HTTPChannelHandler {
    enum Upgraded: Sendable {
        /// A client socket, already wired to its handlers.
        case client
        case clusterLink(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, any ClusterLinkAcceptor)
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// An upgrade was asked for and refused (its answer may already be written).
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
    }

    struct Value: ServerChildChannelValue {
        let upgraded: UpgradeOutcome
        let channel: any Channel
    }

    let responder: Responder
    let node: NodeContext
    /// The request guards' limits (`HTTPGuardChannel`), for the HTTP pipeline set up late.
    let limits: HandshakeLimits

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Over the cap: closed at once (NIO's async server only drops a failed setup's
            // value; the bootstrap would close it, and a second close is harmless).
            guard node.sockets.take() else {
                node.metrics.refusedHandshakes.increment()
                channel.close(promise: nil)
                throw ChannelError.inappropriateOperationForState
            }
            let upgraded = UpgradeOutcome()
            do {
                // Each socket keeps its receive buffer between reads: start it small (NIO's default
                // is 2 KiB), since most sockets are idle subscribers; it grows for a busy sender.
                try channel.syncOptions?.setOption(
                    ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536))
                let handshake = ClientHandshakeHandler(node: node, upgraded: upgraded) { channel in
                    try self.configureHTTP(channel, logger: logger)
                }
                try channel.pipeline.syncOperations.addHandler(handshake)
            } catch {
                // No `handle` will run for it: give its place back here.
                upgraded.fail(error)
                node.sockets.give()
                channel.close(promise: nil)
                throw error
            }
            return Value(upgraded: upgraded, channel: channel)
        }
    }

    /// NIO's HTTP pipeline with our upgrader, for every connection `ClientHandshakeHandler` does
    /// not upgrade itself: API calls, cluster links, upgrades that need a token checked, an
    /// origin looked up or a refusal answered, and whatever its strict reader leaves to NIO.
    private func configureHTTP(_ channel: any Channel, logger: Logger) throws -> EventLoopFuture<Upgraded> {
        let node = self.node
        // Decided by `shouldUpgrade`, used by `upgradePipelineHandler`; both on the channel's loop.
        let admitted = NIOLoopBoundBox<WebSocketEndpoint.Admission?>(nil, eventLoop: channel.eventLoop)
        let upgradeAsked = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
        let upgrader = WebSocketUpgrader<Upgraded>(
            shouldUpgrade: { channel, head in
                upgradeAsked.value = true
                let request: UpgradeRequest
                do {
                    request = try UpgradeRequest(HTTPRequest(head, secure: false, splitCookie: false))
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                if let decision = WebSocketEndpoint.admitAtOnce(request, channel: channel, node: node) {
                    admitted.value = decision.1
                    return channel.eventLoop.makeSucceededFuture(decision.0)
                }
                let promise = channel.eventLoop.makePromise(of: (HTTPHeaders, WebSocketEndpoint.Admission)?.self)
                promise.completeWithTask {
                    await WebSocketEndpoint.admit(request, channel: channel, node: node)
                }
                return promise.futureResult.map { decision in
                    admitted.value = decision?.1
                    return decision?.0
                }
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    RequestDeadlineHandler.of(channel)?.upgraded()
                    switch admitted.value {
                    case .client(let identity, let options):
                        try ClientSocketHandler.install(on: channel, identity: identity, options: options, node: node)
                        return .client
                    case .clusterLink(let acceptor):
                        // A link is served through NIO's frame codec, sized for link frames.
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(WebSocketFrameEncoder())
                        try pipeline.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: acceptor.maxLinkFrameBytes)))
                        try pipeline.addHandler(WebSocketProtocolErrorHandler())
                        let link = try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        return .clusterLink(link, acceptor)
                    case nil:
                        preconditionFailure("upgraded without an admission")
                    }
                }
            })
        let upgrade = NIOTypedHTTPServerUpgradeConfiguration(
            upgraders: [upgrader],
            notUpgradingCompletionHandler: { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                    try channel.pipeline.syncOperations.addHandler(RequestProgressHandler())
                    try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
                    let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                    return upgradeAsked.value ? .refused(http) : .http(http)
                }
            })
        var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Upgraded>(upgradeConfiguration: upgrade)
        configuration.enablePipelining = false  // NIOAsyncChannel serves requests one at a time
        configuration.enableErrorHandling = false  // HTTPErrorResponder answers malformed requests
        HandshakeLimits.apply(to: &configuration.decoderConfiguration)
        configuration.enableResponseHeaderValidation = false  // HTTPTypes validated them already
        let upgraded = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
        try limits.guardDecoder(of: channel)
        return upgraded
    }

    /// Serves a connection that needs a task. (A client socket never gets here from
    /// `NodeListener`; the case stays for any other server that calls this for every one.)
    func handle(value: Value, logger: Logger) async {
        // The connection's place under the socket cap: given back here, unless a client
        // socket's handler took it over.
        var ownsSocket = true
        defer { if ownsSocket { node.sockets.give() } }
        do {
            switch try await value.upgraded.value() {
            case .client:
                ownsSocket = false
                return  // its handlers serve it from here on
            case .clusterLink(let link, let acceptor):
                try await acceptor.serveLink(link, logger: logger)
            case .http(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http):
                await answerRefusedUpgrade(http)
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("connection closed before its upgrade")
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// An upgrade we declined without answering it ourselves (no such WebSocket path) gets 400.
    /// When `WebSocketEndpoint.refuse` answered already, this write finds the output closed.
    private func answerRefusedUpgrade(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>) async {
        try? await http.executeThenClose { _, outbound in
            let response = HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])
            try await outbound.write(contentsOf: [.head(response), .end(nil)])
        }
    }
}
