import HummingbirdWSClient
import Logging
import SwitchboardCore
import Synchronization

/// A backplane without middleware: every node links directly to every other member.
///
/// - Membership: `seeds` name one or more existing members. A new node introduces itself to a
///   seed and gets the member list back; members gossip records (id, URL, incarnation) to each
///   other, so everyone learns of everyone and dials them. A restarted node has a newer
///   incarnation and supersedes its old self.
/// - Links: each node dials one WebSocket link to every other member, at `/cluster` on the
///   member's own port, presenting the cluster secret. A node *sends* on the link it dialled
///   (interest, messages, heartbeats) and *reads* on the links others dialled to it; the far end
///   acks what it applied. Frames are binary (`MeshFrame`).
/// - Interest and presence: a link starts with the sender's whole interest (users, room members)
///   and then carries deltas. Every node thus holds each peer's interest: a message goes only to
///   peers with a recipient, and presence answers come from that shared view without asking.
/// - Failure: a peer silent on its link for `missedHeartbeats` heartbeat periods is declared
///   dead by each node on its own: its interest is dropped (its users leave presence, `left`
///   goes to this node's clients once) and its links are closed. Links that drop are redialled
///   with capped backoff, forever; a peer that answers again syncs afresh.
///
/// Liveness is each node's own judgement and is never gossiped, so two nodes that lose each
/// other but not the rest only stop seeing each other's users until their links heal; no one
/// relays, so nothing is delivered twice (see docs/ARCHITECTURE.md).
public final class MeshBackplane: Backplane {
    public struct Configuration: Sendable {
        /// Existing members, as HOST:PORT (or ws:// URLs). Seeds that are down are retried.
        public var seeds: [String]
        public var secret: String
        /// Heartbeats go out this often on every link.
        public var heartbeat: Duration
        /// A peer silent for this many heartbeat periods is declared dead.
        public var missedHeartbeats = 3
        /// How long a request (a message, an interest change) may wait for the peer's ack.
        public var requestTimeout: Duration = .seconds(5)
        /// How long `join` waits for the members it learns of to link before the node is ready anyway.
        public var joinTimeout: Duration = .seconds(5)
        public var minimumBackoff: Duration = .milliseconds(100)
        public var maximumBackoff: Duration = .seconds(5)

        public init(seeds: [String], secret: String, heartbeat: Duration) {
            self.seeds = seeds
            self.secret = secret
            self.heartbeat = heartbeat
        }
    }

    /// A link another member dialled to us.
    struct InboundLink {
        let id: Int
        let incarnation: Int64
        let outbound: AcceptedLink
    }

    /// The links to and from one member (what it holds is in the view).
    struct Links {
        var inbound: InboundLink?
        /// Our link to it, once it welcomed us.
        var outgoing: PeerLink?
        /// A dialling loop runs for it (see `startDialling`).
        var dialling = false
        /// Failed dials since the last link: `join` does not wait for members that cannot be reached.
        var failedDials = 0
    }

    struct State {
        /// Members, their interest and presence: the pure part, shared with broker backplanes.
        var view = MembershipView()
        var links: [String: Links] = [:]
        var receiver: (any ClusterReceiver)?
        var load = NodeLoad(connections: 0, users: 0)
        var stopped = false
        /// A seed has answered: we are in a mesh, not alone.
        var introduced = false
        var nextLinkID = 0
    }

    /// What a change under the lock asks to be done once the lock is released.
    struct Effects {
        var events: [ClusterEvent] = []
        var gossip: [MemberRecord] = []
        var closeLinks: [PeerLink] = []
        var closeInbound: [AcceptedLink] = []
        /// Members to keep a dialler running for.
        var dial: [String] = []
        var notices: [(Logger.Level, Logger.Message)] = []
    }

    let configuration: Configuration
    let logger: Logger
    let state = Mutex(State())
    /// Poked when what `join` waits for may have changed: an introduction, a link synced or a
    /// dial failed, the view changed, or the node stopped.
    let settled = ConditionSignal()
    /// Work that outlives the call that starts it (diallers, retries, closes), run by `run`.
    private let jobs = BackgroundJobs()

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: Running, joining and leaving

    /// Failure detection and heartbeats, and every job `spawn` hands over, until cancelled.
    public func run() async {
        await jobs.run(alongside: { await self.watch() })
    }

    /// Runs `job` as a child task of `run`.
    func spawn(_ job: @escaping @Sendable () async -> Void) {
        jobs.spawn(job)
    }

    /// Keeps one dialling loop running for member `id` while it is a member and we are in the
    /// mesh; a loop that ends as the member comes back starts again.
    func startDialling(_ id: String) {
        let start = state.withLock { state -> Bool in
            guard !state.stopped, state.links[id]?.dialling != true else { return false }
            state.links[id, default: Links()].dialling = true
            return true
        }
        guard start else { return }
        spawn {
            await self.keepLinked(to: id)
            let again = self.state.withLock { state -> Bool in
                state.links[id]?.dialling = false
                guard !state.stopped, let member = state.view.members[id] else { return false }
                return !member.record.left
            }
            self.settled.poke()
            if again, !Task.isCancelled { self.startDialling(id) }
        }
    }

