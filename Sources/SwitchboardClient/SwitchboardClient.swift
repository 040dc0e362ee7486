import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOSSL
import NIOWebSocket
import SwitchboardCore
import SwitchboardProtocol
import Synchronization

/// A connection to a Switchboard node.
///
/// ```swift
/// let client = try await SwitchboardClient.connect(to: "ws://127.0.0.1:8080/ws?user=alice")
/// try await client.join("lobby")
/// try await client.publish("lobby", data: #"{"text":"hi"}"#)
/// for await frame in client.frames where frame.type == "message" { print(frame.data!) }
/// ```
///
/// Commands wait for their reply and throw `SwitchboardClientError.refused` on an `error` reply.
/// Everything that is not a reply (messages, `joined`, `left`, errors without an id) arrives on
/// `frames`.
public final class SwitchboardClient: Sendable {
    public let welcome: Welcome
    public let frames: AsyncStream<ServerMessage>
    private let link: Link
    private let task: Task<Void, Never>

    private init(welcome: Welcome, frames: AsyncStream<ServerMessage>, link: Link, task: Task<Void, Never>) {
        self.welcome = welcome
        self.frames = frames
        self.link = link
        self.task = task
    }

    /// Connects and waits for `welcome`, for at most `timeout`. `maxFrameSize` splits larger
    /// outgoing messages into fragments (the server reassembles them) and bounds incoming frames.
    public static func connect(
        to url: String, headers: [String: String] = [:], maxFrameSize: Int = 1 << 24,
        timeout: Duration = .seconds(10), tls: TLSConfiguration? = nil, logger: Logger? = nil
    ) async throws -> SwitchboardClient {
        let logger = logger ?? Logger(label: "switchboard-client")
        let (frames, continuation) = AsyncStream.makeStream(of: ServerMessage.self)
        let link = Link(frames: continuation)
        var fields = HTTPFields()
        for (name, value) in headers {
            if let name = HTTPField.Name(name) { fields[name] = value }
        }
        let configuration = WebSocketClientConfiguration(maxFrameSize: maxFrameSize, additionalHeaders: fields, validateUTF8: true)
        let task = Task {
            do {
                let close = try await WebSocketClient.connect(url: url, configuration: configuration, tlsConfiguration: tls, logger: logger)
                { inbound, outbound, _ in
                    link.attach(outbound)
                    for try await message in inbound.messages(maxSize: 1 << 26) {
                        guard case .text(let text) = message else { continue }
                        link.receive(text)
                    }
                }
                link.finish(closeCode: close.map { Int(UInt16(webSocketErrorCode: $0.closeCode)) }, error: nil)
            } catch {
                link.finish(closeCode: nil, error: error)
            }
        }
        // The handshake must finish in time: the underlying client can stall when a server
        // answers the upgrade and closes at once, so a bounded wait is the only safe one.
        let timer = Task {
            try await Task.sleep(for: timeout)
            link.finish(closeCode: nil, error: SwitchboardClientError.timedOut)
            task.cancel()
        }
        defer { timer.cancel() }
        do {
            let welcome = try await link.waitForWelcome()
            return SwitchboardClient(welcome: welcome, frames: frames, link: link, task: task)
        } catch SwitchboardClientError.timedOut {
            throw SwitchboardClientError.timedOut
        } catch {
            await task.value
            throw error
        }
    }

    // MARK: Commands

    /// Joins a room; with `since` (a position this client saw), what it missed follows the `ok`
    /// when the reply says `recovered`.
    @discardableResult
    public func join(_ room: String, since: StreamPosition? = nil) async throws -> ServerMessage {
        try await checked(.join(room: room, since: since))
    }

    /// The last `limit` messages the room's history keeps.
    public func history(_ room: String, limit: Int? = nil) async throws -> ServerMessage {
        try await checked(.history(room: room, limit: limit))
    }

    @discardableResult
    public func leave(_ room: String) async throws -> ServerMessage {
        try await checked(.leave(room: room))
    }

    /// Publishes `data` (JSON text) to a room.
    @discardableResult
    public func publish(_ room: String, data: String) async throws -> ServerMessage {
        try await checked(.publish(room: room, data: RawJSON(data)))
    }

    /// Sends `data` (JSON text) to every connection of a user.
    @discardableResult
    public func send(to user: String, data: String) async throws -> ServerMessage {
        try await checked(.send(to: user, data: RawJSON(data)))
    }

    @discardableResult
    public func broadcast(data: String) async throws -> ServerMessage {
        try await checked(.broadcast(data: RawJSON(data)))
    }

    /// Users in a room, cluster-wide.
    public func presence(_ room: String) async throws -> [String] {
        try await checked(.presence(room: room)).users ?? []
    }

    public func ping() async throws {
        _ = try await checked(.ping)
    }

    /// Sends a command and returns its reply as it came, `error` replies included.
    public func request(_ command: ClientCommand) async throws -> ServerMessage {
        let id = link.nextID()
        let text = String(decoding: ClientFrame.encode(ClientRequest(id: .string(id), command: command)), as: UTF8.self)
        return try await link.request(id: id) {
            try await self.sendText(text)
        }
    }

