import CLodeSQLite
import Foundation
import LodeStore

/// The floor: raw SQLite through the C API, one prepared statement, one
/// transaction, WAL, into a plain table. Rows are read from the same CSV
/// with the same reader and number parsing as `lode import`, so the ratio
/// measures what Lodestone adds to storing the rows.
enum Raw {
    /// Inserts (or, with `upsert`, upserts) every row of `csv` into a new
    /// database at `path`. Returns the rows written.
    static func load(csv: String, into path: String, upsert: Bool) throws -> Int {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        var db: OpaquePointer?
        guard sqlite3_open(path, &db) == SQLITE_OK, let db else { throw BenchError("cannot open \(path)") }
        defer { sqlite3_close(db) }
        try exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; " + Rows.schema)
        var st: OpaquePointer?
        let sql =
            upsert
            ? """
            INSERT INTO sites VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET
            name = ?2, country = ?3, year = ?4, tonnes = ?5, grade = ?6, note = ?7
            """
            : "INSERT INTO sites VALUES (?, ?, ?, ?, ?, ?, ?)"
        guard sqlite3_prepare_v2(db, sql, -1, &st, nil) == SQLITE_OK, let st else { throw BenchError(String(cString: sqlite3_errmsg(db))) }
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
