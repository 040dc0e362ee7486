import ClusterLink
import HummingbirdWSClient
import Logging
import NIOCore
import SwitchboardCore
import Synchronization

public enum HubError: Error, CustomStringConvertible {
    case unavailable
    /// More than `Configuration.maxQueuedBytes` wait to go out on the link.
    case backedUp
    /// The hub did not answer within `Configuration.requestTimeout`.
    case timedOut

    public var description: String {
        switch self {
        case .unavailable: "the hub is unavailable"
        case .backedUp: "the link to the hub is backed up"
        case .timedOut: "the hub did not answer in time"
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
        /// Bytes that may wait to go out on the link; past them, requests are refused.
        public var maxQueuedBytes = 64 << 20
        /// History: kept by the hub (with its own size and TTL); on, this node has its messages
        /// numbered there and reads streams from it, up to `history.size` messages at a time.
        public var history: HistoryPolicy

        public init(hubURL: String, secret: String, heartbeat: Duration, history: HistoryPolicy = .standard) {
            self.hubURL = hubURL
            self.secret = secret
            self.heartbeat = heartbeat
            self.history = history
        }
    }

    private struct State {
        var node: NodeInfo?
        var receiver: (any ClusterReceiver)?
        /// What this node holds, replayed to the hub after each (re)connect.
        var local = Interest()
        var load = NodeLoad(connections: 0, users: 0)
        /// The link's outgoing queue while a link is up.
        var link: LinkOutbox?
        var requests = PendingRequests<CheckedContinuation<HubFrame, any Error>>()
        var waiters: [CheckedContinuation<Void, Never>] = []
        var stopped = false
        /// The dialling loop has ended (the node left).
        var unlinked = false
    }

    private let configuration: Configuration
    private let logger: Logger
    private let state = Mutex(State())
    /// Poked when the node joins or leaves, and when the dialling loop ends.
    private let changed = ConditionSignal()

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: Running, joining and leaving

    /// Links to the hub once the node has joined, and redials until it leaves or the task is
    /// cancelled.
    public func run() async {
        if await changed.wait(until: { self.state.withLock { $0.node != nil || $0.stopped } }) {
            await keepLinked()
        }
        state.withLock { $0.unlinked = true }
        changed.poke()
        await untilCancelled()
    }

    public func join(node: NodeInfo, receiver: any ClusterReceiver) async throws {
        state.withLock {
            $0.node = node
            $0.receiver = receiver
        }
        changed.poke()
        // Ready once the hub has us (until then /readyz stays 503).
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.link != nil || state.stopped { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    public func leave() async {
        // Closing the link is leaving: the hub removes this node's users at once.
        let (link, waiters) = state.withLock { state in
            state.stopped = true
            defer { state.waiters = [] }
            return (state.link, state.waiters)
        }
        for waiter in waiters { waiter.resume() }
        link?.close()
        changed.poke()
        // Gone once the link is closed (its queue written first), or at most a request's time.
        _ = await changed.wait(until: { self.state.withLock { $0.unlinked } }, timeout: configuration.requestTimeout)
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
            // The backoff, cut short by leaving.
            let delay = Backoff(minimum: configuration.minimumBackoff, maximum: configuration.maximumBackoff).delay(attempt: attempt)
            _ = await changed.wait(until: { self.state.withLock { $0.stopped } }, timeout: delay)
        }
    }

    /// One link's life: introduce ourselves and replay what this node holds (the hub rebuilds its
    /// view), then write the queue, read the hub's frames and expire unanswered requests, until
    /// the link ends.
    private func linked(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, wasDown: Bool) async throws {
        let (node, local, load) = state.withLock { ($0.node, $0.local, $0.load) }
        guard let node else { return }
        let queue = LinkOutbox(maxQueuedBytes: configuration.maxQueuedBytes)
        queue.post(.hello(node))
        for user in local.users { queue.post(.interest(rid: HubFrame.unanswered, .online(user: user))) }
        for pair in local.pairs { queue.post(.interest(rid: HubFrame.unanswered, .joined(room: pair.room, user: pair.user))) }
        queue.post(.load(load))
        let waiters = state.withLock { state in
            state.link = queue
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
        if wasDown { logger.notice("linked to the hub again") } else { logger.info("linked to the hub at \(configuration.hubURL)") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // What queued up while the last write went out goes as one batch.
                while let frames = await queue.next() {
                    try await outbound.write(.binary(frames.count == 1 ? frames[0] : HubFrame.batch(encoded: frames)))
                }
            }
            group.addTask {
                let period = Duration.milliseconds(250)
                while !Task.isCancelled {
                    try await Task.sleep(for: period)
                    self.expireRequests()
                }
            }
            group.addTask {
                defer { queue.close() }
                for try await message in inbound.messages(maxSize: 1 << 26) {
                    guard case .binary(let buffer) = message else { continue }
                    self.handle(buffer)
                }
            }
            // The link ends with its first part to end: the reader (the hub went away), or the
            // writer (we are leaving, or the socket broke).
            try await group.next()
            group.cancelAll()
        }
    }

    private func unlink() {
        let pending = state.withLock { state in
            state.link = nil
            return state.requests.removeAll()
        }
        for waiter in pending { waiter.resume(throwing: HubError.unavailable) }
    }

    private func expireRequests() {
        let overdue = state.withLock { $0.requests.removeExpired(now: .now) }
        for waiter in overdue { waiter.resume(throwing: HubError.timedOut) }
    }

    private func handle(_ buffer: ByteBuffer) {
        guard let frame = HubFrame.decode(buffer) else {
            logger.warning("dropped a malformed frame from the hub")
            return
        }
        switch frame {
        case .ack(let rid), .names(let rid, _), .nodes(let rid, _), .stream(let rid, _), .unsupported(let rid):
            state.withLock { $0.requests.remove(rid) }?.resume(returning: frame)
        case .event(let event):
            state.withLock { $0.receiver }?.receive(event)
        case .refused(let reason):
            // Another link holds our id at the hub (see HubServer): we redial with backoff.
            logger.warning("the hub refused this node's link: \(reason)")
        case .node(let id, let joined):
            logger.notice("node \(id) \(joined ? "joined" : "left") the cluster")
        case .hello, .interest, .publish, .query, .load, .batch:
            logger.warning("dropped a frame only a node sends, from the hub")
        }
    }

    // MARK: Requests

    /// Sends a request and waits for the hub's answer, at most `requestTimeout`.
    @discardableResult
    private func request(_ build: (UInt32) -> HubFrame) async throws -> HubFrame {
        let timeout = configuration.requestTimeout
        return try await withCheckedThrowingContinuation { continuation in
            let refusal = state.withLock { state -> HubError? in
                guard let link = state.link else { return .unavailable }
                let rid = state.requests.add(continuation, deadline: .now + timeout)
                // Queued under the lock: requests go out in the order they were made.
                guard link.post(build(rid)) else {
                    state.requests.remove(rid)
                    return .backedUp
                }
                return nil
            }
            if let refusal { continuation.resume(throwing: refusal) }
        }
    }

    /// Presence changes are remembered, and sent when there is a link (again after a redial).
    private func tell(_ delta: InterestDelta) async throws {
        state.withLock { _ = $0.local.apply(delta) }
        do {
            try await request { .interest(rid: $0, delta) }
        } catch HubError.unavailable {
        }
    }

    // MARK: Backplane

    public func publish(_ envelope: Envelope) async throws {
        let sequenced = configuration.history.keeps(envelope.address)
        try await request { .publish(rid: $0, envelope, sequenced: sequenced) }
    }

    public var history: HistoryPolicy { configuration.history }

    public func read(_ stream: Address, after: Int64?, limit: Int) async throws -> StreamRead {
        guard configuration.history.isOn else { throw HistoryError.unsupported }
        let answer = try await request { .query(rid: $0, .read(stream: stream, after: after, limit: UInt32(clamping: limit))) }
        guard case .stream(_, let read) = answer else { throw HistoryError.unsupported }
        return read
    }

    public func userOnline(_ user: String) async throws {
        try await tell(.online(user: user))
    }

    public func userOffline(_ user: String) async throws {
        try await tell(.offline(user: user))
    }

    public func roomJoined(_ room: String, user: String) async throws {
        try await tell(.joined(room: room, user: user))
    }

    public func roomLeft(_ room: String, user: String) async throws {
        try await tell(.left(room: room, user: user))
    }

    public func members(of room: String) async throws -> [String] {
        guard case .names(_, let users) = try await request({ .query(rid: $0, .members(room: room)) }) else { return [] }
        return users
    }

    public func nodes(of user: String) async throws -> [String] {
        guard case .names(_, let nodes) = try await request({ .query(rid: $0, .nodesOf(user: user)) }) else { return [] }
        return nodes
    }

    public func nodes() async throws -> [NodeStatus] {
        guard case .nodes(_, let nodes) = try await request({ .query(rid: $0, .nodes) }) else { return [] }
        return nodes
    }

    public func report(_ load: NodeLoad) async {
        let link = state.withLock { state in
            state.load = load
            return state.link
        }
        _ = link?.post(.load(load))
    }
}

extension LinkOutbox {
    /// Queues a frame for the hub; false when the link is closed or backed up.
    @discardableResult
    fileprivate func post(_ frame: HubFrame) -> Bool {
        post(frame.encoded())
    }
}
