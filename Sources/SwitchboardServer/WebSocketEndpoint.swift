import ClusterLink
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardProtocol

/// `GET /ws` and `GET /cluster`: decides whether to upgrade, and as whom.
enum WebSocketEndpoint {
    static let subprotocol = "switchboard.v1"
    /// STOMP over WebSocket, highest first: the server echoes the highest one offered.
    static let stompSubprotocols = ["v12.stomp", "v11.stomp", "v10.stomp"]

    /// Who an admitted upgrade is for.
    enum Admission: Sendable {
        case client(Identity, ClientOptions)
        case clusterLink(any ClusterLinkAcceptor)
    }

    /// The common case, decided on the event loop without a task: an upgrade to `/ws` or `/stomp`
    /// that needs no token checked, no cluster origin looked up and no refusal answered. Nil
    /// when it needs any of those: then `admit` decides (and, for a refusal, answers).
    static func admitAtOnce(_ request: UpgradeRequest, channel: any Channel, node: NodeContext) -> (HTTPHeaders, Admission)? {
        guard let decision = decideAtOnce(request, node: node) else { return nil }
        // A refusal reserves nothing: `admit` asks again and answers it.
        if case .client(let identity, let options) = decision.1, !options.stomp {
            guard node.admissions.reserve(identity.user, on: channel) == nil else { return nil }
        }
        return decision
    }

    /// `admitAtOnce` without the reservation, which the caller makes (a JSON client's; a STOMP
    /// client's waits for its CONNECT).
    static func decideAtOnce(_ request: UpgradeRequest, node: NodeContext) -> (HTTPHeaders, Admission)? {
        let target = request.target
        guard target.path == "/ws" || target.path == "/stomp", node.phase != .draining, node.tokens == nil else { return nil }
        if let origin = request.origin, let allowed = node.configuration.allowedOrigins, !allowed.contains(origin) {
            return nil
        }
        let (headers, stomp) = negotiate(request, path: target.path)
        if stomp { return (headers, stompClient(request, query: target.query)) }
        guard let options = clientOptions(target.query) else { return nil }
        let identity = Identity(user: target.query["user"] ?? "anon-" + Identifiers.random(12), rooms: nil, mayBroadcast: true)
        return (headers, .client(identity, options))
    }

    /// The headers to answer an admitted upgrade with, and whom it admits; nil when refused
    /// (a refusal with a reason has been answered already, as JSON).
    static func admit(_ request: UpgradeRequest, channel: any Channel, node: NodeContext) async -> (HTTPHeaders, Admission)? {
        let (path, query) = (request.target.path, request.target.query)
        if path == "/cluster" { return await clusterLink(request, channel: channel, node: node) }
        guard path == "/ws" || path == "/stomp", node.phase != .draining else { return nil }
        let (headers, stomp) = negotiate(request, path: path)
        if let origin = request.origin, await !node.originAllowed(origin) {
            node.metrics.refusedHandshakes.increment()
            await JSONResponse.refuse(channel, status: .forbidden, code: "forbidden", message: "origin \(origin) is not allowed")
            return nil
        }
        if stomp { return (headers, stompClient(request, query: query)) }
        guard let options = clientOptions(query) else {
            node.metrics.refusedHandshakes.increment()
            await JSONResponse.refuse(
                channel, status: .badRequest, code: "bad_request",
                message: "since must be EPOCH:OFFSET, as in the inbox of an earlier welcome")
            return nil
        }
        let identity: Identity
        if let tokens = node.tokens {
            do {
                identity = try await tokens.identity(fromToken: request.bearerToken ?? query["token"])
            } catch {
                node.metrics.refusedHandshakes.increment()
                await JSONResponse.refuse(channel, status: .unauthorized, code: "unauthorized", message: error.message)
                return nil
            }
        } else {
            identity = Identity(user: query["user"] ?? "anon-" + Identifiers.random(12), rooms: nil, mayBroadcast: true)
        }
        // Counted from here until the socket closes, so concurrent upgrades cannot overshoot.
        switch node.admissions.reserve(identity.user, on: channel) {
        case nil:
            break
        case .nodeFull:
            node.metrics.refusedHandshakes.increment()
            await JSONResponse.refuse(
                channel, status: .serviceUnavailable, code: "rate_limited",
                message: "this node is full (\(node.configuration.maxConnections) connections); GET /api/assign names another")
            return nil
        case .userFull:
            node.metrics.refusedHandshakes.increment()
            await JSONResponse.refuse(
                channel, status: .tooManyRequests, code: "rate_limited",
                message: "user \(identity.user) already has \(node.configuration.maxConnectionsPerUser) connections on this node")
            return nil
        }
        return (headers, .client(identity, options))
    }

