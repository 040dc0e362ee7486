import Logging
import SwitchboardCore
import Synchronization

/// Membership and presence for nodes joined through a broker, whatever the broker: the rules of
/// the mesh (`MembershipView`) fed by `BrokerFrame`s instead of links.
///
/// - A node announces its whole interest when it joins or reconnects, asking for replies; every
///   node that hears it answers with its own announce, to that node alone. Of any two nodes, the
///   one that announces later is heard by the other (whose queue or subscription was already in
///   place), so each learns of each.
/// - Then each change is a delta, and each heartbeat a beat (with the node's load).
/// - A member silent for `missedHeartbeats` heartbeats is dropped: its users leave presence. A
///   beat from a member whose interest we do not hold (unknown, dropped, or another incarnation)
///   makes us ask it for an announce, at most once a heartbeat.
///
/// The transport publishes what this returns; this type does no I/O. Events go to the receiver
/// outside the lock; those of other nodes' changes only for rooms this node has members in (no
/// one else here would read them).
public final class BrokerMembership: Sendable {
    /// Something the transport must publish for a frame taken in.
    public enum Reply: Equatable, Sendable {
        /// Our announce, to that node alone.
        case announce(to: String, wantsReplies: Bool)
    }

    struct State {
        var view = MembershipView()
        var receiver: (any ClusterReceiver)?
        var load = NodeLoad(connections: 0, users: 0)
        /// When we last asked a member for an announce.
        var asked: [String: ContinuousClock.Instant] = [:]

        /// The events of other nodes' changes that a local client may read.
        func relevant(_ events: [ClusterEvent]) -> [ClusterEvent] {
            events.filter { event in
                guard case .room(let room) = event.address else { return true }
                return view.local.rooms[room] != nil
            }
        }
    }

    let heartbeat: Duration
    let missedHeartbeats: Int
    let logger: Logger
    private let state = Mutex(State())

    public init(heartbeat: Duration, missedHeartbeats: Int = 3, logger: Logger) {
        self.heartbeat = heartbeat
        self.missedHeartbeats = missedHeartbeats
        self.logger = logger
    }

    public func start(as me: MemberRecord, receiver: any ClusterReceiver) {
        state.withLock { state in
            state.view.start(as: me)
            state.receiver = receiver
        }
    }

    public var me: MemberRecord? { state.withLock { $0.view.me } }

    // MARK: What this node publishes

    /// Applies a change to this node's interest (its `joined`/`left` go to the receiver) and
    /// returns the delta to publish, and whether the node now holds the change's address for
    /// the first time (`true`), no longer holds it (`false`), or neither (nil): what to bind.
    public func changeLocal(_ delta: InterestDelta) -> (frame: BrokerFrame?, holds: Bool?) {
        let (events, frame, holds) = state.withLock { state -> ([ClusterEvent], BrokerFrame?, Bool?) in
            let before = state.view.local.hasRecipient(for: delta.address)
            let events = state.view.changeLocal(delta)
            let after = state.view.local.hasRecipient(for: delta.address)
            let frame = state.view.me.map { BrokerFrame.delta(from: $0.id, incarnation: $0.incarnation, delta) }
            return (events, frame, before == after ? nil : after)
        }
        deliver(events)
        return (frame, holds)
    }

    /// This node's whole interest, as an announce.
    public func announcement(wantsReplies: Bool) -> BrokerFrame? {
        state.withLock { state in
            guard let me = state.view.me else { return nil }
            return .announce(
                me, load: state.load, wantsReplies: wantsReplies, users: Array(state.view.local.users), rooms: state.view.local.pairs)
        }
    }

    /// The addresses this node holds recipients for (what its queue or subscriptions follow).
    public var localAddresses: [Address] {
        state.withLock { state in
            state.view.local.users.map(Address.user) + state.view.local.rooms.keys.map(Address.room)
        }
    }

    public func beat() -> BrokerFrame? {
        state.withLock { state in
            state.view.me.map { BrokerFrame.beat(from: $0.id, incarnation: $0.incarnation, load: state.load) }
        }
    }

    public func goodbye() -> BrokerFrame? {
        state.withLock { state in
            state.view.me.map { me in
                var record = me
                record.left = true
                return BrokerFrame.bye(record)
            }
        }
    }

    public func report(_ load: NodeLoad) {
        state.withLock { $0.load = load }
    }

    // MARK: What this node hears

    /// Takes in a membership frame from the broker (our own are ignored); returns what to send
    /// back. Messages are not membership frames: the transport delivers them itself.
    public func receive(_ frame: BrokerFrame, at now: ContinuousClock.Instant = .now) -> [Reply] {
        var notices: [(Logger.Level, Logger.Message)] = []
        let (events, replies) = state.withLock { state -> ([ClusterEvent], [Reply]) in
            let (events, replies) = take(frame, into: &state, notices: &notices, at: now)
            return (state.relevant(events), replies)
        }
        for (level, message) in notices { logger.log(level: level, message) }
        deliver(events)
        return replies
    }

