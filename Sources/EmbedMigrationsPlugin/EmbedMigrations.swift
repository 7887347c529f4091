import Foundation
import PackagePlugin

/// Runs `embed-migrations` on the package's `migrations/` folder before the target compiles,
/// so the schema is written only in `migrations/` and carried inside the binary. The PostgreSQL
/// store (`BudgetLedgerPostgres`) gets `migrations/postgres/` instead, as `PostgresMigration`s.
@main
struct EmbedMigrations: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let isPostgres = target.name == "BudgetLedgerPostgres"
        let folder = context.package.directoryURL.appending(path: isPostgres ? "migrations/postgres" : "migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasSuffix(".sql") }
            .sorted()
            .map { folder.appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedMigrations.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) migrations from \(isPostgres ? "migrations/postgres/" : "migrations/")",
                executable: try context.tool(named: "embed-migrations").url,
                arguments: [folder.path, output.path] + (isPostgres ? ["--type", "PostgresMigration"] : []),
                inputFiles: files + [folder],
                outputFiles: [output]
            )
        ]
    }
}