    private func checked(_ command: ClientCommand) async throws -> ServerMessage {
        let reply = try await request(command)
        if reply.type == "error" {
            throw SwitchboardClientError.refused(code: reply.code ?? "", message: reply.message ?? "")
        }
        return reply
    }

    // MARK: Raw frames (for tests and tools)

    /// Sends a text message; one longer than `maxFrameSize` goes as several fragments.
    public func sendText(_ text: String) async throws {
        try await link.outbound().writeTextMessage(text)
    }

    public func sendBinary(_ bytes: [UInt8]) async throws {
        try await link.outbound().write(.binary(ByteBuffer(bytes: bytes)))
    }

    // MARK: Closing

    /// Closes the connection normally and waits until it is closed.
    public func close() async {
        if let outbound = try? link.outbound() {
            try? await outbound.close(.normalClosure, reason: nil)
        }
        await task.value
    }

    /// Waits until the connection is closed; returns the close code the server sent, if any.
    public func closeCode() async -> Int? {
        await task.value
        return link.closeCode
    }
}

/// The state shared between the client's reading task and its callers.
private final class Link: Sendable {
    private struct State {
        var outbound: WebSocketOutboundWriter?
        var welcome: Welcome?
        var welcomeWaiter: CheckedContinuation<Welcome, any Error>?
        var pending: [String: CheckedContinuation<ServerMessage, any Error>] = [:]
        var nextID = 0
        var finished = false
        var closeCode: Int?
        var failure: (any Error)?
    }

    private let state = Mutex(State())
    private let frames: AsyncStream<ServerMessage>.Continuation

    init(frames: AsyncStream<ServerMessage>.Continuation) {
        self.frames = frames
    }

    var closeCode: Int? { state.withLock { $0.closeCode } }

    func attach(_ outbound: WebSocketOutboundWriter) {
        state.withLock { $0.outbound = outbound }
    }

    func outbound() throws -> WebSocketOutboundWriter {
        try state.withLock { state in
            guard let outbound = state.outbound, !state.finished else { throw SwitchboardClientError.closed(code: state.closeCode) }
            return outbound
        }
    }

    func nextID() -> String {
        state.withLock { state in
            state.nextID += 1
            return "c\(state.nextID)"
        }
    }

    func waitForWelcome() async throws -> Welcome {
        try await withCheckedThrowingContinuation { continuation in
            let outcome = state.withLock { state -> Result<Welcome, any Error>? in
                if let welcome = state.welcome { return .success(welcome) }
                if state.finished { return .failure(state.failure ?? SwitchboardClientError.closed(code: state.closeCode)) }
                state.welcomeWaiter = continuation
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    func request(id: String, send: @Sendable @escaping () async throws -> Void) async throws -> ServerMessage {
        try await withCheckedThrowingContinuation { continuation in
            let failure = state.withLock { state -> (any Error)? in
                if state.finished { return SwitchboardClientError.closed(code: state.closeCode) }
                state.pending[id] = continuation
                return nil
            }
            if let failure {
                continuation.resume(throwing: failure)
                return
            }
            Task {
                do {
                    try await send()
                } catch {
                    let waiter = self.state.withLock { $0.pending.removeValue(forKey: id) }
                    waiter?.resume(throwing: error)
                }
            }
        }
    }

    func receive(_ text: String) {
        guard let message = try? ServerMessage(text: text) else {
            frames.yield(try! ServerMessage(text: "{\"type\":\"unparsable\"}"))
            return
        }
        if message.type == "welcome" {
            let inbox = message.json["inbox"]
            let welcome = Welcome(
                session: message.json["session"]?.string ?? "", user: message.user ?? "",
                node: message.json["node"]?.string ?? "", heartbeat: message.json["heartbeat"]?.int ?? 0,
                inbox: inbox?["epoch"]?.string.flatMap { epoch in
                    inbox?["offset"]?.int.map { StreamPosition(epoch: epoch, offset: Int64($0)) }
                },
                recovered: message.recovered)
            let waiter = state.withLock { state in
                state.welcome = welcome
                defer { state.welcomeWaiter = nil }
                return state.welcomeWaiter
            }
            waiter?.resume(returning: welcome)
            return
        }
        if ["ok", "pong", "error"].contains(message.type), let id = message.id?.string {
            if let waiter = state.withLock({ $0.pending.removeValue(forKey: id) }) {
                waiter.resume(returning: message)
                return
            }
        }
        frames.yield(message)
    }

    func finish(closeCode: Int?, error: (any Error)?) {
        typealias Waiters = (CheckedContinuation<Welcome, any Error>?, [String: CheckedContinuation<ServerMessage, any Error>])
        let (welcomeWaiter, pending) = state.withLock { state -> Waiters in
            // A connection that already ended keeps its first outcome.
            if state.finished { return (nil, [:]) }
            state.finished = true
            state.closeCode = closeCode
            state.failure = error
            defer {
                state.welcomeWaiter = nil
                state.pending = [:]
            }
            return (state.welcomeWaiter, state.pending)
        }
        let failure = error ?? SwitchboardClientError.closed(code: closeCode)
        welcomeWaiter?.resume(throwing: failure)
        for waiter in pending.values { waiter.resume(throwing: SwitchboardClientError.closed(code: closeCode)) }
        frames.finish()
    }
}
