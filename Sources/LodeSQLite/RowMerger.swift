import CLodeSQLite
import Foundation
import GRDB
import LodeCore
import LodeStore

/// The commit whose ops are being applied.
struct CommitContext {
    /// The author's site number.
    let author: SiteNumber
    let hlc: HLC
    let seq: UInt64
    /// The log row the commit is (or will be) stored in.
    let logID: Int64
    /// The commit's causal past; nil for a local commit, which has seen
    /// everything the replica holds.
    let past: VersionVector?
}

/// A row's merge state as stored in `_lode_rows`.
struct RowMeta {
    var exists = false
    var length: UInt64 = 0
    var clocks = RowClocks()
    /// The largest stamp of any write to the row (`_lode_rows.last`).
    var last: UInt64 = 0
    /// True once the history holds the row's first write (`kept`): a row
    /// written once is its table row alone (`FirstWrite`).
    var kept = false
    /// The log row of the row's first write.
    var firstLog: Int64 = 0

    init() {}

    /// Reads a row of `select`, bound to a table and key.
    init(_ s: RawStatement) throws {
        self.init()
        exists = true
        length = UInt64(bitPattern: s.int64(0))
        clocks = try RowClocks(decoding: s.blob(1))
        last = UInt64(bitPattern: s.int64(2))
        kept = s.int64(3) != 0
        firstLog = s.int64(4)
    }

    static let select = "SELECT cl, clocks, last, kept, first_log FROM _lode_rows WHERE tbl = ? AND pk = ?"
}

/// Merges row writes into a dataset file by the CRDT's rules (`Merge`):
/// each row's causal length and per-cell stamps in `_lode_rows`, the
/// materialised row in its user table, conflicts between concurrent writes
/// in `_lode_conflicts`, and in `_lode_history` what each commit wrote to a
/// row written more than once (`FirstWrite`).
/// The hot paths (apply, import) bind and step prepared C statements.
final class RowMerger {
    private let sites: SiteRegistry
    private let feeds: FeedLog

    private var selectRow: RawStatement?
    private var upsertRow: RawStatement?
    private var historyStatement: RawStatement?
    private var insertRowIfAbsent: RawStatement?
    private var updateRow: RawStatement?
    /// Whether the last row `insertOrRead` met was already stored: rows
    /// come in runs (an import of new rows, an update of existing ones), so
    /// the next row is first tried the way that served the last.
    private var lastExisted = false
    /// The clocks of a row whose given slots were all written by one stamp
    /// (one entry: the rows of an import or a remote put share it).
    private var newRowClocks: (slots: [Int], stamp: LocalStamp, blob: [UInt8])?

    init(sites: SiteRegistry, feeds: FeedLog) {
        self.sites = sites
        self.feeds = feeds
    }

    /// A stored stamp with its writer named by key, as the rules compare it.
    private func cellStamp(_ s: LocalStamp) -> CellStamp {
        CellStamp(length: s.length, hlc: HLC(rawValue: s.hlc), site: sites.key(s.site)!, seq: s.seq)
    }

    func readRow(_ db: Database, _ t: TableState, _ pk: String) throws -> RowMeta {
        let s: RawStatement
        if let cached = selectRow {
            s = cached
        } else {
            s = try RawStatement(db, RowMeta.select)
            selectRow = s
        }
        defer { s.reset() }
        s.bind(1, t.id)
        s.bind(2, pk)
        guard try s.step(db) else { return RowMeta() }
        return try RowMeta(s)
    }

    private func writeRow(_ db: Database, _ t: TableState, _ pk: String, _ meta: RowMeta, _ ctx: CommitContext, existed: Bool) throws {
        let last = Int64(bitPattern: max(meta.last, ctx.hlc.rawValue))
        if existed {
            if updateRow == nil {
                updateRow = try RawStatement(db, "UPDATE _lode_rows SET cl = ?, clocks = ?, last = ?, kept = ? WHERE tbl = ? AND pk = ?")
            }
            let u = updateRow!
            u.bind(1, Int64(meta.length))
            u.bind(2, blob: meta.clocks.encoded)
            u.bind(3, last)
            u.bind(4, meta.kept ? 1 : 0)
            u.bind(5, t.id)
            u.bind(6, pk)
            try u.run(db)
            return
        }
        if upsertRow == nil {
            upsertRow = try RawStatement(
                db,
                """
                INSERT INTO _lode_rows(tbl, pk, cl, clocks, first_log, last, kept) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
                ON CONFLICT(tbl, pk) DO UPDATE SET cl = ?3, clocks = ?4, last = ?6
                """)
        }
        let u = upsertRow!
        u.bind(1, t.id)
        u.bind(2, pk)
        u.bind(3, Int64(meta.length))
        u.bind(4, blob: meta.clocks.encoded)
        u.bind(5, ctx.logID)
        u.bind(6, last)
        try u.run(db)
    }

