// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "BudgetLedger",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "BudgetLedger", targets: ["BudgetLedger"]),
        .executable(name: "budget-ledger", targets: ["budget-ledger"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // The system libsqlite3 (libsqlite3-dev), nothing else.
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // Our thin, safe Swift layer over the C API.
        .target(name: "LedgerSQLite", dependencies: ["CSQLite"]),
        // Build-time tool and plugin that embed `migrations/*.sql` into the library,
        // so the schema is written only in `migrations/` and never read from the checkout at run time.
        .executableTarget(name: "embed-migrations"),
        .plugin(
            name: "EmbedMigrations",
            capability: .buildTool(),
            dependencies: ["embed-migrations"],
            path: "Sources/EmbedMigrationsPlugin"
        ),
        // The domain: the ledger, budgets, usage. No HTTP, no CLI, no printing.
        .target(
            name: "BudgetLedger",
            dependencies: ["LedgerSQLite"],
            plugins: ["EmbedMigrations"]
        ),
        .executableTarget(
            name: "budget-ledger",
            dependencies: [
                "BudgetLedger",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "LedgerSQLiteTests", dependencies: ["LedgerSQLite"]),
        .testTarget(name: "BudgetLedgerTests", dependencies: ["BudgetLedger", "LedgerSQLite"]),
        // Depends on the executable so that `swift build --build-tests` builds the binary the tests spawn.
        .testTarget(name: "CLITests", dependencies: ["budget-ledger"]),
    ],
    swiftLanguageModes: [.v6]
)
