import Foundation
import Testing

@testable import LedgerSQLite

/// What a value looks like after a trip through a real table.
struct StoredValue<Value> {
    /// The value decoded back into its Swift type.
    let decoded: Value
    /// The raw value SQLite returned.
    let raw: SQLiteValue
    /// SQLite's own storage class for the stored value: `typeof(value)`.
    let storageClass: String
    /// The stored size in bytes, counted by SQLite (NULL for NULL).
    let byteCount: Int64?
}

/// Inserts `value` into a column without type affinity (so SQLite stores it as bound), reads it
/// back through a fresh query, and returns what came back.
func roundTrip<Value: SQLiteBindable & SQLiteColumnDecodable>(_ value: Value) throws -> StoredValue<Value> {
    try withConnection { connection, _ in
        try connection.execute(sql: "CREATE TABLE samples (id INTEGER PRIMARY KEY, value)")
        try connection.execute("INSERT INTO samples (value) VALUES (?)", [value])
        let id = connection.lastInsertRowID
        let statement = try connection.prepare(
            "SELECT value, typeof(value), length(CAST(value AS BLOB)) FROM samples WHERE id = ?")
        let stored = try statement.fetchOne([id]) { row in
            StoredValue(
                decoded: try row[0] as Value, raw: row.value(at: 0),
                storageClass: try row[1] as String, byteCount: try row[2] as Int64?)
        }
        return try #require(stored)
    }
}

@Suite("Values round-trip through a real table")
struct ValueRoundTripTests {
    @Test("Int64 values, the extremes included, come back exactly as INTEGER", arguments: [
        Int64.min, Int64.max, 0, -1, 1,
    ])
    func int64(value: Int64) throws {
        // Proves an Int64 is bound with sqlite3_bind_int64 and read back without truncation or conversion.
        let stored = try roundTrip(value)
        #expect(stored.decoded == value)
        #expect(stored.raw == .integer(value))
        #expect(stored.storageClass == "integer")
    }

    @Test("Int values, the extremes included, come back exactly as INTEGER", arguments: [Int.min, Int.max, 0, 42])
    func int(value: Int) throws {
        // Proves an Int is stored as a 64-bit INTEGER and decodes back to the same Int.
        let stored = try roundTrip(value)
        #expect(stored.decoded == value)
        #expect(stored.raw == .integer(Int64(value)))
        #expect(stored.storageClass == "integer")
    }

    @Test("Bool is stored as INTEGER 1 or 0 and comes back as the same Bool", arguments: [true, false])
    func bool(value: Bool) throws {
        // Proves true and false are stored as the integers 1 and 0 and decode back unchanged.
        let stored = try roundTrip(value)
        #expect(stored.decoded == value)
        #expect(stored.raw == .integer(value ? 1 : 0))
        #expect(stored.storageClass == "integer")
    }

    @Test("Double values (negative, tiny, huge, integral) come back bit for bit as REAL", arguments: [
        -1.5, 0.1, 3.0, Double.pi, Double.leastNonzeroMagnitude, Double.leastNormalMagnitude, 1e-300, 1e300,
        Double.greatestFiniteMagnitude, -Double.greatestFiniteMagnitude, Double.infinity, -Double.infinity,
    ])
    func double(value: Double) throws {
        // Proves a Double is bound as REAL and returned with the very same bits (no rounding, no text detour).
        let stored = try roundTrip(value)
        #expect(stored.decoded.bitPattern == value.bitPattern)
        #expect(stored.raw == .real(value))
        #expect(stored.storageClass == "real")
    }