    /// Before a row written once is written again: its first write goes
    /// into the history (read back from its table row, `FirstWrite`), so
    /// that the history holds every write of a row written more than once.
    private func keepFirstWrite(_ db: Database, _ t: TableState, _ pk: String, _ meta: inout RowMeta, _ ctx: CommitContext) throws {
        guard meta.exists && !meta.kept else { return }
        // A commit writing the row twice: its first write is this commit's.
        let author = meta.firstLog == ctx.logID ? (ctx.author, ctx.seq) : nil
        for w in try FirstWrite.read(db, t, pk: pk, meta: meta, sites: sites, author: author) {
            try insertHistory(db, t, pk, w.hlc, site: try sites.number(db, w.site), seq: w.seq, length: w.length, cells: w.cells)
        }
        meta.kept = true
    }

    /// Keeps what a commit wrote to a row in `_lode_history` (`RowWrite`):
    /// the causal length it gave the row and the cells with their values,
    /// one entry per (row, commit). A commit that writes a row twice
    /// (rare) folds the second write into the first entry.
    private func recordWrite(_ db: Database, _ t: TableState, _ pk: String, length: UInt64, cells: [HistoryCell], _ ctx: CommitContext) throws {
        guard try insertHistory(db, t, pk, ctx.hlc, site: ctx.author, seq: ctx.seq, length: length, cells: cells) else { return }
        let key: [any DatabaseValueConvertible] = [t.id, pk, Int64(bitPattern: ctx.hlc.rawValue), ctx.author]
        guard
            let row = try Row.fetchOne(
                db, sql: "SELECT cl, cells FROM _lode_history WHERE tbl = ? AND pk = ? AND hlc = ? AND site = ?", arguments: StatementArguments(key))
        else { return }
        var w = RowWrite(
            hlc: ctx.hlc, site: sites.key(ctx.author)!, seq: ctx.seq, length: UInt64(row["cl"] as Int64),
            cells: try RowWrite.decodeCells([UInt8](row["cells"] as Data)))
        w.absorb(length: length, cells: cells)
        try db.execute(
            sql: "UPDATE _lode_history SET cl = ?, cells = ? WHERE tbl = ? AND pk = ? AND hlc = ? AND site = ?",
            arguments: StatementArguments([Int64(w.length), Data(RowWrite.encode(w.cells))] + key))
    }

    /// Inserts a history entry; true when the row already has one for this
    /// commit (nothing was inserted).
    @discardableResult
    private func insertHistory(
        _ db: Database, _ t: TableState, _ pk: String, _ hlc: HLC, site: SiteNumber, seq: UInt64, length: UInt64, cells: [HistoryCell]
    ) throws -> Bool {
        if historyStatement == nil {
            historyStatement = try RawStatement(
                db, "INSERT OR IGNORE INTO _lode_history(tbl, pk, hlc, site, seq, cl, cells) VALUES (?, ?, ?, ?, ?, ?, ?)")
        }
        let h = historyStatement!
        h.bind(1, t.id)
        h.bind(2, pk)
        h.bind(3, Int64(bitPattern: hlc.rawValue))
        h.bind(4, site)
        h.bind(5, Int64(seq))
        h.bind(6, Int64(length))
        h.bind(7, blob: RowWrite.encode(cells))
        try h.run(db)
        return sqlite3_changes(db.sqliteConnection) == 0
    }

