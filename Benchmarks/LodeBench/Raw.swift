import CLodeSQLite
import Foundation
import LodeStore

/// The floor: raw SQLite through the C API, one prepared statement, one
/// transaction, WAL, into a plain table. Rows are read from the same CSV
/// with the same reader and number parsing as `lode import`, so the ratio
/// measures what Lodestone adds to storing the rows.
enum Raw {
    static let insertSQL = "INSERT INTO sites VALUES (?, ?, ?, ?, ?, ?, ?)"
    static let upsertSQL = """
        INSERT INTO sites VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET
        name = ?2, country = ?3, year = ?4, tonnes = ?5, grade = ?6, note = ?7
        """

    /// Opens (creating if need be) a plain database in WAL mode, as an
    /// application would, holding the `sites` table.
    static func open(_ path: String, fresh: Bool) throws -> OpaquePointer {
        if fresh { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        var db: OpaquePointer?
        guard sqlite3_open(path, &db) == SQLITE_OK, let db else { throw BenchError("cannot open \(path)") }
        try exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;" + (fresh ? Rows.schema : ""))
        return db
    }

    static func prepare(_ db: OpaquePointer, _ sql: String) throws -> OpaquePointer {
        var st: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &st, nil) == SQLITE_OK, let st else { throw BenchError(String(cString: sqlite3_errmsg(db))) }
        return st
    }

    /// Inserts (or, with `upsert`, upserts) every row of `csv` into a
    /// database at `path`: a new one, or with `fresh: false` the one there.
    /// Returns the rows written.
    static func load(csv: String, into path: String, upsert: Bool, fresh: Bool = true) throws -> Int {
        let db = try open(path, fresh: fresh)
        defer { sqlite3_close(db) }
        let st = try prepare(db, upsert ? upsertSQL : insertSQL)
        defer { sqlite3_finalize(st) }
        let reader = try CSVReader(path: csv)
        _ = try reader.next()  // header
        try exec(db, "BEGIN")
        var n = 0
        while let f = try reader.next() {
            bindText(st, 1, f[0])
            bindText(st, 2, f[1])
            bindText(st, 3, f[2])
            sqlite3_bind_int64(st, 4, Int64(f[3]) ?? 0)
            sqlite3_bind_int64(st, 5, Int64(f[4]) ?? 0)
            sqlite3_bind_double(st, 6, Double(f[5]) ?? 0)
            bindText(st, 7, f[6])
            guard sqlite3_step(st) == SQLITE_DONE else { throw BenchError(String(cString: sqlite3_errmsg(db))) }
            sqlite3_reset(st)
            n += 1
        }
        try exec(db, "COMMIT")
        return n
    }

    /// What a new replica of a plain table does with no CRDT: reads every
    /// row of the database at `source` and upserts it into a new database at
    /// `path`, in one transaction. Returns the rows copied.
    static func copy(from source: String, into path: String) throws -> Int {
        let src = try open(source, fresh: false)
        defer { sqlite3_close(src) }
        let db = try open(path, fresh: true)
        defer { sqlite3_close(db) }
        let read = try prepare(src, "SELECT id, name, country, year, tonnes, grade, note FROM sites")
        defer { sqlite3_finalize(read) }
        let st = try prepare(db, upsertSQL)
        defer { sqlite3_finalize(st) }
        try exec(db, "BEGIN")
        var n = 0
        while sqlite3_step(read) == SQLITE_ROW {
            for c in Int32(0)..<7 {
                guard sqlite3_bind_value(st, c + 1, sqlite3_column_value(read, c)) == SQLITE_OK else {
                    throw BenchError(String(cString: sqlite3_errmsg(db)))
                }
            }
            guard sqlite3_step(st) == SQLITE_DONE else { throw BenchError(String(cString: sqlite3_errmsg(db))) }
            sqlite3_reset(st)
            n += 1
        }
        try exec(db, "COMMIT")
        return n
    }

    /// Bytes on disk of a database (the main file and its WAL), after a
    /// checkpoint that folds the WAL into the main file.
    static func fileBytes(_ path: String) throws -> Int {
        let db = try open(path, fresh: false)
        try exec(db, "PRAGMA wal_checkpoint(TRUNCATE)")
        sqlite3_close(db)
        return ["", "-wal"].reduce(0) { sum, suffix in
            sum + ((try? FileManager.default.attributesOfItem(atPath: path + suffix))?[.size] as? Int ?? 0)
        }
    }

    /// Bytes of each table and index of a database, largest first (SQLite's
    /// `dbstat`, pages in use and their free space included).
    static func structureBytes(_ path: String) throws -> [(name: String, bytes: Int)] {
        let db = try open(path, fresh: false)
        defer { sqlite3_close(db) }
        let st = try prepare(db, "SELECT name, sum(pgsize) AS b FROM dbstat GROUP BY name ORDER BY b DESC")
        defer { sqlite3_finalize(st) }
        var out: [(String, Int)] = []
        while sqlite3_step(st) == SQLITE_ROW {
            out.append((String(cString: sqlite3_column_text(st, 0)), Int(sqlite3_column_int64(st, 1))))
        }
        return out
    }

    static func exec(_ db: OpaquePointer, _ sql: String) throws {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw BenchError(String(cString: sqlite3_errmsg(db))) }
    }

    static func bindText(_ st: OpaquePointer, _ i: Int32, _ s: String) {
        var s = s
        s.withUTF8 { p in
            p.withMemoryRebound(to: CChar.self) { c in
                _ = sqlite3_bind_text(
                    st, i, c.baseAddress, Int32(c.count), unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self))
            }
        }
    }
}
