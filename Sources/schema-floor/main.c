/*
 * The floor under BudgetLedger's write path: the ledger's own SQL for one check-and-consume
 * (the read of LedgerSQL.selectThreadAndDefault, then LedgerSQL.insertConsume with the schema's
 * triggers; with several writes a transaction, each in its own savepoint as group commit's row
 * path runs them, and a lone write without one, as group commit runs it), driven from C with
 * prepared statements and nothing else in the way: no Swift, no locks, no threads, no sync.
 *
 * It answers "how fast could any wrapper run this schema here?", beside the reference (which
 * runs a simpler schema). Since migration 0014 the ledger's writer applies a consume's derived
 * state itself (Ledger.applyDerivedState) and the consume trigger steps aside for a connection
 * whose connection_role() is 'ledger writer': the harness defines that function as LedgerSQLite
 * does on the ledger's connection and runs the writer's statements for a consume under no
 * scope budget: the thread, and the fold when it is due (FoldMark: every 1,024th event, or when
 * the bound on the pending consumes no longer proves the capacity kept; migration 0017). Its
 * consumes are unpriced.
 *
 * Usage: schema-floor LEDGER_FILE normal|full WRITES_PER_TRANSACTION CALLS [CHECKPOINT_FRAMES]
 * LEDGER_FILE must be a fresh ledger made by `budget-ledger init`; the harness opens its
 * 1,000 threads itself. At normal, commits write their WAL frames but never wait for the
 * disk; at full, every commit syncs the WAL, as SQLite does. CHECKPOINT_FRAMES is SQLite's
 * auto-checkpoint (default 1000; 0: none, the statements and commits alone).
 *
 * For instruction counts (repeatable here, unlike time):
 *   valgrind --tool=callgrind --toggle-collect=one_write schema-floor L normal 16 5000
 * and divide one_write's inclusive count by the calls (subtract memset: `rep stosb` counts
 * one instruction per byte).
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Copies of LedgerSQL.selectThreadAndDefault and LedgerSQL.insertConsume (Sources/BudgetLedger/LedgerSQL.swift):
 * C cannot share the Swift strings; Tests/BudgetLedgerTests/SchemaFloorTests.swift fails when they part. */
static const char *select_thread =
    "SELECT s.max_tokens, s.prompt_tokens, s.completion_tokens, s.request_count,"
    " (SELECT group_concat(t.threshold_percent) FROM thread_thresholds AS t WHERE t.thread_id = s.thread_id),"
    " g.default_max_tokens,"
    " (SELECT coalesce(sum(h.tokens), 0) FROM holds AS h WHERE h.thread_id = ?1 AND h.expires_at_us > ?2),"
    " (SELECT count(*) FROM holds AS h WHERE h.thread_id = ?1 AND h.expires_at_us <= ?2),"
    " (SELECT coalesce(max(id), 0) FROM model_prices) + (SELECT coalesce(max(id), 0) FROM price_withdrawals),"
    " (SELECT e.id FROM events AS e WHERE e.idempotency_key = ?3),"
    " EXISTS (SELECT 1 FROM scope_budgets),"
    " g.rolled_up_to, g.all_time_prompt_tokens, g.all_time_completion_tokens,"
    " g.all_time_cost_nanos, g.all_time_latency_ms, g.consume_cost_bound_nanos"
    " FROM ledger_settings AS g LEFT JOIN thread_state AS s ON s.thread_id = ?1 WHERE g.id = 1";
static const char *insert_consume =
    "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, idempotency_key,"
    " agent_id, model, provider, latency_ms, metadata, org_id, user_id, cost_nanos, reservation_id)"
    " VALUES (?, 'consume', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/* Copies of ConsumeSQL.addToThread and FoldMark.foldStatement (Sources/BudgetLedger; SchemaFloorTests). */
static const char *add_to_thread =
    "UPDATE thread_state"
    " SET prompt_tokens = prompt_tokens + ?2, completion_tokens = completion_tokens + ?3,"
    " request_count = request_count + 1"
    " WHERE thread_id = ?1";
