import CLodeSQLite
import Foundation
import GRDB
import LodeCore
import LodeStore

/// The rows of one table written after a stamp, each merged from its
/// history as it stood at the stamp (`HistoryReader`): a read-only virtual
/// table (SQLite's C API) that the second branch of a table's as-of view
/// reads (`AsOfViews`). Its columns are declared with the table's types, so
/// both branches of the view have the same affinities and SQLite flattens
/// the view into the query, instead of copying every row through a
/// co-routine as it must for function results (which have none). A
/// constraint `key = value` reads one row; anything else reads every row
/// written since the stamp, in key order. Rows that did not exist at the
/// stamp are left out.
final class AsOfTable: @unchecked Sendable {
    static let module = "lode_as_of"

    let rows: AsOfRows
    let table: TableState
    /// The columns the table had at the stamp, in order, and their slots.
    let columns: [ColumnDef]
    let slots: [Int]

    init(rows: AsOfRows, table: TableState, columns: [ColumnDef]) {
        self.rows = rows
        self.table = table
        self.columns = columns
        slots = columns.map { table.slots[$0.name] ?? -1 }
    }

    /// The virtual table's name for table `t` (in `temp`).
    static func name(_ t: TableState) -> String { "_lode_as_of_\(t.id)" }

    /// The declaration SQLite asks of a virtual table: the key, then the
    /// columns, with the table's names and types.
    var declaration: String {
        let parts = ["\(quote(table.primaryKey)) TEXT"] + columns.map { "\(quote($0.name)) \($0.type.sqlName)" }
        return "CREATE TABLE x(\(parts.joined(separator: ", ")))"
    }

    /// Registers the module on a connection: its tables read `rows`, which
    /// must outlive them.
    static func register(on db: OpaquePointer?, rows: AsOfRows) {
        sqlite3_create_module_v2(db, module, asOfModule, Unmanaged.passUnretained(rows).toOpaque(), nil)
    }

    static func unregister(from db: OpaquePointer?) {
        sqlite3_create_module_v2(db, module, nil, nil, nil)
    }
}

/// A cursor over an `AsOfTable`. A scan walks the keys written since the
/// stamp (`AsOfRows.writtenSince`, shared with the view's other branch);
/// a key constraint looks its row up. Either way each row is merged from
/// the history through the connection's `HistoryReader`.
final class AsOfCursor {
    private let source: AsOfTable
    private let one: RawStatement
    /// A scan's keys and position, or nil.
    private var scan: (keys: SortedKeys, next: Int)?
    private(set) var key = ""
    private(set) var row = RowAsOf()
    private(set) var atEnd = true
    private(set) var rowid: Int64 = 0

    init(_ source: AsOfTable) throws {
        self.source = source
        one = try RawStatement(source.rows.db, "SELECT kept FROM _lode_rows WHERE tbl = ? AND pk = ? AND last > ?")
    }

    /// Starts reading: the row with key `key`, or every row.
    func filter(key: String?) throws {
        rowid = 0
        atEnd = true
        scan = nil
        guard let key else {
            scan = (try source.rows.writtenSince(source.table.id), 0)
            try next()
            return
        }
        let kept: Bool
        do {
            defer { one.reset() }
            one.bind(1, source.table.id)
            one.bind(2, key)
            one.bind(3, Int64(bitPattern: source.rows.stamp.rawValue))
            guard try one.step(source.rows.db) else { return }
            kept = one.int64(0) != 0
        }
        if kept { try load(key) }
    }

    /// Moves to the next row that existed at the stamp.
    func next() throws {
        guard var (keys, i) = scan else {
            atEnd = true
            return
        }
        defer { scan = (keys, i) }
        while i < keys.keys.count {
            let at = i
            i += 1
            // A row written since whose history lacks its first write was
            // written once, after the stamp: it did not exist then.
            guard keys.kept[at] else { continue }
            if try load(String(decoding: keys.keys[at], as: UTF8.self)) { return }
        }
        atEnd = true
    }

    /// Makes row `pk` (its history holds its first write) the current row
    /// if it existed at the stamp.
    @discardableResult
    private func load(_ pk: String) throws -> Bool {
        var meta = RowMeta()
        meta.exists = true
        meta.kept = true
        let merged = RowAsOf(try source.rows.reader.writes(source.table, pk: pk, meta: meta, upTo: source.rows.stamp))
        guard merged.isPresent else { return false }
        key = pk
        row = merged
        rowid += 1
        atEnd = false
        return true
    }

