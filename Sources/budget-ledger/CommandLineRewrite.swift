import ArgumentParser

/// What an operator types that ArgumentParser would refuse, rewritten before parsing into the
/// form it accepts. Pure functions of the arguments and the command tree; nothing is printed.
enum CommandLineRewrite {
    /// The options every subcommand takes (`LedgerOptions`); with the number of values each takes.
    static let globalOptions = ["--db": 1, "--json": 0]

    /// The long options that take no value. A dash-and-digits token after one of these is a
    /// positional value; after any other option it is that option's value (ArgumentParser reads
    /// those itself: every numeric option parses `.unconditional`).
    static let flags: Set<String> = ["--json", "--enforce", "--all-time", "--help", "-h", "--version"]

    /// The arguments as ArgumentParser should see them (without the program name):
    /// global options typed before the subcommand moved after it, and negative numbers kept as values.
    static func rewritten(_ arguments: [String], root: any ParsableCommand.Type) -> [String] {
        let walk = SubcommandWalk(arguments, root: root)
        guard !walk.path.isEmpty else { return arguments }
        return walk.path + negativeNumbersAsValues(walk.globalOptions + walk.rest)
    }

    /// ArgumentParser reads any token that starts with a dash as an option, so `set-limit t -1`
    /// failed with "Missing expected argument". No option of ours starts with a dash and a digit,
    /// so such a token is a value: when it stands where a positional would, it moves behind a
    /// `--` terminator (right after an existing one), keeping its order among the positionals
    /// that follow it.
    static func negativeNumbersAsValues(_ arguments: [String]) -> [String] {
        var kept: [String] = []
        var positional: [String] = []
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let token = arguments[index]
            if token == "--" {
                return kept + ["--"] + positional + arguments[(index + 1)...]
            }
            let isOptionValue = index > arguments.startIndex && takesValue(arguments[index - 1])
            if isNegativeNumber(token) && !isOptionValue {
                positional.append(token)
            } else if !positional.isEmpty && !token.hasPrefix("-") && !isOptionValue {
                // A positional after a moved one stays behind it.
                positional.append(token)
            } else {
                kept.append(token)
            }
            index += 1
        }
        return positional.isEmpty ? kept : kept + ["--"] + positional
    }

    /// Whether `token` is an option name whose value is the next token.
    static func takesValue(_ token: String) -> Bool {
        token.hasPrefix("-") && !isNegativeNumber(token) && !token.contains("=") && !flags.contains(token)
    }

    static func isNegativeNumber(_ token: String) -> Bool {
        token.wholeMatch(of: /-[0-9]+(\.[0-9]+)?/) != nil
    }
}

/// The subcommand path at the start of a command line, with the global options typed among it.
struct SubcommandWalk {
    /// The subcommand names, in order (`["usage", "reset"]`).
    var path: [String] = []
    /// Global options (and their values) typed before or between the subcommand names.
    var globalOptions: [String] = []
    /// Everything after the path.
    var rest: [String] = []
    /// The deepest command the path names.
    var command: any ParsableCommand.Type

    init(_ arguments: [String], root: any ParsableCommand.Type) {
        command = root
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let token = arguments[index]
            let name = String(token.prefix { $0 != "=" })
            if let valueCount = CommandLineRewrite.globalOptions[name] {
                let end = min(arguments.endIndex, index + 1 + (token.contains("=") ? 0 : valueCount))
                globalOptions += arguments[index..<end]
                index = end
            } else if let subcommand = Self.subcommand(named: token, of: command) {
                path.append(token)
                command = subcommand
                index += 1
            } else {
                break
            }
        }
        rest = Array(arguments[index...])
    }

    /// The subcommands of `command`, by name.
    static func subcommands(of command: any ParsableCommand.Type) -> [(name: String, type: any ParsableCommand.Type)] {
        command.configuration.subcommands.map { ($0._commandName, $0) }
    }

    static func subcommand(named name: String, of command: any ParsableCommand.Type) -> (any ParsableCommand.Type)? {
        subcommands(of: command).first { $0.name == name }?.type
    }
}
