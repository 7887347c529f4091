// Build-time tool: writes a Swift file that carries every `NNNN_name.sql` of a folder,
// byte for byte, so the built library never reads the checkout at run time.
// Usage: embed-migrations MIGRATIONS_FOLDER OUTPUT_SWIFT_FILE [--type TYPE]
// Without --type the entries are LedgerSQLite's `Migration`s; with it, the target's own TYPE
// (the PostgreSQL store's `PostgresMigration`), and nothing is imported.
import Foundation

let arguments = CommandLine.arguments
guard arguments.count == 3 || (arguments.count == 5 && arguments[3] == "--type") else {
    FileHandle.standardError.write(Data("usage: embed-migrations MIGRATIONS_FOLDER OUTPUT_SWIFT_FILE [--type TYPE]\n".utf8))
    exit(64)
}
let typeName = arguments.count == 5 ? arguments[4] : "Migration"
let importLine = arguments.count == 5 ? "" : "internal import LedgerSQLite\n"
let folder = URL(fileURLWithPath: arguments[1])
let output = URL(fileURLWithPath: arguments[2])

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: embed-migrations: \(message)\n".utf8))
    exit(1)
}

/// A Swift string literal holding `text` exactly: every scalar outside printable ASCII is escaped.
func literal(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\": result += "\\\\"
        case "\"": result += "\\\""
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case " "..."~": result.unicodeScalars.append(scalar)
        default: result += "\\u{\(String(scalar.value, radix: 16))}"
        }
    }
    return result + "\""
}

let names: [String]
do {
    names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        .filter { $0.hasSuffix(".sql") }
        .sorted()
} catch {
    fail("cannot list \(folder.path): \(error)")
}

var entries: [String] = []
var seenVersions: Set<Int> = []
// schema.sql is the generated snapshot of the schema after the last migration (for readers;
// SchemaSnapshotTests keeps it current), not a migration.
for name in names where name != "schema.sql" {
    let digits = name.prefix { $0.isASCII && $0.isNumber }
    guard digits.count == 4, let version = Int(digits), name.dropFirst(4).hasPrefix("_") else {
        fail("\(name): migration files are named NNNN_name.sql")
    }
    guard seenVersions.insert(version).inserted else { fail("\(name): version \(version) appears twice") }
    guard let data = FileManager.default.contents(atPath: folder.appendingPathComponent(name).path),
        let text = String(data: data, encoding: .utf8), Data(text.utf8) == data
    else {
        fail("\(name): not readable as UTF-8")
    }
    entries.append("        \(typeName)(version: \(version), name: \(literal(name)), sql: \(literal(text))),")
}

let source = """
    // Generated at build time by embed-migrations from migrations/*.sql. Do not edit.
    \(importLine)
    enum EmbeddedMigrations {
        static let all: [\(typeName)] = [
    \(entries.joined(separator: "\n"))
        ]
    }

    """
do {
    try Data(source.utf8).write(to: output, options: .atomic)
} catch {
    fail("cannot write \(output.path): \(error)")
}