    /// Reads nothing (a key of NULL equals no row).
    func none() {
        scan = nil
        atEnd = true
    }

    /// Column `i` of the current row: 0 the key, then the columns.
    func value(_ i: Int) -> Value {
        guard i > 0 else { return .text(key) }
        guard i - 1 < source.columns.count else { return .null }
        let def = source.columns[i - 1]
        return SQLiteAffinity.stored(row.visible(source.slots[i - 1])?.value ?? def.defaultValue, in: def.type)
    }
}

// MARK: The module (SQLite's C callbacks)

private func owner<T: AnyObject>(_ p: UnsafeMutableRawPointer?) -> T { Unmanaged<T>.fromOpaque(p!).takeUnretainedValue() }

/// Sets a virtual table's error message (SQLite frees it).
private func fail(_ vtab: UnsafeMutablePointer<sqlite3_vtab>?, _ error: Error) -> Int32 {
    guard let vtab else { return SQLITE_ERROR }
    if let old = vtab.pointee.zErrMsg { sqlite3_free(old) }
    vtab.pointee.zErrMsg = sqliteString("\(StoreError.converting(error))")
    return SQLITE_ERROR
}

/// A copy of `s` in memory from `sqlite3_malloc`.
private func sqliteString(_ s: String) -> UnsafeMutablePointer<CChar>? {
    s.withCString { c in
        let n = strlen(c) + 1
        guard let p = sqlite3_malloc(Int32(n)) else { return nil }
        memcpy(p, c, n)
        return p.assumingMemoryBound(to: CChar.self)
    }
}

private func cursorOwner(_ c: UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> AsOfCursor { owner(lode_vtab_cursor_owner(c)) }

private let connectTable:
    @convention(c) (
        OpaquePointer?, UnsafeMutableRawPointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?,
        UnsafeMutablePointer<UnsafeMutablePointer<sqlite3_vtab>?>?, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
    ) -> Int32 = { db, aux, argc, argv, ppVtab, pzErr in
        let rows: AsOfRows = owner(aux)
        // argv: module, schema, table name, then the arguments: the table id.
        guard argc >= 4, let arg = argv?[3], let id = Int64(String(cString: arg)), let source = rows.table(id) else {
            pzErr?.pointee = sqliteString("lode_as_of: no such table")
            return SQLITE_ERROR
        }
        let rc = sqlite3_declare_vtab(db, source.declaration)
        guard rc == SQLITE_OK else { return rc }
        let retained = Unmanaged.passRetained(source)
        guard let vtab = lode_vtab_new(retained.toOpaque()) else {
            retained.release()
            return SQLITE_NOMEM
        }
        ppVtab?.pointee = vtab
        return SQLITE_OK
    }

private let disconnectTable: @convention(c) (UnsafeMutablePointer<sqlite3_vtab>?) -> Int32 = { vtab in
    guard let vtab else { return SQLITE_OK }
    Unmanaged<AsOfTable>.fromOpaque(lode_vtab_owner(vtab)).release()
    sqlite3_free(vtab)
    return SQLITE_OK
}

private let bestIndex: @convention(c) (UnsafeMutablePointer<sqlite3_vtab>?, UnsafeMutablePointer<sqlite3_index_info>?) -> Int32 = { _, info in
    guard let info else { return SQLITE_ERROR }
    for i in 0..<Int(info.pointee.nConstraint) {
        let c = info.pointee.aConstraint[i]
        if c.usable != 0 && c.iColumn == 0 && Int32(c.op) == SQLITE_INDEX_CONSTRAINT_EQ {
            // SQLite checks the constraint again (omit stays 0): the key is
            // compared as text here, whatever type the value has.
            info.pointee.aConstraintUsage[i].argvIndex = 1
            info.pointee.idxNum = 1
            info.pointee.estimatedCost = 10
            info.pointee.estimatedRows = 1
            info.pointee.idxFlags = SQLITE_INDEX_SCAN_UNIQUE
            return SQLITE_OK
        }
    }
    info.pointee.idxNum = 0
    info.pointee.estimatedCost = 1_000_000
    info.pointee.estimatedRows = 100_000
    return SQLITE_OK
}

private let openCursor:
    @convention(c) (UnsafeMutablePointer<sqlite3_vtab>?, UnsafeMutablePointer<UnsafeMutablePointer<sqlite3_vtab_cursor>?>?) -> Int32 = {
        vtab, ppCursor in
        let source: AsOfTable = owner(lode_vtab_owner(vtab))
        let retained: Unmanaged<AsOfCursor>
        do {
            retained = Unmanaged.passRetained(try AsOfCursor(source))
        } catch {
            return fail(vtab, error)
        }
        guard let cursor = lode_vtab_cursor_new(retained.toOpaque()) else {
            retained.release()
            return SQLITE_NOMEM
        }
        ppCursor?.pointee = cursor
        return SQLITE_OK
    }

private let closeCursor: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { c in
    guard let c else { return SQLITE_OK }
    Unmanaged<AsOfCursor>.fromOpaque(lode_vtab_cursor_owner(c)).release()
    sqlite3_free(c)
    return SQLITE_OK
}

private let filterCursor:
    @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, Int32, UnsafePointer<CChar>?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Int32 =
        {
            c, idxNum, _, argc, argv in
            let cursor = cursorOwner(c)
            do {
                var key: String?
                if idxNum == 1, argc >= 1, let v = argv?[0] {
                    // NULL equals nothing.
                    guard sqlite3_value_type(v) != SQLITE_NULL else {
                        cursor.none()
                        return SQLITE_OK
                    }
                    let n = Int(sqlite3_value_bytes(v))
                    key = sqlite3_value_text(v).map { String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self) } ?? ""
                }
                try cursor.filter(key: key)
                return SQLITE_OK
            } catch {
                return fail(c?.pointee.pVtab, error)
            }
        }

