import NIOCore
import STOMP
import SwitchboardCore
import SwitchboardProtocol

/// Where a STOMP subscription or SEND points (PROTOCOL.md, "STOMP 1.2 over WebSocket").
enum StompDestination: Equatable, Sendable {
    /// `/topic/ROOM`
    case room(String)
    /// `/user/queue/NAME` (subscribe) — this user's direct messages.
    case inbox
    /// `/user/USER` or `/user/USER/queue/NAME` (send).
    case user(String)
    /// `/broadcast`
    case broadcast

    enum Use { case subscribe, send }

    /// Parses a destination; nil when it is not one of ours or names an invalid room or user.
    init?(_ text: String, for use: Use) {
        if text == "/broadcast" {
            self = .broadcast
        } else if text.hasPrefix("/topic/") {
            let room = String(text.dropFirst("/topic/".count))
            guard Name.isValid(room) else { return nil }
            self = .room(room)
        } else if use == .subscribe, text.hasPrefix("/user/queue/"), text.count > "/user/queue/".count {
            self = .inbox
        } else if use == .send, text.hasPrefix("/user/") {
            let rest = text.dropFirst("/user/".count)
            let user = String(rest.prefix { $0 != "/" })
            let tail = rest.dropFirst(user.count)
            guard Name.isValidUser(user), tail.isEmpty || (tail.hasPrefix("/queue/") && tail.count > "/queue/".count) else {
                return nil
            }
            self = .user(user)
        } else {
            return nil
        }
    }
}

/// One STOMP connection's subscriptions, and what a cluster event becomes for it. Touched only
/// on the connection's event loop (deliveries run there; the session changes it through
/// `Connection.stompChange`), like the rest of `Connection`'s state.
final class StompSubscriptions: @unchecked Sendable {
    struct Subscription: Equatable {
        let id: String
        let destination: String
        let target: StompDestination
        /// `sb-presence:true`: `joined`/`left` of the room arrive too.
        let presence: Bool
        /// `ack:client` or `client-individual`: MESSAGE frames carry an `ack` header (STOMP 1.2
        /// requires it), whose ACK is accepted; nothing is redelivered either way.
        let acknowledged: Bool
        /// What tells its MESSAGE frames apart from other subscriptions' (made once).
        let cacheKey: String

        init(id: String, destination: String, target: StompDestination, presence: Bool, acknowledged: Bool = false) {
            self.id = id
            self.destination = destination
            self.target = target
            self.presence = presence
            self.acknowledged = acknowledged
            self.cacheKey = id + "\u{0}" + destination + (acknowledged ? "\u{0}a" : "")
        }
    }

    /// In the order they were made.
    private(set) var all: [Subscription] = []
    /// The same, by what a message reaches: a delivery finds its array without building one.
    private var byRoom: [String: [Subscription]] = [:]
    private var inbox: [Subscription] = []
    private var broadcast: [Subscription] = []

    func add(_ subscription: Subscription) {
        all.append(subscription)
        index()
    }

    func remove(id: String) {
        all.removeAll { $0.id == id }
        index()
    }

    private func index() {
        byRoom = [:]
        inbox = []
        broadcast = []
        for subscription in all {
            switch subscription.target {
            case .room(let room): byRoom[room, default: []].append(subscription)
            case .inbox: inbox.append(subscription)
            case .broadcast: broadcast.append(subscription)
            case .user: break
            }
        }
    }

    /// The subscriptions an event reaches on this connection.
    func matching(_ event: ClusterEvent) -> [Subscription] {
        switch event {
        case .message(let envelope):
            switch envelope.address {
            case .room(let room): byRoom[room] ?? []
            case .user: inbox
            case .everyone: broadcast
            }
        case .joined(let room, _), .left(let room, _):
            (byRoom[room] ?? []).filter(\.presence)
        }
    }
}

/// MESSAGE frames, encoded once per subscription id and destination for each event (clients
/// mostly use the same ids, `sub-0`, ..., so a fan-out encodes a handful of frames, not one per
/// socket).
struct StompMessageCache {
    /// Few entries (most clients use the same ids): a linear search beats hashing a string per
    /// delivery.
    private var frames: [(key: String, frame: EncodedFrame)] = []
    let event: ClusterEvent
    let allocator: ByteBufferAllocator

    init(_ event: ClusterEvent, allocator: ByteBufferAllocator) {
        self.event = event
        self.allocator = allocator
    }

    mutating func frame(for subscription: StompSubscriptions.Subscription) -> EncodedFrame {
        let key = subscription.cacheKey
        for entry in frames where entry.key == key { return entry.frame }
        let frame = Self.encode(
            event, subscription: subscription.id, destination: subscription.destination, acknowledged: subscription.acknowledged,
            allocator: allocator)
        frames.append((key, frame))
        return frame
    }

    static func encode(
        _ event: ClusterEvent, subscription: String, destination: String, acknowledged: Bool, allocator: ByteBufferAllocator
    ) -> EncodedFrame {
        switch event {
        case .message(let envelope):
            return message(envelope, subscription: subscription, destination: destination, acknowledged: acknowledged, allocator: allocator)
        case .joined(let room, let user), .left(let room, let user):
            let kind = if case .joined = event { "joined" } else { "left" }
            let body = ServerFrame.event(event)
            let frame = StompFrame(
                .message,
                [
                    .init("destination", destination), .init("subscription", subscription),
                    .init("message-id", "\(kind)-\(room)-\(user)"), .init("content-type", "application/json"),
                    .init("sb-event", kind), .init("sb-user", user), .init("content-length", String(body.count)),
                ], body: body)
            return EncodedFrame(StompEncoder.encode(frame), allocator: allocator)
        }
    }

    /// A message's MESSAGE frame; with its stream and position, so that resumes gate it as they
    /// gate JSON frames (`StreamGates`).
    static func message(
        _ envelope: Envelope, subscription: String, destination: String, acknowledged: Bool, allocator: ByteBufferAllocator
    ) -> EncodedFrame {
        var headers: [StompHeader] = [
            .init("destination", destination), .init("subscription", subscription), .init("message-id", envelope.id),
            .init("content-type", "application/json"), .init("sb-from", envelope.from), .init("sb-ts", String(envelope.timestamp)),
        ]
        if let position = envelope.position { headers.append(.init("sb-offset", String(position.offset))) }
        if acknowledged { headers.append(.init("ack", envelope.id)) }
        headers.append(.init("content-length", String(envelope.data.bytes.count)))
        var frame = EncodedFrame(StompEncoder.encode(StompFrame(.message, headers, body: envelope.data.bytes)), allocator: allocator)
        if envelope.position != nil {
            frame.stream = envelope.address
            frame.position = envelope.position
        }
        return frame
    }
}
