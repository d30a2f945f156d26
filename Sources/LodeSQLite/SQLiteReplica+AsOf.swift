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
    /// millisecond, or the stamp of a commit this replica holds. A point
    /// before the history's horizon (`compact`) is refused.
    func stamp(of point: HistoryPoint, _ db: Database) throws -> HLC {
        let stamp = try stampIgnoringHorizon(of: point, db)
        try checkNotBeforeHorizon(stamp, db)
        return stamp
    }

    private func stampIgnoringHorizon(of point: HistoryPoint, _ db: Database) throws -> HLC {
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
    /// each with the value at `from` and at `to` and the write that made the
    /// value at `to` (time, site, person; none when the row did not exist
    /// then). A `to` earlier than `from` gives the changes back. Streams as
    /// query results: the column names, then one row per changed cell (an
    /// added or deleted row gives one per column), ordered by table, key and
    /// column.
    public func diff(from: HistoryPoint, to: HistoryPoint?, table: String?, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        try await read { db in
            let start = try self.stamp(of: from, db)
            let end = try to.map { try self.stamp(of: $0, db) } ?? HLC(rawValue: UInt64(Int64.max))
            let (earlier, later) = (min(start, end), max(start, end))
            let schema = try SchemaCatalog.load(db)
            var tables = schema.tables.values.filter { !Identifier.isReserved($0.name) || Role.annotationTables.contains($0.name) }
            if let table {
                guard let t = schema[table], !Identifier.isReserved(table) || Role.annotationTables.contains(table) else {
                    throw DatasetRules.noTable(table, in: self.dataset, tables: schema.userSchemas.map(\.name))
                }
                tables = [t]
            }
            let reader = try HistoryReader(db, naming: true)
            let names = try SiteRegistry.names(db)
            var people: [String: String?] = [:]
            let person = try db.makeStatement(sql: "SELECT person FROM _lode_log WHERE site = ? AND seq = ?")
            func who(_ write: RowWrite?) throws -> [Value] {
                guard let w = write else { return [.null, .null, .null] }
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
                    db, sql: "SELECT pk FROM _lode_rows WHERE tbl = ? AND last > ? ORDER BY pk",
                    arguments: [t.id, Int64(bitPattern: earlier.rawValue)])
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
                    for w in try reader.writes(t, pk: pk, upTo: later) {
                        if w.hlc <= start { before.merge(w) }
                        if w.hlc <= end { after.merge(w) }
                    }
                    let head: [Value] = [.text(t.name), .text(pk)]
                    switch (before.isPresent, after.isPresent) {
                    case (false, true):
                        let shown = columns.isEmpty ? [nil] : columns.map { Optional($0) }
                        for c in shown {
                            let cell = c.flatMap { t.slots[$0.name] }.flatMap { after.visible($0) }
                            let value = c.map { def in SQLiteAffinity.stored(cell?.value ?? def.defaultValue, in: def.type) }
                            let by = cell.flatMap { s in reader.write(s.stamp) } ?? after.lengthWrite
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
                                .row(head + [.text("deleted"), c.map { .text($0.name) } ?? .null, value ?? .null, .null] + who(after.lengthWrite)))
                        }
                    case (true, true):
                        for def in columns {
                            guard let slot = t.slots[def.name] else { continue }
                            let existed = (t.schema.columns[def.name]?.firstStamp.hlc ?? .zero) <= start
                            let old = existed ? SQLiteAffinity.stored(before.visible(slot)?.value ?? def.defaultValue, in: def.type) : Value.null
                            let cell = after.visible(slot)
                            let new = SQLiteAffinity.stored(cell?.value ?? def.defaultValue, in: def.type)
                            guard old != new else { continue }
                            let by = cell.flatMap { reader.write($0.stamp) } ?? after.lengthWrite
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

    /// Whether `write(_:)` is wanted (the diff names each change's writer).
    private let naming: Bool

    init(_ db: Database, naming: Bool = false) throws {
        self.db = db
        self.naming = naming
        sites = try SiteRegistry.load(db)
        entries = try RawStatement(db, "SELECT hlc, site, seq, cl, cells FROM _lode_history WHERE tbl = ? AND pk = ? AND hlc <= ?")
        metas = try RawStatement(db, RowMeta.select)
    }

    /// The writes to row `pk` of table `t` stamped at or before `upTo`.
    func writes(_ t: TableState, pk: String, upTo: HLC) throws -> [RowWrite] {
        metas.bind(1, t.id)
        metas.bind(2, pk)
        let meta: RowMeta
        do {
            defer { metas.reset() }
            guard try metas.step(db) else { return [] }
            meta = try RowMeta(metas)
        }
        return try writes(t, pk: pk, meta: meta, upTo: upTo)
    }

    /// The same, for a row whose `_lode_rows` state the caller read.
    func writes(_ t: TableState, pk: String, meta: RowMeta, upTo: HLC) throws -> [RowWrite] {
        if naming { last.removeAll(keepingCapacity: true) }
        if !meta.kept {
            guard meta.last <= upTo.rawValue else { return [] }
            let ws = try FirstWrite.read(db, t, pk: pk, meta: meta, sites: sites)
            if naming { for w in ws { last[CellStampKey(hlc: w.hlc, site: w.site)] = w } }
            return ws
        }
        defer { entries.reset() }
        entries.bind(1, t.id)
        entries.bind(2, pk)
        entries.bind(3, Int64(bitPattern: upTo.rawValue))
        var out: [RowWrite] = []
        while try entries.step(db) {
            let w = try HistoryReader.write(entries, pk: pk, sites: sites)
            out.append(w)
            if naming { last[CellStampKey(hlc: w.hlc, site: w.site)] = w }
        }
        return out
    }

    /// The history entry `s` is on: its columns are `hlc, site, seq, cl,
    /// cells`, in that order.
    static func write(_ s: RawStatement, pk: String, sites: SiteRegistry) throws -> RowWrite {
        guard let site = sites.key(s.int64(1)) else {
            throw StoreError(.storage, "the history of \(pk) names site number \(s.int64(1)), which the file does not know")
        }
        return RowWrite(
            hlc: HLC(rawValue: UInt64(bitPattern: s.int64(0))), site: site, seq: UInt64(bitPattern: s.int64(2)),
            length: UInt64(bitPattern: s.int64(3)), cells: try RowWrite.decodeCells(s.blobInPlace(4)))
    }

    /// The write of the last row read that `stamp` belongs to.
    func write(_ stamp: CellStamp) -> RowWrite? { last[CellStampKey(hlc: stamp.hlc, site: stamp.site)] }
}

/// Temporary views, one per table, that shadow the dataset's tables with
/// their contents as of a stamp while one query runs on a read connection
/// (SQLite resolves an unqualified name in `temp` first). Each view reads
/// the rows with no write after the stamp from the table itself, and the
/// others from a virtual table that merges each from its history
/// (`AsOfTable`). Columns added after the stamp are left out; a table
/// defined after it answers with an error naming it.
final class AsOfViews: @unchecked Sendable {
    private let db: Database
    private let names: [String]
    private let tables: [String]
    private let functions: [DatabaseFunction]
    private let rows: AsOfRows

    init(_ db: Database, at stamp: HLC, scanAfter: Int = AsOfRows.scanAfter) throws {
        self.db = db
        let schema = try SchemaCatalog.load(db)
        rows = try AsOfRows(db, reader: try HistoryReader(db), tables: schema.tables.values, stamp: stamp, scanAfter: scanAfter)
        rows.register(on: db.sqliteConnection)
        let label = stamp.iso8601
        let absent = DatabaseFunction("lode_as_of_absent", argumentCount: 1, pure: false) { args in
            throw DatabaseError(resultCode: .SQLITE_ERROR, message: "no such table as of \(label): \(String.fromDatabaseValue(args[0]) ?? "?")")
        }
        functions = [absent]
        for f in functions { db.add(function: f) }
        var made: [String] = []
        var virtual: [String] = []
        do {
            for t in schema.tables.values.sorted(by: { $0.id < $1.id }) {
                let columns = AsOfRows.columns(of: t, at: stamp)
                let defined = t.schema.stamp.hlc <= stamp || !columns.isEmpty
                let names = ([t.primaryKey] + columns.map(\.name)).map(quote).joined(separator: ", ")
                let sql: String
                if defined {
                    // Branch one: rows not written since, as the table
                    // holds them (`lode_as_of_current`). Branch two: the
                    // others, merged from their history (`AsOfTable`).
                    let merged = AsOfTable.name(t)
                    try db.execute(sql: "DROP TABLE IF EXISTS temp.\(quote(merged))")
                    try db.execute(sql: "CREATE VIRTUAL TABLE temp.\(quote(merged)) USING \(AsOfTable.module)(\(t.id))")
                    virtual.append(merged)
                    sql = """
                        CREATE TEMP VIEW \(quote(t.name))(\(names)) AS
                        SELECT \(names) FROM main.\(quote(t.name)) AS r
                         WHERE lode_as_of_current(\(t.id), r.\(quote(t.primaryKey)))
                        UNION ALL
                        SELECT \(names) FROM temp.\(quote(merged))
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
            tables = virtual
            drop()
            throw error
        }
        names = made
        tables = virtual
    }

    /// Drops the views, the virtual tables and the functions, leaving the
    /// connection as it was.
    func drop() {
        for n in names { try? db.execute(sql: "DROP VIEW IF EXISTS temp.\(quote(n))") }
        for n in tables { try? db.execute(sql: "DROP TABLE IF EXISTS temp.\(quote(n))") }
        for f in functions { db.remove(function: f) }
        rows.unregister(from: db.sqliteConnection)
    }
}

/// What the as-of views of one query share: the stamp, the connection's
/// history reader, and for `lode_as_of_current(table, pk)` (SQLite's C API:
/// it runs for every row of every table read) the keys written since.
final class AsOfRows: @unchecked Sendable {
    let reader: HistoryReader
    private let tables: [Int64: TableState]
    let stamp: HLC
    let db: Database
    private let lastWrite: RawStatement
    private let written: RawStatement
    /// Per table: rows asked about one by one so far, and once that passes
    /// `scanAfter`, the keys of every row written since the stamp.
    private var asked: [Int64: Int] = [:]
    private var writtenSince: [Int64: SortedKeys] = [:]
    /// The table asked about last by `isCurrent`, and its keys written since.
    private var current: (table: Int64, keys: SortedKeys)?
    /// After this many rows of a table asked about one by one, the query is
    /// taken for a scan: the rows written since are read once, in one pass.
    static let scanAfter = 2000

    private let scanAfter: Int

    init<S: Sequence>(_ db: Database, reader: HistoryReader, tables: S, stamp: HLC, scanAfter: Int) throws where S.Element == TableState {
        self.db = db
        self.scanAfter = scanAfter
        lastWrite = try RawStatement(db, "SELECT last FROM _lode_rows WHERE tbl = ? AND pk = ?")
        written = try RawStatement(db, "SELECT pk, kept FROM _lode_rows WHERE tbl = ? AND last > ?")
        self.reader = reader
        self.tables = Dictionary(uniqueKeysWithValues: tables.map { ($0.id, $0) })
        self.stamp = stamp
    }

    /// The columns `t` had at `stamp`, in order.
    static func columns(of t: TableState, at stamp: HLC) -> [ColumnDef] {
        t.physical.filter { c in (t.schema.columns[c.name]?.firstStamp.hlc ?? .zero) <= stamp }
    }

    /// Table `id` as of the stamp, for its virtual table.
    func table(_ id: Int64) -> AsOfTable? {
        tables[id].map { AsOfTable(rows: self, table: $0, columns: AsOfRows.columns(of: $0, at: stamp)) }
    }

    /// True when row `pk` of `table` was not written after the stamp, so
    /// the table holds it as it was. A point lookup asks about a row or
    /// two: each is looked up. A scan asks about every row: after a few
    /// thousand, the rows written since are read in one pass, and the rest
    /// answered from memory.
    func isCurrent(table: Int64, pk: UnsafeBufferPointer<UInt8>) throws -> Bool {
        if let current, current.table == table { return !current.keys.contains(pk) }
        if let keys = writtenSince[table] {
            current = (table, keys)
            return !keys.contains(pk)
        }
        let n = asked[table, default: 0] + 1
        asked[table] = n
        if n > scanAfter {
            let sorted = try writtenSince(table)
            current = (table, sorted)
            return !sorted.contains(pk)
        }
        defer { lastWrite.reset() }
        lastWrite.bind(1, table)
        lastWrite.bind(2, String(decoding: pk, as: UTF8.self))
        guard try lastWrite.step(db) else { return false }
        return UInt64(bitPattern: lastWrite.int64(0)) <= stamp.rawValue
    }

    /// The keys of the rows of `table` written since the stamp, read once
    /// in one pass (by `isCurrent` and the scans of `AsOfTable`).
    func writtenSince(_ table: Int64) throws -> SortedKeys {
        if let keys = writtenSince[table] { return keys }
        var keys: [[UInt8]] = []
        var kept: [Bool] = []
        defer { written.reset() }
        written.bind(1, table)
        written.bind(2, Int64(bitPattern: stamp.rawValue))
        while try written.step(db) {
            keys.append(written.blob(0))
            kept.append(written.int64(1) != 0)
        }
        let sorted = SortedKeys(keys, kept: kept)
        writtenSince[table] = sorted
        return sorted
    }

    func register(on db: OpaquePointer?) {
        let me = Unmanaged.passUnretained(self).toOpaque()
        sqlite3_create_function_v2(db, "lode_as_of_current", 2, SQLITE_UTF8, me, asOfCurrentFunction, nil, nil, nil)
        AsOfTable.register(on: db, rows: self)
    }

    func unregister(from db: OpaquePointer?) {
        sqlite3_create_function_v2(db, "lode_as_of_current", 2, SQLITE_UTF8, nil, nil, nil, nil, nil)
        AsOfTable.unregister(from: db)
    }
}

/// Keys in SQLite's BINARY order (as a scan of `_lode_rows` by key reads
/// them), asked about by a scan that mostly moves forward: each answer
/// starts where the last one ended; a first question, or a step back, is a
/// binary search.
final class SortedKeys {
    let keys: [[UInt8]]
    /// For each key, whether its row's history holds its first write
    /// (`_lode_rows.kept`).
    let kept: [Bool]
    private var at = -1

    init(_ sorted: [[UInt8]], kept: [Bool]) {
        keys = sorted
        self.kept = kept
    }

    func contains(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
        if at < 0 || (at > 0 && Self.compare(keys[at - 1], key) >= 0) {
            // The first key not below `key`.
            var lo = 0
            var hi = keys.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if Self.compare(keys[mid], key) < 0 { lo = mid + 1 } else { hi = mid }
            }
            at = lo
        }
        while at < keys.count {
            let c = Self.compare(keys[at], key)
            if c == 0 { return true }
            if c > 0 { return false }
            at += 1
        }
        return false
    }

    /// memcmp order, shorter first on a tie: SQLite's BINARY collation.
    static func compare(_ a: [UInt8], _ b: UnsafeBufferPointer<UInt8>) -> Int {
        a.withUnsafeBufferPointer { a in
            let n = min(a.count, b.count)
            if n > 0, let pa = a.baseAddress, let pb = b.baseAddress {
                let c = memcmp(pa, pb, n)
                if c != 0 { return Int(c) }
            }
            return a.count - b.count
        }
    }
}

/// The bytes of an SQL text argument.
private func textArgument(_ v: OpaquePointer?) -> UnsafeBufferPointer<UInt8> {
    let n = Int(sqlite3_value_bytes(v))
    guard n > 0, let p = sqlite3_value_text(v) else { return UnsafeBufferPointer(start: nil, count: 0) }
    return UnsafeBufferPointer(start: p, count: n)
}

private let asOfCurrentFunction: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Void = { ctx, _, argv in
    guard let argv, let rows = sqlite3_user_data(ctx).map({ Unmanaged<AsOfRows>.fromOpaque($0).takeUnretainedValue() }) else { return }
    do {
        sqlite3_result_int64(ctx, try rows.isCurrent(table: sqlite3_value_int64(argv[0]), pk: textArgument(argv[1])) ? 1 : 0)
    } catch {
        sqlite3_result_error(ctx, "\(StoreError.converting(error))", -1)
    }
}

/// Text as an SQL string literal.
func quoteLiteral(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }
