import CLodeSQLite
import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// The read-only pragmas a query may run.
    static let readPragmas: Set<String> = [
        "TABLE_INFO", "TABLE_XINFO", "TABLE_LIST", "INDEX_LIST", "INDEX_INFO", "INDEX_XINFO", "FOREIGN_KEY_LIST",
        "INTEGRITY_CHECK", "QUICK_CHECK", "PAGE_COUNT", "PAGE_SIZE", "FREELIST_COUNT", "COMPILE_OPTIONS",
        "FUNCTION_LIST", "PRAGMA_LIST", "DATA_VERSION", "USER_VERSION", "ENCODING", "COLLATION_LIST",
    ]

    /// Refuses SQL that is not one read-only statement, with a message
    /// saying what to use instead.
    static func checkReadOnly(_ sql: String) throws {
        let statements = SQLLexer.statements(sql)
        guard !statements.isEmpty else { throw StoreError.badInput("no SQL statement given") }
        guard statements.count == 1 else { throw StoreError.badInput("query runs one statement; run each separately") }
        let t = statements[0]
        let head = t.first?.kind == .word ? t[0].text : ""
        switch head {
        case "SELECT", "WITH", "VALUES", "EXPLAIN": return
        case "PRAGMA":
            let name = t.count > 1 ? t[1].text.uppercased() : ""
            let isAssignment = t.contains { $0.kind == .other && $0.text == "=" }
            if readPragmas.contains(name) && !isAssignment { return }
            throw StoreError.badInput(
                "query may run read-only pragmas only (table_info, index_list, integrity_check, …), not PRAGMA \(name.lowercased())")
        case "INSERT", "UPDATE", "DELETE", "REPLACE":
            throw StoreError.badInput("query is read-only and \(head) writes", remedy: .exec)
        default:
            throw StoreError.badInput(
                "query is read-only and runs SELECT, WITH, VALUES, EXPLAIN or a read-only PRAGMA, not \(head.isEmpty ? "this statement" : head)")
        }
    }

    /// Runs one read-only statement on a read-only connection, calling
    /// `each` with the column names and then with every row as it is read.
    /// Anything that would write is refused before it runs.
    ///
    /// ```swift
    /// try await replica.query("SELECT symbol, name FROM elements") { event in print(event) }
    /// ```
    public func query(_ sql: String, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        try await query(sql, at: nil, each)
    }

    /// Runs one read-only statement as `query` does, on the dataset as it
    /// stood at `point` (`AsOfViews`).
    public func query(_ sql: String, asOf point: HistoryPoint, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        try await query(sql, at: point, each)
    }

    /// Refuses, in an as-of query, a table named with the schema `main`:
    /// the views that answer as of a time shadow the tables' plain names
    /// only, so `main.t` would read today's rows without a word.
    static func checkAsOfNames(_ sql: String) throws {
        let t = SQLLexer.tokens(sql)
        for i in t.indices.dropLast() {
            guard (t[i].kind == .word || t[i].kind == .quotedName), t[i].text.lowercased() == "main",
                t[i + 1].kind == .other, t[i + 1].text == "."
            else { continue }
            // The name as written (a bare word's token text is uppercased).
            var name = "…"
            if i + 2 < t.count {
                let n = t[i + 2]
                name = n.kind == .word ? String(decoding: sql.utf8.dropFirst(n.offset).prefix(while: SQLLexer.isWordByte), as: UTF8.self) : n.text
            }
            throw StoreError.badInput(
                "an as-of query names tables without a schema: main.\(name) would read today's rows, not those as of the time asked")
        }
    }

    private func query(_ sql: String, at point: HistoryPoint?, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        try SQLiteReplica.checkReadOnly(sql)
        if point != nil { try SQLiteReplica.checkAsOfNames(sql) }
        try await read { db in
            let scanAfter = self.asOfScanAfter.withLock { $0 }
            let views = try point.map { try AsOfViews(db, at: try self.stamp(of: $0, db), scanAfter: scanAfter) }
            defer { views?.drop() }
            let connection = db.sqliteConnection
            // While the query runs, no string or blob beyond a row's largest
            // (a reader could otherwise ask for randomblob(1e9) at will).
            let length = sqlite3_limit(connection, SQLITE_LIMIT_LENGTH, Int32(Limits.maxRowBytes))
            defer { sqlite3_limit(connection, SQLITE_LIMIT_LENGTH, length) }
            let statement: Statement
            do {
                statement = try db.makeStatement(sql: sql)
            } catch let e as DatabaseError {
                let msg = e.message ?? "\(e)"
                throw StoreError(msg.hasPrefix("no such") ? .notFound : .badInput, msg)
            }
            guard statement.isReadonly else {
                throw StoreError.badInput("query is read-only and this statement writes", remedy: .exec)
            }
            try SQLiteReplica.stream(db, statement, limit: self.stepTimeLimit, total: self.queryTimeLimit, each)
        }
    }

    /// Steps a statement, handing out the column names and then each row.
    static func stream(
        _ db: Database, _ statement: Statement, limit: TimeInterval, total: TimeInterval = .infinity, _ each: (QueryEvent) throws -> Void
    ) throws {
        let handle = statement.sqliteStatement
        let n = sqlite3_column_count(handle)
        let deadline = StepDeadline(limit: limit, total: total)
        defer { sqlite3_reset(handle) }
        try deadline.enforce(on: db) {
            // The column names go out after the first step, so that an
            // error there is an error of the whole answer, not a cut stream.
            var named = false
            while true {
                deadline.restart()
                let rc = sqlite3_step(handle)
                if !named && (rc == SQLITE_DONE || rc == SQLITE_ROW) {
                    try each(.columns((0..<n).map { String(cString: sqlite3_column_name(handle, $0)) }))
                    named = true
                }
                if rc == SQLITE_DONE { break }
                if rc == SQLITE_INTERRUPT {
                    throw StoreError.badInput(
                        deadline.totalExpired
                            ? "the query ran for more than \(Int(total)) seconds and was stopped"
                            : "the query computed for more than \(limit) seconds without producing a row and was stopped")
                }
                guard rc == SQLITE_ROW else {
                    throw StoreError.badInput(String(cString: sqlite3_errmsg(db.sqliteConnection)))
                }
                var row: [Value] = []
                row.reserveCapacity(Int(n))
                for i in 0..<n { row.append(columnValue(handle, i)) }
                try each(.row(row))
            }
        }
    }

    /// Streams every row of a user table, ordered by primary key.
    public func export(table: String, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        let tables = try await schema()
        guard let t = tables.first(where: { $0.name == table }) else {
            throw DatasetRules.noTable(table, in: dataset, tables: tables.map(\.name))
        }
        let cols = ([t.primaryKey] + t.orderedColumns.map(\.name)).map(quote).joined(separator: ", ")
        try await read { db in
            try SQLiteReplica.stream(
                db, try db.makeStatement(sql: "SELECT \(cols) FROM \(quote(table)) ORDER BY \(quote(t.primaryKey))"), limit: self.stepTimeLimit, each)
        }
    }

    /// The merged schemas of the user tables, by name.
    public func schema() async throws -> [TableSchema] {
        try await read { db in try SchemaCatalog.load(db).userSchemas }
    }

    /// Adds the tables and columns that `defs` declare and the dataset lacks
    /// (`DatasetRules.planAlter`); refuses any other change, changing nothing.
    public func alter(_ defs: [TableDef]) async throws -> SchemaChange {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may change the schema")
        }
        return try await edit { batch in
            let existing = batch.state.schema.tables.mapValues(\.schema)
            let plan = try DatasetRules.planAlter(existing: existing, declared: defs)
            if !plan.defs.isEmpty { try batch.define(plan.defs) }
            return plan.change
        }
    }

    /// Row counts of the user tables.
    public func rowCounts() async throws -> [TableRowCount] {
        let names = try await schema().map(\.name)
        return try await read { db in
            try names.map { TableRowCount(table: $0, rows: try Int.fetchOne(db, sql: "SELECT count(*) FROM \(quote($0))") ?? 0) }
        }
    }
}

