import CLodeSQLite
import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Runs `INSERT`, `UPDATE` or `DELETE` statements as replicated edits.
    ///
    /// The statements run against the user tables inside a savepoint while
    /// SQLite's session extension records what they change; the savepoint is
    /// then rolled back, and the recorded changes are applied through the
    /// CRDT as local commits. So the SQL never writes the tables itself, and
    /// anything it did beyond rows of user tables is undone.
    ///
    /// ```swift
    /// let r = try await replica.exec("UPDATE facilities SET status = 'operating' WHERE id = 'mp-10x'")
    /// ```
    public func exec(_ sql: String) async throws -> WriteReport {
        try checkExec()
        guard try Self.statementCount(sql) > 0 else { throw StoreError.badInput("no SQL statement given") }
        return try await edit { [self] batch in
            try run(sql, in: batch)
            let commits = try batch.finish()
            return WriteReport(rowsChanged: batch.changedRows, commits: commits)
        }
    }

    /// Runs the statements of a file as `exec` runs a string, all of them
    /// in one transaction, reading the file a megabyte of statements at a
    /// time (`SQLScript`), so a script of any size runs in bounded memory.
    /// Each piece sees what the pieces before it wrote.
    ///
    /// ```swift
    /// let r = try await replica.exec(file: "corrections.sql")
    /// ```
    public func exec(file path: String) async throws -> WriteReport {
        try await exec(file: path, chunkBytes: 1 << 20)
    }

    func exec(file path: String, chunkBytes: Int) async throws -> WriteReport {
        try checkExec()
        return try await edit { [self] batch in
            var statements = 0
            try SQLScript(path: path, chunkBytes: chunkBytes).forEachChunk { sql in
                let n = try Self.statementCount(sql)
                guard n > 0 else { return }
                statements += n
                try run(sql, in: batch)
            }
            guard statements > 0 else { throw StoreError.badInput("no SQL statement given") }
            let commits = try batch.finish()
            return WriteReport(rowsChanged: batch.changedRows, commits: commits)
        }
    }

    private func checkExec() throws {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may change rows")
        }
    }

    /// How many statements `sql` holds; throws for any but `INSERT`,
    /// `UPDATE`, `DELETE` (`REPLACE`, `WITH`).
    private static func statementCount(_ sql: String) throws -> Int {
        let heads = SQLLexer.leadingKeywords(sql)
        for h in heads where !["INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"].contains(h) {
            let remedy: StoreError.Remedy? =
                switch h {
                case "SELECT", "VALUES", "EXPLAIN", "PRAGMA": .query
                case "CREATE", "ALTER", "DROP": .alter
                default: nil
                }
            throw StoreError.badInput("exec runs INSERT, UPDATE and DELETE only, not \(h.isEmpty ? "this statement" : h)", remedy: remedy)
        }
        return heads.count
    }

    /// Captures what `sql` changes and writes it through the CRDT into `batch`.
    /// A large change (a changeset over `sortedChangesetBytes`, thousands of
    /// rows) is set aside and written in key order (`SortedRows`): SQLite
    /// hands the changes out in the order of its hash table, which is a
    /// random leaf of every B-tree for each row.
    private func run(_ sql: String, in batch: LocalBatch) throws {
        let changeset = try capture(batch.db, sql)
        guard changeset.byteCount >= Self.sortedChangesetBytes else {
            try changeset.forEach(batch.state.schema) { try write($0, into: batch) }
            return
        }
        let sorted = try SortedRows(batch.db, width: 2)
        try changeset.forEach(batch.state.schema) { change in
            let body = change.encodedBody
            // What the commit would refuse is refused before it is set aside.
            try LocalCommitBuilder.checkSize(
                table: change.table, pk: change.pk, columns: change.values.map(\.0), values: change.values.map(\.1), bytes: body.count)
            try sorted.add(pk: change.pk, values: [.text(change.table), .blob(body)])
        }
        try sorted.drain { pk, values in
            guard case .text(let table) = values[0], case .blob(let body) = values[1] else {
                throw StoreError(.storage, "a change set aside came back damaged")
            }
            try write(try CapturedChange(table: table, pk: pk, body: body), into: batch)
        }
    }

    static let sortedChangesetBytes = 256 << 10

    /// Writes one captured change through the CRDT.
    private func write(_ change: CapturedChange, into batch: LocalBatch) throws {
        let t = try batch.table(change.table)
        switch change.kind {
        case .delete:
            try batch.delete(t, pk: change.pk)
        case .upsert:
            var columns: [String] = []
            var slots: [Int] = []
            var values: [Value] = []
            for (name, value) in change.values {
                guard let slot = t.slots[name], let def = t.bySlot[slot] else { continue }
                try check(value, against: def, table: t.name)
                columns.append(name)
                slots.append(slot)
                values.append(value)
            }
            if columns.isEmpty {
                // A row inserted with only its key still exists.
                guard let first = t.physical.first, let slot = t.slots[first.name] else { return }
                columns = [first.name]
                slots = [slot]
                values = [first.defaultValue]
            }
            try batch.put(t, pk: change.pk, columns: columns, slots: slots, values: values, onlyChanges: false)
        }
    }

    /// Refuses a value that does not fit its column: NULL in a NOT NULL
    /// column, or a storage class other than the declared type (an INTEGER
    /// in a REAL column is fine; SQLite's affinity already converted what it could).
    private func check(_ v: Value, against def: ColumnDef, table: String) throws {
        let fits: Bool
        switch (v, def.type) {
        case (.null, _): fits = !def.notNull
        case (.integer, .integer), (.integer, .real), (.real, .real), (.text, .text), (.blob, .blob): fits = true
        default: fits = false
        }
        guard !fits else { return }
        if v.isNull { throw StoreError.badInput("column \(table).\(def.name) is NOT NULL") }
        throw StoreError.badInput("column \(table).\(def.name) is \(def.type.sqlName), and \(v.typeName) value \(shownValue(v)) does not fit")
    }

    /// Runs `sql` in a savepoint under a session, rolls everything back, and
    /// returns the changes it made, as SQLite's compact changeset.
    private func capture(_ db: Database, _ sql: String) throws -> CapturedChangeset {
        let conn = db.sqliteConnection
        var session: OpaquePointer?
        guard sqlite3session_create(conn, "main", &session) == SQLITE_OK, let session else {
            throw StoreError(.storage, "cannot start a change capture session")
        }
        defer { sqlite3session_delete(session) }
        guard sqlite3session_attach(session, nil) == SQLITE_OK else {
            throw StoreError(.storage, "cannot attach the capture session")
        }
        try db.execute(sql: "SAVEPOINT lode_exec")
        let undo = "ROLLBACK TO lode_exec; RELEASE lode_exec"
        do {
            do {
                let deadline = StepDeadline(limit: execTimeLimit, total: execTimeLimit)
                try deadline.enforce(on: db) { try db.execute(sql: sql) }
            } catch let e as DatabaseError where e.resultCode == .SQLITE_INTERRUPT {
                throw StoreError.badInput(
                    "the statement ran for more than \(Int(execTimeLimit)) seconds and was stopped; nothing was written (split the change into smaller statements)"
                )
            } catch let e as DatabaseError {
                let msg = e.message ?? "\(e)"
                let code: StoreError.Code =
                    msg.hasPrefix("no such table") || msg.hasPrefix("no such column") || msg.contains("has no column") ? .notFound : .badInput
                throw StoreError(code, msg)
            }
            var n: Int32 = 0
            var buf: UnsafeMutableRawPointer?
            guard sqlite3session_changeset(session, &n, &buf) == SQLITE_OK else {
                throw StoreError(.storage, "cannot read the captured changes")
            }
            let changes = CapturedChangeset(bytes: buf, count: n)
            try db.execute(sql: undo)
            return changes
        } catch {
            try? db.execute(sql: undo)
            throw error
        }
    }
}