    /// The fast path for a row never seen here, the common case of imports
    /// and initial syncs: one insert of its clocks (which fails if the row
    /// exists) and one of the row, instead of a read and two writes. Returns
    /// false, writing nothing, when the row is known; the caller then takes
    /// the general path.
    func insertIfAbsent(
        _ db: Database, _ t: TableState, pk: String, length: UInt64, slots: [Int], values: ArraySlice<Value>, _ ctx: CommitContext
    ) throws -> Bool {
        let stamp = LocalStamp(length: length, hlc: ctx.hlc.rawValue, site: ctx.author, seq: ctx.seq)
        if newRowClocks == nil || newRowClocks!.stamp != stamp || newRowClocks!.slots != slots {
            var clocks = RowClocks()
            let g = clocks.group(for: stamp)
            for slot in slots { clocks.set(slot, group: g) }
            newRowClocks = (slots, stamp, clocks.encoded)
        }
        if insertRowIfAbsent == nil {
            insertRowIfAbsent = try RawStatement(
                db, "INSERT INTO _lode_rows(tbl, pk, cl, clocks, first_log, last, kept) VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT(tbl, pk) DO NOTHING")
        }
        let m = insertRowIfAbsent!
        m.bind(1, t.id)
        m.bind(2, pk)
        m.bind(3, Int64(length))
        m.bind(4, blob: newRowClocks!.blob)
        m.bind(5, ctx.logID)
        m.bind(6, Int64(bitPattern: ctx.hlc.rawValue))
        try m.run(db)
        guard sqlite3_changes(db.sqliteConnection) > 0 else { return false }
        let s = try t.insert(db)
        s.bind(1, pk)
        for (p, j) in t.positions(of: slots).enumerated() {
            let def = t.physical[p]
            s.bind(Int32(p + 2), j >= 0 ? def.materialized(values[values.startIndex + j]) : def.defaultValue)
        }
        try s.run(db)
        return true
    }

    /// Writes a row never seen here by the fast path (`insertIfAbsent`) and
    /// returns nil, or returns the stored state of a known row, writing
    /// nothing, for the general path (`put`, `delete`).
    func insertOrRead(
        _ db: Database, _ t: TableState, pk: String, length: UInt64, slots: [Int], values: ArraySlice<Value>, _ ctx: CommitContext
    ) throws -> RowMeta? {
        if lastExisted {
            let meta = try readRow(db, t, pk)
            if meta.exists { return meta }
            lastExisted = false
        }
        if try insertIfAbsent(db, t, pk: pk, length: length, slots: slots, values: values, ctx) { return nil }
        lastExisted = true
        return try readRow(db, t, pk)
    }

    /// Applies one row of a put: merges causal length and cells
    /// (`Merge.cell`), records conflicts between concurrent writes and
    /// resolves those a write has seen both sides of, and updates the
    /// SQLite row. `slots` are the table slots of the written columns.
    func put(
        _ db: Database, _ t: TableState, pk: String, length: UInt64, slots: [Int],
        values: ArraySlice<Value>, meta readMeta: RowMeta? = nil, _ ctx: CommitContext
    ) throws {
        var meta = try readMeta ?? readRow(db, t, pk)
        let existed = meta.exists
        try keepFirstWrite(db, t, pk, &meta, ctx)
        let oldLength = meta.length
        let newLength = Merge.rowLength(oldLength, length)
        let incoming = LocalStamp(length: length, hlc: ctx.hlc.rawValue, site: ctx.author, seq: ctx.seq)
        let incomingStamp = CellStamp(length: length, hlc: ctx.hlc, site: sites.key(ctx.author)!, seq: ctx.seq)
        // The row's stored stamps, named by key: a row has one or two.
        let stamps = meta.clocks.groups.map(cellStamp)
        var group = -1
        var winners: [Int] = []  // indexes into slots/values
        // What the history keeps of this write (a row written before only).
        var written: [HistoryCell] = []
        if existed { written.reserveCapacity(slots.count) }
        for (j, slot) in slots.enumerated() {
            let value = t.bySlot[slot]!.materialized(values[values.startIndex + j])
            if existed { written.append(HistoryCell(slot: slot, length: length, value: value)) }
            let existing = meta.clocks.groupIndex(slot).map { stamps[$0] }
            let m = Merge.cell(incoming: incomingStamp, past: ctx.past, existing: existing, rowLength: newLength)
            if m.isConflict, let existing {
                let current = try currentValue(db, t, pk, slot: slot)
                if m.replaces {
                    try recordConflict(db, t, pk, slot: slot, winner: incomingStamp, winnerValue: value, loser: existing, loserValue: current)
                } else {
                    try recordConflict(db, t, pk, slot: slot, winner: existing, winnerValue: current, loser: incomingStamp, loserValue: value)
                }
                meta.clocks.setConflict(slot, true)
            } else if m.replaces && meta.clocks.hasConflict(slot) {
                try resolveConflicts(db, t, pk, slot: slot, &meta.clocks, ctx)
            }
            if m.replaces {
                if group < 0 { group = meta.clocks.group(for: incoming) }
                meta.clocks.set(slot, group: group)
                winners.append(j)
            }
        }
        meta.length = newLength
        meta.exists = true
        if newLength > oldLength {
            // A new life of the row: written cells, defaults elsewhere.
            let s = try t.insert(db)
            s.bind(1, pk)
            for (p, slot) in t.physicalSlots.enumerated() {
                let def = t.physical[p]
                var value = def.defaultValue
                if let j = slots.firstIndex(of: slot), winners.contains(j) { value = def.materialized(values[values.startIndex + j]) }
                s.bind(Int32(p + 2), value)
            }
            try s.run(db)
        } else if Merge.isPresent(newLength) && length == newLength && !winners.isEmpty {
            let ws = winners.map { slots[$0] }
            let s = try t.update(db, slots: ws)
            for (i, j) in winners.enumerated() {
                s.bind(Int32(i + 1), t.bySlot[slots[j]]!.materialized(values[values.startIndex + j]))
            }
            s.bind(Int32(winners.count + 1), pk)
            try s.run(db)
        }
        try writeRow(db, t, pk, meta, ctx, existed: existed)
        if existed { try recordWrite(db, t, pk, length: length, cells: written, ctx) }
    }