    @Test("Text comes back byte for byte: empty, NUL bytes inside, emoji, CJK, combining marks", arguments: [
        "", "plain ASCII", "a\u{0}b", "\u{0}", "ends with NUL\u{0}", "\u{0}\u{0}middle\u{0}\u{0}",
        "👩‍👩‍👧‍👦 🚀 🇨🇭", "漢字 かな カナ 한국어 中文", "e\u{301} n\u{303} a\u{30A}\u{323}",
        "\u{FEFF}starts with a BOM",
        String(repeating: "long text ", count: 10_000),
    ])
    func text(value: String) throws {
        // Proves text is bound with its byte count (so NUL bytes and empty strings survive), never
        // normalized, and an empty string stays empty TEXT rather than becoming NULL.
        let stored = try roundTrip(value)
        // Swift compares strings by canonical equivalence; compare the bytes to catch normalization.
        #expect(Array(stored.decoded.utf8) == Array(value.utf8))
        #expect(stored.raw == .text(value))
        #expect(stored.storageClass == "text")
        #expect(stored.byteCount == Int64(value.utf8.count))
    }

    @Test("Long text (100 KB) comes back byte for byte")
    func longText() throws {
        // Proves text longer than any small-string or page size is bound and read back whole.
        let value = String(repeating: "long text 🚀 ", count: 7_000)
        let stored = try roundTrip(value)
        #expect(stored.decoded == value)
        #expect(stored.byteCount == Int64(value.utf8.count))
    }

    @Test("Data comes back byte for byte: empty, zero bytes, every byte value, a slice", arguments: [
        Data(), Data([0]), Data([0, 0, 0]), Data([0x00, 0xFF, 0x00, 0x7F]),
        Data((0..<512).map { UInt8(truncatingIfNeeded: $0) }),
        Data([9, 8, 7, 6, 5]).dropFirst(2),
    ])
    func data(value: Data) throws {
        // Proves blobs are bound with their length (zero bytes survive), slices are bound from their
        // own start, and empty Data stays an empty BLOB rather than becoming NULL.
        let stored = try roundTrip(value)
        #expect(stored.decoded == value)
        #expect(stored.raw == .blob(value))
        #expect(stored.storageClass == "blob")
        #expect(stored.byteCount == Int64(value.count))
    }

    @Test("Optional.none is stored as NULL and decodes back to nil")
    func null() throws {
        // Proves a nil optional of each bindable type binds SQL NULL and reads back as nil.
        let text = try roundTrip(String?.none)
        #expect(text.decoded == nil)
        #expect(text.raw == .null)
        #expect(text.storageClass == "null")
        #expect(text.byteCount == nil)

        let integer = try roundTrip(Int64?.none)
        #expect(integer.decoded == nil)
        #expect(integer.storageClass == "null")

        let data = try roundTrip(Data?.none)
        #expect(data.decoded == nil)
        #expect(data.storageClass == "null")
    }

    @Test("Optional.some binds its wrapped value")
    func someOptional() throws {
        // Proves an optional holding a value binds that value, not NULL.
        let stored = try roundTrip(String?.some("present"))
        #expect(stored.decoded == "present")
        #expect(stored.storageClass == "text")
    }

    @Test("SQLiteValue binds as itself")
    func rawValues() throws {
        // Proves each SQLiteValue case binds the storage class it names.
        #expect(try roundTrip(SQLiteValue.integer(7)).storageClass == "integer")
        #expect(try roundTrip(SQLiteValue.real(7.5)).storageClass == "real")
        #expect(try roundTrip(SQLiteValue.text("")).storageClass == "text")
        #expect(try roundTrip(SQLiteValue.blob(Data())).storageClass == "blob")
        #expect(try roundTrip(SQLiteValue.null).storageClass == "null")
    }
}

