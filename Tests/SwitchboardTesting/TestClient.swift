import SwitchboardClient
import Testing

package struct TimedOut: Error, CustomStringConvertible {
    package let what: String
    package var description: String { "timed out waiting for \(what)" }

    package init(what: String) {
        self.what = what
    }
}

/// A client plus everything it has received, so tests can wait for a frame with a deadline.
package final class TestClient: Sendable {
    package let client: SwitchboardClient
    package let inbox: Inbox

    package init(_ client: SwitchboardClient) {
        self.client = client
        self.inbox = Inbox()
        let inbox = self.inbox
        Task {
            for await frame in client.frames { await inbox.append(frame) }
            await inbox.end()
        }
    }

    package var user: String { client.welcome.user }

    /// Waits (at most `timeout`) for the next received frame that matches, and consumes it.
    @discardableResult
    package func next(
        _ what: String = "a frame", timeout: Duration = .seconds(10), where predicate: @Sendable (ServerMessage) -> Bool = { _ in true }
    ) async throws -> ServerMessage {
        try await inbox.next(what, timeout: timeout, where: predicate)
    }

    package func message(timeout: Duration = .seconds(10), where predicate: @Sendable (ServerMessage) -> Bool = { _ in true }) async throws
        -> ServerMessage
    {
        try await next("a message", timeout: timeout) { $0.type == "message" && predicate($0) }
    }

    /// Frames received so far and not consumed.
    package func received() async -> [ServerMessage] { await inbox.pending }
}

package actor Inbox {
    package private(set) var pending: [ServerMessage] = []
    package private(set) var ended = false

    package func append(_ frame: ServerMessage) { pending.append(frame) }
    package func end() { ended = true }

    package func next(_ what: String, timeout: Duration, where predicate: @Sendable (ServerMessage) -> Bool) async throws -> ServerMessage {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let index = pending.firstIndex(where: predicate) {
                return pending.remove(at: index)
            }
            guard !ended, ContinuousClock.now < deadline else { throw TimedOut(what: what) }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}

/// Waits until `condition` holds, checking every few milliseconds, for at most `timeout`.
package func eventually(_ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(10))
    }
}
