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
        let outbound: WebSocketOutboundWriter
    }

    struct Member {
        var record: MemberRecord
        /// The member's interest; nil until its link to us has synced, and once it is declared dead.
        var view: Interest?
        var load = NodeLoad(connections: 0, users: 0)
        var lastHeard: ContinuousClock.Instant
        var inbound: InboundLink?
        /// Our link to it, once it welcomed us.
        var outgoing: PeerLink?
        var dialler: Task<Void, Never>?
        /// Failed dials since the last link: `join` does not wait for members that cannot be reached.
        var failedDials = 0

        var isAlive: Bool { view != nil && !record.left }
    }

    struct State {
        var me: MemberRecord?
        var receiver: (any ClusterReceiver)?
        var local = Interest()
        var load = NodeLoad(connections: 0, users: 0)
        var members: [String: Member] = [:]
        var stopped = false
        /// A seed has answered: we are in a mesh, not alone.
        var introduced = false
        var nextLinkID = 0
        var background: [Task<Void, Never>] = []
    }

    /// What a change under the lock asks to be done once the lock is released.
    struct Effects {
        var events: [ClusterEvent] = []
        var gossip: [MemberRecord] = []
        var closeLinks: [PeerLink] = []
        var closeInbound: [WebSocketOutboundWriter] = []
    }

    let configuration: Configuration
    let logger: Logger
    let state = Mutex(State())

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: Joining and leaving

    public func join(node: NodeInfo, receiver: any ClusterReceiver) async throws {
        let me = MemberRecord(id: node.id, url: node.url, incarnation: wallClockMilliseconds())
        state.withLock { state in
            state.me = me
            state.receiver = receiver
            state.background.append(Task { await self.watch() })
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
            let retry = Task { await self.keepIntroducing(to: seed) }
            state.withLock { $0.background.append(retry) }
        }
        // With no seed up, this is the first node of a mesh and serves alone; but a seed that
        // is up and refuses us means we are not in the cluster we were told to join.
        if !outcomes.contains(where: { $0.1 == .answered }), outcomes.contains(where: { $0.1 == .refused }) {
            while !state.withLock({ $0.introduced || $0.stopped }) { try? await Task.sleep(for: .milliseconds(100)) }
        }
        await waitForLinks()
    }

    /// Ready once every member we know of is linked both ways, or cannot be reached, or time is up.
    private func waitForLinks() async {
        let deadline = ContinuousClock.now + configuration.joinTimeout
        while ContinuousClock.now < deadline {
            let settled = state.withLock { state in
                state.stopped
                    || state.members.values.allSatisfy { member in
                        member.record.left || member.failedDials > 0 || (member.view != nil && member.outgoing?.isSynced == true)
                    }
            }
            if settled { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
        logger.warning("some members did not link within \(configuration.joinTimeout); serving anyway")
    }

    public func leave() async {
        let (links, inbound, diallers, background) = state.withLock { state in
            state.stopped = true
            let members = state.members.values
            defer { state.background = [] }
            return (members.compactMap(\.outgoing), members.compactMap(\.inbound), members.compactMap(\.dialler), state.background)
        }
        for task in background { task.cancel() }
        // Goodbye first: peers drop our users from presence at once instead of waiting for silence.
        for link in links {
            link.post(.bye)
            link.close()
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for dialler in diallers { await dialler.value }
            }
            group.addTask { try? await Task.sleep(for: .seconds(2)) }
            await group.next()
            group.cancelAll()
        }
        for dialler in diallers { dialler.cancel() }
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
            for (id, member) in state.members where member.isAlive && member.view!.hasRecipient(for: envelope.address) {
                if let link = member.outgoing { targets.append(link) } else { missing.append(id) }
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

    public func userOnline(_ user: String) async throws { await change(.online(user: user)) }
    public func userOffline(_ user: String) async throws { await change(.offline(user: user)) }
    public func roomJoined(_ room: String, user: String) async throws { await change(.joined(room: room, user: user)) }
    public func roomLeft(_ room: String, user: String) async throws { await change(.left(room: room, user: user)) }

    /// Applies a change to our interest and waits until every linked peer has applied it. A peer
    /// that misses it gets our whole interest again when its link is redialled.
    private func change(_ delta: InterestDelta) async {
        var effects = Effects()
        let links = state.withLock { state -> [PeerLink] in
            effects.events = state.changePresence(touching: delta.pairs) { $0.local.apply(delta) }
            return state.members.values.compactMap(\.outgoing)
        }
        perform(effects)
        let encoded = MeshFrame.delta(seq: 0, delta).encoded()
        let timeout = configuration.requestTimeout
        await withTaskGroup(of: Void.self) { group in
            for link in links {
                group.addTask { try? await link.request(timeout: timeout) { MeshFrame.numbered(encoded, seq: $0) } }
            }
        }
    }

    public func members(of room: String) async throws -> [String] {
        state.withLock { state in
            var users = state.local.rooms[room] ?? []
            for member in state.members.values where member.isAlive {
                users.formUnion(member.view!.rooms[room] ?? [])
            }
            return users.sorted()
        }
    }

    public func nodes(of user: String) async throws -> [String] {
        state.withLock { state in
            var nodes = state.members.values.filter { $0.isAlive && $0.view!.users.contains(user) }.map(\.record.id)
            if let me = state.me, state.local.users.contains(user) { nodes.append(me.id) }
            return nodes.sorted()
        }
    }

    public func nodes() async throws -> [NodeStatus] {
        state.withLock { state in
            var nodes = state.members.values.map { member in
                NodeStatus(info: NodeInfo(id: member.record.id, url: member.record.url), load: member.load, alive: member.isAlive)
            }
            if let me = state.me {
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
        guard let me = state.me, Name.isValid(record.id) else { return }
        guard record.id != me.id else {
            if record.incarnation > me.incarnation, !record.left {
                logger.error("another node uses this node's id \(me.id) (at \(record.url)); node ids must be unique")
            }
            return
        }
        if let known = state.members[record.id] {
            guard record.supersedes(known.record) else { return }
            // Whatever the old incarnation held is gone: its users leave, its links close.
            drop(record.id, from: &state, effects: &effects)
            state.members[record.id]!.record = record
            if let inbound = known.inbound, inbound.incarnation < record.incarnation {
                effects.closeInbound.append(inbound.outbound)
                state.members[record.id]!.inbound = nil
            }
            if record.left {
                known.dialler?.cancel()
                state.members[record.id]!.dialler = nil
                logger.notice("node \(record.id) left the mesh")
            } else {
                logger.notice("node \(record.id) restarted; linking to its new incarnation")
            }
        } else {
            state.members[record.id] = Member(record: record, lastHeard: .now)
            if !record.left {
                logger.info("learned of node \(record.id) at \(record.url)")
                let id = record.id
                state.members[id]!.dialler = Task { await self.keepLinked(to: id) }
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
        guard let member = state.members[id] else { return }
        if let view = member.view {
            effects.events += state.changePresence(touching: Set(view.pairs)) { $0.members[id]!.view = nil }
        }
        if let link = member.outgoing {
            effects.closeLinks.append(link)
            state.members[id]!.outgoing = nil
        }
    }

    func allRecords(_ state: State) -> [MemberRecord] {
        (state.me.map { [$0] } ?? []) + state.members.values.map(\.record)
    }

    func perform(_ effects: Effects) {
        let (receiver, links) = state.withLock { state in
            (state.receiver, effects.gossip.isEmpty ? [] : state.members.values.compactMap(\.outgoing))
        }
        if let receiver {
            for event in effects.events { receiver.receive(event) }
        }
        for link in links { link.post(.members(effects.gossip)) }
        for link in effects.closeLinks { link.close() }
        for outbound in effects.closeInbound {
            Task { try? await outbound.close(.goingAway, reason: "superseded") }
        }
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
                for (id, member) in state.members where member.isAlive && now - member.lastHeard > silence {
                    logger.warning(
                        "node \(id) was silent for \(configuration.missedHeartbeats) heartbeats: declared dead, its users leave presence")
                    drop(id, from: &state, effects: &effects)
                    if let inbound = member.inbound {
                        effects.closeInbound.append(inbound.outbound)
                        state.members[id]!.inbound = nil
                    }
                }
                return (state.members.values.compactMap(\.outgoing), state.load)
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

extension MeshBackplane.State {
    func isPresent(_ pair: MeshFrame.RoomMember) -> Bool {
        local.contains(pair.user, in: pair.room)
            || members.values.contains { $0.isAlive && $0.view!.contains(pair.user, in: pair.room) }
    }

    /// Runs `body` and returns the `joined`/`left` events it causes among `pairs`: a user's first
    /// node entering a room, or its last one leaving.
    mutating func changePresence(touching pairs: some Collection<MeshFrame.RoomMember>, _ body: (inout Self) -> Void) -> [ClusterEvent] {
        let before = pairs.map(isPresent)
        body(&self)
        return zip(pairs, before).compactMap { pair, was in
            let now = isPresent(pair)
            guard now != was else { return nil }
            return now ? .joined(room: pair.room, user: pair.user) : .left(room: pair.room, user: pair.user)
        }
    }
}

extension InterestDelta {
    /// The room membership it touches, if any.
    var pairs: [MeshFrame.RoomMember] {
        switch self {
        case .online, .offline: []
        case .joined(let room, let user), .left(let room, let user): [MeshFrame.RoomMember(room: room, user: user)]
        }
    }
}
