import ArgumentParser
import Foundation

/// Every option also reads an environment variable: `--max-frame` from `SWITCHBOARD_MAX_FRAME`
/// (OPERATIONS.md). A command-line value wins over the environment, which wins over the default.
///
/// Done once, before parsing: each option of the chosen command that the command line leaves out
/// and the environment sets is added to the arguments. So the commands read their options in one
/// place, ArgumentParser checks values from either source alike, and no option name is written
/// twice: the names come from the commands' own properties, as ArgumentParser derives them.
enum EnvironmentArguments {
    /// Options that hold a secret: an empty one, given either way, is an error, never a quiet way
    /// to turn authentication off.
    static let secrets: Set<String> = ["api-key", "jwt-secret", "cluster-secret"]

    static func variable(_ option: String) -> String {
        "SWITCHBOARD_" + option.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The long names of the options `types` declare (an `@OptionGroup` is listed as its own type).
    static func optionNames(of types: [any ParsableArguments.Type]) -> [String] {
        types.flatMap { type in
            Mirror(reflecting: type.init()).children.compactMap { child -> String? in
                guard let label = child.label, label.hasPrefix("_"),
                    String(describing: Swift.type(of: child.value)).hasPrefix("Option<")
                else { return nil }
                return optionName(property: String(label.dropFirst()))
            }
        }
    }

    /// `maxConnectionsPerUser` → `max-connections-per-user`, as ArgumentParser names options.
    static func optionName(property: String) -> String {
        var name = ""
        for character in property {
            if character.isUppercase {
                name += "-" + character.lowercased()
            } else {
                name.append(character)
            }
        }
        return name
    }

    /// `arguments` (without the program's name) with the environment's values for the options
    /// the chosen subcommand has and the command line leaves out. An empty variable counts as
    /// unset, except for a secret, where it is passed on (and refused by `checkSecrets`).
    static func merged(
        _ arguments: [String], environment: [String: String], subcommands: [String: [any ParsableArguments.Type]]
    ) -> [String] {
        guard let command = arguments.first, let types = subcommands[command] else { return arguments }
        var merged = arguments
        for option in optionNames(of: types) {
            let given = arguments.contains { $0 == "--\(option)" || $0.hasPrefix("--\(option)=") }
            guard !given, let value = environment[variable(option)], !value.isEmpty || secrets.contains(option) else { continue }
            merged.append("--\(option)=\(value)")
        }
        return merged
    }

    /// Refuses an empty secret, wherever it came from.
    static func checkSecrets(_ arguments: [String]) throws {
        for (index, argument) in arguments.enumerated() {
            for secret in secrets {
                let empty = argument == "--\(secret)=" || (argument == "--\(secret)" && arguments.dropFirst(index + 1).first == "")
                if empty {
                    throw ValidationError("--\(secret) (or \(variable(secret))) is empty: give a non-empty secret, or leave it out")
                }
            }
        }
    }
}