    public func join(node: NodeInfo, receiver: any ClusterReceiver) async throws {
        let me = MemberRecord(id: node.id, url: node.url, incarnation: wallClockMilliseconds())
        state.withLock { state in
            state.view.start(as: me)
            state.receiver = receiver
        }
        // Introduce ourselves to every seed; seeds that do not answer are retried in the background.
        let outcomes = await withTaskGroup(of: (String, Introduction).self) { group in
            for seed in configuration.seeds {
                group.addTask { (seed, await self.introduce(to: seed)) }
            }
            return await group.reduce(into: [(String, Introduction)]()) { $0.append($1) }
        }
        for (seed, outcome) in outcomes where outcome != .answered {
            if outcome == .refused {
                logger.error("seed \(seed) refused this node's link: check --cluster-secret, and that \(seed) runs with --peers")
            } else {
                logger.warning("seed \(seed) does not answer yet; retrying in the background")
            }
            spawn { await self.keepIntroducing(to: seed) }
        }
        // With no seed up, this is the first node of a mesh and serves alone; but a seed that
        // is up and refuses us means we are not in the cluster we were told to join.
        if !outcomes.contains(where: { $0.1 == .answered }), outcomes.contains(where: { $0.1 == .refused }) {
            _ = await settled.wait { self.state.withLock { $0.introduced || $0.stopped } }
        }
        await waitForLinks()
    }

    /// Ready once every member we know of is linked both ways, or cannot be reached, or time is up.
    private func waitForLinks() async {
        let linked = await settled.wait(
            until: {
                self.state.withLock { state in
                    state.stopped
                        || state.view.members.values.allSatisfy { member in
                            let links = state.links[member.record.id]
                            return member.record.left || (links?.failedDials ?? 0) > 0
                                || (member.interest != nil && links?.outgoing?.isSynced == true)
                        }
                }
            }, timeout: configuration.joinTimeout)
        if linked { return }
        logger.warning("some members did not link within \(configuration.joinTimeout); serving anyway")
    }

    public func leave() async {
        let (links, inbound) = state.withLock { state in
            state.stopped = true
            let links = state.links.values
            return (links.compactMap(\.outgoing), links.compactMap(\.inbound))
        }
        settled.poke()
        // Goodbye first: peers drop our users from presence at once instead of waiting for silence.
        for link in links {
            link.post(.bye)
            link.close()
        }
        // The diallers end as their links close (after the goodbye is written), within a bound.
        _ = await settled.wait(
            until: { self.state.withLock { state in !state.links.values.contains(where: \.dialling) } }, timeout: .seconds(2))
        for link in inbound { try? await link.outbound.close(.goingAway, reason: "node leaving") }
    }

    // MARK: Backplane

    public func publish(_ envelope: Envelope) async throws {
        try await submit(envelope).wait()
    }

    /// Queued on every link that needs it at once, so one sender's messages keep their order
    /// while several are on their way; waiting collects the peers' acks.
    public func submit(_ envelope: Envelope) -> PendingPublish {
        var missing: [String] = []
        let targets = state.withLock { state -> [PeerLink] in
            var targets: [PeerLink] = []
            for id in state.view.members(withRecipientFor: envelope.address) {
                if let link = state.links[id]?.outgoing { targets.append(link) } else { missing.append(id) }
            }
            return targets
        }
        guard !targets.isEmpty || !missing.isEmpty else { return PendingPublish {} }
        // Encoded once; each link gets a copy with its own sequence number.
        let encoded = MeshFrame.message(seq: 0, envelope).encoded()
        let timeout = configuration.requestTimeout
        let replies = targets.map { link in (link.peer, link.send(timeout: timeout) { MeshFrame.numbered(encoded, seq: $0) }) }
        return PendingPublish { [missing] in
            var failed = missing
            for (peer, reply) in replies {
                do { try await reply.wait() } catch { failed.append(peer) }
            }
            if !failed.isEmpty { throw MeshError.unreachable(failed) }
        }
    }

    public func userOnline(_ user: String) async throws { await change([.online(user: user)]) }
    public func userOffline(_ user: String) async throws { await change([.offline(user: user)]) }
    public func roomJoined(_ room: String, user: String) async throws { await change([.joined(room: room, user: user)]) }
    public func roomLeft(_ room: String, user: String) async throws { await change([.left(room: room, user: user)]) }
    public func roomChanged(_ room: String, _ changes: [RoomChange]) async throws { await change(changes.map { $0.delta(in: room) }) }

    /// Applies changes to our interest, in order, and waits until every linked peer has applied
    /// them: all are queued on every link first, so a batch costs one round trip. A peer that
    /// misses one gets our whole interest again when its link is redialled.
    private func change(_ deltas: [InterestDelta]) async {
        var effects = Effects()
        let links = state.withLock { state -> [PeerLink] in
            for delta in deltas { effects.events += state.view.changeLocal(delta) }
            return state.links.values.compactMap(\.outgoing)
        }
        perform(effects)
        let timeout = configuration.requestTimeout
        let encoded = deltas.map { MeshFrame.delta(seq: 0, $0).encoded() }
        let replies = links.flatMap { link in encoded.map { frame in link.send(timeout: timeout) { MeshFrame.numbered(frame, seq: $0) } } }
        for reply in replies { try? await reply.wait() }
    }