/// How long SQL may run: each step (the time to the next row) and the
/// whole statement. Checked by SQLite's progress handler, which interrupts
/// the statement once either has passed.
final class StepDeadline {
    private let begun = DispatchTime.now().uptimeNanoseconds
    private var start = DispatchTime.now().uptimeNanoseconds
    private let limit: UInt64
    private let total: UInt64
    init(limit: TimeInterval, total: TimeInterval) {
        self.limit = limit.isFinite ? UInt64(limit * 1e9) : .max
        self.total = total.isFinite ? UInt64(total * 1e9) : .max
    }
    func restart() { start = DispatchTime.now().uptimeNanoseconds }
    var stepExpired: Bool { DispatchTime.now().uptimeNanoseconds - start > limit }
    var totalExpired: Bool { DispatchTime.now().uptimeNanoseconds - begun > total }

    /// Runs `body` with this deadline on `db`'s connection.
    func enforce<T>(on db: Database, _ body: () throws -> T) rethrows -> T {
        sqlite3_progress_handler(
            db.sqliteConnection, 10_000,
            { ctx in
                let d = Unmanaged<StepDeadline>.fromOpaque(ctx!).takeUnretainedValue()
                return d.stepExpired || d.totalExpired ? 1 : 0
            }, Unmanaged.passUnretained(self).toOpaque())
        defer { sqlite3_progress_handler(db.sqliteConnection, 0, nil, nil) }
        return try body()
    }
}
