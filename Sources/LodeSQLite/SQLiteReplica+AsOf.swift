import CLodeSQLite
import Foundation
import GRDB
import LodeCore
import LodeStore

// The dataset as of a time, and what changed between two (DESIGN §12), read
// from `_lode_history` (what each commit wrote to each row written more
// than once) and `_lode_rows.last` (when each row was last written). A row
// not written since the time reads from its table as it is; only rows
// written since are merged from their own history (`RowAsOf`). Nothing
// replays the log.

extension SQLiteReplica {
    /// The largest stamp `point` includes: every counter of a time's
    /// millisecond, or the stamp of a commit this replica holds.
    func stamp(of point: HistoryPoint, _ db: Database) throws -> HLC {
        switch point {
        case .time(let millis):
            return HistoryPoint.stamp(millis: millis)
        case .commit(let site, let seq):
            let matches = try Row.fetchAll(
                db,
                sql: """
                    SELECT id, coalesce(name, hex(substr(key, 1, 4))) AS n FROM _lode_sites
                    WHERE lower(name) = lower(?1) OR (length(?1) >= 4 AND hex(key) LIKE upper(?1) || '%')
                    """, arguments: [site])
            guard let match = matches.first else {
                throw StoreError.notFound("no site \(site) in dataset \(dataset): name a site or give the first digits of its key")
            }
            guard matches.count == 1 else {
                throw StoreError.badInput(
                    "\(site) names \(matches.count) sites (\(matches.map { $0["n"] as String }.joined(separator: ", "))); give more of the key")
            }
            guard seq <= UInt64(Int64.max),
                let hlc = try Int64.fetchOne(
                    db, sql: "SELECT hlc FROM _lode_log WHERE site = ? AND seq = ?", arguments: [match["id"] as Int64, Int64(seq)])
            else {
                throw StoreError.notFound("this replica holds no commit \(seq) of site \(match["n"] as String)")
            }
            return HLC(rawValue: UInt64(bitPattern: hlc))
        }
    }

    /// What changed in the dataset's tables (or in `table` alone) between
    /// `from` and `to` (nil: now): rows added and deleted and cells changed,
    /// each with the value before and after and the write that made it
    /// (time, site, person). Streams as query results: the column names,
    /// then one row per changed cell (an added or deleted row gives one per
    /// column), ordered by table, key and column.
    public func diff(from: HistoryPoint, to: HistoryPoint?, table: String?, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        try await read { db in
            let start = try self.stamp(of: from, db)
            let end = try to.map { try self.stamp(of: $0, db) } ?? HLC(rawValue: UInt64(Int64.max))
            guard start <= end else { throw StoreError.badInput("diff --from must not be later than --to") }
            let schema = try SchemaCatalog.load(db)
            var tables = schema.tables.values.filter { !Identifier.isReserved($0.name) || Role.annotationTables.contains($0.name) }
            if let table {
                guard let t = schema[table], !Identifier.isReserved(table) || Role.annotationTables.contains(table) else {
                    throw DatasetRules.noTable(table, in: self.dataset, tables: schema.userSchemas.map(\.name))
                }
                tables = [t]
            }
            let reader = try HistoryReader(db)
            let names = try SiteRegistry.names(db)
            var people: [String: String?] = [:]
            let person = try db.makeStatement(sql: "SELECT person FROM _lode_log WHERE site = ? AND seq = ?")
            func who(_ w: RowWrite) throws -> [Value] {
                let number = reader.sites.numbers[w.site] ?? 0
                let key = "\(number)/\(w.seq)"
                if people[key] == nil { people[key] = try String.fetchOne(person, arguments: [number, Int64(w.seq)]) }
                let p = people[key] ?? nil
                return [.text(w.hlc.iso8601), .text(names[number] ?? w.site.short), p.map { .text($0) } ?? .null]
            }
            try each(.columns(["table", "key", "change", "column", "old", "new", "time", "site", "person"]))
            let deadline = StepDeadline(limit: self.stepTimeLimit, total: self.queryTimeLimit)
            for t in tables.sorted(by: { $0.name < $1.name }) {
                let keys = try String.fetchAll(
                    db, sql: "SELECT pk FROM _lode_rows WHERE tbl = ? AND last > ? ORDER BY pk", arguments: [t.id, Int64(bitPattern: start.rawValue)])
                func columnsAt(_ stamp: HLC) -> [ColumnDef] {
                    t.physical.filter { c in (t.schema.columns[c.name]?.firstStamp.hlc ?? .zero) <= stamp }
                }
                let columns = columnsAt(end)
                for pk in keys {
                    if deadline.totalExpired {
                        throw StoreError.badInput(
                            "the diff ran for more than \(Int(self.queryTimeLimit)) seconds and was stopped; narrow it with --table or times")
                    }
                    var before = RowAsOf()
                    var after = RowAsOf()
                    for w in try reader.writes(t, pk: pk, upTo: end) {
                        if w.hlc <= start { before.merge(w) }
                        after.merge(w)
                    }
                    let head: [Value] = [.text(t.name), .text(pk)]
                    switch (before.isPresent, after.isPresent) {
                    case (false, true):
                        let shown = columns.isEmpty ? [nil] : columns.map { Optional($0) }
                        for c in shown {
                            let cell = c.flatMap { t.slots[$0.name] }.flatMap { after.visible($0) }
                            let value = c.map { def in SQLiteAffinity.stored(cell?.value ?? def.defaultValue, in: def.type) }
                            let by = cell.flatMap { s in reader.write(s.stamp) } ?? after.lengthWrite!
                            try each(.row(head + [.text("added"), c.map { .text($0.name) } ?? .null, .null, value ?? .null] + who(by)))
                        }
                    case (true, false):
                        let existed = columnsAt(start)
                        let shown = existed.isEmpty ? [nil] : existed.map { Optional($0) }
                        for c in shown {
                            let value = c.map { def in
                                SQLiteAffinity.stored(t.slots[def.name].flatMap { before.visible($0)?.value } ?? def.defaultValue, in: def.type)
                            }
                            try each(
                                .row(head + [.text("deleted"), c.map { .text($0.name) } ?? .null, value ?? .null, .null] + who(after.lengthWrite!)))
                        }
                    case (true, true):
                        for def in columns {
                            guard let slot = t.slots[def.name] else { continue }
                            let existed = (t.schema.columns[def.name]?.firstStamp.hlc ?? .zero) <= start
                            let old = existed ? SQLiteAffinity.stored(before.visible(slot)?.value ?? def.defaultValue, in: def.type) : Value.null
                            let cell = after.visible(slot)
                            let new = SQLiteAffinity.stored(cell?.value ?? def.defaultValue, in: def.type)
                            guard old != new else { continue }
                            let by = cell.flatMap { reader.write($0.stamp) } ?? after.lengthWrite!
                            try each(.row(head + [.text("changed"), .text(def.name), old, new] + who(by)))
                        }
                    case (false, false):
                        continue
                    }
                }
            }
        }
    }
}

