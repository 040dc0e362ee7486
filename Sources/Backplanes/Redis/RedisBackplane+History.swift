import Logging
import RESP
import SwitchboardCore

/// History in Redis (`HistoryScripts`): the append script runs in `submit`; reads and the
/// loading of the scripts are here.
extension RedisBackplane {
    public var history: HistoryPolicy { configuration.history }

    /// `EVALSHA sha` once the script is loaded on this connection's server, `EVAL text` before.
    func script(_ which: KeyPath<(append: String, read: String), String>, _ text: String) -> [RESPArgument] {
        if let sha = loadedScripts.withLock({ $0?[keyPath: which] }) { return ["EVALSHA", RESPArgument(sha)] }
        return ["EVAL", RESPArgument(text)]
    }

    /// `EVAL text` for a command made as `EVALSHA sha`.
    static func withScriptText(_ command: [RESPArgument], _ text: String) -> [RESPArgument] {
        guard command.first == "EVALSHA" else { return command }
        return ["EVAL", RESPArgument(text)] + command.dropFirst(2)
    }

    /// An error reply; `NOSCRIPT` (someone flushed the scripts) sends the text again from now on.
    func failure(_ message: String) -> RedisError {
        if message.hasPrefix("NOSCRIPT") { loadedScripts.withLock { $0 = nil } }
        return RedisError.server(message)
    }

    /// Loads both scripts with `load` (SCRIPT LOAD on one Redis, on every master of a cluster).
    func loadScripts(using load: @Sendable (String) async throws -> String) async throws {
        guard configuration.history.isOn else { return }
        let append = try await load(HistoryScripts.append)
        let read = try await load(HistoryScripts.read)
        loadedScripts.withLock { $0 = (append, read) }
    }

    public func read(_ stream: Address, after: Int64?, limit: Int) async throws -> StreamRead {
        guard configuration.history.isOn else { throw HistoryError.unsupported }
        let reply: RESPValue
        let command = readCommand(stream, after: after, limit: limit)
        do {
            reply = try await commands.send(command)
        } catch RedisError.server(let message) {
            let failure = failure(message)
            // A server without the script: the text, once more, now.
            guard message.hasPrefix("NOSCRIPT") else { throw failure }
            reply = try await commands.send(Self.withScriptText(command, HistoryScripts.read))
        }
        return try parseRead(reply, of: stream)
    }

    func readCommand(_ stream: Address, after: Int64?, limit: Int) -> [RESPArgument] {
        let history = configuration.history
        return script(\.read, HistoryScripts.read) + [
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