@Suite("Reading rows")
struct RowReadingTests {
    @Test("Columns read by index and by name agree, and names are case-insensitive")
    func columnsByIndexAndName() throws {
        // Proves one row of typed columns reads the same by 0-based index and by name in any letter case.
        try withConnection { connection, _ in
            try connection.execute(
                sql: """
                    CREATE TABLE mixed (
                        Amount INTEGER, Ratio REAL, Label TEXT, Payload BLOB, Flag INTEGER, Missing TEXT
                    )
                    """)
            try connection.execute(
                "INSERT INTO mixed VALUES (?, ?, ?, ?, ?, ?)",
                [Int64(-42), 2.0, "naïve 🚀", Data([0, 1, 2]), true, String?.none])
            let statement = try connection.prepare("SELECT Amount, Ratio, Label, Payload, Flag, Missing FROM mixed")
            let checked = try statement.fetchOne { row throws -> Bool in
                #expect(try row[0] as Int64 == -42)
                #expect(try row["amount"] as Int64 == -42)
                #expect(try row["AMOUNT"] as Int == -42)
                #expect(try row[1] as Double == 2.0)
                #expect(try row["rAtIo"] as Double == 2.0)
                #expect(try row[2] as String == "naïve 🚀")
                #expect(try row["label"] as String == "naïve 🚀")
                #expect(try row[3] as Data == Data([0, 1, 2]))
                #expect(try row["PAYLOAD"] as Data == Data([0, 1, 2]))
                #expect(try row[4] as Bool == true)
                #expect(try row["flag"] as Bool == true)
                #expect(try row[5] as String? == nil)
                #expect(try row["missing"] as String? == nil)
                return true
            }
            #expect(checked == true)
        }
    }

    @Test("A name used by two columns reads the leftmost one")
    func duplicateColumnNames() throws {
        // Proves the name lookup is deterministic when two result columns share a name (in any case).
        try withConnection { connection, _ in
            let value = try connection.prepare("SELECT 1 AS x, 2 AS X").fetchOne { row in try row["x"] as Int64 }
            #expect(value == 1)
        }
    }

    @Test("A cached statement reads columns by their current names after the schema changes")
    func columnNamesAfterSchemaChange() throws {
        // Proves name lookup follows SQLite's automatic re-preparation: when a migration recreates a
        // table with its columns in another order, a cached `SELECT *` still reads the named column.
        try withConnection { connection, _ in
            try connection.execute(
                sql: "CREATE TABLE t (a TEXT, b TEXT); INSERT INTO t VALUES ('value of a', 'value of b')")
            let sql = "SELECT * FROM t"
            #expect(try connection.cachedStatement(sql).fetchOne { row in try row["b"] as String } == "value of b")
            try connection.execute(
                sql: """
                    DROP TABLE t;
                    CREATE TABLE t (b TEXT, a TEXT);
                    INSERT INTO t (a, b) VALUES ('value of a', 'value of b');
                    """)
            let statement = try connection.cachedStatement(sql)
            #expect(try statement.fetchOne { row in try row["b"] as String } == "value of b")
            #expect(try statement.fetchOne { row in try row["a"] as String } == "value of a")
        }
    }

