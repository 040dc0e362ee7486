import RESP

/// The Lua scripts the backplane runs. Each is loaded (`SCRIPT LOAD`) when a connection to a
/// server comes up, so that commands name it by its SHA1 (`EVALSHA`) and do not carry its text.
enum RedisScript: CaseIterable, Sendable {
    case append, read, enter, exit

    var text: String {
        switch self {
        case .append: HistoryScripts.append
        case .read: HistoryScripts.read
        case .enter: PresenceScripts.enter
        case .exit: PresenceScripts.exit
        }
    }

    var isHistory: Bool { self == .append || self == .read }
}

/// The scripts' SHA1s, and whether the server is known to hold them. A `NOSCRIPT` reply
/// (someone flushed the scripts; a replica promoted without them) makes commands carry the
/// text again until the scripts are loaded once more (on the next connect).
struct LoadedScripts {
    private var shas: [RedisScript: String] = [:]
    private var usable = false

    mutating func loaded(_ shas: [RedisScript: String]) {
        self.shas = shas
        usable = true
    }

    mutating func lost() {
        usable = false
    }

    /// `EVALSHA sha` while the server holds the script, `EVAL text` otherwise.
    func command(_ script: RedisScript) -> [RESPArgument] {
        if usable, let sha = shas[script] { return ["EVALSHA", RESPArgument(sha)] }
        return ["EVAL", RESPArgument(script.text)]
    }

    /// `EVAL text` for a command made as `EVALSHA sha` (unchanged otherwise).
    func withText(_ command: [RESPArgument]) -> [RESPArgument] {
        guard command.first == "EVALSHA", command.count > 1,
            let script = shas.first(where: { RESPArgument($0.value) == command[1] })?.key
        else { return command }
        return ["EVAL", RESPArgument(script.text)] + command.dropFirst(2)
    }
}
