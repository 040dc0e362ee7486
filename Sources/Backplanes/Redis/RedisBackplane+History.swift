import Logging
import RESP
import SwitchboardCore

/// History in Redis (`HistoryScripts`): the append script runs in `submit`; reads and the
/// loading of the scripts are here.
extension RedisBackplane {
    public var history: HistoryPolicy { configuration.history }

    /// `EVALSHA sha` while the server holds the script, `EVAL text` otherwise.
    func script(_ which: RedisScript) -> [RESPArgument] {
        loadedScripts.withLock { $0.command(which) }
    }

    /// `EVAL text` for a command made as `EVALSHA sha`.
    func withScriptText(_ command: [RESPArgument]) -> [RESPArgument] {
        loadedScripts.withLock { $0.withText(command) }
    }

    /// An error reply; `NOSCRIPT` (someone flushed the scripts) sends the text again from now on.
    func failure(_ message: String) -> RedisError {
        if message.hasPrefix("NOSCRIPT") { loadedScripts.withLock { $0.lost() } }
        return RedisError.server(message)
    }

    /// Loads the scripts with `load` (SCRIPT LOAD on one Redis, on every master of a cluster):
    /// presence's always, history's when it is on.
    func loadScripts(using load: @Sendable (String) async throws -> String) async throws {
        var shas: [RedisScript: String] = [:]
        for script in RedisScript.allCases where !script.isHistory || configuration.history.isOn {
            shas[script] = try await load(script.text)
        }
        loadedScripts.withLock { $0.loaded(shas) }
    }

    /// Sends a command that may run a script; one the server no longer holds goes again with
    /// its text, at once.
    func sendScript(_ command: [RESPArgument], using send: ([RESPArgument]) async throws -> RESPValue) async throws -> RESPValue {
        do {
            return try await send(command)
        } catch RedisError.server(let message) {
            return try await send(scriptAgain(command, after: message))
        }
    }

    /// After an error reply to `command`: with `NOSCRIPT` (the script did not run), the command
    /// to send again, with the script's text; any other error is thrown.
    func scriptAgain(_ command: [RESPArgument], after message: String) throws -> [RESPArgument] {
        let failure = failure(message)
        guard message.hasPrefix("NOSCRIPT") else { throw failure }
        return withScriptText(command)
    }

    public func read(_ stream: Address, after: Int64?, limit: Int) async throws -> StreamRead {
        guard configuration.history.isOn else { throw HistoryError.unsupported }
        let reply = try await sendScript(readCommand(stream, after: after, limit: limit), using: commands.send)
        return try parseRead(reply, of: stream)
    }

    func readCommand(_ stream: Address, after: Int64?, limit: Int) -> [RESPArgument] {
        let history = configuration.history
        return script(.read) + [
            "2", RESPArgument(names.streamMeta(stream)),
            RESPArgument(names.streamLog(stream)), RESPArgument(StreamPosition.newEpoch()),
            RESPArgument(history.lifetimeSeconds * 1000), RESPArgument(after.map(String.init) ?? ""), RESPArgument(limit),
        ]
    }

    func parseRead(_ reply: RESPValue, of stream: Address) throws -> StreamRead {
        let history = configuration.history
        guard let parts = reply.elements, parts.count == 3, let epoch = parts[0].string, let top = parts[1].int else {
            throw RedisError.server("unexpected reply to the history read: \(reply)")
        }
        let oldest = wallClockMilliseconds() - Int64(history.ttlSeconds) * 1000
        var messages: [Envelope] = []
        for record in parts[2].elements ?? [] {
            guard let bytes = record.bytes, let decoded = WireEvent.decode(bytes, address: stream), decoded.sequenced,
                case .message(let envelope) = decoded.event
            else {
                logger.warning("skipped a malformed record in the history of \(stream)")
                continue
            }
            // Past its TTL: kept in the list until the list expires or is trimmed, never served.
            if envelope.timestamp >= oldest { messages.append(envelope) }
        }
        return StreamRead(top: StreamPosition(epoch: epoch, offset: top), messages: messages)
    }
}