    private func take(
        _ frame: BrokerFrame, into state: inout State, notices: inout [(Logger.Level, Logger.Message)], at now: ContinuousClock.Instant
    ) -> ([ClusterEvent], [Reply]) {
        guard let me = state.view.me else { return ([], []) }
        switch frame {
        case .announce(let record, let load, let wantsReplies, let users, let rooms):
            guard record.id != me.id else {
                if record.incarnation != me.incarnation {
                    notices.append((.error, "another node uses this node's id \(me.id) (at \(record.url)); node ids must be unique"))
                }
                return ([], [])
            }
            var events = merge(record, into: &state, notices: &notices, at: now)
            guard state.view.members[record.id]?.record == record else { return (events, []) }
            if let (changed, first) = state.view.replaceInterest(
                of: record.id, with: Interest(users: users, rooms: rooms), load: load)
            {
                events += changed
                if first { notices.append((.info, "node \(record.id) at \(record.url) is in the cluster")) }
            }
            state.view.heard(from: record.id, at: now)
            return (events, wantsReplies ? [.announce(to: record.id, wantsReplies: false)] : [])
        case .delta(let id, let incarnation, let delta):
            guard id != me.id, state.view.members[id]?.record.incarnation == incarnation else { return ([], []) }
            state.view.heard(from: id, at: now)
            return (state.view.apply(delta, from: id), [])
        case .beat(let id, let incarnation, let load):
            guard id != me.id else { return ([], []) }
            if let member = state.view.members[id], member.record.incarnation == incarnation, member.isAlive {
                state.view.heard(from: id, at: now)
                state.view.setLoad(load, of: id)
                return ([], [])
            }
            // A member we hold nothing of: ask it for its interest, once a heartbeat.
            if let last = state.asked[id], now - last < heartbeat { return ([], []) }
            state.asked[id] = now
            return ([], [.announce(to: id, wantsReplies: true)])
        case .bye(let record):
            guard record.id != me.id, record.left else { return ([], []) }
            return (merge(record, into: &state, notices: &notices, at: now), [])
        case .message, .marker:
            return ([], [])
        }
    }

    private func merge(
        _ record: MemberRecord, into state: inout State, notices: inout [(Logger.Level, Logger.Message)], at now: ContinuousClock.Instant
    ) -> [ClusterEvent] {
        let (outcome, events) = state.view.merge(record, at: now)
        switch outcome {
        case .superseded where record.left: notices.append((.notice, "node \(record.id) left the cluster"))
        case .superseded: notices.append((.notice, "node \(record.id) restarted"))
        default: break
        }
        return events
    }

    /// Drops members silent for `missedHeartbeats` heartbeats: their users leave presence.
    public func sweep(at now: ContinuousClock.Instant = .now) {
        let silence = heartbeat * missedHeartbeats
        let (events, dropped) = state.withLock { state -> ([ClusterEvent], [String]) in
            let silent = state.view.silent(at: now, longerThan: silence)
            return (state.relevant(silent.flatMap { state.view.drop($0) }), silent)
        }
        for id in dropped {
            logger.warning("node \(id) was silent for \(missedHeartbeats) heartbeats: declared dead, its users leave presence")
        }
        deliver(events)
    }

    /// Until cancelled: every quarter heartbeat (at most every second) drops silent members;
    /// every heartbeat hands `publish` a beat with our load.
    public func keepBeating(_ publish: (BrokerFrame) -> Void) async {
        let tick = max(min(heartbeat / 4, .seconds(1)), .milliseconds(50))
        var lastBeat = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: tick)
            let now = ContinuousClock.now
            sweep(at: now)
            guard now - lastBeat >= heartbeat else { continue }
            lastBeat = now
            if let beat = beat() { publish(beat) }
        }
    }

    private func deliver(_ events: [ClusterEvent]) {
        guard !events.isEmpty, let receiver = state.withLock({ $0.receiver }) else { return }
        for event in events { receiver.receive(event) }
    }

    // MARK: Questions

    public func users(in room: String) -> [String] {
        state.withLock { $0.view.users(in: room) }
    }

    public func nodes(of user: String) -> [String] {
        state.withLock { $0.view.nodes(of: user) }
    }

    /// Every member, this node included (alive while `selfAlive`).
    public func nodes(selfAlive: Bool) -> [NodeStatus] {
        state.withLock { state in
            var nodes = state.view.members.values.map { member in
                NodeStatus(info: NodeInfo(id: member.record.id, url: member.record.url), load: member.load, alive: member.isAlive)
            }
            if let me = state.view.me {
                nodes.append(NodeStatus(info: NodeInfo(id: me.id, url: me.url), load: state.load, alive: selfAlive))
            }
            return nodes.sorted { $0.info.id < $1.info.id }
        }
    }
}

extension InterestDelta {
    /// The address whose recipients the change adds or removes.
    public var address: Address {
        switch self {
        case .online(let user), .offline(let user): .user(user)
        case .joined(let room, _), .left(let room, _): .room(room)
        }
    }
}
