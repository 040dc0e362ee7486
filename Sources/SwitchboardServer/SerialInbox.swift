import NIOCore
import Synchronization

/// Runs one connection's messages one at a time, in the order they arrived, on a task that
/// exists only while some are waiting: an idle connection has no task. Past `maxWaiting`
/// messages the socket stops being read, and is read again below `resumeBelow`.
/// Shared by the JSON `Session` and the `StompSession`.
final class SerialInbox<Message: Sendable>: Sendable {
    private struct State {
        var waiting: [Message] = []  // short (see maxWaiting), and allocated only while in use
        var running = false
        /// Reading is paused because too many messages are waiting.
        var paused = false
    }

    static var maxWaiting: Int { 64 }
    static var resumeBelow: Int { 16 }

    private let state = Mutex(State())

    /// `run` and the socket's `channel` are given with each call, not kept: the inbox holds no
    /// reference to its owner, and the owner is held only by the task that runs, while it runs.
    init() {}

    /// Runs `first`, then whatever arrived meanwhile. On the event loop, before any `receive`.
    func start(_ first: @escaping @Sendable () async -> Void, on channel: any Channel, run: @escaping @Sendable (Message) async -> Void) {
        state.withLock { $0.running = true }
        Task {
            await first()
            await self.runWaiting(run, channel: channel)
        }
    }

    /// Takes a message from the socket. On the event loop.
    func receive(_ message: Message, on channel: any Channel, run: @escaping @Sendable (Message) async -> Void) {
        let (startRunning, pause) = state.withLock { state -> (Bool, Bool) in
            state.waiting.append(message)
            let startRunning = !state.running
            state.running = true
            let pause = !state.paused && state.waiting.count >= Self.maxWaiting
            if pause { state.paused = true }
            return (startRunning, pause)
        }
        // Back-pressure: the socket is read again once the session has caught up.
        if pause { channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
        if startRunning { Task { await self.runWaiting(run, channel: channel) } }
    }

    private func runWaiting(_ run: @Sendable (Message) async -> Void, channel: any Channel) async {
        while let message = next(channel) {
            await run(message)
        }
    }

    /// The next message, or nil (and the inbox stops running) when none is waiting.
    private func next(_ channel: any Channel) -> Message? {
        let (message, resume) = state.withLock { state -> (Message?, Bool) in
            guard !state.waiting.isEmpty else {
                state.running = false
                state.waiting = []  // an idle connection keeps no storage
                return (nil, false)
            }
            let message = state.waiting.removeFirst()
            let resume = state.paused && state.waiting.count < Self.resumeBelow
            if resume { state.paused = false }
            return (message, resume)
        }
        if resume {
            channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in channel.read() }
        }
        return message
    }
}