private let nextRow: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { c in
    do {
        try cursorOwner(c).next()
        return SQLITE_OK
    } catch {
        return fail(c?.pointee.pVtab, error)
    }
}

private let atEnd: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { c in cursorOwner(c).atEnd ? 1 : 0 }

private let columnValue: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, OpaquePointer?, Int32) -> Int32 = { c, ctx, i in
    setResult(ctx, cursorOwner(c).value(Int(i)))
    return SQLITE_OK
}

private let rowidOf: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, UnsafeMutablePointer<sqlite3_int64>?) -> Int32 = { c, p in
    p?.pointee = cursorOwner(c).rowid
    return SQLITE_OK
}

/// The module: read-only (no xUpdate), created and connected alike. Set
/// once, then only read by SQLite.
nonisolated(unsafe) private let asOfModule: UnsafeMutablePointer<sqlite3_module> = {
    let m = UnsafeMutablePointer<sqlite3_module>.allocate(capacity: 1)
    m.initialize(to: sqlite3_module())
    m.pointee.iVersion = 1
    m.pointee.xCreate = connectTable
    m.pointee.xConnect = connectTable
    m.pointee.xBestIndex = bestIndex
    m.pointee.xDisconnect = disconnectTable
    m.pointee.xDestroy = disconnectTable
    m.pointee.xOpen = openCursor
    m.pointee.xClose = closeCursor
    m.pointee.xFilter = filterCursor
    m.pointee.xNext = nextRow
    m.pointee.xEof = atEnd
    m.pointee.xColumn = columnValue
    m.pointee.xRowid = rowidOf
    return m
}()

/// Sets an SQL function's or a virtual table column's result.
func setResult(_ ctx: OpaquePointer?, _ value: Value) {
    switch value {
    case .null: sqlite3_result_null(ctx)
    case .integer(let i): sqlite3_result_int64(ctx, i)
    case .real(let d): sqlite3_result_double(ctx, d)
    case .text(let t):
        var t = t
        t.withUTF8 { p in
            p.withMemoryRebound(to: CChar.self) { c in
                if let base = c.baseAddress {
                    sqlite3_result_text(ctx, base, Int32(c.count), SQLITE_TRANSIENT)
                } else {
                    sqlite3_result_text(ctx, "", 0, nil)
                }
            }
        }
    case .blob(let b):
        b.withUnsafeBytes { p in sqlite3_result_blob(ctx, p.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(p.count), SQLITE_TRANSIENT) }
    }
}
