import ArgumentParser

/// "Did you mean …?" for a mistyped subcommand: the closest names by edit distance.
///
/// ArgumentParser suggests options (`--promt` → `--prompt`) but only says "Unexpected argument"
/// for a subcommand it does not know; this fills that gap.
struct SubcommandSuggestion {
    /// The word that names no subcommand.
    let typed: String
    /// The closest subcommand names, in the order the command lists them.
    let candidates: [String]
    /// The command path the word was typed after (`budget-ledger price`).
    let commandPath: String

    /// A suggestion for the first word after the subcommand path, when it names no subcommand
    /// and is close to some; nil otherwise (the command line is then left to ArgumentParser's error).
    init?(for arguments: [String], root: any ParsableCommand.Type) {
        let walk = SubcommandWalk(arguments, root: root)
        let names = SubcommandWalk.subcommands(of: walk.command).map(\.name)
        guard let word = walk.rest.first, !word.hasPrefix("-"), !names.isEmpty, !names.contains(word) else {
            return nil
        }
        let distances = names.map { (name: $0, distance: Self.editDistance(word, $0)) }
        // Far enough apart that a real typo (a letter missing, extra, swapped or wrong) is caught,
        // and an unrelated word is not matched to something arbitrary.
        let tolerance = max(2, word.count / 3)
        guard let best = distances.map(\.distance).min(), best <= tolerance else { return nil }
        typed = word
        candidates = distances.filter { $0.distance == best }.map(\.name)
        commandPath = ([root._commandName] + walk.path).joined(separator: " ")
    }

    /// `unknown command 'consum' for budget-ledger; did you mean 'consume'?`
    var message: String {
        let quoted = candidates.map { "'\($0)'" }
        let alternatives = quoted.count == 1 ? quoted[0] : quoted.dropLast().joined(separator: ", ") + " or " + quoted[quoted.count - 1]
        return "unknown command '\(typed)' for \(commandPath); did you mean \(alternatives)?"
    }

    /// The Levenshtein distance: insertions, deletions and substitutions, each costing 1.
    static func editDistance(_ source: String, _ target: String) -> Int {
        let source = Array(source)
        let target = Array(target)
        var previousRow = Array(0...target.count)
        for (row, sourceCharacter) in source.enumerated() {
            var currentRow = [row + 1]
            for (column, targetCharacter) in target.enumerated() {
                let substitution = previousRow[column] + (sourceCharacter == targetCharacter ? 0 : 1)
                currentRow.append(min(substitution, previousRow[column + 1] + 1, currentRow[column] + 1))
            }
            previousRow = currentRow
        }
        return previousRow[target.count]
    }
}
