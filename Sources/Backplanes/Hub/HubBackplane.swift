import HummingbirdWSClient
import Logging
import NIOCore
import SwitchboardCore
import SwitchboardProtocol
import Synchronization

public enum HubError: Error, CustomStringConvertible {
    case unavailable

    public var description: String {
        switch self {
        case .unavailable: "the hub is unavailable"
        }
    }
}

/// Relays cross-node traffic through a hub (`switchboard hub`). The hub holds every node's
/// interest and presence and forwards each message only to nodes with a recipient.
///
/// The node dials the hub with the cluster secret and redials with capped backoff when it goes
/// away; after each (re)connect it sends its users, rooms and load again, so the hub rebuilds its
/// view. Meanwhile local delivery goes on; cross-node publishing fails (`internal`).
public final class HubBackplane: Backplane {
    public struct Configuration: Sendable {
        public var hubURL: String
        public var secret: String
        /// The link is pinged this often; a hub that misses a pong is treated as gone.
        public var heartbeat: Duration
        /// How long a request may wait for the hub's answer.
        public var requestTimeout: Duration = .seconds(5)
        public var minimumBackoff: Duration = .milliseconds(100)
        public var maximumBackoff: Duration = .seconds(5)

        public init(hubURL: String, secret: String, heartbeat: Duration) {
            self.hubURL = hubURL
            self.secret = secret
            self.heartbeat = heartbeat
        }
    }

    private struct State {
        var node: NodeInfo?
        var receiver: (any ClusterReceiver)?
        /// What this node holds, replayed to the hub after each (re)connect.
        var local = Interest()
        var load = NodeLoad(connections: 0, users: 0)
        var outbound: WebSocketOutboundWriter?
        var pending: [Int: CheckedContinuation<[String: JSONValue], any Error>] = [:]
        var nextRID = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var stopped = false
        var task: Task<Void, Never>?
    }

    private let configuration: Configuration
    private let logger: Logger
    private let state = Mutex(State())

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: Joining and leaving

