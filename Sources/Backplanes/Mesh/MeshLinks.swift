import HummingbirdWSClient
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import Synchronization

/// The two ends of mesh links: dialling a member (we send on that link) and accepting a member's
/// link at `/cluster` (we read from it and ack).
extension MeshBackplane {
    /// Frames up to this size travel on links; the node's client frame limit does not apply.
    static let maxLinkFrame = 1 << 24
    /// Users or room members per sync frame, so that a large interest goes in parts.
    static let syncPartSize = 4096

    // MARK: Dialling

    /// Dials `id` for as long as it is a member, redialling with capped backoff and jitter.
    func keepLinked(to id: String) async {
        var attempt = 0
        var reported = false
        while !Task.isCancelled {
            guard let record = state.withLock({ $0.stopped ? nil : $0.view.members[id]?.record }), !record.left else { return }
            do {
                try await link(to: record)
                attempt = 0
                reported = false
                if !state.withLock({ $0.stopped }) { logger.notice("link to node \(id) closed; redialling") }
            } catch {
                state.withLock { $0.links[id]?.failedDials += 1 }
                settled.poke()
                if !reported {
                    logger.warning("cannot link to node \(id) at \(record.url): \(error); retrying with backoff")
                    reported = true
                }
                attempt += 1
            }
            // The backoff, cut short when we leave or the member does.
            let delay = Backoff(minimum: configuration.minimumBackoff, maximum: configuration.maximumBackoff).delay(attempt: attempt)
            _ = await settled.wait(
                until: { self.state.withLock { $0.stopped || $0.view.members[id]?.record.left != false } }, timeout: delay)
        }
    }

    /// One link to a member: returns when a working link ends; throws if it never worked.
    private func link(to record: MemberRecord) async throws {
        let link = PeerLink(peer: record.id)
        defer {
            link.close()
            state.withLock { state in
                if state.links[record.id]?.outgoing === link { state.links[record.id]?.outgoing = nil }
            }
        }
        try await connect(to: Self.clusterURL(record.url)) { inbound, outbound, greeted in
            var frames = inbound.messages(maxSize: Self.maxLinkFrame).makeAsyncIterator()
            switch try await Self.nextFrame(&frames) {
            case .welcome(let answered) where answered.id == record.id:
                self.mergeAll([answered])
            case .welcome(let answered):
                self.mergeAll([answered])
                throw MeshError.refused("node \(answered.id) answers at \(record.url), not \(record.id)")
            case .refused(let why):
                throw MeshError.refused(why)
            default:
                throw MeshError.refused("no welcome")
            }
            greeted()
            try await self.send(on: link, inbound: &frames, outbound: outbound)
        }
    }

    /// The working life of a link we dialled: introduce ourselves, sync our interest, then write
    /// what is queued while reading acks and gossip.
    private func send(
        on link: PeerLink, inbound frames: inout WebSocketInboundMessageStream.AsyncIterator, outbound: WebSocketOutboundWriter
    ) async throws {
        guard let (me, records) = state.withLock({ state in state.view.me.map { ($0, state.view.records) } }) else { return }
        try await outbound.write(.binary(MeshFrame.hello(me).encoded()))
        try await outbound.write(.binary(MeshFrame.members(records).encoded()))
        // Our interest is snapshotted and queued under the lock that orders every delta after it.
        let registered = state.withLock { state -> Bool in
            guard !state.stopped, state.view.members[link.peer] != nil else { return false }
            state.links[link.peer]?.outgoing?.close()
            state.links[link.peer, default: Links()].outgoing = link
            state.links[link.peer]?.failedDials = 0
            link.enqueueSync(Self.syncParts(state.view.local, load: state.load))
            return true
        }
        guard registered else { return }
        logger.info("linked to node \(link.peer)")
        await withTaskGroup(of: Void.self) { group in
            // The writer drains the link's queue until the link closes.
            group.addTask {
                while let frames = await link.outbox.next() {
                    let bytes = frames.count == 1 ? frames[0] : MeshFrame.batch(encoded: frames)
                    do { try await outbound.write(.binary(bytes)) } catch { break }
                }
                link.close()
                try? await outbound.close(.normalClosure, reason: nil)
            }
            do {
                while let frame = try await Self.nextFrame(&frames) {
                    heard(from: link.peer, onLink: nil)
                    if case .batch(let batched) = frame {
                        for frame in batched { answered(frame, on: link) }
                    } else {
                        answered(frame, on: link)
                    }
                }
            } catch {
                logger.debug("link to \(link.peer) failed: \(error)")
            }
            link.close()
        }
    }

