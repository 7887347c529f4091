import CSQLite
import Foundation

/// One SQLite value, as stored: the five storage classes.
/// See <https://www.sqlite.org/datatype3.html>.
public enum SQLiteValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob(Data)
}

/// A Swift value that can be bound to a statement parameter.
public protocol SQLiteBindable {
    /// The SQLite value this Swift value is stored as.
    var sqliteValue: SQLiteValue { get }
}

/// A Swift value that can be read from a result column.
public protocol SQLiteColumnDecodable {
    /// Decodes the value, or returns nil when the stored value has another type (NULL included).
    static func decode(from value: SQLiteValue) -> Self?
}

extension SQLiteValue: SQLiteBindable, SQLiteColumnDecodable {
    public var sqliteValue: SQLiteValue { self }
    public static func decode(from value: SQLiteValue) -> SQLiteValue? { value }
}

extension Int64: SQLiteBindable, SQLiteColumnDecodable {
    public var sqliteValue: SQLiteValue { .integer(self) }
    public static func decode(from value: SQLiteValue) -> Int64? {
        if case .integer(let integer) = value { return integer }
        return nil
    }
}

extension Int: SQLiteBindable, SQLiteColumnDecodable {
    public var sqliteValue: SQLiteValue { .integer(Int64(self)) }
    public static func decode(from value: SQLiteValue) -> Int? {
        if case .integer(let integer) = value { return Int(exactly: integer) }
        return nil
    }
}

extension Bool: SQLiteBindable, SQLiteColumnDecodable {
    public var sqliteValue: SQLiteValue { .integer(self ? 1 : 0) }
    public static func decode(from value: SQLiteValue) -> Bool? {
        if case .integer(let integer) = value { return integer != 0 }
        return nil
    }
}

extension Double: SQLiteBindable, SQLiteColumnDecodable {
    public var sqliteValue: SQLiteValue { .real(self) }
    public static func decode(from value: SQLiteValue) -> Double? {
        switch value {
        case .real(let real): return real
        case .integer(let integer): return Double(integer)
        default: return nil
        }
    }
}

extension String: SQLiteBindable, SQLiteColumnDecodable {
    public var sqliteValue: SQLiteValue { .text(self) }
    public static func decode(from value: SQLiteValue) -> String? {
        if case .text(let text) = value { return text }
        return nil
    }
}

extension Data: SQLiteBindable, SQLiteColumnDecodable {
    public var sqliteValue: SQLiteValue { .blob(self) }
    public static func decode(from value: SQLiteValue) -> Data? {
        if case .blob(let data) = value { return data }
        return nil
    }
}

extension Optional: SQLiteBindable where Wrapped: SQLiteBindable {
    public var sqliteValue: SQLiteValue { self?.sqliteValue ?? .null }
}

extension Optional: SQLiteColumnDecodable where Wrapped: SQLiteColumnDecodable {
    public static func decode(from value: SQLiteValue) -> Wrapped?? {
        if case .null = value { return .some(nil) }
        guard let wrapped = Wrapped.decode(from: value) else { return nil }
        return .some(wrapped)
    }
}
