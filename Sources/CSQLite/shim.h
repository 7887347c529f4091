#include <sqlite3.h>

/* sqlite3_config is variadic, which Swift cannot call: one helper per option we set.
 * SQLITE_CONFIG_MEMSTATUS off: SQLite stops counting its allocations, which takes a global mutex
 * on every malloc and free (https://www.sqlite.org/c3ref/c_config_covering_index_scan.html).
 * Only valid before SQLite initializes; returns SQLITE_MISUSE after. */
static inline int ledger_sqlite3_config_memstatus(int on) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, on);
}

/* SQLITE_CONFIG_STMTJRNL_SPILL: how many bytes of a statement (savepoint) journal stay in memory
 * before SQLite writes it to a temporary file (https://www.sqlite.org/c3ref/c_config_covering_index_scan.html).
 * Only valid before SQLite initializes; returns SQLITE_MISUSE after. */
static inline int ledger_sqlite3_config_statement_journal_spill(int bytes) {
    return sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, bytes);
}