    /// What the acceptor of our link sent back.
    private func answered(_ frame: MeshFrame, on link: PeerLink) {
        switch frame {
        case .ack(let seq):
            link.acked(seq)
            settled.poke()
        case .members(let records): mergeAll(records)
        case .refused(let why):
            logger.warning("node \(link.peer) closed our link: \(why)")
            link.close()
        default: break
        }
    }

    enum Introduction: Equatable {
        case answered
        case unreachable
        /// The seed is up but would not link: a wrong secret, or not a mesh node.
        case refused
    }

    /// Introduces this node to a seed: sends what we know, takes in its member list.
    func introduce(to seed: String) async -> Introduction {
        do {
            try await connect(to: Self.seedURL(seed)) { inbound, outbound, greeted in
                var frames = inbound.messages(maxSize: Self.maxLinkFrame).makeAsyncIterator()
                guard case .welcome(let answered) = try await Self.nextFrame(&frames) else { throw MeshError.refused("no welcome") }
                let records = self.state.withLock { $0.view.records }
                // A seed list may name this node itself.
                if answered.id != records.first?.id {
                    try await outbound.write(.binary(MeshFrame.members(records).encoded()))
                    guard case .members(let known) = try await Self.nextFrame(&frames) else { throw MeshError.refused("no member list") }
                    self.mergeAll([answered] + known)
                }
                greeted()
                try? await outbound.close(.normalClosure, reason: nil)
            }
            state.withLock { $0.introduced = true }
            settled.poke()
            return .answered
        } catch let error as WebSocketClientError where error == .webSocketUpgradeFailed {
            return .refused
        } catch MeshError.refused {
            return .refused
        } catch {
            logger.debug("seed \(seed): \(error)")
            return .unreachable
        }
    }

    func keepIntroducing(to seed: String) async {
        var attempt = 1
        while !Task.isCancelled, !state.withLock({ $0.stopped }) {
            let delay = Backoff(minimum: configuration.minimumBackoff, maximum: configuration.maximumBackoff).delay(attempt: attempt)
            if await settled.wait(until: { self.state.withLock { $0.stopped } }, timeout: delay) { return }
            if await introduce(to: seed) == .answered {
                logger.notice("seed \(seed) answered")
                return
            }
            attempt += 1
        }
    }