    /// The subprotocol to answer with, and whether the client speaks STOMP: on `/stomp`, or
    /// when it offers a STOMP subprotocol (the highest offered wins).
    private static func negotiate(_ request: UpgradeRequest, path: String) -> (HTTPHeaders, stomp: Bool) {
        var headers = HTTPHeaders()
        let offered = request.protocols
            .flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
        let stomp = stompSubprotocols.first(where: offered.contains)
        if let stomp {
            headers.add(name: "Sec-WebSocket-Protocol", value: stomp)
        } else if offered.contains(subprotocol), path == "/ws" {
            headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
        }
        return (headers, stomp != nil || path == "/stomp")
    }

    /// A STOMP client: who it is comes with CONNECT (StompSession), which may also carry the token.
    private static func stompClient(_ request: UpgradeRequest, query: [String: String]) -> Admission {
        var options = ClientOptions(stomp: true)
        options.upgradeToken = request.bearerToken ?? query["token"]
        options.upgradeUser = query["user"]
        return .client(Identity(user: "", rooms: [], mayBroadcast: false), options)
    }

    /// A JSON client's options from the query; nil when `since` is not a position.
    private static func clientOptions(_ query: [String: String]) -> ClientOptions? {
        var options = ClientOptions(batch: query["batch"] == "1")
        if let since = query["since"] {
            guard let position = ClientRequest.inboxSince(since) else { return nil }
            options.inboxSince = position
        }
        return options
    }

    /// `GET /cluster`: a peer's link, for a backplane that takes links, admitted only with its
    /// secret.
    static func clusterLink(_ request: UpgradeRequest, channel: any Channel, node: NodeContext) async -> (HTTPHeaders, Admission)? {
        guard let acceptor = node.router.backplane as? any ClusterLinkAcceptor else { return nil }
        let given = Array((request.bearerToken ?? "").utf8)
        guard constantTimeEqual(given, Array(acceptor.linkSecret.utf8)) else {
            node.metrics.refusedHandshakes.increment()
            node.logger.warning("refused a cluster link without the cluster secret")
            await JSONResponse.refuse(channel, status: .unauthorized, code: "unauthorized", message: "a valid cluster secret is required")
            return nil
        }
        return (HTTPHeaders(), .clusterLink(acceptor))
    }
}

/// What admission reads of an upgrade request, whichever parser read it: NIO's, or ours for a
/// plain client upgrade (`UpgradeHead`).
struct UpgradeRequest: Sendable {
    var target: RequestTarget
    var origin: String?
    /// Each `Sec-WebSocket-Protocol` value as sent (comma-separated lists).
    var protocols: [String]
    var bearerToken: String?

    init(_ request: HTTPRequest) {
        target = RequestTarget(request.path ?? "/")
        origin = request.headerFields[.origin]
        protocols = request.headerFields[values: .secWebSocketProtocol]
        bearerToken = SwitchboardHTTP.bearerToken(request)
    }

    init(_ head: UpgradeHead) {
        target = RequestTarget(head.target)
        origin = head.origin
        protocols = head.protocols
        bearerToken = SwitchboardHTTP.bearerToken(authorization: head.authorization)
    }
}