    /// Applies one row of a delete.
    func delete(_ db: Database, _ t: TableState, pk: String, length: UInt64, meta readMeta: RowMeta? = nil, _ ctx: CommitContext) throws {
        var meta = try readMeta ?? readRow(db, t, pk)
        let existed = meta.exists
        try keepFirstWrite(db, t, pk, &meta, ctx)
        let oldLength = meta.length
        let newLength = Merge.rowLength(oldLength, length)
        if newLength > oldLength && Merge.isPresent(oldLength) {
            let s = try t.delete(db)
            s.bind(1, pk)
            try s.run(db)
        }
        meta.length = newLength
        meta.exists = true
        try writeRow(db, t, pk, meta, ctx, existed: existed)
        if existed { try recordWrite(db, t, pk, length: length, cells: [], ctx) }
    }

    private func currentValue(_ db: Database, _ t: TableState, _ pk: String, slot: Int) throws -> Value {
        let s = try t.select(db, slots: [slot])
        defer { s.reset() }
        s.bind(1, pk)
        return try s.step(db) ? s.value(0) : .null
    }

    private func recordConflict(
        _ db: Database, _ t: TableState, _ pk: String, slot: Int, winner: CellStamp, winnerValue: Value, loser: CellStamp, loserValue: Value
    ) throws {
        try db.execute(
            sql: """
                INSERT INTO _lode_conflicts(tbl, pk, col, winner_value, winner_site, winner_seq, winner_hlc,
                                            loser_value, loser_site, loser_seq, loser_hlc, detected)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                t.name, pk, t.bySlot[slot]!.name, winnerValue.databaseValue, try sites.number(db, winner.site), Int64(winner.seq),
                Int64(bitPattern: winner.hlc.rawValue), loserValue.databaseValue, try sites.number(db, loser.site), Int64(loser.seq),
                Int64(bitPattern: loser.hlc.rawValue), Int64(bitPattern: feeds.clock.last.rawValue),
            ])
    }

    /// A write that has seen both sides of a conflict resolves it (`Merge.resolves`).
    private func resolveConflicts(_ db: Database, _ t: TableState, _ pk: String, slot: Int, _ clocks: inout RowClocks, _ ctx: CommitContext) throws {
        let column = t.bySlot[slot]!.name
        var open = 0
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT id, winner_site, winner_seq, loser_site, loser_seq FROM _lode_conflicts
                WHERE tbl = ? AND pk = ? AND col = ? AND resolved_seq IS NULL
                """, arguments: [t.name, pk, column])
        {
            guard let winner = sites.key(row["winner_site"]), let loser = sites.key(row["loser_site"]) else {
                open += 1
                continue
            }
            let resolved = Merge.resolves(
                past: ctx.past, winnerSite: winner, winnerSeq: UInt64(row["winner_seq"] as Int64), loserSite: loser,
                loserSeq: UInt64(row["loser_seq"] as Int64))
            if resolved {
                try db.execute(
                    sql: "UPDATE _lode_conflicts SET resolved_site = ?, resolved_seq = ? WHERE id = ?",
                    arguments: [ctx.author, Int64(ctx.seq), row["id"] as Int64])
            } else {
                open += 1
            }
        }
        clocks.setConflict(slot, open > 0)
    }
}
