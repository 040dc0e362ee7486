import EmbeddedBackplane
import HTTPTypes
import HubBackplane
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import ServiceLifecycle
import SwitchboardCore
import SwitchboardHTTP
import SwitchboardProtocol
import Synchronization

public struct HubConfiguration: Sendable {
    public enum AssignPolicy: String, Sendable, CaseIterable {
        /// The live node with the fewest connections.
        case fewestConnections = "fewest-connections"
        case roundRobin = "round-robin"
    }

    public var host = "127.0.0.1"
    public var port = 9000
    public var secret: String
    public var heartbeatSeconds = 25
    public var assign: AssignPolicy = .fewestConnections
    /// Seconds a connection may take to send a complete request (and an idle keep-alive may last).
    public var handshakeTimeoutSeconds = 10
    /// Accepted sockets that have not sent anything yet, at most; more are closed on arrival.
    public var maxPendingHandshakes = 1000
    /// Connections the hub accepts at once (links and HTTP calls); never past the process's files.
    public var maxConnections = 10000

    public init(secret: String) {
        self.secret = secret
    }
}

/// `switchboard hub`: the relay of the hub backplane. Nodes link to `/cluster` with the cluster
/// secret; the hub keeps every node's interest and presence in an `EmbeddedCluster` whose members
/// are those links, forwards each message only to nodes with a recipient (never back to its
/// sender), announces presence changes, and drops a node whose link closes or stops answering
/// pings (its users leave presence, `left` goes out once). It also answers `/api/nodes` and
/// `/api/assign` for clients and load balancers.
public final class HubServer: Sendable {
    let configuration: HubConfiguration
    let cluster = EmbeddedCluster()
    let logger: Logger
    private let roundRobin = Atomic<Int>(0)
    private let port = Mutex<Int?>(nil)
    /// Every linked node, to announce joins and leaves to the others.
    private let links = Mutex<[String: NodeLink]>([:])

    /// Takes `node` for `link`, unless another link that is still open holds it.
    func claim(_ node: String, link: NodeLink) -> Bool {
        links.withLock { links in
            if let held = links[node], held !== link, held.channel.isActive { return false }
            links[node] = link
            return true
        }
    }

    /// Tells every other node that `node` joined or left.
    func announce(_ node: String, _ event: String, link: NodeLink) {
        let others = links.withLock { links -> [NodeLink] in
            if event == "joined" {
                links[node] = link
            } else {
                // A late close of a link the node has already replaced announces nothing.
                guard links[node] === link else { return [] }
                links[node] = nil
            }
            return links.filter { $0.key != node }.map(\.value)
        }
        let frame = HubLink.object(["t": "node", "node": .string(node), "event": .string(event)])
        for other in others { other.send(frame) }
    }

    /// Called once the hub accepts connections, with the address it serves.
    private let onListening: @Sendable (_ address: String) -> Void

    public init(configuration: HubConfiguration, logger: Logger, onListening: @escaping @Sendable (_ address: String) -> Void = { _ in }) {
        self.onListening = onListening
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "hub"] = "\(configuration.host):\(configuration.port)"
        self.logger = logger
    }

    public var service: any Service {
        var decoder = HTTP1Channel.Configuration.DecoderConfiguration()
        decoder.maxHeaderListSize = HandshakeLimits.maxRequestHead
        decoder.maxHeaderFieldSize = HandshakeLimits.maxRequestHead
        let webSocket = HTTP1WebSocketUpgradeChannel.Configuration(
            http1: .init(additionalChannelHandlers: [RequestProgressHandler()], httpDecoderConfiguration: decoder),
            ws: WebSocketServerConfiguration(
                maxFrameSize: 1 << 24, autoPing: .enabled(timePeriod: .seconds(configuration.heartbeatSeconds)),
                closeTimeout: .seconds(5), validateUTF8: true))
        // The same protection as a node's: a deadline for each request, 400/431 for malformed
        // ones, a cap on silent sockets and on accepted connections.
        let limits = HandshakeLimits(
            timeout: .seconds(Int64(configuration.handshakeTimeoutSeconds)), maxPending: configuration.maxPendingHandshakes)
        let server = HTTPServerBuilder { responder in
            HTTPGuardChannel(
                base: HTTP1WebSocketUpgradeChannel(responder: responder, configuration: webSocket) { request, channel, _ in
                    await self.shouldUpgrade(request, channel: channel)
                },
                limits: limits)
        }
        return Application(
            router: httpRouter(),
            server: server,
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.host, port: configuration.port), serverName: "switchboard-hub",
                backlog: 4096, availableConnectionsDelegate: .maximum(configuration.maxConnections, logger: logger)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? self.configuration.port
                self.port.withLock { $0 = port }
                self.onListening("http://\(self.configuration.host):\(port)")
            },
            logger: logger)
    }

    private func httpRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/healthz") { _, _ in JSONResponse.json(.ok, "{\"ok\":true}") }
        router.get("/readyz") { _, _ in JSONResponse.json(.ok, "{\"ready\":true}") }
        router.get("/api/nodes") { _, _ in
            JSONResponse.json(.ok, .object(["nodes": .array(await self.cluster.nodes().map(JSONResponse.node))]))
        }
        router.get("/api/assign") { _, _ in
            let live = await self.cluster.nodes().filter(\.alive)
            guard !live.isEmpty else {
                return JSONResponse.json(.serviceUnavailable, "{\"error\":\"internal\",\"message\":\"no live node\"}")
            }
            let chosen: NodeStatus
            switch self.configuration.assign {
            case .fewestConnections:
                chosen = live.min { ($0.load.connections, $0.info.id) < ($1.load.connections, $1.info.id) }!
            case .roundRobin:
                chosen = live[self.roundRobin.wrappingAdd(1, ordering: .relaxed).oldValue % live.count]
            }
            return JSONResponse.json(.ok, .object(["node": .string(chosen.info.id), "url": .string(chosen.info.url)]))
        }
        return router
    }

    private func shouldUpgrade(_ request: HTTPRequest, channel: any Channel) async -> ShouldUpgradeResult<
        WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>
    > {
        guard RequestTarget(request.path ?? "/").path == "/cluster" else { return .dontUpgrade }
        let given = Array((bearerToken(request) ?? "").utf8)
        guard constantTimeEqual(given, Array(configuration.secret.utf8)) else {
            logger.warning("refused a link without the cluster secret")
            await JSONResponse.refuse(channel, status: .unauthorized, code: "unauthorized", message: "a valid cluster secret is required")
            return .dontUpgrade
        }
        // A link has its own heartbeat: the request deadline ends here.
        channel.eventLoop.execute { RequestDeadlineHandler.of(channel)?.upgraded() }
        return .upgrade([:]) { inbound, _, _ in
            try await HubLinkSession(hub: self, link: NodeLink(channel: channel)).run(inbound)
        }
    }
}

