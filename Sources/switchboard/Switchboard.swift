import ArgumentParser
import Foundation
import Logging

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A clustered WebSocket messaging server.",
        subcommands: [Serve.self, Cluster.self, Hub.self])
}

/// Every option also reads an environment variable: `--max-frame` from `SWITCHBOARD_MAX_FRAME`.
/// A command-line value wins over the environment, which wins over the default.
enum Environment {
    static func value(_ flag: String) -> String? {
        let key = "SWITCHBOARD_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
        return ProcessInfo.processInfo.environment[key].flatMap { $0.isEmpty ? nil : $0 }
    }

    static func string(_ given: String?, _ flag: String) -> String? {
        given ?? value(flag)
    }

    static func int(_ given: Int?, _ flag: String, default fallback: Int) throws -> Int {
        if let given { return given }
        guard let text = value(flag) else { return fallback }
        guard let number = Int(text) else {
            throw ValidationError("SWITCHBOARD_\(flag.uppercased().replacingOccurrences(of: "-", with: "_")) must be an integer, got '\(text)'")
        }
        return number
    }
}

/// Logging to standard error, at `--log-level` (or SWITCHBOARD_LOG_LEVEL), default info.
struct LoggingOptions: ParsableArguments {
    @Option(help: "trace, debug, info, notice, warning, error or critical (env SWITCHBOARD_LOG_LEVEL).")
    var logLevel: String?

    func bootstrap() throws -> Logger {
        let name = Environment.string(logLevel, "log-level") ?? "info"
        guard let level = Logger.Level(rawValue: name) else { throw ValidationError("unknown log level '\(name)'") }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "switchboard")
        logger.logLevel = level
        return logger
    }
}
