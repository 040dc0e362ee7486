import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import MeshBackplane
import NIOCore
import NIOHTTP1
import Prometheus
import NIOWebSocket
import SwitchboardCore
import SwitchboardProtocol

/// `GET /ws`: decides whether to upgrade, then runs the session.
enum WebSocketEndpoint {
    static let subprotocol = "switchboard.v1"

    typealias Handler = WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>

    static func shouldUpgrade(_ request: HTTPRequest, channel: any Channel, node: NodeContext) async -> ShouldUpgradeResult<Handler> {
        let target = request.path ?? "/"
        let (path, query) = splitTarget(target)
        if path == "/cluster" { return await clusterLink(request, channel: channel, node: node) }
        guard path == "/ws", node.phase != .draining else { return .dontUpgrade }
        var headers = HTTPFields()
        let offered = request.headerFields[values: .secWebSocketProtocol]
            .flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
        if offered.contains(subprotocol) {
            headers[.secWebSocketProtocol] = subprotocol
        }
        if let allowed = node.configuration.allowedOrigins, let origin = request.headerFields[.origin], !allowed.contains(origin) {
            node.metrics.refusedHandshakes.increment()
            await refuse(channel, status: .forbidden, code: "forbidden", message: "origin \(origin) is not allowed")
            return .dontUpgrade
        }
        let identity: Identity
        if let tokens = node.tokens {
            do {
                identity = try await tokens.identity(fromToken: bearerToken(request) ?? query["token"])
            } catch {
                node.metrics.refusedHandshakes.increment()
                await refuse(channel, status: .unauthorized, code: "unauthorized", message: error.message)
                return .dontUpgrade
            }
        } else {
            identity = Identity(user: query["user"] ?? "anon-" + Identifiers.random(12), rooms: nil)
        }
        if node.router.load.connections >= node.configuration.maxConnections {
            node.metrics.refusedHandshakes.increment()
            await refuse(channel, status: .serviceUnavailable, code: "rate_limited",
                message: "this node is full (\(node.configuration.maxConnections) connections); GET /api/assign names another")
            return .dontUpgrade
        }
        if node.router.connectionCount(of: identity.user) >= node.configuration.maxConnectionsPerUser {
            node.metrics.refusedHandshakes.increment()
            await refuse(channel, status: .tooManyRequests, code: "rate_limited",
                message: "user \(identity.user) already has \(node.configuration.maxConnectionsPerUser) connections on this node")
            return .dontUpgrade
        }
        return .upgrade(headers) { inbound, outbound, _ in
            // Gone already if the client left during the upgrade: nothing to serve.
            guard let wire = try? await WireWriter.install(on: channel) else { return }
            let connection = Connection(
                session: Identifiers.random(16), identity: identity, channel: channel, outbound: outbound, wire: wire,
                maxBufferedBytes: node.configuration.maxBufferedBytes, metrics: node.metrics, logger: node.logger,
                batch: query["batch"] == "1")
            guard Name.isValid(identity.user) else {
                // No session for a bad name: say why, then close (policy violation).
                connection.open(welcome: ServerFrame.error(ProtocolError(
                    code: .invalidName, message: "user must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ / -")))
                await connection.close(.policyViolation, reason: "invalid user id")
                return
            }
            await OversizeCounter.install(on: channel, counter: node.metrics.tooLarge)
            var session = Session(connection: connection, node: node)
            try await session.run(inbound)
        }
    }

    /// `GET /cluster`: a mesh peer's link, admitted only with the cluster secret.
    static func clusterLink(_ request: HTTPRequest, channel: any Channel, node: NodeContext) async -> ShouldUpgradeResult<Handler> {
        guard let mesh = node.router.backplane as? MeshBackplane else { return .dontUpgrade }
        let given = Array((bearerToken(request) ?? "").utf8)
        guard APIKeyMiddleware<BasicRequestContext>.constantTimeEqual(given, Array(mesh.secret.utf8)) else {
            node.metrics.refusedHandshakes.increment()
            node.logger.warning("refused a cluster link without the cluster secret")
            await refuse(channel, status: .unauthorized, code: "unauthorized", message: "a valid cluster secret is required")
            return .dontUpgrade
        }
        return .upgrade([:]) { inbound, outbound, _ in
            try await mesh.acceptLink(inbound: inbound, outbound: outbound, channel: channel)
        }
    }

    static func bearerToken(_ request: HTTPRequest) -> String? {
        guard let header = request.headerFields[.authorization], header.hasPrefix("Bearer ") else { return nil }
        return String(header.dropFirst("Bearer ".count))
    }

    /// Answers a refused upgrade with a JSON error before any upgrade, then ends our side of
    /// the connection. (Hummingbird's own answer to a declined upgrade, an empty 400, then finds
    /// the output closed and is dropped.)
    static func refuse(_ channel: any Channel, status: HTTPResponseStatus, code: String, message: String) async {
        var writer = JSONWriter()
        writer.value(.object(["error": .string(code), "message": .string(message)]))
        let body = channel.allocator.buffer(bytes: writer.bytes)
        let head = HTTPResponseHead(
            version: .http1_1, status: status,
            headers: ["Content-Type": "application/json", "Content-Length": "\(body.readableBytes)", "Connection": "close"])
        channel.write(HTTPServerResponsePart.head(head), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(body)), promise: nil)
        try? await channel.writeAndFlush(HTTPServerResponsePart.end(nil))
        try? await channel.close(mode: .output)
    }

    /// Splits `/ws?user=a&batch=1` into the path and its decoded query items.
    static func splitTarget(_ target: String) -> (path: String, query: [String: String]) {
        guard let mark = target.firstIndex(of: "?") else { return (target, [:]) }
        var query: [String: String] = [:]
        for pair in target[target.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            let key = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? String(parts[1]).replacingOccurrences(of: "+", with: " ") : ""
            query[key] = value.removingPercentEncoding ?? value
        }
        return (String(target[..<mark]), query)
    }
}

/// Counts single frames over the size limit. NIO's frame decoder reports them as an error that
/// its protocol error handler answers with 1009; this handler, right after the decoder, sees it.
final class OversizeCounter: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    let counter: Counter

    init(counter: Counter) {
        self.counter = counter
    }

    static func install(on channel: any Channel, counter: Counter) async {
        try? await channel.eventLoop.submit {
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<WebSocketFrameDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(OversizeCounter(counter: counter), position: .after(decoder))
        }.get()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError, error == .invalidFrameLength { counter.increment() }
        context.fireErrorCaught(error)
    }
}
