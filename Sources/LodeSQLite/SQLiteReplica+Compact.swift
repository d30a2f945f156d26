import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// The vector the log was last compacted to, and the history's horizon
    /// (no as-of time before it can be answered), if ever compacted.
    static func compaction(_ db: Database) throws -> (vector: VersionVector, horizon: HLC)? {
        guard let bytes = try Data.fetchOne(db, sql: "SELECT value FROM _lode_meta WHERE key = 'compacted_vector'"),
            let horizon = try Int64.fetchOne(db, sql: "SELECT value FROM _lode_meta WHERE key = 'history_horizon'")
        else { return nil }
        return (try VersionVector(decoding: [UInt8](bytes)), HLC(rawValue: UInt64(bitPattern: horizon)))
    }

    public func compactedVector() async throws -> VersionVector? {
        let (generation, known) = compacted.withLock { $0 }
        if let known { return known }
        let read = try await read { db in try SQLiteReplica.compaction(db)?.vector }
        compacted.withLock { c in if c.generation == generation { c.vector = .some(read) } }
        return read
    }

    /// Forgets the compacted vector read (the log's compaction changed).
    func forgetCompaction() { compacted.withLock { $0 = ($0.generation + 1, nil) } }

    /// Refuses an as-of time before the history's horizon.
    func checkNotBeforeHorizon(_ stamp: HLC, _ db: Database) throws {
        guard let c = try SQLiteReplica.compaction(db), stamp < c.horizon else { return }
        throw StoreError.badInput(
            "this replica's history before \(c.horizon.iso8601) was compacted (lode compact): ask for a time at or after it")
    }

    /// Compacts the dataset to checkpoint `c` (DESIGN §12), which the caller
    /// has found complete: drops the bytes of every commit `c` covers from
    /// the log (their stamps, hashes and authors stay, so feeds, people and
    /// as-of points by commit still resolve), and folds the history older
    /// than `keepHistory` milliseconds and covered by `c` down to what a
    /// time after it can show: per row, the cells the row showed then and
    /// the write that gave it its causal length. A row whose history then
    /// says no more than its table row and clocks keeps none. Tombstones
    /// keep their key and causal length. With `vacuum`, the file is then
    /// rewritten to give the space back.
    ///
    /// A peer that lacks commits `c` covers can no longer get them here.
    public func compact(to c: Checkpoint, keepHistory: UInt64, vacuum: Bool = true) async throws -> CompactionReport {
        guard vector.dominates(c.vector) else {
            throw StoreError.badInput("this replica does not hold every commit checkpoint \(c.id) covers; sync first")
        }
        let horizonMillis = wallClock() > keepHistory ? wallClock() - keepHistory : 0
        let horizon = HistoryPoint.stamp(millis: horizonMillis)
        let bytesBefore = bytesOnDisk
        var report = try await write { [self] tx in
            let db = tx.db
            let previous = try SQLiteReplica.compaction(db)
            if let previous, !c.vector.dominates(previous.vector) {
                throw StoreError.badInput("checkpoint \(c.id) is older than the one this replica was compacted to")
            }
            let effective = max(horizon, previous?.horizon ?? .zero)
            var report = CompactionReport(checkpoint: c.id, horizon: effective.iso8601)
            let sites = try SiteRegistry.load(db)
            var covered: [SiteNumber: UInt64] = [:]
            for e in c.vector.sorted {
                guard let n = sites.numbers[e.site] else { throw StoreError(.storage, "checkpoint \(c.id) names a site this file does not know") }
                covered[n] = e.seq
            }
            // The log: bytes of covered commits go; the rows stay.
            for (site, seq) in covered {
                try db.execute(
                    sql: "UPDATE _lode_log SET bytes = x'' WHERE site = ? AND seq <= ? AND length(bytes) > 0",
                    arguments: [site, Int64(min(seq, UInt64(Int64.max)))])
                report.commitsDropped += db.changesCount
            }
            // The history: rows with an entry both covered and before the horizon.
            let schema = try SchemaCatalog.load(db)
            let byID = Dictionary(uniqueKeysWithValues: schema.tables.values.map { ($0.id, $0) })
            let candidates = try Row.fetchAll(
                db, sql: "SELECT DISTINCT tbl, pk FROM _lode_history WHERE hlc <= ?", arguments: [Int64(bitPattern: effective.rawValue)])
            let folder = try HistoryFolder(db, sites: sites, covered: covered, horizon: effective)
            for row in candidates {
                guard let t = byID[row["tbl"]] else { continue }
                let (dropped, folded) = try folder.fold(t, pk: row["pk"])
                report.historyEntriesDropped += dropped
                if folded { report.rowsFolded += 1 }
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO _lode_meta(key, value) VALUES ('compacted_vector', ?), ('history_horizon', ?)",
                arguments: [Data(c.vector.encoded), Int64(bitPattern: effective.rawValue)])
            return report
        }
        forgetCompaction()
        if vacuum {
            try await StoreError.converting {
                try await pool.writeWithoutTransaction { db in
                    try db.execute(sql: "VACUUM")
                    try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
                }
            }
        }
        report.bytesBefore = bytesBefore
        report.bytesAfter = bytesOnDisk
        return report
    }
}

