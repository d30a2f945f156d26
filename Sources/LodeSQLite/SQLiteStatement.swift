import CLodeSQLite
import Foundation
import GRDB
import LodeCore
import LodeStore

/// Direct binding and stepping of a prepared statement for the hot paths
/// (apply, import), where GRDB's argument boxing costs half the throughput.
/// The statement belongs to GRDB, which finalizes it.
struct RawStatement {
    let statement: Statement
    var handle: OpaquePointer { statement.sqliteStatement }

    init(_ db: Database, _ sql: String) throws {
        statement = try db.makeStatement(sql: sql)
    }

    @inline(__always) func bind(_ index: Int32, _ value: Value) {
        switch value {
        case .null: sqlite3_bind_null(handle, index)
        case .integer(let i): sqlite3_bind_int64(handle, index, i)
        case .real(let d): sqlite3_bind_double(handle, index, d)
        case .text(let s): bind(index, s)
        case .blob(let b): bind(index, blob: b)
        }
    }

    @inline(__always) func bind(_ index: Int32, _ s: String) {
        var s = s
        s.withUTF8 { p in
            p.withMemoryRebound(to: CChar.self) { c in
                if let base = c.baseAddress {
                    _ = sqlite3_bind_text(handle, index, base, Int32(c.count), SQLITE_TRANSIENT)
                } else {
                    _ = sqlite3_bind_text(handle, index, "", 0, nil)
                }
            }
        }
    }

    @inline(__always) func bind(_ index: Int32, blob b: [UInt8]) {
        b.withUnsafeBytes { p in
            _ = sqlite3_bind_blob(handle, index, p.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(p.count), SQLITE_TRANSIENT)
        }
    }

    @inline(__always) func bind(_ index: Int32, _ i: Int64) { sqlite3_bind_int64(handle, index, i) }

    /// Steps once; true when a row is available.
    @inline(__always) func step(_ db: Database) throws -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        let message = String(cString: sqlite3_errmsg(db.sqliteConnection))
        sqlite3_reset(handle)
        // As GRDB would report it, so that the replica tells a full disk apart.
        throw DatabaseError(resultCode: ResultCode(rawValue: rc), message: message)
    }

    /// Steps to completion and resets.
    @inline(__always) func run(_ db: Database) throws {
        defer { sqlite3_reset(handle) }
        while try step(db) {}
    }

    @inline(__always) func reset() { sqlite3_reset(handle) }

    @inline(__always) func int64(_ col: Int32) -> Int64 { sqlite3_column_int64(handle, col) }

    @inline(__always) func isNull(_ col: Int32) -> Bool { sqlite3_column_type(handle, col) == SQLITE_NULL }

    /// A blob column's bytes in place: valid only until the statement
    /// steps, resets or reads the column as another type.
    func blobInPlace(_ col: Int32) -> UnsafeRawBufferPointer {
        let n = Int(sqlite3_column_bytes(handle, col))
        guard n > 0, let p = sqlite3_column_blob(handle, col) else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: p, count: n)
    }

    func blob(_ col: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(handle, col))
        guard n > 0, let p = sqlite3_column_blob(handle, col) else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: p, count: n))
    }

    func value(_ col: Int32) -> Value { columnValue(handle, col) }
}

/// Reads column `col` of the current row of a raw statement as a Value.
func columnValue(_ handle: OpaquePointer, _ col: Int32) -> Value {
    switch sqlite3_column_type(handle, col) {
    case SQLITE_INTEGER: return .integer(sqlite3_column_int64(handle, col))
    case SQLITE_FLOAT: return .real(sqlite3_column_double(handle, col))
    case SQLITE_TEXT:
        let n = Int(sqlite3_column_bytes(handle, col))
        guard let p = sqlite3_column_text(handle, col) else { return .text("") }
        return .text(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self))
    case SQLITE_BLOB:
        let n = Int(sqlite3_column_bytes(handle, col))
        guard n > 0, let p = sqlite3_column_blob(handle, col) else { return .blob([]) }
        return .blob([UInt8](UnsafeRawBufferPointer(start: p, count: n)))
    default: return .null
    }
}

/// SQLite's "copy this buffer now" destructor, which Swift cannot import.
let SQLITE_TRANSIENT = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

extension Value {
    /// The value as a GRDB database value.
    var databaseValue: DatabaseValue {
        switch self {
        case .null: .null
        case .integer(let i): i.databaseValue
        case .real(let d): d.databaseValue
        case .text(let s): s.databaseValue
        case .blob(let b): Data(b).databaseValue
        }
    }

    /// The value from a GRDB database value.
    init(_ dbv: DatabaseValue) {
        switch dbv.storage {
        case .null: self = .null
        case .int64(let i): self = .integer(i)
        case .double(let d): self = .real(d)
        case .string(let s): self = .text(s)
        case .blob(let d): self = .blob([UInt8](d))
        }
    }
}

/// Quotes an identifier for SQL.
func quote(_ name: String) -> String { SchemaSQL.quote(name) }

/// Process-wide SQLite settings, applied before any database is opened.
public enum SQLiteSetup {
    /// Puts SQLite in multi-thread mode: no mutex around every call, since
    /// GRDB never lets two threads use one connection at once; and turns off
    /// its memory statistics, which take a global mutex per allocation. Too
    /// late once SQLite has initialized (then it stays serialized, only
    /// slower): `applied` says whether it took effect.
    public static let prepare: Void = { _ = applied }()
    public static let applied: Bool = lode_sqlite_configure() == SQLITE_OK
}
