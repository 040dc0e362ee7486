import ArgumentParser
import Foundation
import Logging

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A clustered WebSocket messaging server.",
        subcommands: [Serve.self, Cluster.self, Hub.self])

    /// What each subcommand reads from the environment: its own options and its groups'.
    static let environmentOptions: [String: [any ParsableArguments.Type]] = [
        "serve": [Serve.self, NodeOptions.self, HistoryOptions.self, LoggingOptions.self, ConfigFileOptions.self],
        "cluster": [Cluster.self, NodeOptions.self, HistoryOptions.self, LoggingOptions.self, ConfigFileOptions.self],
        "hub": [Hub.self, HistoryOptions.self, LoggingOptions.self, ConfigFileOptions.self],
    ]

    static func main() async {
        let given = Array(CommandLine.arguments.dropFirst())
        let withEnvironment = EnvironmentArguments.merged(
            given, environment: ProcessInfo.processInfo.environment, subcommands: environmentOptions)
        var arguments = withEnvironment
        do {
            arguments = try ConfigFile.merged(withEnvironment, subcommands: environmentOptions)
            try EnvironmentArguments.checkSecrets(arguments)
            var command = try parseAsRoot(arguments)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            // Say which values came from the environment (names only: values may be secrets).
            let variables = withEnvironment.dropFirst(given.count).compactMap { $0.split(separator: "=").first }
                .map { EnvironmentArguments.variable(String($0.dropFirst(2))) }
            if !variables.isEmpty, exitCode(for: error) != .success {
                FileHandle.standardError.write(Data("switchboard: read from the environment: \(variables.joined(separator: ", "))\n".utf8))
            }
            exit(withError: error)
        }
    }
}

/// Logging to standard error, at `--log-level` (or SWITCHBOARD_LOG_LEVEL), default info, as
/// text lines or (`--log-format json`) one JSON object per line.
struct LoggingOptions: ParsableArguments {
    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(help: "text, or json (one object per line, for log collectors).")
    var logFormat = "text"

    func bootstrap() throws -> Logger {
        let name = logLevel
        guard let level = Logger.Level(rawValue: name) else { throw ValidationError("unknown log level '\(name)'") }
        switch logFormat {
        case "text":
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case "json":
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label, logLevel: level) }
        default:
            throw ValidationError("unknown log format '\(logFormat)': text or json")
        }
        var logger = Logger(label: "switchboard")
        logger.logLevel = level
        return logger
    }
}
