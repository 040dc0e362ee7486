import ArgumentParser
import Foundation
import SwitchboardProtocol

/// `--config FILE` (or SWITCHBOARD_CONFIG): options from a JSON file whose keys are the options'
/// long names, as on the command line, or their environment variables' names:
///
///     {"base-port": 8080, "redis": "redis://127.0.0.1:6379", "SWITCHBOARD_HISTORY_SIZE": 500}
///
/// A value on the command line wins over the environment, which wins over the file, which wins
/// over the default. Like the environment, the file only adds arguments before parsing
/// (`EnvironmentArguments`), so ArgumentParser checks every value alike, whatever its source.
/// An unknown key is an error (a misspelt option must not be quietly ignored).
enum ConfigFile {
    static let option = "config"

    /// `arguments` with the file's values for the options the arguments leave out; unchanged
    /// without `--config`.
    static func merged(_ arguments: [String], subcommands: [String: [any ParsableArguments.Type]]) throws -> [String] {
        guard let command = arguments.first, let types = subcommands[command], let path = value(of: option, in: arguments) else {
            return arguments
        }
        let known = EnvironmentArguments.optionNames(of: types).filter { $0 != option }
        let settings = try read(path)
        var merged = arguments
        for (given, value) in settings.sorted(by: { $0.key < $1.key }) {
            let key = optionName(given)
            guard known.contains(key) else {
                throw ValidationError("\(path): unknown option '\(given)'; '\(command)' takes: \(known.sorted().joined(separator: ", "))")
            }
            let given = arguments.contains { $0 == "--\(key)" || $0.hasPrefix("--\(key)=") }
            if given { continue }
            merged.append("--\(key)=\(try text(value, key: key, path: path))")
        }
        return merged
    }

    /// `SWITCHBOARD_MAX_FRAME` → `max-frame`; an option's name stays as it is.
    static func optionName(_ key: String) -> String {
        guard key.hasPrefix("SWITCHBOARD_") else { return key }
        return key.dropFirst("SWITCHBOARD_".count).lowercased().replacingOccurrences(of: "_", with: "-")
    }

    static func read(_ path: String) throws -> [String: JSONValue] {
        let bytes: [UInt8]
        do {
            bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ValidationError("--config: cannot read \(path): \(error.localizedDescription)")
        }
        let parsed: JSONValue
        do {
            parsed = try JSONValue.parse(bytes)
        } catch {
            throw ValidationError("--config: \(path) is not valid JSON: \(error)")
        }
        guard case .object(let fields) = parsed else {
            throw ValidationError("--config: \(path) must hold one JSON object of option names and values")
        }
        return fields
    }

    /// A string, number or boolean as the command line would spell it; a list of strings joins
    /// with commas (as `--allowed-origins` and `--peers` take them).
    static func text(_ value: JSONValue, key: String, path: String) throws -> String {
        switch value {
        case .string(let text): return text
        case .number(let text): return text
        case .bool(let flag): return flag ? "true" : "false"
        case .array(let items):
            let texts = items.compactMap(\.string)
            if texts.count == items.count { return texts.joined(separator: ",") }
        default: break
        }
        throw ValidationError("\(path): '\(key)' must be a string, a number, a boolean or a list of strings")
    }

    /// The value of `--name VALUE` or `--name=VALUE` in `arguments`.
    static func value(of name: String, in arguments: [String]) -> String? {
        for (index, argument) in arguments.enumerated() {
            if argument.hasPrefix("--\(name)=") { return String(argument.dropFirst(name.count + 3)) }
            if argument == "--\(name)", index + 1 < arguments.count { return arguments[index + 1] }
        }
        return nil
    }
}

/// The `--config` option itself, so that `--help` lists it and the parser accepts it.
struct ConfigFileOptions: ParsableArguments {
    @Option(help: "A JSON file of options by their long names, e.g. {\"redis\": \"redis://host:6379\"}.")
    var config: String?
}