/// Folds one row's history at a compaction (`SQLiteReplica.compact`).
private final class HistoryFolder {
    let db: Database
    let sites: SiteRegistry
    let covered: [SiteNumber: UInt64]
    let horizon: HLC
    let entries: RawStatement
    let metas: RawStatement

    init(_ db: Database, sites: SiteRegistry, covered: [SiteNumber: UInt64], horizon: HLC) throws {
        self.db = db
        self.sites = sites
        self.covered = covered
        self.horizon = horizon
        entries = try RawStatement(db, "SELECT hlc, site, seq, cl, cells FROM _lode_history WHERE tbl = ? AND pk = ?")
        metas = try RawStatement(db, RowMeta.select)
    }

    struct Entry {
        var write: RowWrite
        var number: SiteNumber
        var eligible: Bool
    }

    /// Folds the row's entries covered by the checkpoint and at or before
    /// the horizon into the cells the row shows at the horizon and the
    /// write of its causal length. Returns the entries dropped (or emptied)
    /// and whether the row's whole history went (`kept` cleared).
    func fold(_ t: TableState, pk: String) throws -> (Int, Bool) {
        var all: [Entry] = []
        entries.bind(1, t.id)
        entries.bind(2, pk)
        do {
            defer { entries.reset() }
            while try entries.step(db) {
                let number = entries.int64(1)
                let w = try HistoryReader.write(entries, pk: pk, sites: sites)
                all.append(Entry(write: w, number: number, eligible: w.hlc <= horizon && w.seq <= (covered[number] ?? 0)))
            }
        }
        let old = all.filter(\.eligible)
        guard !old.isEmpty else { return (0, false) }
        let state = RowAsOf(old.map(\.write))
        // The cells a time after the horizon can show from these writes: the
        // visible winners. A cell of an earlier life never shows again.
        func keeps(_ w: RowWrite, _ cell: HistoryCell) -> Bool { state.visible(cell.slot)?.stamp == w.stamp(cell) }
        let length = state.lengthWrite.map { (hlc: $0.hlc, site: $0.site) }
        metas.bind(1, t.id)
        metas.bind(2, pk)
        let meta: RowMeta
        do {
            defer { metas.reset() }
            guard try metas.step(db) else { return (0, false) }
            meta = try RowMeta(metas)
        }
        if all.count == old.count && saysNoMore(state, meta, t) {
            try db.execute(sql: "DELETE FROM _lode_history WHERE tbl = ? AND pk = ?", arguments: [t.id, pk])
            try db.execute(sql: "UPDATE _lode_rows SET kept = 0 WHERE tbl = ? AND pk = ?", arguments: [t.id, pk])
            return (old.count, true)
        }
        var dropped = 0
        for e in old {
            let cells = e.write.cells.filter { keeps(e.write, $0) }
            let key: [any DatabaseValueConvertible] = [t.id, pk, Int64(bitPattern: e.write.hlc.rawValue), e.number]
            if cells.isEmpty && !(length.map { $0.hlc == e.write.hlc && $0.site == e.write.site } ?? false) {
                try db.execute(sql: "DELETE FROM _lode_history WHERE tbl = ? AND pk = ? AND hlc = ? AND site = ?", arguments: StatementArguments(key))
                dropped += 1
            } else if cells.count < e.write.cells.count {
                try db.execute(
                    sql: "UPDATE _lode_history SET cells = ? WHERE tbl = ? AND pk = ? AND hlc = ? AND site = ?",
                    arguments: StatementArguments([Data(RowWrite.encode(cells))] + key))
                dropped += 1
            }
        }
        return (dropped, false)
    }

    /// True when the row's table row and clocks give back exactly the
    /// writes `state` keeps (`FirstWrite`): the row exists, every cell it
    /// shows was written in its current life with the stamp the history
    /// gives it, and the clocks name no other cell.
    private func saysNoMore(_ state: RowAsOf, _ meta: RowMeta, _ t: TableState) -> Bool {
        guard Merge.isPresent(meta.length), state.length == meta.length, !meta.clocks.groups.isEmpty,
            meta.clocks.groups.allSatisfy({ $0.length == meta.length })
        else { return false }
        for slot in t.physicalSlots {
            let clock = meta.clocks.stamp(slot)
            let shown = state.visible(slot)
            switch (clock, shown) {
            case (nil, nil): continue
            case (let c?, let s?):
                guard c.length == s.stamp.length, c.hlc == s.stamp.hlc.rawValue, c.seq == s.stamp.seq, sites.key(c.site) == s.stamp.site
                else { return false }
            default: return false
            }
        }
        return true
    }
}