/// Reads rows' writes from `_lode_history` on one connection, by raw
/// statement (it also serves the SQL function of as-of views, which runs
/// while another statement of the connection is stepping). A row written
/// once has no history entry; its write is read from its table row
/// (`FirstWrite`).
final class HistoryReader: @unchecked Sendable {
    let sites: SiteRegistry
    private let entries: RawStatement
    private let metas: RawStatement
    private let db: Database
    /// The writes of the last row read, by stamp (to name a cell's writer).
    private var last: [CellStampKey: RowWrite] = [:]

    struct CellStampKey: Hashable {
        let hlc: HLC
        let site: SiteID
    }

    init(_ db: Database) throws {
        self.db = db
        sites = try SiteRegistry.load(db)
        entries = try RawStatement(db, "SELECT hlc, site, seq, cl, cells FROM _lode_history WHERE tbl = ? AND pk = ? AND hlc <= ?")
        metas = try RawStatement(db, RowMeta.select)
    }

    /// The writes to row `pk` of table `t` stamped at or before `upTo`.
    func writes(_ t: TableState, pk: String, upTo: HLC) throws -> [RowWrite] {
        last.removeAll(keepingCapacity: true)
        metas.bind(1, t.id)
        metas.bind(2, pk)
        let meta: RowMeta
        do {
            defer { metas.reset() }
            guard try metas.step(db) else { return [] }
            meta = try RowMeta(metas)
        }
        if !meta.kept {
            guard meta.last <= upTo.rawValue else { return [] }
            let w = try FirstWrite.read(db, t, pk: pk, meta: meta, sites: sites)
            last[CellStampKey(hlc: w.hlc, site: w.site)] = w
            return [w]
        }
        defer { entries.reset() }
        entries.bind(1, t.id)
        entries.bind(2, pk)
        entries.bind(3, Int64(bitPattern: upTo.rawValue))
        var out: [RowWrite] = []
        while try entries.step(db) {
            guard let site = sites.key(entries.int64(1)) else {
                throw StoreError(.storage, "the history of \(pk) names site number \(entries.int64(1)), which the file does not know")
            }
            let w = RowWrite(
                hlc: HLC(rawValue: UInt64(bitPattern: entries.int64(0))), site: site, seq: UInt64(bitPattern: entries.int64(2)),
                length: UInt64(bitPattern: entries.int64(3)), cells: try RowWrite.decodeCells(entries.blob(4)))
            out.append(w)
            last[CellStampKey(hlc: w.hlc, site: w.site)] = w
        }
        return out
    }

    /// The write of the last row read that `stamp` belongs to.
    func write(_ stamp: CellStamp) -> RowWrite? { last[CellStampKey(hlc: stamp.hlc, site: stamp.site)] }
}