/// One row changed by an `exec` statement.
struct CapturedChange {
    enum Kind { case upsert, delete }
    var table: String
    var kind: Kind
    var pk: String
    /// The columns written (for an update, only those that changed).
    var values: [(String, Value)]

    init(table: String, kind: Kind, pk: String, values: [(String, Value)]) {
        self.table = table
        self.kind = kind
        self.pk = pk
        self.values = values
    }

    /// Kind and values, to be set aside (`SortedRows`) and read back.
    var encodedBody: [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.writeByte(kind == .delete ? 1 : 0)
        w.writeVarint(UInt64(values.count))
        for (name, value) in values {
            w.writeString(name)
            value.encode(into: &w)
        }
        return w.bytes
    }

    init(table: String, pk: String, body: [UInt8]) throws {
        self.table = table
        self.pk = pk
        (kind, values) = try body.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            let kind: Kind = try r.readByte() == 1 ? .delete : .upsert
            let n = try r.readCount(limit: Limits.maxColumns, "columns")
            var values: [(String, Value)] = []
            for _ in 0..<n { values.append((try r.readString(), try Value.decode(from: &r))) }
            return (kind, values)
        }
    }
}

/// The changes an `exec` made, held as SQLite's changeset bytes (a few
/// bytes per changed cell) and decoded one row at a time, so a statement
/// that touches a million rows never holds a million decoded rows.
final class CapturedChangeset {
    private let bytes: UnsafeMutableRawPointer?
    private let count: Int32

