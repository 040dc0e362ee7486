import SwitchboardCore
import SwitchboardProtocol
import Synchronization

/// A client that stays connected: when its connection drops or its node dies, it reconnects by
/// itself (backoff with jitter, to the next node of its list) and resumes its inbox and every
/// room it joined from the last message it saw (`since`). What the cluster can give back
/// arrives once and in order; what it cannot is announced with `.notRecovered`, so an app
/// written against it never has a gap it is not told about.
///
/// ```swift
/// let client = ReconnectingClient(.init(urls: ["ws://127.0.0.1:8080/ws", "ws://127.0.0.1:8081/ws"], query: "user=alice"))
/// try await client.join("lobby")
/// for await event in client.events {
///     if case .message(let message) = event { print(message.data!) }
///     if case .notRecovered(let stream) = event { reload(stream) }
/// }
/// ```
public final class ReconnectingClient: Sendable {
    public struct Configuration: Sendable {
        /// Nodes' WebSocket URLs (`ws://HOST:PORT/ws`), tried in turn.
        public var urls: [String]
        /// Query parameters of every connection, e.g. `user=alice` or `token=...`.
        public var query: String
        public var headers: [String: String] = [:]
        public var backoff = Backoff(minimum: .milliseconds(50), maximum: .seconds(5))
        public var connectTimeout: Duration = .seconds(5)

        public init(urls: [String], query: String) {
            self.urls = urls
            self.query = query
        }
    }

    /// A stream the client follows.
    public enum Stream: Hashable, Sendable {
        case room(String)
        case inbox
    }

    public enum Event: Sendable {
        /// Connected (again); the welcome says to which node.
        case connected(Welcome)
        /// A message, each once, in order per stream.
        case message(ServerMessage)
        /// `joined` or `left`.
        case presence(ServerMessage)
        /// The cluster could not give back everything this stream got while the client was
        /// away (the history is gone, or the epoch changed): reload it from your own source.
        case notRecovered(Stream)
        /// The connection ended; a new one is being made.
        case disconnected(code: Int?)
        /// Anything else the server sent (an `error` without an id, say).
        case other(ServerMessage)
    }

    private struct State {
        var client: SwitchboardClient?
        /// Rooms joined, with the position of the last message seen (nil: not known).
        var rooms: [String: StreamPosition?] = [:]
        var inbox: StreamPosition?
        /// Joins waiting for their reply: which room, whether a resume, and who waits.
        var joins: [String: (room: String, resume: Bool, waiter: CheckedContinuation<ServerMessage, any Error>?)] = [:]
        var nextID = 0
        var nextURL = 0
        var stopped = false
        /// A welcome came before: every later connection resumes the inbox.
        var welcomed = false
    }

    public let configuration: Configuration
    public let events: AsyncStream<Event>
    private let emit: AsyncStream<Event>.Continuation
    private let state = Mutex(State())
    private let loop = Mutex<Task<Void, Never>?>(nil)
    /// Poked when a connection is made or lost.
    private let connection = ConditionSignal()

    public init(_ configuration: Configuration) {
        precondition(!configuration.urls.isEmpty, "a ReconnectingClient needs at least one URL")
        self.configuration = configuration
        (events, emit) = AsyncStream.makeStream(of: Event.self)
        let task = Task { [self] in await self.run() }
        loop.withLock { $0 = task }
    }

    // MARK: Commands

    /// Joins a room, now and after every reconnect (resuming it). Waits for a connection (at
    /// most `connectTimeout`); throws when there is none or the join is refused.
    @discardableResult
    public func join(_ room: String) async throws -> ServerMessage {
        let client = try await waitUntilConnected()
        let id = state.withLock { state -> String in
            state.nextID += 1
            return "join-\(state.nextID)"
        }
        return try await withCheckedThrowingContinuation { continuation in
            state.withLock { $0.joins[id] = (room, false, continuation) }
            Task {
                do {
                    try await client.sendText(Self.joinFrame(room, since: nil, id: id))
                } catch {
                    state.withLock { $0.joins.removeValue(forKey: id) }?.waiter?.resume(throwing: error)
                }
            }
        }
    }

    /// Leaves a room; it is not resumed any more.
    public func leave(_ room: String) async throws {
        state.withLock { _ = $0.rooms.removeValue(forKey: room) }
        try await connected().leave(room)
    }

    @discardableResult
    public func publish(_ room: String, data: String) async throws -> ServerMessage {
        try await connected().publish(room, data: data)
    }

    @discardableResult
    public func send(to user: String, data: String) async throws -> ServerMessage {
        try await connected().send(to: user, data: data)
    }

    /// The connection of the moment, for any other command.
    public func connected() throws -> SwitchboardClient {
        guard let client = state.withLock({ $0.client }) else { throw SwitchboardClientError.closed(code: nil) }
        return client
    }

    /// The connection, once there is one (at most `connectTimeout` from now).
    public func waitUntilConnected() async throws -> SwitchboardClient {
        let stopped = { @Sendable in self.state.withLock { $0.client != nil || $0.stopped } }
        _ = await connection.wait(until: stopped, timeout: configuration.connectTimeout)
        return try connected()
    }

