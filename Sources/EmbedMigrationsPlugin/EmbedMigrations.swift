import Foundation
import PackagePlugin

/// Runs `embed-migrations` on the package's `migrations/` folder before the target compiles,
/// so the schema is written only in `migrations/` and carried inside the binary.
@main
struct EmbedMigrations: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let folder = context.package.directoryURL.appending(path: "migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasSuffix(".sql") }
            .sorted()
            .map { folder.appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedMigrations.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) migrations from migrations/",
                executable: try context.tool(named: "embed-migrations").url,
                arguments: [folder.path, output.path],
                inputFiles: files + [folder],
                outputFiles: [output]
            )
        ]
    }
}
