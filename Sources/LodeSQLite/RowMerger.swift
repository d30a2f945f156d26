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
}

/// Merges row writes into a dataset file by the CRDT's rules (`Merge`):
/// each row's causal length and per-cell stamps in `_lode_rows`, the
/// materialised row in its user table, conflicts between concurrent writes
/// in `_lode_conflicts`, and which commits touched a row in `_lode_history`.
/// The hot paths (apply, import) bind and step prepared C statements.
final class RowMerger {
    private let sites: SiteRegistry
    private let feeds: FeedLog

    private var selectRow: RawStatement?
    private var upsertRow: RawStatement?
    private var insertHistory: RawStatement?
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
            s = try RawStatement(db, "SELECT cl, clocks FROM _lode_rows WHERE tbl = ? AND pk = ?")
            selectRow = s
        }
        defer { s.reset() }
        s.bind(1, t.id)
        s.bind(2, pk)
        guard try s.step(db) else { return RowMeta() }
        return RowMeta(exists: true, length: UInt64(bitPattern: s.int64(0)), clocks: try RowClocks(decoding: s.blob(1)))
    }

    private func writeRow(_ db: Database, _ t: TableState, _ pk: String, _ meta: RowMeta, logID: Int64, existed: Bool) throws {
        if existed {
            if updateRow == nil { updateRow = try RawStatement(db, "UPDATE _lode_rows SET cl = ?, clocks = ? WHERE tbl = ? AND pk = ?") }
            let u = updateRow!
            u.bind(1, Int64(meta.length))
            u.bind(2, blob: meta.clocks.encoded)
            u.bind(3, t.id)
            u.bind(4, pk)
            try u.run(db)
        }
        if upsertRow == nil {
            upsertRow = try RawStatement(
                db,
                """
                INSERT INTO _lode_rows(tbl, pk, cl, clocks, first_log) VALUES (?1, ?2, ?3, ?4, ?5)
                ON CONFLICT(tbl, pk) DO UPDATE SET cl = ?3, clocks = ?4
                """)
            insertHistory = try RawStatement(db, "INSERT OR IGNORE INTO _lode_history(tbl, pk, log) VALUES (?, ?, ?)")
        }
        if !existed {
            let u = upsertRow!
            u.bind(1, t.id)
            u.bind(2, pk)
            u.bind(3, Int64(meta.length))
            u.bind(4, blob: meta.clocks.encoded)
            u.bind(5, logID)
            try u.run(db)
        } else {
            let h = insertHistory!
            h.bind(1, t.id)
            h.bind(2, pk)
            h.bind(3, logID)
            try h.run(db)
        }
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
                db, "INSERT INTO _lode_rows(tbl, pk, cl, clocks, first_log) VALUES (?, ?, ?, ?, ?) ON CONFLICT(tbl, pk) DO NOTHING")
        }
        let m = insertRowIfAbsent!
        m.bind(1, t.id)
        m.bind(2, pk)
        m.bind(3, Int64(length))
        m.bind(4, blob: newRowClocks!.blob)
        m.bind(5, ctx.logID)
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
        let oldLength = meta.length
        let newLength = Merge.rowLength(oldLength, length)
        let incoming = LocalStamp(length: length, hlc: ctx.hlc.rawValue, site: ctx.author, seq: ctx.seq)
        let incomingStamp = CellStamp(length: length, hlc: ctx.hlc, site: sites.key(ctx.author)!, seq: ctx.seq)
        // The row's stored stamps, named by key: a row has one or two.
        let stamps = meta.clocks.groups.map(cellStamp)
        var group = -1
        var winners: [Int] = []  // indexes into slots/values
        for (j, slot) in slots.enumerated() {
            let value = t.bySlot[slot]!.materialized(values[values.startIndex + j])
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
        try writeRow(db, t, pk, meta, logID: ctx.logID, existed: existed)
    }

    /// Applies one row of a delete.
    func delete(_ db: Database, _ t: TableState, pk: String, length: UInt64, meta readMeta: RowMeta? = nil, _ ctx: CommitContext) throws {
        var meta = try readMeta ?? readRow(db, t, pk)
        let existed = meta.exists
        let oldLength = meta.length
        let newLength = Merge.rowLength(oldLength, length)
        if newLength > oldLength && Merge.isPresent(oldLength) {
            let s = try t.delete(db)
            s.bind(1, pk)
            try s.run(db)
        }
        meta.length = newLength
        meta.exists = true
        try writeRow(db, t, pk, meta, logID: ctx.logID, existed: existed)
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
