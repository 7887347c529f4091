import Foundation
import Logging
import PostgresNIO

/// One throwaway PostgreSQL cluster per test run, shared by every test; a fresh database each.
///
/// The first `shared()` runs `initdb` in a temporary folder, starts the postmaster on 127.0.0.1
/// on a free port (its unix socket in the same folder, never in /var/run), and waits until it
/// accepts connections. It stops when the test process exits (an `atexit` hook) and, should
/// the process die without exiting (SIGKILL, a crash), within a second after it: a watchdog
/// process started with the cluster waits for the test process to go, then runs
/// `pg_ctl stop -m immediate` and removes the folder.
///
/// PostgreSQL refuses to run as root: as root, every server command runs as the unprivileged
/// user `budgetledger` (through `runuser`), which `make deps` creates (and, failing that, this
/// helper with `useradd`). The binaries are looked for in `BUDGET_LEDGER_PG_BIN`, then in the
/// newest `/usr/lib/postgresql/N/bin` (Debian's `postgresql` package, which `make deps`
/// installs), then on the PATH (e.g. /usr/local/bin).
actor PostgresTestCluster {
    /// What a test needs: where the cluster listens.
    struct Server: Sendable {
        let port: Int
        let folder: String

        /// A `postgres://` URL for `database`, as the superuser (trust authentication on loopback).
        func url(database: String) -> String { "postgres://postgres@127.0.0.1:\(port)/\(database)" }
    }

    static let unprivilegedUser = "budgetledger"
    private static let instance = PostgresTestCluster()
    private var started: Task<Server, any Error>?
    private var databases = 0

    /// The run's cluster, started on first use.
    static func shared() async throws -> Server {
        try await instance.server()
    }

    /// A new, empty database on the shared cluster, and its URL.
    static func freshDatabase() async throws -> String {
        let server = try await shared()
        let name = await instance.nextDatabaseName()
        try await withAdminClient(server) { client in
            try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
        }
        return server.url(database: name)
    }

    /// Runs `body` with one connection to `database` (the cluster's `postgres` by default), as the
    /// superuser, closed when `body` ends.
    ///
    /// One plain connection, not a `PostgresClient`: a client's pool needs `run()` in a task of
    /// its own, and the lease made before that task starts, the task's cancellation at the end and
    /// the wait for it are three more things that can go wrong in a helper every test leans on.
    @discardableResult
    static func withAdminClient<Result: Sendable>(
        _ server: Server, database: String = "postgres", _ body: (AdminSession) async throws -> Result
    ) async throws -> Result {
        let configuration = PostgresConnection.Configuration(
            host: "127.0.0.1", port: server.port, username: "postgres", password: nil, database: database, tls: .disable)
        let connection = try await PostgresConnection.connect(
            configuration: configuration, id: 1, logger: AdminSession.logger)
        do {
            let result = try await body(AdminSession(connection: connection))
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    private func nextDatabaseName() -> String {
        databases += 1
        return "ledger_test_\(databases)"
    }

    private func server() async throws -> Server {
        if let started { return try await started.value }
        let task = Task { try Self.start() }
        started = task
        return try await task.value
    }

    // MARK: - Starting and stopping

    /// The folder of the running cluster, for the exit hook (set once, before the hook is registered).
    nonisolated(unsafe) private static var runningFolder: String?
    nonisolated(unsafe) private static var runningBinaries: String?

    private static func start() throws -> Server {
        let cluster = try PrivateCluster.create()
        runningFolder = cluster.folder
        runningBinaries = cluster.binaries
        atexit { PostgresTestCluster.stopAtExit() }
        return cluster.server
    }

    /// A cluster of one test's own, which the test may crash and restart (the shared one serves
    /// every other test meanwhile). Its watchdog removes it if the test process dies; `remove()`
    /// otherwise.
    struct PrivateCluster: Sendable {
        let binaries: String
        let folder: String
        let asRoot: Bool
        let server: Server

        /// initdb, then the postmaster on a free loopback port.
        static func create() throws -> PrivateCluster {
            let binaries = try binaryFolder()
            let asRoot = getuid() == 0
            if asRoot { try ensureUnprivilegedUser() }
            let folder = try makeFolder(ownedByUnprivilegedUser: asRoot)
            // First, so that nothing below can leave a server or a folder behind.
            try startWatchdog(binaries: binaries, folder: folder, asRoot: asRoot)
            try run(
                binaries + "/initdb",
                ["-D", folder + "/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                asRoot: asRoot, log: folder + "/initdb.log")
            var lastFailure: (any Error)?
            for _ in 0..<5 {
                let cluster = PrivateCluster(
                    binaries: binaries, folder: folder, asRoot: asRoot,
                    server: Server(port: try freeLoopbackPort(), folder: folder))
                do {
                    try cluster.startServer()
                    return cluster
                } catch {
                    // Another process took the port between our probe and the postmaster's bind.
                    lastFailure = error
                }
            }
            throw lastFailure ?? ClusterError("the cluster did not start")
        }

        /// Starts the postmaster (again) on the cluster's port and waits until it accepts connections.
        ///
        /// `max_connections` is 1,000: the suite's tests run in parallel, each ledger with a pool of
        /// up to 16 connections and spawned servers with their own; at 200 a full run refused
        /// connections ("too many clients already") once the both-stores tests joined.
        func startServer() throws {
            try run(
                binaries + "/pg_ctl",
                ["start", "-w", "-t", "60", "-D", folder + "/data", "-l", folder + "/postgres.log", "-o",
                 "-p \(server.port) -k \(folder) -c listen_addresses=127.0.0.1 -c max_connections=1000 -c synchronous_commit=on"],
                asRoot: asRoot, log: folder + "/pg_ctl.log")
        }

        /// A crash of the server: every process stops at once, without a checkpoint; the next
        /// start recovers from the WAL.
        func stopImmediately() throws {
            try run(binaries + "/pg_ctl", ["stop", "-m", "immediate", "-D", folder + "/data"], asRoot: asRoot, log: nil)
        }

        /// A clean stop: PostgreSQL ends every session (clients see 57P01 or a closed
        /// connection), checkpoints and exits; `startServer()` brings it back on the same port.
        func stopFast() throws {
            try run(binaries + "/pg_ctl", ["stop", "-m", "fast", "-w", "-D", folder + "/data"], asRoot: asRoot, log: nil)
        }

        /// Stops the server if it runs and removes the folder.
        func remove() {
            try? stopImmediately()
            try? FileManager.default.removeItem(atPath: folder)
        }
    }

    /// Stops the cluster at once and removes its folder (the test process is exiting).
    private static func stopAtExit() {
        guard let folder = runningFolder, let binaries = runningBinaries else { return }
        try? run(binaries + "/pg_ctl", ["stop", "-m", "immediate", "-D", folder + "/data"], asRoot: getuid() == 0, log: nil)
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// A shell that outlives this process: once it is gone (however it went), stops the cluster.
    private static func startWatchdog(binaries: String, folder: String, asRoot: Bool) throws {
        let stop = asRoot
            ? "runuser -u \(unprivilegedUser) -- '\(binaries)/pg_ctl' stop -m immediate -D '\(folder)/data'"
            : "'\(binaries)/pg_ctl' stop -m immediate -D '\(folder)/data'"
        let script = """
            while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done
            if [ -d '\(folder)/data' ]; then \(stop) > /dev/null 2>&1; fi
            rm -rf '\(folder)'
            """
        let watchdog = Process()
        watchdog.executableURL = URL(fileURLWithPath: "/bin/sh")
        watchdog.arguments = ["-c", script]
        watchdog.standardInput = FileHandle.nullDevice
        watchdog.standardOutput = FileHandle.nullDevice
        watchdog.standardError = FileHandle.nullDevice
        try watchdog.run()
    }

    /// Where initdb, pg_ctl and postgres are (the three in one folder: pg_ctl starts the postgres beside it).
    private static func binaryFolder() throws -> String {
        var candidates: [String] = []
        if let folder = ProcessInfo.processInfo.environment["BUDGET_LEDGER_PG_BIN"] { candidates.append(folder) }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.compactMap(Int.init).sorted(by: >) {
            candidates.append("/usr/lib/postgresql/\(version)/bin")
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin"
        candidates += path.split(separator: ":").map(String.init)
        for folder in candidates where FileManager.default.isExecutableFile(atPath: folder + "/initdb") {
            // A PATH entry may hold symbolic links into the real folder.
            let initdb = URL(fileURLWithPath: folder + "/initdb").resolvingSymlinksInPath()
            return initdb.deletingLastPathComponent().path
        }
        throw ClusterError(
            "no PostgreSQL server binaries (initdb) in BUDGET_LEDGER_PG_BIN, /usr/lib/postgresql/*/bin or the PATH: "
                + "run `make deps` (it installs Debian's postgresql package)")
    }

    private static func ensureUnprivilegedUser() throws {
        if getpwnam(unprivilegedUser) != nil { return }
        try run("/usr/sbin/useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", unprivilegedUser],
                asRoot: false, log: nil)
    }

    private static func makeFolder(ownedByUnprivilegedUser: Bool) throws -> String {
        var template = Array("/tmp/budget-ledger-pg.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ClusterError("mkdtemp failed: errno \(errno)") }
        let folder = String(cString: made)
        if ownedByUnprivilegedUser, let user = getpwnam(unprivilegedUser) {
            guard chown(folder, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
                throw ClusterError("chown \(folder) failed: errno \(errno)")
            }
        }
        return folder
    }

    /// A loopback port that was free a moment ago (the postmaster binds it next; `start` retries).
    private static func freeLoopbackPort() throws -> Int {
        let socket = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw ClusterError("socket failed: errno \(errno)") }
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(socket, address, length) == 0 && getsockname(socket, address, &length) == 0
            }
        }
        guard bound else { throw ClusterError("bind to a free port failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Runs a command to its end (as `budgetledger` when `asRoot`), its output to `log`.
    ///
    /// posix_spawn and waitpid, not Foundation's `Process`: `pg_ctl start` leaves the postmaster
    /// running with the descriptors it inherited, and `Process.waitUntilExit` waits for those
    /// to close, i.e. for the server to stop.
    /// Closes the shell's descriptors above 2, then runs its arguments in its place.
    static let closeInheritedDescriptors =
        #"for fd in /proc/$$/fd/*; do n=${fd##*/}; if (( n > 2 )); then eval "exec $n>&-"; fi; done; exec "$@""#

    static func run(_ executable: String, _ arguments: [String], asRoot: Bool, log: String?) throws {
        let program = asRoot ? ["/usr/sbin/runuser", "-u", unprivilegedUser, "--", executable] + arguments : [executable] + arguments
        // Through bash, which first closes every descriptor it got above 2: posix_spawn passes on
        // all of this process's descriptors, and a server started by `pg_ctl start` lives on
        // with them. A pipe another test had open at that moment (CLITests' workers') then never
        // reached its end, and that test waited for it until the process ended: a hang seen in CI.
        // (dash cannot close descriptors above 9; glibc's closefrom action is not in Swift's Glibc.)
        let command = ["/bin/bash", "-c", Self.closeInheritedDescriptors, "bash"] + program
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, nil, &argv, environ)
        guard spawned == 0 else { throw ClusterError("cannot run \(program[0]): errno \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED and WEXITSTATUS, which Swift does not import.
        guard status & 0x7F == 0, (status >> 8) & 0xFF == 0 else {
            let output = log.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? ""
            throw ClusterError("\(executable) \(arguments.joined(separator: " ")) failed (wait status \(status)): \(output)")
        }
    }
}

/// A test's own connection to the cluster, as the superuser: plain SQL, and the connection itself
/// for a test that runs a transaction by hand.
struct AdminSession: Sendable {
    static let logger = Logger(label: "test-cluster")
    let connection: PostgresConnection

    @discardableResult
    func query(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws -> PostgresRowSequence {
        try await connection.query(query, logger: Self.logger, file: file, line: line)
    }

    func withConnection<Result>(_ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        try await body(connection)
    }
}

struct ClusterError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