    init(bytes: UnsafeMutableRawPointer?, count: Int32) {
        self.bytes = bytes
        self.count = count
    }

    deinit { sqlite3_free(bytes) }

    /// The size of the changeset: a few bytes per changed cell.
    var byteCount: Int { Int(count) }

    /// Calls `body` with each changed row of a user table; refuses changes
    /// to Lodestone's own tables and keys that are not non-empty TEXT.
    func forEach(_ schema: SchemaCatalog, _ body: (CapturedChange) throws -> Void) throws {
        guard count > 0 else { return }
        var iter: OpaquePointer?
        guard sqlite3changeset_start(&iter, count, bytes) == SQLITE_OK, let iter else {
            throw StoreError(.storage, "cannot read the captured changes")
        }
        defer { sqlite3changeset_finalize(iter) }
        while sqlite3changeset_next(iter) == SQLITE_ROW {
            var tableName: UnsafePointer<CChar>?
            var ncol: Int32 = 0
            var op: Int32 = 0
            var indirect: Int32 = 0
            sqlite3changeset_op(iter, &tableName, &ncol, &op, &indirect)
            let name = tableName.map { String(cString: $0) } ?? ""
            guard let t = schema[name], !Identifier.isReserved(name) else { throw StoreError.managedTable(name) }
            let cols = [t.primaryKey] + t.physical.map(\.name)
            guard cols.count == Int(ncol) else { throw StoreError(.storage, "table \(name) changed shape during exec") }
            func value(_ old: Bool, _ i: Int32) throws -> Value? {
                var v: OpaquePointer?
                let rc = old ? sqlite3changeset_old(iter, i, &v) : sqlite3changeset_new(iter, i, &v)
                guard rc == SQLITE_OK, let v else { return nil }
                guard let value = sqliteValue(v) else {
                    throw StoreError.badInput(
                        "table \(name), column \(cols[Int(i)]): the new value is TEXT that is not valid UTF-8 (store bytes as a BLOB)")
                }
                return value
            }
            let keySource = op == SQLITE_INSERT ? try value(false, 0) : try value(true, 0)
            guard case .text(let key)? = keySource else {
                throw StoreError.badInput("table \(name): the primary key \(t.primaryKey) must be a non-NULL TEXT value")
            }
            guard !key.isEmpty else { throw StoreError.badInput("table \(name): the primary key may not be empty") }
            if op == SQLITE_DELETE {
                try body(CapturedChange(table: name, kind: .delete, pk: key, values: []))
            } else {
                var values: [(String, Value)] = []
                for i in 1..<ncol {
                    if let v = try value(false, i) { values.append((cols[Int(i)], v)) }
                }
                try body(CapturedChange(table: name, kind: .upsert, pk: key, values: values))
            }
        }
    }
}

/// Reads an `sqlite3_value` as a Value; nil for TEXT that is not valid
/// UTF-8 (SQLite lets `CAST(x'ff' AS TEXT)` make it; decoding it would
/// silently replace the user's bytes with U+FFFD everywhere).
func sqliteValue(_ v: OpaquePointer) -> Value? {
    switch sqlite3_value_type(v) {
    case SQLITE_INTEGER: return .integer(sqlite3_value_int64(v))
    case SQLITE_FLOAT: return .real(sqlite3_value_double(v))
    case SQLITE_TEXT:
        let n = Int(sqlite3_value_bytes(v))
        guard let p = sqlite3_value_text(v) else { return .text("") }
        return String(validating: UnsafeBufferPointer(start: p, count: n), as: UTF8.self).map { .text($0) }
    case SQLITE_BLOB:
        let n = Int(sqlite3_value_bytes(v))
        guard n > 0, let p = sqlite3_value_blob(v) else { return .blob([]) }
        return .blob([UInt8](UnsafeRawBufferPointer(start: p, count: n)))
    default: return .null
    }
}

/// A value as a user would type it, shortened.
func shownValue(_ v: Value) -> String {
    switch v {
    case .null: return "NULL"
    case .integer(let i): return String(i)
    case .real(let d): return String(d)
    case .text(let s): return s.count > 40 ? "'\(s.prefix(40))…'" : "'\(s)'"
    case .blob(let b): return "X'\(b.prefix(16).hexString)\(b.count > 16 ? "…" : "")'"
    }
}