static const char *fold = "UPDATE ledger_settings SET rolled_up_to = ?1 WHERE id = 1";

/* FoldMark.admits(through:): the events after the mark, each at its limits (its cost at most the
 * ledger's consume_cost_bound_nanos), keep every all-time sum within the capacity (4e18). The
 * limits: LedgerLimits (Sources/BudgetLedger/Validation.swift). */
static int fold_mark_admits(sqlite3_stmt *select, int64_t event_id) {
    static const int64_t capacity = 4000000000000000000LL;
    const int64_t limits[4] = {1000000000LL, 1000000000LL, sqlite3_column_int64(select, 16), 604800000LL};
    int64_t events = event_id - sqlite3_column_int64(select, 11);
    for (int index = 0; index < 4; index++) {
        int64_t most;
        if (__builtin_mul_overflow(events, limits[index], &most)) return 0;
        if (most > capacity - sqlite3_column_int64(select, 12 + index)) return 0;
    }
    return 1;
}

enum { THREADS = 1000 };

/* connection_role() on the ledger's own connection (Sources/LedgerSQLite/ConnectionRole.swift). */
static void connection_role(sqlite3_context *context, int count, sqlite3_value **values) {
    (void)count;
    (void)values;
    sqlite3_result_text(context, "ledger writer", -1, SQLITE_STATIC);
}

