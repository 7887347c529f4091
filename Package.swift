// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "BudgetLedger",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "BudgetLedger", targets: ["BudgetLedger"]),
        // One asynchronous API over both stores, opened by a location string (`openLedgerStore`).
        .library(name: "BudgetLedgerStore", targets: ["BudgetLedgerStore"]),
        .executable(name: "budget-ledger", targets: ["budget-ledger"]),
        // The LD_PRELOAD library of the power-loss tests (Tests/CLITests/PowerLossTests.swift).
        .library(name: "PowerLossShim", type: .dynamic, targets: ["PowerLossShim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // HMAC-SHA256 of alert webhooks; already in the graph (through swift-certificates).
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
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
        // The same ledger on PostgreSQL (docs/postgres.md): the domain's rules, PostgreSQL's storage.
        // Its schema is `migrations/postgres/*.sql`, embedded by the same plugin.
        .target(
            name: "BudgetLedgerPostgres",
            dependencies: [
                "BudgetLedger",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            plugins: ["EmbedMigrations"]
        ),
        // The wire formats both surfaces share: JSON, CSV and NDJSON shapes of the domain's
        // values, export and feed pages. The domain returns values; this is where text is made.
        .target(name: "BudgetLedgerWire", dependencies: ["BudgetLedger"]),
        // One asynchronous API over both stores (`LedgerStore`), opened from a file path or a
        // postgres:// URL: SQLite's `Ledger` behind a thread pool, or `PostgresLedger` as it is.
        // The server builds on it; it knows nothing of HTTP.
        .target(
            name: "BudgetLedgerStore",
            dependencies: [
                "BudgetLedger",
                "BudgetLedgerPostgres",
                // The hot path's answer is the consume's REST body, encoded once by the store.
                "BudgetLedgerWire",
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The REST server (Hummingbird): routes, request/response types, error mapping, metrics.
        // The OpenAPI document and the dashboard page are compiled into the binary, never read from
        // the checkout at run time.
        .target(
            name: "BudgetLedgerServer",
            dependencies: [
                "BudgetLedger",
                // `serve --db postgres://…`: the second store behind the server's `LedgerStore` seam.
                "BudgetLedgerPostgres",
                "BudgetLedgerStore",
                "BudgetLedgerWire",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            resources: [.embedInCode("openapi.yaml"), .embedInCode("dashboard.html")]
        ),
        .executableTarget(
            name: "budget-ledger",
            dependencies: [
                "BudgetLedger",
                "BudgetLedgerPostgres",
                "BudgetLedgerWire",
                "BudgetLedgerServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // Only to recognise a busy port (`IOError`'s errno) and name it.
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The benchmark behind `make bench`: figures for the real Ledger API, beside raw SQLite.
        .executableTarget(name: "budget-ledger-bench", dependencies: ["BudgetLedger", "BudgetLedgerWire", "LedgerSQLite"]),
        // `make bench-floor`: the ledger's own SQL driven from C, the floor under any wrapper.
        .executableTarget(name: "schema-floor", dependencies: ["CSQLite"], linkerSettings: [.linkedLibrary("sqlite3")]),
        // A worker the crash tests run as many processes and kill with SIGKILL.
        .executableTarget(name: "ledger-crash-worker", dependencies: ["BudgetLedger"]),
        // Fault injection for the power-loss tests, in C: loaded with LD_PRELOAD into the
        // writers, it keeps a copy of the ledger and its WAL as each sync left them.
        .target(name: "PowerLossShim", linkerSettings: [.linkedLibrary("dl")]),
        .testTarget(name: "LedgerSQLiteTests", dependencies: ["LedgerSQLite"]),
        .testTarget(name: "BudgetLedgerTests", dependencies: ["BudgetLedger", "BudgetLedgerWire", "LedgerSQLite"]),
        // Against a real PostgreSQL cluster that the tests start themselves (PostgresTestCluster).
        .testTarget(
            name: "BudgetLedgerPostgresTests",
            dependencies: [
                "BudgetLedgerPostgres", "BudgetLedger", "BudgetLedgerWire", "LedgerSQLite",
                // The behaviour tests run on both stores through the `LedgerStore` seam, each
                // opened by its location (`openLedgerStore`), as a library user opens it.
                "BudgetLedgerStore",
                "BudgetLedgerServer",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                // The CLI tests on PostgreSQL spawn the built binary (`serve` included).
                "budget-ledger",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // The serve tests call the spawned servers over real HTTP.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // The alert webhook tests receive the spawned servers' signed posts.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // Depends on the executable so that `swift build --build-tests` builds the binary the tests spawn.
        .testTarget(
            name: "CLITests",
            dependencies: ["budget-ledger", "ledger-crash-worker", "BudgetLedger", "BudgetLedgerWire", "LedgerSQLite"]),
        // Depends on the executable too: the parity and signal tests spawn the built binary.
        .testTarget(
            name: "BudgetLedgerServerTests",
            dependencies: [
                "BudgetLedgerServer",
                "BudgetLedger",
                "BudgetLedgerStore",
                "BudgetLedgerWire",
                "budget-ledger",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