/// The hub's end of one node's link: events for that node are written straight to its channel,
/// in the order the cluster produces them.
final class NodeLink: ClusterReceiver, @unchecked Sendable {
    let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
    }

    func receive(_ event: ClusterEvent) {
        switch event {
        case .message(let envelope): send(HubLink.envelope(envelope, type: "msg"))
        case .joined(let room, let user): send(HubLink.object(["t": "joined", "room": .string(room), "user": .string(user)]))
        case .left(let room, let user): send(HubLink.object(["t": "left", "room": .string(room), "user": .string(user)]))
        }
    }

    func send(_ bytes: [UInt8]) {
        let frame = WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(bytes: bytes))
        channel.writeAndFlush(frame, promise: nil)
    }
}

/// Reads one node's requests and applies them to the hub's cluster view.
struct HubLinkSession {
    let hub: HubServer
    let link: NodeLink

    func run(_ inbound: WebSocketInboundStream) async throws {
        var nodeID: String?
        defer {
            if let nodeID {
                let (cluster, link, logger) = (hub.cluster, link, hub.logger)
                let hub = self.hub
                Task {
                    await cluster.leave(nodeID, ifReceiver: link)
                    hub.announce(nodeID, "left", link: link)
                    logger.notice("node \(nodeID) left the hub")
                }
            }
        }
        for try await message in inbound.messages(maxSize: 1 << 26) {
            guard case .text(let text) = message, let (fields, values) = HubLink.parse(Array(text.utf8)),
                let type = values["t"]?.string
            else { continue }
            if type == "hello" {
                guard nodeID == nil, let id = values["node"]?.string, Name.isValid(id), let url = values["url"]?.string else { return }
                // An id held by a live link stays with it: a forged hello cannot evict a node's
                // users. A node that redials before its old link is noticed dead (two missed
                // pings) is refused until then, and redials with backoff.
                guard hub.claim(id, link: link) else {
                    hub.logger.warning("refused a hello for node \(id): the id is held by a live link")
                    link.send(HubLink.object(["t": "refused", "message": .string("node id \(id) is held by a live link")]))
                    return
                }
                await hub.cluster.leave(id)
                try await hub.cluster.join(NodeInfo(id: id, url: url), receiver: link)
                nodeID = id
                hub.announce(id, "joined", link: link)
                hub.logger.notice("node \(id) joined the hub", metadata: ["url": "\(url)"])
                continue
            }
            guard let nodeID else { continue }
            try await apply(type, fields: fields, values: values, from: nodeID)
        }
    }

    private func apply(_ type: String, fields: JSONFields, values: [String: JSONValue], from nodeID: String) async throws {
        let cluster = hub.cluster
        let room = values["room"]?.string ?? ""
        let user = values["user"]?.string ?? ""
        var reply: [String: JSONValue] = ["t": "ack"]
        switch type {
        case "online": await cluster.userOnline(user, on: nodeID)
        case "offline": await cluster.userOffline(user, on: nodeID)
        case "joined": await cluster.roomJoined(room, user: user, on: nodeID)
        case "left": await cluster.roomLeft(room, user: user, on: nodeID)
        case "pub":
            guard let envelope = HubLink.envelope(from: fields, extra: values) else { return }
            await cluster.publish(envelope, from: nodeID)
        case "load":
            await cluster.report(NodeLoad(connections: values["connections"]?.int ?? 0, users: values["users"]?.int ?? 0), for: nodeID)
            return
        case "members":
            reply = ["t": "reply", "users": .array(await cluster.members(of: room).map(JSONValue.string))]
        case "where":
            reply = ["t": "reply", "nodes": .array(await cluster.nodes(of: user).map(JSONValue.string))]
        case "nodes":
            reply = ["t": "reply", "nodes": .array(await cluster.nodes().map(JSONResponse.node))]
        default:
            return
        }
        if let rid = values["rid"] {
            reply["rid"] = rid
            link.send(HubLink.object(reply))
        }
    }
}