    /// Dials `url` with the cluster secret and runs `body` on the link. `body` calls `greeted`
    /// once the far end has answered; a far end that does not within the request timeout is
    /// given up on. Throws if the link was never greeted.
    private func connect(
        to url: String,
        body: @escaping @Sendable (WebSocketInboundStream, WebSocketOutboundWriter, _ greeted: @Sendable () -> Void) async throws -> Void
    ) async throws {
        var dialConfiguration = WebSocketClientConfiguration(maxFrameSize: Self.maxLinkFrame, closeTimeout: .seconds(1))
        dialConfiguration.additionalHeaders[.authorization] = "Bearer \(self.configuration.secret)"
        let configuration = dialConfiguration
        let outcome = DialOutcome()
        let logger = self.logger
        let timeout = self.configuration.requestTimeout
        // The dial races a timer until the far end greets us; then the link runs its course.
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                do {
                    try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) { inbound, outbound, _ in
                        try await body(inbound, outbound) { outcome.greeted.store(true, ordering: .relaxed) }
                    }
                } catch {
                    outcome.failure.withLock { $0 = error }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            while let dialEnded = await group.next() {
                if dialEnded {
                    group.cancelAll()
                } else if !outcome.greeted.load(ordering: .relaxed) {
                    outcome.failure.withLock { $0 = $0 ?? MeshError.timedOut }
                    group.cancelAll()
                }
            }
        }
        if !outcome.greeted.load(ordering: .relaxed) {
            throw outcome.failure.withLock { $0 } ?? MeshError.refused("closed before greeting")
        }
    }

    // MARK: Accepting

    /// Serves a link another node dialled to `/cluster` (the node has checked the secret and
    /// sized the frame decoder for links: see `serveLink`).
    func acceptLink(_ outbound: AcceptedLink, reader frames: inout AcceptedLink.Reader) async throws {
        guard let me = state.withLock({ $0.stopped ? nil : $0.view.me }) else {
            try await outbound.send(bytes: MeshFrame.refused("this node is not in the mesh").encoded())
            return
        }
        try await outbound.send(bytes: MeshFrame.welcome(me).encoded())
        do {
            switch try await frames.next() {
            case .members(let records):
                // An introduction from a node that named us as its seed.
                mergeAll(records)
                let known = state.withLock { $0.view.records }
                try await outbound.send(bytes: MeshFrame.members(known).encoded())
                while try await frames.next() != nil {}
            case .hello(let record):
                try await receive(from: record, inbound: &frames, outbound: outbound)
            case nil:
                return
            default:
                throw MeshError.refused("a link must start with hello")
            }
        } catch MeshError.refused(let why) {
            // Nothing of the bad frame was applied; the sender redials and syncs afresh.
            logger.warning("closed a cluster link: \(why)")
            try? await outbound.close(.protocolError, reason: why)
        }
    }

    private func receive(
        from peer: MemberRecord, inbound frames: inout AcceptedLink.Reader, outbound: AcceptedLink
    ) async throws {
        let refusal: String? = state.withLock { state in
            guard Name.isValid(peer.id) else { return "invalid node id" }
            if peer.id == state.view.me?.id { return "node id \(peer.id) is taken (by this node)" }
            if let known = state.view.members[peer.id]?.record, known.incarnation > peer.incarnation {
                return "a newer incarnation of \(peer.id) is linked"
            }
            // An id held by a live link stays with it: a second hello at the same incarnation
            // (a forger with the secret) must not take over its view. A link that died is let go
            // by the failure detector, after which the real node's redial is accepted.
            if let held = state.links[peer.id]?.inbound, held.incarnation == peer.incarnation {
                return "node id \(peer.id) is held by a live link at this incarnation"
            }
            return nil
        }
        if let refusal {
            logger.warning("refused a link from \(peer.id) at \(peer.url): \(refusal)")
            try await outbound.send(bytes: MeshFrame.refused(refusal).encoded())
            return
        }
        var effects = Effects()
        let (linkID, previous) = state.withLock { state -> (Int, InboundLink?) in
            merge(peer, into: &state, effects: &effects)
            state.nextLinkID += 1
            let previous = state.links[peer.id]?.inbound
            state.links[peer.id, default: Links()].inbound = InboundLink(
                id: state.nextLinkID, incarnation: peer.incarnation, outbound: outbound)
            state.view.heard(from: peer.id)
            return (state.nextLinkID, previous)
        }
        if let previous { effects.closeInbound.append(previous.outbound) }
        perform(effects)
        defer {
            state.withLock { state in
                if state.links[peer.id]?.inbound?.id == linkID { state.links[peer.id]?.inbound = nil }
            }
        }
        let known = state.withLock { $0.view.records }
        try await outbound.send(bytes: MeshFrame.members(known).encoded())
        var syncing = Interest()
        while let frame = try await frames.next() {
            let current = heard(from: peer.id, onLink: linkID)
            guard case .batch(let batched) = frame else {
                if let seq = apply(frame, from: peer, current: current, syncing: &syncing) {
                    try await outbound.send(.ack(seq: seq))
                }
                continue
            }
            // A batch's acks go back as one batch.
            let acks = batched.compactMap { apply($0, from: peer, current: current, syncing: &syncing) }
            switch acks.count {
            case 0: break
            case 1: try await outbound.send(.ack(seq: acks[0]))
            default: try await outbound.send(.batch(acks.map { .ack(seq: $0) }))
            }
        }
    }

    /// Applies one frame from the dialler of a link; returns the number to ack, if it has one.
    /// `current` says whether the link is still the peer's current one (else its interest
    /// changes are ignored); `syncing` gathers a sync's parts until the final one.
    private func apply(_ frame: MeshFrame, from peer: MemberRecord, current: Bool, syncing: inout Interest) -> UInt32? {
        switch frame {
        case .sync(let seq, let load, let users, let rooms, let final):
            syncing.users.formUnion(users)
            for pair in rooms { syncing.rooms[pair.room, default: []].insert(pair.user) }
            if final, current {
                replaceView(of: peer.id, with: syncing, load: load)
                syncing = Interest()
            }
            return seq
        case .delta(let seq, let delta):
            if current { apply(delta, from: peer.id) }
            return seq
        case .message(let seq, let envelope):
            state.withLock { $0.receiver }?.receive(.message(envelope))
            return seq
        case .beat(let load):
            state.withLock { $0.view.setLoad(load, of: peer.id) }
        case .members(let records):
            mergeAll(records)
        case .bye:
            var record = peer
            record.left = true
            mergeAll([record])
        default:
            break
        }
        return nil
    }

    /// Notes that `id` is alive. With a link id, only while that is the member's current link;
    /// returns whether it is.
    @discardableResult
    private func heard(from id: String, onLink linkID: Int?) -> Bool {
        state.withLock { state in
            if let linkID, state.links[id]?.inbound?.id != linkID { return false }
            return state.view.heard(from: id)
        }
    }

    private func replaceView(of id: String, with interest: Interest, load: NodeLoad) {
        var effects = Effects()
        let first = state.withLock { state -> Bool in
            guard let (events, first) = state.view.replaceInterest(of: id, with: interest, load: load) else { return false }
            effects.events = events
            return first
        }
        if first { logger.notice("node \(id) is in the mesh", metadata: ["users": "\(interest.users.count)"]) }
        perform(effects)
    }

    private func apply(_ delta: InterestDelta, from id: String) {
        var effects = Effects()
        state.withLock { effects.events = $0.view.apply(delta, from: id) }
        perform(effects)
    }

    // MARK: Helpers

    /// The next link frame; nil at the end of the link. A malformed frame ends the link.
    static func nextFrame(_ frames: inout WebSocketInboundMessageStream.AsyncIterator) async throws -> MeshFrame? {
        while let message = try await frames.next() {
            guard case .binary(let buffer) = message else { continue }
            guard let frame = MeshFrame.decode(buffer) else { throw MeshError.refused("malformed link frame") }
            return frame
        }
        return nil
    }

    static func syncParts(_ interest: Interest, load: NodeLoad) -> [(UInt32) -> MeshFrame] {
        let users = Array(interest.users)
        let pairs = interest.pairs
        let parts = max(1, (max(users.count, pairs.count) + syncPartSize - 1) / syncPartSize)
        return (0..<parts).map { part in
            let userSlice = Array(users.dropFirst(part * syncPartSize).prefix(syncPartSize))
            let pairSlice = Array(pairs.dropFirst(part * syncPartSize).prefix(syncPartSize))
            return { seq in .sync(seq: seq, load: load, users: userSlice, rooms: pairSlice, final: part == parts - 1) }
        }
    }

    /// `ws://host:port/ws` -> `ws://host:port/cluster`.
    static func clusterURL(_ clientURL: String) -> String {
        let parts = clientURL.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        // ["ws:", "", "host:port", "ws"]
        guard parts.count >= 3, parts[0].hasSuffix(":"), parts[1].isEmpty else { return clientURL }
        return "\(parts[0])//\(parts[2])/cluster"
    }

    /// `host:port` (or a ws:// URL) -> the cluster endpoint.
    static func seedURL(_ seed: String) -> String {
        clusterURL(seed.contains("://") ? seed : "ws://" + seed)
    }
}

/// How a dial went: whether the far end greeted us, and the error if it did not.
private final class DialOutcome: Sendable {
    let greeted = Atomic(false)
    let failure = Mutex<(any Error)?>(nil)
}