/* splitmix64, as the benchmark's workload. */
static uint64_t random_state = 0x5EED;
static uint64_t next_random(void) {
    uint64_t z = (random_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void fail(sqlite3 *db, const char *what) {
    fprintf(stderr, "schema-floor: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
}

static void run(sqlite3 *db, sqlite3_stmt *statement, const char *what) {
    int code;
    while ((code = sqlite3_step(statement)) == SQLITE_ROW) {}
    if (code != SQLITE_DONE) fail(db, what);
    sqlite3_reset(statement);
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql) {
    sqlite3_stmt *statement = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &statement, NULL) != SQLITE_OK) fail(db, sql);
    return statement;
}

static double seconds(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return now.tv_sec + now.tv_nsec * 1e-9;
}

struct statements { sqlite3_stmt *savepoint, *release, *select_thread, *insert_consume, *add_to_thread, *fold; };

/* One check-and-consume as the group commit runs it inside a batch. Not inlined, so callgrind
 * can count it alone. */
__attribute__((noinline)) static void one_write(sqlite3 *db, struct statements *s, int64_t now, int in_savepoint) {
    char thread[16], key[40], agent[16];
    snprintf(thread, sizeof thread, "thread-%04d", (int)(next_random() % THREADS));
    uint64_t high = next_random(), low = next_random();
    snprintf(key, sizeof key, "req_%016llx%016llx", (unsigned long long)high, (unsigned long long)low);
    snprintf(agent, sizeof agent, "agent-%02d", (int)(next_random() % 16));
    if (in_savepoint) run(db, s->savepoint, "SAVEPOINT");
    sqlite3_bind_text(s->select_thread, 1, thread, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s->select_thread, 2, now);
    sqlite3_bind_text(s->select_thread, 3, key, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(s->select_thread) != SQLITE_ROW) fail(db, "select thread");
    sqlite3_bind_int64(s->insert_consume, 1, now);
    sqlite3_bind_text(s->insert_consume, 2, thread, -1, SQLITE_TRANSIENT);
    int64_t prompt = 100 + (int64_t)(next_random() % 3900), completion = 10 + (int64_t)(next_random() % 990);
    sqlite3_bind_int64(s->insert_consume, 3, prompt);
    sqlite3_bind_int64(s->insert_consume, 4, completion);
    sqlite3_bind_text(s->insert_consume, 5, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s->insert_consume, 6, agent, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s->insert_consume, 7, "gpt-4o", -1, SQLITE_STATIC);
    run(db, s->insert_consume, "insert consume");
    int64_t event_id = sqlite3_last_insert_rowid(db);
    sqlite3_bind_text(s->add_to_thread, 1, thread, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s->add_to_thread, 2, prompt);
    sqlite3_bind_int64(s->add_to_thread, 3, completion);
    run(db, s->add_to_thread, "add to thread");
    if (event_id % 1024 == 0 || !fold_mark_admits(s->select_thread, event_id)) {
        sqlite3_bind_int64(s->fold, 1, event_id);
        run(db, s->fold, "fold");
    }
    sqlite3_reset(s->select_thread);
    if (in_savepoint) run(db, s->release, "RELEASE");
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: schema-floor LEDGER_FILE normal|full WRITES_PER_TRANSACTION CALLS [CHECKPOINT_FRAMES]\n");
        return 64;
    }
    const char *level = argv[2];
    int batch = atoi(argv[3]), calls = atoi(argv[4]), checkpoint_frames = argc == 6 ? atoi(argv[5]) : 1000;
    if ((strcmp(level, "normal") != 0 && strcmp(level, "full") != 0) || batch < 1 || calls < 1 || checkpoint_frames < 0) {
        fprintf(stderr, "schema-floor: the level is normal or full, WRITES_PER_TRANSACTION and CALLS are positive, "
                        "CHECKPOINT_FRAMES is not negative\n");
        return 64;
    }
    sqlite3 *db;
    /* As the ledger configures SQLite once per process (Connection.configureProcess): no memory
     * statistics (a global mutex on every allocation). */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (sqlite3_open(argv[1], &db) != SQLITE_OK) fail(db, "open");
    if (sqlite3_create_function(db, "connection_role", 0, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                connection_role, NULL, NULL) != SQLITE_OK) fail(db, "connection_role");
    if (sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;"
                         "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) fail(db, "setup");
    sqlite3_stmt *limit = prepare(db, "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'limit', ?, 1000000000000000)");
    for (int index = 0; index < THREADS; index++) {
        char thread[16];
        snprintf(thread, sizeof thread, "thread-%04d", index);
        sqlite3_bind_text(limit, 1, thread, -1, SQLITE_TRANSIENT);
        run(db, limit, "open threads (is the ledger fresh?)");
    }
    sqlite3_finalize(limit);
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) fail(db, "commit threads");
    sqlite3_wal_autocheckpoint(db, checkpoint_frames);
    if (strcmp(level, "full") == 0 && sqlite3_exec(db, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK) fail(db, "FULL");

    struct statements s = {
        prepare(db, "SAVEPOINT floor"), prepare(db, "RELEASE floor"),
        prepare(db, select_thread), prepare(db, insert_consume),
        prepare(db, add_to_thread), prepare(db, fold),
    };
    sqlite3_stmt *begin = prepare(db, "BEGIN IMMEDIATE"), *commit = prepare(db, "COMMIT");
    double wall = seconds(CLOCK_MONOTONIC), cpu = seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (int call = 0; call < calls; call++) {
        if (call % batch == 0) run(db, begin, "BEGIN");
        one_write(db, &s, 2 + call, batch > 1);
        if (call % batch == batch - 1 || call == calls - 1) run(db, commit, "COMMIT");
    }
    wall = seconds(CLOCK_MONOTONIC) - wall;
    cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    char checkpoints[48];
    if (checkpoint_frames > 0) snprintf(checkpoints, sizeof checkpoints, "checkpoint every %d frames:", checkpoint_frames);
    else snprintf(checkpoints, sizeof checkpoints, "no checkpoint:");
    printf("schema floor, %2d writes per transaction, %-6s %-26s %6.0f writes/s, %6.1f us per write (CPU %5.1f us)\n",
           batch, strcmp(level, "full") == 0 ? "FULL," : "NORMAL,", checkpoints, calls / wall, wall / calls * 1e6,
           cpu / calls * 1e6);
    sqlite3_close_v2(db);
    return 0;
}
