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

    /// A secret: an empty one, given as the option or set as the variable, is an error, never
    /// a quiet way to turn authentication off.
    static func secret(_ given: String?, _ flag: String) throws -> String? {
        let key = variable(flag)
        if given == "" || (given == nil && ProcessInfo.processInfo.environment[key] == "") {
            throw ValidationError("--\(flag) (or \(key)) is empty: give a non-empty secret, or leave it out")
        }
        return string(given, flag)
    }

    static func variable(_ flag: String) -> String {
        "SWITCHBOARD_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    static func int(_ given: Int?, _ flag: String, default fallback: Int) throws -> Int {
        if let given { return given }
        guard let text = value(flag) else { return fallback }
        guard let number = Int(text) else {
            throw ValidationError(
                "SWITCHBOARD_\(flag.uppercased().replacingOccurrences(of: "-", with: "_")) must be an integer, got '\(text)'")
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
