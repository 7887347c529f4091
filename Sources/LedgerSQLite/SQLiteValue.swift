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
///
/// The conformances below are `@inlinable`, as is `Row`'s subscript: the ledger decodes a
/// dozen columns per write, and a generic call across modules looked up the type's metadata at
/// run time for each (callgrind: ~5,000 instructions per check-and-consume).
public protocol SQLiteColumnDecodable {
    /// Decodes the value, or returns nil when the stored value has another type (NULL included).
    static func decode(from value: SQLiteValue) -> Self?
}

extension SQLiteValue: SQLiteBindable, SQLiteColumnDecodable {
    @inlinable public var sqliteValue: SQLiteValue { self }
    @inlinable public static func decode(from value: SQLiteValue) -> SQLiteValue? { value }
}

extension Int64: SQLiteBindable, SQLiteColumnDecodable {
    @inlinable public var sqliteValue: SQLiteValue { .integer(self) }
    @inlinable public static func decode(from value: SQLiteValue) -> Int64? {
        if case .integer(let integer) = value { return integer }
        return nil
    }
}

extension Int: SQLiteBindable, SQLiteColumnDecodable {
    @inlinable public var sqliteValue: SQLiteValue { .integer(Int64(self)) }
    @inlinable public static func decode(from value: SQLiteValue) -> Int? {
        if case .integer(let integer) = value { return Int(exactly: integer) }
        return nil
    }
}

extension Bool: SQLiteBindable, SQLiteColumnDecodable {
    @inlinable public var sqliteValue: SQLiteValue { .integer(self ? 1 : 0) }
    @inlinable public static func decode(from value: SQLiteValue) -> Bool? {
        if case .integer(let integer) = value { return integer != 0 }
        return nil
    }
}

extension Double: SQLiteBindable, SQLiteColumnDecodable {
    @inlinable public var sqliteValue: SQLiteValue { .real(self) }
    @inlinable public static func decode(from value: SQLiteValue) -> Double? {
        switch value {
        case .real(let real): return real
        case .integer(let integer): return Double(integer)
        default: return nil
        }
    }
}

extension String: SQLiteBindable, SQLiteColumnDecodable {
    @inlinable public var sqliteValue: SQLiteValue { .text(self) }
    @inlinable public static func decode(from value: SQLiteValue) -> String? {
        if case .text(let text) = value { return text }
        return nil
    }
}

extension Data: SQLiteBindable, SQLiteColumnDecodable {
    @inlinable public var sqliteValue: SQLiteValue { .blob(self) }
    @inlinable public static func decode(from value: SQLiteValue) -> Data? {
        if case .blob(let data) = value { return data }
        return nil
    }
}

extension Optional: SQLiteBindable where Wrapped: SQLiteBindable {
    @inlinable public var sqliteValue: SQLiteValue { self?.sqliteValue ?? .null }
}

extension Optional: SQLiteColumnDecodable where Wrapped: SQLiteColumnDecodable {
    @inlinable public static func decode(from value: SQLiteValue) -> Wrapped?? {
        if case .null = value { return .some(nil) }
        guard let wrapped = Wrapped.decode(from: value) else { return nil }
        return .some(wrapped)
    }
}
