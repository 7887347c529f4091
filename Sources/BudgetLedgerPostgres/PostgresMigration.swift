/// One numbered step of the PostgreSQL schema: `migrations/postgres/NNNN_name.sql`, embedded at
/// build time (the `EmbedMigrations` plugin), applied in one transaction.
public struct PostgresMigration: Sendable, Equatable {
    /// The number in the file's name; applied in ascending order.
    public let version: Int
    /// The file's name.
    public let name: String
    /// The file's text, byte for byte.
    public let sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}