    /// Stops reconnecting and closes the connection.
    public func close() async {
        let client = state.withLock { state in
            state.stopped = true
            return state.client
        }
        connection.poke()
        loop.withLock { $0 }?.cancel()
        await client?.close()
        await loop.withLock { $0 }?.value
    }

    // MARK: The connection loop

    private func run() async {
        var attempt = 0
        while !state.withLock({ $0.stopped }), !Task.isCancelled {
            let (url, resumingInbox) = nextURL()
            if let client = try? await SwitchboardClient.connect(
                to: url, headers: configuration.headers, timeout: configuration.connectTimeout)
            {
                attempt = 0
                await serve(client, resumingInbox: resumingInbox)
            }
            guard !state.withLock({ $0.stopped }), !Task.isCancelled else { break }
            attempt += 1
            try? await Task.sleep(for: configuration.backoff.delay(attempt: attempt))
        }
        emit.finish()
    }

    /// The next node's URL, with `since` when the inbox has a position to resume from, and
    /// whether this connection resumes (it follows another).
    private func nextURL() -> (String, Bool) {
        state.withLock { state in
            let base = configuration.urls[state.nextURL % configuration.urls.count]
            state.nextURL += 1
            var query = configuration.query
            if let inbox = state.inbox {
                query += (query.isEmpty ? "" : "&") + "since=\(inbox.epoch):\(inbox.offset)"
            }
            return (base + (query.isEmpty ? "" : (base.contains("?") ? "&" : "?") + query), state.welcomed)
        }
    }

    private func serve(_ client: SwitchboardClient, resumingInbox: Bool) async {
        let welcome = client.welcome
        let rejoin = state.withLock { state -> [(String, String, StreamPosition?)] in
            // Resumed: the missed messages follow and move the position on. Not: start at the top.
            if welcome.recovered != true { state.inbox = welcome.inbox }
            state.client = client
            state.welcomed = true
            return state.rooms.map { room, position in
                state.nextID += 1
                let id = "rejoin-\(state.nextID)"
                state.joins[id] = (room, true, nil)
                return (id, room, position)
            }
        }
        connection.poke()
        emit.yield(.connected(welcome))
        if resumingInbox && welcome.recovered != true { emit.yield(.notRecovered(.inbox)) }
        for (id, room, position) in rejoin {
            try? await client.sendText(Self.joinFrame(room, since: position, id: id))
        }
        for await frame in client.frames {
            handle(frame, user: welcome.user)
        }
        let waiting = state.withLock { state in
            state.client = nil
            defer { state.joins = [:] }
            return state.joins.values.compactMap(\.waiter)
        }
        connection.poke()
        let code = await client.closeCode()
        for waiter in waiting { waiter.resume(throwing: SwitchboardClientError.closed(code: code)) }
        emit.yield(.disconnected(code: code))
    }

    /// Frames in the order they came: a join's reply sets the room's position before the
    /// replay and the live messages that follow it are counted against it.
    private func handle(_ frame: ServerMessage, user: String) {
        if frame.type == "ok" || frame.type == "error", let id = frame.id?.string,
            let join = state.withLock({ $0.joins.removeValue(forKey: id) })
        {
            joined(join.room, reply: frame, resume: join.resume)
            join.waiter?.resume(returning: frame)
            return
        }
        switch frame.type {
        case "message":
            let stream: Stream? = frame.room.map(Stream.room) ?? (frame.to == user ? .inbox : nil)
            if let stream, let offset = frame.offset, advance(stream, to: offset) == false {
                emit.yield(.notRecovered(stream))
            }
            emit.yield(.message(frame))
        case "joined", "left":
            emit.yield(.presence(frame))
        default:
            emit.yield(.other(frame))
        }
    }

    private func joined(_ room: String, reply: ServerMessage, resume: Bool) {
        guard reply.type == "ok" else {
            if resume { emit.yield(.other(reply)) }
            return
        }
        let recovered = state.withLock { state -> Bool in
            let known = state.rooms[room] ?? nil
            // Resumed: the replay moves the position on from where it was. Otherwise the room
            // starts at its top.
            if !(resume && reply.recovered == true) { state.rooms[room] = .some(reply.top) }
            return !resume || (known != nil && reply.recovered == true)
        }
        if !recovered { emit.yield(.notRecovered(.room(room))) }
    }

    /// Moves a stream's position to `offset`; false when messages were skipped (a gap the
    /// server did not fill, which it should never leave).
    private func advance(_ stream: Stream, to offset: Int64) -> Bool {
        state.withLock { state in
            func step(_ position: inout StreamPosition?) -> Bool {
                guard var known = position else { return true }
                if offset < known.offset + 1 {
                    // Numbering started again: the store lost the stream, and its new epoch is
                    // not known here. The position is forgotten; the next resume says so.
                    position = nil
                    return true
                }
                let skipped = offset > known.offset + 1
                known.offset = offset
                position = known
                return !skipped
            }
            switch stream {
            case .inbox:
                return step(&state.inbox)
            case .room(let room):
                guard var position = state.rooms[room] else { return true }
                defer { state.rooms[room] = .some(position) }
                return step(&position)
            }
        }
    }

    private static func joinFrame(_ room: String, since: StreamPosition?, id: String) -> String {
        String(decoding: ClientFrame.encode(ClientRequest(id: .string(id), command: .join(room: room, since: since))), as: UTF8.self)
    }
}