/// Temporary views, one per table, that shadow the dataset's tables with
/// their contents as of a stamp while one query runs on a read connection
/// (SQLite resolves an unqualified name in `temp` first). Each view reads
/// the rows with no write after the stamp from the table itself, and merges
/// the others from their history through the `lode_as_of` function.
/// Columns added after the stamp are left out; a table defined after it
/// answers with an error naming it.
final class AsOfViews: @unchecked Sendable {
    private let db: Database
    private let names: [String]
    private let functions: [DatabaseFunction]

    init(_ db: Database, at stamp: HLC) throws {
        self.db = db
        let schema = try SchemaCatalog.load(db)
        let rows = AsOfRows(reader: try HistoryReader(db), tables: schema.tables.values, stamp: stamp)
        let at = Int64(bitPattern: stamp.rawValue)
        let asOf = DatabaseFunction("lode_as_of", argumentCount: 3, pure: false) { args in
            guard let table = Int64.fromDatabaseValue(args[0]), let pk = String.fromDatabaseValue(args[1]),
                let slot = Int.fromDatabaseValue(args[2])
            else { return nil }
            return try rows.value(table: table, pk: pk, slot: slot)
        }
        let label = stamp.iso8601
        let absent = DatabaseFunction("lode_as_of_absent", argumentCount: 1, pure: false) { args in
            throw DatabaseError(resultCode: .SQLITE_ERROR, message: "no such table as of \(label): \(String.fromDatabaseValue(args[0]) ?? "?")")
        }
        functions = [asOf, absent]
        for f in functions { db.add(function: f) }
        var made: [String] = []
        do {
            for t in schema.tables.values.sorted(by: { $0.id < $1.id }) {
                let columns = t.physical.filter { c in (t.schema.columns[c.name]?.firstStamp.hlc ?? .zero) <= stamp }
                let defined = t.schema.stamp.hlc <= stamp || !columns.isEmpty
                let names = ([t.primaryKey] + columns.map(\.name)).map(quote).joined(separator: ", ")
                let sql: String
                if defined {
                    let merged = columns.map { "lode_as_of(\(t.id), c.pk, \(t.slots[$0.name]!))" }
                    sql = """
                        CREATE TEMP VIEW \(quote(t.name))(\(names)) AS
                        SELECT \(names) FROM main.\(quote(t.name)) AS r
                         WHERE (SELECT m.last FROM main._lode_rows m WHERE m.tbl = \(t.id) AND m.pk = r.\(quote(t.primaryKey))) <= \(at)
                        UNION ALL
                        SELECT \((["c.pk"] + merged).joined(separator: ", "))
                          FROM (SELECT pk FROM main._lode_rows WHERE tbl = \(t.id) AND last > \(at)) AS c
                         WHERE lode_as_of(\(t.id), c.pk, -1)
                        """
                } else {
                    // Every column, so that any query of it compiles and
                    // then says the table did not exist yet.
                    let all = [t.primaryKey] + t.physical.map(\.name)
                    sql = """
                        CREATE TEMP VIEW \(quote(t.name))(\(all.map(quote).joined(separator: ", "))) AS
                        SELECT \(all.map { _ in "NULL" }.joined(separator: ", ")) WHERE lode_as_of_absent(\(quoteLiteral(t.name)))
                        """
                }
                try db.execute(sql: "DROP VIEW IF EXISTS temp.\(quote(t.name))")
                try db.execute(sql: sql)
                made.append(t.name)
            }
        } catch {
            names = made
            drop()
            throw error
        }
        names = made
    }

    /// Drops the views and the functions, leaving the connection as it was.
    func drop() {
        for n in names { try? db.execute(sql: "DROP VIEW IF EXISTS temp.\(quote(n))") }
        for f in functions { db.remove(function: f) }
    }
}

/// The rows an as-of view merges from history, for its `lode_as_of`
/// function: the last row merged is kept, since the function is called for
/// its presence and then for each column, one row after another.
final class AsOfRows: @unchecked Sendable {
    private let reader: HistoryReader
    private let tables: [Int64: TableState]
    private let stamp: HLC
    private var cached: (table: Int64, pk: String, row: RowAsOf)?

    init<S: Sequence>(reader: HistoryReader, tables: S, stamp: HLC) where S.Element == TableState {
        self.reader = reader
        self.tables = Dictionary(uniqueKeysWithValues: tables.map { ($0.id, $0) })
        self.stamp = stamp
    }

    /// Slot -1: whether the row exists; else the value the row shows in the slot.
    func value(table: Int64, pk: String, slot: Int) throws -> DatabaseValue? {
        guard let t = tables[table] else { return nil }
        if cached == nil || cached!.table != table || cached!.pk != pk {
            cached = (table, pk, RowAsOf(try reader.writes(t, pk: pk, upTo: stamp)))
        }
        let row = cached!.row
        if slot < 0 { return row.isPresent.databaseValue }
        guard slot < t.bySlot.count, let def = t.bySlot[slot] else { return nil }
        return SQLiteAffinity.stored(row.visible(slot)?.value ?? def.defaultValue, in: def.type).databaseValue
    }
}

/// Text as an SQL string literal.
func quoteLiteral(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }
