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
    /// History the hub keeps per room and per inbox, in memory: a restart is a new epoch.
    public var history = HistoryPolicy.standard

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
    let cluster: EmbeddedCluster
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
    func announce(_ node: String, joined: Bool, link: NodeLink) {
        let others = links.withLock { links -> [NodeLink] in
            if joined {
                links[node] = link
            } else {
                // A late close of a link the node has already replaced announces nothing.
                guard links[node] === link else { return [] }
                links[node] = nil
            }
            return links.filter { $0.key != node }.map(\.value)
        }
        for other in others { other.send(.node(id: node, joined: joined)) }
    }

    /// Called once the hub accepts connections, with the address it serves.
    private let onListening: @Sendable (_ address: String) -> Void

    public init(configuration: HubConfiguration, logger: Logger, onListening: @escaping @Sendable (_ address: String) -> Void = { _ in }) {
        self.onListening = onListening
        self.configuration = configuration
        self.cluster = EmbeddedCluster(history: configuration.history)
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
            try await HubLinkSession(hub: self, link: NodeLink(channel: channel, logger: self.logger)).run(inbound)
        }
    }
}

/// The hub's end of one node's link: events for that node are written straight to its channel,
/// in the order the cluster produces them. A node that stops reading is not buffered for without
/// bound: past `maxBufferedBytes` its link is closed (it redials and syncs again).
final class NodeLink: ClusterReceiver, @unchecked Sendable {
    let channel: any Channel
    let logger: Logger
    static let maxBufferedBytes = 64 << 20

    init(channel: any Channel, logger: Logger) {
        self.channel = channel
        self.logger = logger
    }

    func receive(_ event: ClusterEvent) {
        send(.event(event))
    }

    func send(_ frame: HubFrame) {
        let data = frame.encoded(allocator: channel.allocator)
        let channel = self.channel
        let logger = self.logger
        channel.eventLoop.execute {
            guard channel.isActive else { return }
            // Writable means under NIO's high water mark; only past it is the exact backlog needed.
            if !channel.isWritable,
                let buffered = try? channel.syncOptions?.getOption(.bufferedWritableBytes), buffered > Self.maxBufferedBytes
            {
                logger.warning("closing a node's link: it is not reading (\(buffered) bytes waiting)")
                channel.close(promise: nil)
                return
            }
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: data), promise: nil)
        }
    }
}

/// Reads one node's requests and applies them to the hub's cluster view.
struct HubLinkSession {
    let hub: HubServer
    let link: NodeLink

    /// Serves the link until it closes, however it ends; then the node leaves the hub's view
    /// (its users leave presence, once) unless it already linked again.
    func run(_ inbound: WebSocketInboundStream) async throws {
        var nodeID: String?
        var failure: (any Error)?
        do {
            try await serve(inbound, as: &nodeID)
        } catch {
            failure = error
        }
        if let nodeID {
            await hub.cluster.leave(nodeID, ifReceiver: link)
            hub.announce(nodeID, joined: false, link: link)
            hub.logger.notice("node \(nodeID) left the hub")
        }
        if let failure { throw failure }
    }

    private func serve(_ inbound: WebSocketInboundStream, as nodeID: inout String?) async throws {
        for try await message in inbound.messages(maxSize: 1 << 26) {
            guard case .binary(let buffer) = message, let frame = HubFrame.decode(buffer) else {
                hub.logger.warning("dropped a malformed frame on a node's link")
                continue
            }
            guard case .batch(let frames) = frame else {
                guard try await take(frame, as: &nodeID) else { return }
                continue
            }
            for frame in frames {
                guard try await take(frame, as: &nodeID) else { return }
            }
        }
    }

    /// Takes one frame from the node; false when the link must end.
    private func take(_ frame: HubFrame, as nodeID: inout String?) async throws -> Bool {
        if case .hello(let node) = frame {
            guard nodeID == nil, Name.isValid(node.id) else { return false }
            // An id held by a live link stays with it: a forged hello cannot evict a node's
            // users. A node that redials before its old link is noticed dead (two missed
            // pings) is refused until then, and redials with backoff.
            guard hub.claim(node.id, link: link) else {
                hub.logger.warning("refused a hello for node \(node.id): the id is held by a live link")
                link.send(.refused("node id \(node.id) is held by a live link"))
                return false
            }
            await hub.cluster.leave(node.id)
            try await hub.cluster.join(node, receiver: link)
            nodeID = node.id
            hub.announce(node.id, joined: true, link: link)
            hub.logger.notice("node \(node.id) joined the hub", metadata: ["url": "\(node.url)"])
            return true
        }
        if let nodeID { await apply(frame, from: nodeID) }
        return true
    }

    private func apply(_ frame: HubFrame, from nodeID: String) async {
        let cluster = hub.cluster
        switch frame {
        case .interest(let rid, let delta):
            switch delta {
            case .online(let user): await cluster.userOnline(user, on: nodeID)
            case .offline(let user): await cluster.userOffline(user, on: nodeID)
            case .joined(let room, let user): await cluster.roomJoined(room, user: user, on: nodeID)
            case .left(let room, let user): await cluster.roomLeft(room, user: user, on: nodeID)
            }
            if rid != HubFrame.unanswered { link.send(.ack(rid: rid)) }
        case .publish(let rid, let envelope, let sequenced):
            await cluster.publish(envelope, from: nodeID, sequenced: sequenced)
            link.send(.ack(rid: rid))
        case .query(let rid, .read(let stream, let after, let limit)):
            // A hub with history off still numbers the messages nodes ask it to, and keeps none.
            guard stream.name.map(Name.isValid) == true else {
                link.send(.unsupported(rid: rid))
                return
            }
            link.send(.stream(rid: rid, await cluster.read(stream, after: after, limit: Int(limit))))
        case .load(let load):
            await cluster.report(load, for: nodeID)
        case .query(let rid, .members(let room)):
            link.send(.names(rid: rid, await cluster.members(of: room)))
        case .query(let rid, .nodesOf(let user)):
            link.send(.names(rid: rid, await cluster.nodes(of: user)))
        case .query(let rid, .nodes):
            link.send(.nodes(rid: rid, await cluster.nodes()))
        case .hello, .ack, .names, .nodes, .event, .node, .refused, .stream, .unsupported, .batch:
            hub.logger.warning("dropped a frame only a hub sends, from node \(nodeID)")
        }
    }
}