    public func join(node: NodeInfo, receiver: any ClusterReceiver) async throws {
        state.withLock {
            $0.node = node
            $0.receiver = receiver
        }
        let task = Task { await self.keepLinked() }
        state.withLock { $0.task = task }
        // Ready once the hub has us (until then /readyz stays 503).
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.outbound != nil || state.stopped { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    public func leave() async {
        // Closing the link is leaving: the hub removes this node's users at once.
        let (outbound, task, waiters) = state.withLock { state in
            state.stopped = true
            defer { state.waiters = [] }
            return (state.outbound, state.task, state.waiters)
        }
        for waiter in waiters { waiter.resume() }
        try? await outbound?.close(.normalClosure, reason: "node leaving")
        task?.cancel()
        await task?.value
    }

    private func keepLinked() async {
        var attempt = 0
        var down = false
        var config = WebSocketClientConfiguration(maxFrameSize: 1 << 24, autoPing: .enabled(timePeriod: configuration.heartbeat))
        config.additionalHeaders[.authorization] = "Bearer \(configuration.secret)"
        let url = configuration.hubURL.hasSuffix("/cluster") ? configuration.hubURL : configuration.hubURL + "/cluster"
        while !state.withLock({ $0.stopped }), !Task.isCancelled {
            let wasDown = down
            let didLink = Atomic(false)
            do {
                try await WebSocketClient.connect(url: url, configuration: config, logger: logger) { inbound, outbound, _ in
                    didLink.store(true, ordering: .relaxed)
                    try await self.linked(inbound: inbound, outbound: outbound, wasDown: wasDown)
                }
                if didLink.load(ordering: .relaxed) {
                    down = false
                    attempt = 0
                }
                if !state.withLock({ $0.stopped }) {
                    logger.warning("lost the link to the hub at \(configuration.hubURL); redialling")
                    down = true
                }
            } catch {
                if !down {
                    logger.warning("the hub at \(configuration.hubURL) is unreachable (\(error)); retrying in the background")
                    down = true
                }
            }
            unlink()
            attempt += 1
            try? await Task.sleep(
                for: Backoff(minimum: configuration.minimumBackoff, maximum: configuration.maximumBackoff).delay(attempt: attempt))
        }
    }

    private func linked(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, wasDown: Bool) async throws {
        let (node, users, rooms, load) = state.withLock { ($0.node, $0.local.users, $0.local.rooms, $0.load) }
        guard let node else { return }
        // Introduce ourselves and replay what this node holds: the hub rebuilds its view.
        try await outbound.write(.text(text(["t": "hello", "node": .string(node.id), "url": .string(node.url)])))
        for user in users { try await outbound.write(.text(text(["t": "online", "user": .string(user)]))) }
        for (room, members) in rooms {
            for user in members { try await outbound.write(.text(text(["t": "joined", "room": .string(room), "user": .string(user)]))) }
        }
        try await outbound.write(.text(loadText(load)))
        let waiters = state.withLock { state in
            state.outbound = outbound
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
        if wasDown { logger.notice("linked to the hub again") } else { logger.info("linked to the hub at \(configuration.hubURL)") }
        for try await message in inbound.messages(maxSize: 1 << 26) {
            guard case .text(let frame) = message else { continue }
            handle(Array(frame.utf8))
        }
    }

    private func unlink() {
        let pending = state.withLock { state in
            state.outbound = nil
            defer { state.pending = [:] }
            return state.pending
        }
        for waiter in pending.values { waiter.resume(throwing: HubError.unavailable) }
    }

    private func handle(_ bytes: [UInt8]) {
        guard let (fields, values) = HubLink.parse(bytes), let type = values["t"]?.string else {
            logger.warning("dropped a malformed frame from the hub")
            return
        }
        switch type {
        case "ack", "reply":
            guard let rid = values["rid"]?.int else { return }
            state.withLock { $0.pending.removeValue(forKey: rid) }?.resume(returning: values)
        case "msg":
            guard let envelope = HubLink.envelope(from: fields, extra: values) else { return }
            state.withLock { $0.receiver }?.receive(.message(envelope))
        case "refused":
            // Another link holds our id at the hub (see HubServer): we redial with backoff.
            logger.warning("the hub refused this node's link: \(values["message"]?.string ?? "no reason given")")
        case "node":
            // The hub announces other nodes joining and leaving the cluster.
            guard let node = values["node"]?.string, let event = values["event"]?.string else { return }
            logger.notice("node \(node) \(event == "joined" ? "joined" : "left") the cluster")
        case "joined", "left":
            guard let room = values["room"]?.string, let user = values["user"]?.string else { return }
            let event: ClusterEvent = type == "joined" ? .joined(room: room, user: user) : .left(room: room, user: user)
            state.withLock { $0.receiver }?.receive(event)
        default:
            break
        }
    }

    // MARK: Requests

    private func text(_ fields: [String: JSONValue]) -> String {
        String(decoding: HubLink.object(fields), as: UTF8.self)
    }

    private func loadText(_ load: NodeLoad) -> String {
        text(["t": "load", "connections": .number(String(load.connections)), "users": .number(String(load.users))])
    }

    /// Sends a request and waits for the hub's answer.
    @discardableResult
    private func request(_ build: (Int) -> [UInt8]) async throws -> [String: JSONValue] {
        let prepared = state.withLock { state -> (WebSocketOutboundWriter, Int)? in
            guard let outbound = state.outbound else { return nil }
            state.nextRID += 1
            return (outbound, state.nextRID)
        }
        guard let (outbound, rid) = prepared else { throw HubError.unavailable }
        let frame = String(decoding: build(rid), as: UTF8.self)
        let timeout = configuration.requestTimeout
        return try await withCheckedThrowingContinuation { continuation in
            state.withLock { $0.pending[rid] = continuation }
            Task {
                do {
                    try await outbound.write(.text(frame))
                } catch {
                    self.state.withLock { $0.pending.removeValue(forKey: rid) }?.resume(throwing: HubError.unavailable)
                }
            }
            // A hub that takes the request but never answers must not hold the caller forever.
            Task {
                try? await Task.sleep(for: timeout)
                self.state.withLock { $0.pending.removeValue(forKey: rid) }?.resume(throwing: HubError.unavailable)
            }
        }
    }

    private func request(_ fields: [String: JSONValue]) async throws -> [String: JSONValue] {
        try await request { rid in
            var fields = fields
            fields["rid"] = .number(String(rid))
            return HubLink.object(fields)
        }
    }

    /// Presence changes are remembered, and sent when there is a link (again after a redial).
    private func tell(_ fields: [String: JSONValue]) async throws {
        do {
            _ = try await request(fields)
        } catch HubError.unavailable {
        }
    }

    // MARK: Backplane

    public func publish(_ envelope: Envelope) async throws {
        try await request { rid in HubLink.envelope(envelope, type: "pub", rid: rid) }
    }

    public func userOnline(_ user: String) async throws {
        state.withLock { _ = $0.local.apply(.online(user: user)) }
        try await tell(["t": "online", "user": .string(user)])
    }

    public func userOffline(_ user: String) async throws {
        state.withLock { _ = $0.local.apply(.offline(user: user)) }
        try await tell(["t": "offline", "user": .string(user)])
    }

    public func roomJoined(_ room: String, user: String) async throws {
        state.withLock { _ = $0.local.apply(.joined(room: room, user: user)) }
        try await tell(["t": "joined", "room": .string(room), "user": .string(user)])
    }

    public func roomLeft(_ room: String, user: String) async throws {
        state.withLock { _ = $0.local.apply(.left(room: room, user: user)) }
        try await tell(["t": "left", "room": .string(room), "user": .string(user)])
    }

    public func members(of room: String) async throws -> [String] {
        try await request(["t": "members", "room": .string(room)])["users"]?.array?.compactMap(\.string) ?? []
    }

    public func nodes(of user: String) async throws -> [String] {
        try await request(["t": "where", "user": .string(user)])["nodes"]?.array?.compactMap(\.string) ?? []
    }

    public func nodes() async throws -> [NodeStatus] {
        let listed = try await request(["t": "nodes"])["nodes"]?.array ?? []
        return listed.map { item in
            NodeStatus(
                info: NodeInfo(id: item["id"]?.string ?? "", url: item["url"]?.string ?? ""),
                load: NodeLoad(connections: item["connections"]?.int ?? 0, users: item["users"]?.int ?? 0),
                alive: item["alive"]?.bool ?? false)
        }
    }

    public func report(_ load: NodeLoad) async {
        let outbound = state.withLock { state in
            state.load = load
            return state.outbound
        }
        try? await outbound?.write(.text(loadText(load)))
    }
}