    public func members(of room: String) async throws -> [String] {
        state.withLock { $0.view.users(in: room) }
    }

    public func nodes(of user: String) async throws -> [String] {
        state.withLock { $0.view.nodes(of: user) }
    }

    public func nodes() async throws -> [NodeStatus] {
        state.withLock { state in
            var nodes = state.view.members.values.map { member in
                NodeStatus(info: NodeInfo(id: member.record.id, url: member.record.url), load: member.load, alive: member.isAlive)
            }
            if let me = state.view.me {
                nodes.append(NodeStatus(info: NodeInfo(id: me.id, url: me.url), load: state.load, alive: !state.stopped))
            }
            return nodes.sorted { $0.info.id < $1.info.id }
        }
    }

    public func report(_ load: NodeLoad) async {
        state.withLock { $0.load = load }
    }

    // MARK: Membership

    /// Takes in a member record from gossip, a hello or a welcome.
    func merge(_ record: MemberRecord, into state: inout State, effects: inout Effects) {
        let (outcome, events) = state.view.merge(record)
        effects.events += events
        switch outcome {
        case .ignored:
            return
        case .claimsOurID:
            effects.notices.append((.error, "another node uses this node's id \(record.id) (at \(record.url)); node ids must be unique"))
            return
        case .learned:
            if !record.left {
                effects.notices.append((.info, "learned of node \(record.id) at \(record.url)"))
                effects.dial.append(record.id)
            }
        case .superseded:
            // Whatever the old incarnation held is gone (the view dropped it): its links close.
            closeOutgoing(record.id, in: &state, effects: &effects)
            if let inbound = state.links[record.id]?.inbound, inbound.incarnation < record.incarnation {
                effects.closeInbound.append(inbound.outbound)
                state.links[record.id]?.inbound = nil
            }
            if record.left {
                // Its dialler ends by itself: it dials only members that have not left.
                effects.notices.append((.notice, "node \(record.id) left the mesh"))
            } else {
                effects.notices.append((.notice, "node \(record.id) restarted; linking to its new incarnation"))
                effects.dial.append(record.id)  // kept if one runs; started again after a goodbye
            }
        }
        effects.gossip.append(record)
    }

    func mergeAll(_ records: [MemberRecord]) {
        var effects = Effects()
        state.withLock { state in
            for record in records { merge(record, into: &state, effects: &effects) }
        }
        perform(effects)
    }

    /// Forgets a member's interest (its users leave presence) and closes our link to it.
    func drop(_ id: String, from state: inout State, effects: inout Effects) {
        effects.events += state.view.drop(id)
        closeOutgoing(id, in: &state, effects: &effects)
    }

    private func closeOutgoing(_ id: String, in state: inout State, effects: inout Effects) {
        if let link = state.links[id]?.outgoing {
            effects.closeLinks.append(link)
            state.links[id]?.outgoing = nil
        }
    }

    /// Does, outside the lock, what a change under it asked for.
    func perform(_ effects: Effects) {
        defer { settled.poke() }
        for (level, message) in effects.notices { logger.log(level: level, message) }
        let (receiver, links) = state.withLock { state in
            (state.receiver, effects.gossip.isEmpty ? [] : state.links.values.compactMap(\.outgoing))
        }
        if let receiver {
            for event in effects.events { receiver.receive(event) }
        }
        for link in links { link.post(.members(effects.gossip)) }
        for link in effects.closeLinks { link.close() }
        for outbound in effects.closeInbound {
            spawn { try? await outbound.close(.goingAway, reason: "superseded") }
        }
        for id in effects.dial { startDialling(id) }
    }

    // MARK: Failure detection

    /// Every quarter heartbeat: declares silent peers dead, expires unanswered requests; every
    /// heartbeat: sends a beat (with our load) on every link.
    private func watch() async {
        let heartbeat = configuration.heartbeat
        let tick = max(min(heartbeat / 4, .seconds(1)), .milliseconds(50))
        let silence = heartbeat * configuration.missedHeartbeats
        var lastBeat = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            let now = ContinuousClock.now
            var effects = Effects()
            let (links, load) = state.withLock { state in
                for id in state.view.silent(at: now, longerThan: silence) {
                    effects.notices.append(
                        (
                            .warning,
                            "node \(id) was silent for \(configuration.missedHeartbeats) heartbeats: declared dead, its users leave presence"
                        ))
                    drop(id, from: &state, effects: &effects)
                    if let inbound = state.links[id]?.inbound {
                        effects.closeInbound.append(inbound.outbound)
                        state.links[id]?.inbound = nil
                    }
                }
                return (state.links.values.compactMap(\.outgoing), state.load)
            }
            perform(effects)
            for link in links { link.expire(now: now) }
            if now - lastBeat >= heartbeat {
                lastBeat = now
                for link in links { link.post(.beat(load)) }
            }
        }
    }
}