    @Test("Decoding NULL into a non-optional type throws a mismatch error")
    func nullIntoNonOptional() throws {
        // Proves a NULL column is never silently turned into 0, "" or empty Data.
        try withConnection { connection, _ in
            let statement = try connection.prepare("SELECT NULL AS empty")
            let byIndex = try #require(throws: SQLiteError.self) {
                _ = try statement.fetchOne { row in try row[0] as Int64 }
            }
            #expect(byIndex.code == .mismatch)
            #expect(byIndex.extendedCode == .mismatch)
            #expect(byIndex.message.contains("NULL"))
            #expect(byIndex.sql == "SELECT NULL AS empty")

            let byName = try #require(throws: SQLiteError.self) {
                _ = try statement.fetchOne { row in try row["EMPTY"] as String }
            }
            #expect(byName.code == .mismatch)
            #expect(throws: SQLiteError.self) { _ = try statement.fetchOne { row in try row[0] as Data } }
            #expect(throws: SQLiteError.self) { _ = try statement.fetchOne { row in try row[0] as Double } }
            #expect(throws: SQLiteError.self) { _ = try statement.fetchOne { row in try row[0] as Bool } }
        }
    }

    @Test("Decoding a value of another storage class throws a mismatch error")
    func wrongStorageClass() throws {
        // Proves text is not parsed as a number and a number is not turned into text or a blob.
        try withConnection { connection, _ in
            let statement = try connection.prepare("SELECT '12' AS text, 12 AS number, 1.5 AS real")
            let textAsInteger = try #require(throws: SQLiteError.self) {
                _ = try statement.fetchOne { row in try row["text"] as Int64 }
            }
            #expect(textAsInteger.code == .mismatch)
            #expect(throws: SQLiteError.self) { _ = try statement.fetchOne { row in try row["number"] as String } }
            #expect(throws: SQLiteError.self) { _ = try statement.fetchOne { row in try row["number"] as Data } }
            #expect(throws: SQLiteError.self) { _ = try statement.fetchOne { row in try row["real"] as Int64 } }
            // An optional decodes NULL as nil, but still refuses another storage class.
            #expect(throws: SQLiteError.self) { _ = try statement.fetchOne { row in try row["text"] as Int64? } }
        }
    }

    @Test("fetchOne returns nil when there is no row, fetchAll returns every row in order")
    func fetchOneAndAll() throws {
        // Proves the convenience fetches bind their arguments and report an empty result as nil or [].
        try withConnection { connection, _ in
            try connection.execute(sql: "CREATE TABLE numbers (x INTEGER); INSERT INTO numbers VALUES (3), (1), (2)")
            let statement = try connection.prepare("SELECT x FROM numbers WHERE x >= ? ORDER BY x")
            #expect(try statement.fetchAll([2]) { row in try row[0] as Int64 } == [2, 3])
            #expect(try statement.fetchAll([9]) { row in try row[0] as Int64 } == [])
            #expect(try statement.fetchOne([9]) { row in try row[0] as Int64 } == nil)
            #expect(try statement.fetchOne([1]) { row in try row[0] as Int64 } == 1)
        }
    }

    @Test("RowCursor steps lazily through many rows, and the statement can run again afterwards")
    func cursorOverManyRows() throws {
        // Proves a cursor yields every one of 10,000 rows in order, stays finished, and leaves the statement reusable.
        try withConnection { connection, _ in
            let rowCount: Int64 = 10_000
            try connection.execute(sql: "CREATE TABLE numbers (x INTEGER NOT NULL)")
            try connection.transaction {
                for x in 1...rowCount {
                    try connection.execute("INSERT INTO numbers (x) VALUES (?)", [x])
                }
            }
            let statement = try connection.prepare("SELECT x FROM numbers ORDER BY x")
            var cursor = try statement.rows()
            var expected: Int64 = 1
            while let row = try cursor.next() {
                #expect(try row[0] as Int64 == expected)
                expected += 1
            }
            #expect(expected == rowCount + 1)
            #expect(try cursor.next() == nil)

            var again = try statement.rows()
            let first = try #require(try again.next())
            #expect(try first[0] as Int64 == 1)
        }
    }

    @Test("RowCursor yields rows before a later row fails, then throws that row's error")
    func cursorIsLazy() throws {
        // Proves rows are produced one step at a time: the 4,999 rows before a failing row arrive
        // before the failure, which surfaces from next() as a SQLiteError.
        try withConnection { connection, _ in
            try connection.execute(sql: "CREATE TABLE numbers (x INTEGER PRIMARY KEY)")
            try connection.transaction {
                for x in Int64(1)...10_000 {
                    try connection.execute("INSERT INTO numbers (x) VALUES (?)", [x])
                }
            }
            // abs() of the smallest Int64 is an "integer overflow" error, raised only on row 5000;
            // rowid order needs no sorter, so nothing is computed ahead of the row being stepped to.
            let statement = try connection.prepare(
                "SELECT abs(CASE WHEN x = 5000 THEN -9223372036854775807 - 1 ELSE x END) FROM numbers ORDER BY x")
            var cursor = try statement.rows()
            var rowsBeforeFailure = 0
            let error = try #require(throws: SQLiteError.self) {
                while let row = try cursor.next() {
                    _ = try row[0] as Int64
                    rowsBeforeFailure += 1
                }
            }
            #expect(rowsBeforeFailure == 4_999)
            #expect(error.code == .error)
            #expect(error.message.contains("overflow"))
        }
    }
}
