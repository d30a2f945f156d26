import CLodeSQLite
import Foundation
import GRDB
import LodeCore

/// Everything the writer keeps in memory about one replica. It is touched
/// only inside `pool.write` closures, which GRDB runs one at a time, and is
/// reloaded from the file after any failed transaction so that memory never
/// disagrees with what SQLite committed.
final class WriterState {
    let dataset: String
    var sites: [SiteID: Int64] = [:]
    var siteKeys: [Int64: SiteID] = [:]
    var tables: [String: TableState] = [:]
    var heads: [SiteID: FeedHead] = [:]
    var vector = VersionVector()
    var clock = HybridLogicalClock()
    var nextLogID: Int64 = 1
    /// How many commits the current transaction stored, for observers.
    var added = 0

    private var selectRow: RawStatement?
    private var upsertRow: RawStatement?
    private var insertHistory: RawStatement?
    private var insertRowIfAbsent: RawStatement?
    /// The clocks of a row whose given slots were all written by one stamp
    /// (one entry: the rows of an import or a remote put share it).
    private var newRowClocks: (slots: [Int], stamp: LocalStamp, blob: [UInt8])?

    init(dataset: String) { self.dataset = dataset }

    /// Reads the state from the file.
    static func load(_ db: Database, dataset: String) throws -> WriterState {
        let s = WriterState(dataset: dataset)
        for row in try Row.fetchAll(db, sql: "SELECT id, key FROM _lode_sites") {
            let key = try SiteID(bytes: [UInt8](row["key"] as Data))
            s.sites[key] = row["id"]
            s.siteKeys[row["id"]] = key
        }
        for row in try Row.fetchAll(db, sql: "SELECT site, seq, hash, vector FROM _lode_feeds") {
            guard let key = s.siteKeys[row["site"]] else { continue }
            let head = FeedHead(
                seq: UInt64(row["seq"] as Int64), hash: [UInt8](row["hash"] as Data),
                vector: try decodeVector([UInt8](row["vector"] as Data)))
            s.heads[key] = head
            s.vector[key] = head.seq
        }
        s.clock = HybridLogicalClock(last: HLC(rawValue: UInt64(bitPattern: try Int64.fetchOne(db, sql: "SELECT max(hlc) FROM _lode_log") ?? 0)))
        s.nextLogID = (try Int64.fetchOne(db, sql: "SELECT max(id) FROM _lode_log") ?? 0) + 1
        for t in try Row.fetchAll(db, sql: "SELECT id, name, pk, hlc, site FROM _lode_tables ORDER BY id") {
            let id: Int64 = t["id"]
            let stamp = SchemaStamp(hlc: HLC(rawValue: UInt64(bitPattern: t["hlc"])), site: try SiteID(bytes: [UInt8](t["site"] as Data)))
            var schema = TableSchema(TableDef(name: t["name"], primaryKey: t["pk"], columns: []), stamp: stamp)
            var slots: [String: Int] = [:]
            for c in try Row.fetchAll(db, sql: "SELECT * FROM _lode_columns WHERE tbl = ? ORDER BY slot", arguments: [id]) {
                guard let type = ColumnType(rawValue: UInt8(c["type"] as Int)) else {
                    throw StoreError(.storage, "column \(c["name"] as String) has an unknown type code")
                }
                let def = ColumnDef(name: c["name"], type: type, notNull: c["not_null"], defaultValue: try Value.decoded([UInt8](c["dflt"] as Data)))
                schema.columns[def.name] = TableSchema.Column(
                    def: def,
                    stamp: SchemaStamp(hlc: HLC(rawValue: UInt64(bitPattern: c["hlc"])), site: try SiteID(bytes: [UInt8](c["site"] as Data))),
                    firstStamp: SchemaStamp(
                        hlc: HLC(rawValue: UInt64(bitPattern: c["first_hlc"])), site: try SiteID(bytes: [UInt8](c["first_site"] as Data))),
                    ordinal: c["first_ordinal"])
                slots[def.name] = c["slot"]
            }
            let physical = try physicalColumns(db, table: schema.name, schema: schema)
            s.tables[schema.name] = TableState(id: id, schema: schema, slots: slots, physical: physical)
        }
        return s
    }

    /// The columns of the SQLite table as it stands, with their merged definitions.
    static func physicalColumns(_ db: Database, table: String, schema: TableSchema) throws -> [ColumnDef] {
        try Row.fetchAll(db, sql: "PRAGMA table_info(\(quote(table)))").compactMap { row in
            let n: String = row["name"]
            return n == schema.primaryKey ? nil : schema.columns[n]?.def
        }
    }

    // MARK: Sites

    /// The local number of a site, registering it if new.
    func siteIndex(_ db: Database, _ site: SiteID) throws -> Int64 {
        if let i = sites[site] { return i }
        try db.execute(sql: "INSERT INTO _lode_sites(key) VALUES (?)", arguments: [Data(site.bytes)])
        let i = db.lastInsertedRowID
        sites[site] = i
        siteKeys[i] = site
        return i
    }

    // MARK: Schema

    /// Merges a table definition and brings the SQLite table in line with
    /// the merged schema: new table, added columns, or (when the canonical
    /// column order or a type changed) a rebuild.
    func define(_ db: Database, _ def: TableDef, stamp: SchemaStamp) throws {
        if let t = tables[def.name] {
            var merged = t.schema
            merged.merge(def, stamp: stamp)
            guard merged != t.schema else { return }
            if merged.primaryKey != t.schema.primaryKey {
                try db.execute(sql: "ALTER TABLE \(quote(def.name)) RENAME COLUMN \(quote(t.schema.primaryKey)) TO \(quote(merged.primaryKey))")
            }
            t.schema = merged
            for c in merged.columns.keys where t.slots[c] == nil {
                t.slots[c] = (t.slots.values.max() ?? -1) + 1
            }
            try persistSchema(db, t)
            let target = merged.orderedColumns
            let current = t.physical
            let isPrefix = current.count <= target.count && zip(current, target).allSatisfy { $0 == $1 }
            if isPrefix {
                for c in target.dropFirst(current.count) {
                    try db.execute(sql: "ALTER TABLE \(quote(def.name)) ADD COLUMN \(TableState.columnSQL(c))")
                }
            } else {
                try rebuild(db, t, to: target)
            }
            t.physical = target
            t.refresh()
        } else {
            let schema = TableSchema(def, stamp: stamp)
            try db.execute(
                sql: "INSERT INTO _lode_tables(name, pk, hlc, site) VALUES (?, ?, ?, ?)",
                arguments: [def.name, def.primaryKey, Int64(bitPattern: stamp.hlc.rawValue), Data(stamp.site.bytes)])
            let id = db.lastInsertedRowID
            var slots: [String: Int] = [:]
            for (i, c) in def.columns.enumerated() where schema.columns[c.name] != nil { slots[c.name] = i }
            let ordered = schema.orderedColumns
            let t = TableState(id: id, schema: schema, slots: slots, physical: ordered)
            try db.execute(sql: TableState.createSQL(name: def.name, primaryKey: def.primaryKey, columns: ordered))
            tables[def.name] = t
            try persistSchema(db, t)
        }
    }

    private func persistSchema(_ db: Database, _ t: TableState) throws {
        try db.execute(
            sql: "UPDATE _lode_tables SET pk = ?, hlc = ?, site = ? WHERE id = ?",
            arguments: [t.schema.primaryKey, Int64(bitPattern: t.schema.stamp.hlc.rawValue), Data(t.schema.stamp.site.bytes), t.id])
        for (name, col) in t.schema.columns {
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO _lode_columns(tbl, slot, name, type, not_null, dflt, hlc, site, first_hlc, first_site, first_ordinal)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    t.id, t.slots[name]!, name, Int(col.def.type.rawValue), col.def.notNull, Data(col.def.defaultValue.encoded),
                    Int64(bitPattern: col.stamp.hlc.rawValue), Data(col.stamp.site.bytes),
                    Int64(bitPattern: col.firstStamp.hlc.rawValue), Data(col.firstStamp.site.bytes), col.ordinal,
                ])
        }
    }

    /// Recreates a table with the columns in `target` order, copying rows.
    private func rebuild(_ db: Database, _ t: TableState, to target: [ColumnDef]) throws {
        let temp = "_lode_rebuild"
        try db.execute(sql: TableState.createSQL(name: temp, primaryKey: t.schema.primaryKey, columns: target))
        let kept = [t.schema.primaryKey] + t.physical.map(\.name)
        let list = kept.map(quote).joined(separator: ", ")
        try db.execute(sql: "INSERT INTO \(temp) (\(list)) SELECT \(list) FROM \(quote(t.name))")
        try db.execute(sql: "DROP TABLE \(quote(t.name))")
        try db.execute(sql: "ALTER TABLE \(temp) RENAME TO \(quote(t.name))")
    }

    // MARK: Rows

    struct RowMeta {
        var exists = false
        var length: UInt64 = 0
        var clocks = RowClocks()
    }

    func readRow(_ db: Database, _ t: TableState, _ key: String) throws -> RowMeta {
        let s: RawStatement
        if let cached = selectRow {
            s = cached
        } else {
            s = try RawStatement(db, "SELECT cl, clocks FROM _lode_rows WHERE tbl = ? AND pk = ?")
            selectRow = s
        }
        defer { s.reset() }
        s.bind(1, t.id)
        s.bind(2, key)
        guard try s.step(db) else { return RowMeta() }
        return RowMeta(exists: true, length: UInt64(s.int64(0)), clocks: try RowClocks(decoding: s.blob(1)))
    }

    private func writeRow(_ db: Database, _ t: TableState, _ key: String, _ meta: RowMeta, logID: Int64, existed: Bool) throws {
        if upsertRow == nil {
            upsertRow = try RawStatement(
                db,
                """
                INSERT INTO _lode_rows(tbl, pk, cl, clocks, first_log) VALUES (?1, ?2, ?3, ?4, ?5)
                ON CONFLICT(tbl, pk) DO UPDATE SET cl = ?3, clocks = ?4
                """)
            insertHistory = try RawStatement(db, "INSERT OR IGNORE INTO _lode_history(tbl, pk, log) VALUES (?, ?, ?)")
        }
        let u = upsertRow!
        u.bind(1, t.id)
        u.bind(2, key)
        u.bind(3, Int64(meta.length))
        u.bind(4, blob: meta.clocks.encoded)
        u.bind(5, logID)
        try u.run(db)
        if existed {
            let h = insertHistory!
            h.bind(1, t.id)
            h.bind(2, key)
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
        _ db: Database, _ t: TableState, key: String, length: UInt64, slots: [Int], values: ArraySlice<Value>,
        _ ctx: CommitContext
    ) throws -> Bool {
        let stamp = LocalStamp(length: length, hlc: ctx.hlc.rawValue, site: ctx.site, seq: ctx.seq)
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
        m.bind(2, key)
        m.bind(3, Int64(length))
        m.bind(4, blob: newRowClocks!.blob)
        m.bind(5, ctx.logID)
        try m.run(db)
        guard sqlite3_changes(db.sqliteConnection) > 0 else { return false }
        let s = try t.insert(db)
        s.bind(1, key)
        for (p, j) in t.positions(of: slots).enumerated() {
            let def = t.physical[p]
            var value = def.defaultValue
            if j >= 0 {
                let w = values[values.startIndex + j]
                if !(w.isNull && def.notNull) { value = w }
            }
            s.bind(Int32(p + 2), value)
        }
        try s.run(db)
        return true
    }

    /// True when local stamp `a` replaces `b`, breaking clock ties by the
    /// sites' key bytes as every replica does.
    func replaces(_ a: LocalStamp, _ b: LocalStamp?) -> Bool {
        guard let b else { return true }
        if a.length != b.length { return a.length > b.length }
        if a.hlc != b.hlc { return a.hlc > b.hlc }
        if a.site == b.site { return true }
        return siteKeys[a.site]! > siteKeys[b.site]!
    }

    /// Applies one row of a put: merges causal length and cells, records
    /// conflicts between concurrent writes, and updates the SQLite row.
    /// `slots` are the table slots of the written columns.
    func put(
        _ db: Database, _ t: TableState, key: String, length: UInt64, slots: [Int],
        values: ArraySlice<Value>, meta readMeta: RowMeta? = nil, _ ctx: CommitContext
    ) throws {
        var meta = try readMeta ?? readRow(db, t, key)
        let existed = meta.exists
        let oldLength = meta.length
        let newLength = Merge.rowLength(oldLength, length)
        let incoming = LocalStamp(length: length, hlc: ctx.hlc.rawValue, site: ctx.site, seq: ctx.seq)
        var group = -1
        var winners: [Int] = []  // indexes into slots/values
        var v = values.startIndex
        for (j, slot) in slots.enumerated() {
            defer { v += 1 }
            let existing = meta.clocks.stamp(slot)
            let visible = length == newLength
            if replaces(incoming, existing) {
                if visible, let e = existing, e.length == length, let past = ctx.past,
                    isConcurrent(e, past: past, site: ctx.site)
                {
                    let loser = try currentValue(db, t, key, slot: slot)
                    try recordConflict(db, t, key, slot: slot, winner: incoming, winnerValue: values[v], loser: e, loserValue: loser)
                    meta.clocks.setConflict(slot, true)
                } else if meta.clocks.hasConflict(slot) {
                    try resolveConflicts(db, t, key, slot: slot, &meta.clocks, ctx)
                }
                if group < 0 { group = meta.clocks.group(for: incoming) }
                meta.clocks.set(slot, group: group)
                winners.append(j)
            } else if visible, let e = existing, e.length == length, let past = ctx.past,
                isConcurrent(e, past: past, site: ctx.site)
            {
                let winnerValue = try currentValue(db, t, key, slot: slot)
                try recordConflict(db, t, key, slot: slot, winner: e, winnerValue: winnerValue, loser: incoming, loserValue: values[v])
                meta.clocks.setConflict(slot, true)
            }
        }
        meta.length = newLength
        meta.exists = true
        if newLength > oldLength {
            // A new life of the row: written cells, defaults elsewhere.
            let s = try t.insert(db)
            s.bind(1, key)
            for (p, slot) in t.physicalSlots.enumerated() {
                let def = t.physical[p]
                var value = def.defaultValue
                if let j = slots.firstIndex(of: slot), winners.contains(j) {
                    let w = values[values.startIndex + j]
                    if !(w.isNull && def.notNull) { value = w }
                }
                s.bind(Int32(p + 2), value)
            }
            try s.run(db)
        } else if Merge.isPresent(newLength) && length == newLength && !winners.isEmpty {
            let ws = winners.map { slots[$0] }
            let s = try t.update(db, slots: ws)
            for (i, j) in winners.enumerated() {
                let def = t.bySlot[slots[j]]!
                let w = values[values.startIndex + j]
                s.bind(Int32(i + 1), w.isNull && def.notNull ? def.defaultValue : w)
            }
            s.bind(Int32(winners.count + 1), key)
            try s.run(db)
        }
        try writeRow(db, t, key, meta, logID: ctx.logID, existed: existed)
    }

    /// Applies one row of a delete.
    func delete(_ db: Database, _ t: TableState, key: String, length: UInt64, meta readMeta: RowMeta? = nil, _ ctx: CommitContext) throws {
        var meta = try readMeta ?? readRow(db, t, key)
        let existed = meta.exists
        let oldLength = meta.length
        let newLength = Merge.rowLength(oldLength, length)
        if newLength > oldLength && Merge.isPresent(oldLength) {
            let s = try t.delete(db)
            s.bind(1, key)
            try s.run(db)
        }
        meta.length = newLength
        meta.exists = true
        try writeRow(db, t, key, meta, logID: ctx.logID, existed: existed)
    }

    private func isConcurrent(_ e: LocalStamp, past: VersionVector, site: Int64) -> Bool {
        guard e.site != site, let key = siteKeys[e.site] else { return false }
        return past[key] < e.seq
    }

    private func currentValue(_ db: Database, _ t: TableState, _ key: String, slot: Int) throws -> Value {
        let s = try t.select(db, slots: [slot])
        defer { s.reset() }
        s.bind(1, key)
        return try s.step(db) ? s.value(0) : .null
    }

    private func recordConflict(
        _ db: Database, _ t: TableState, _ key: String, slot: Int,
        winner: LocalStamp, winnerValue: Value, loser: LocalStamp, loserValue: Value
    ) throws {
        try db.execute(
            sql: """
                INSERT INTO _lode_conflicts(tbl, pk, col, winner_value, winner_site, winner_seq, winner_hlc,
                                            loser_value, loser_site, loser_seq, loser_hlc, detected)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                t.name, key, t.bySlot[slot]!.name, winnerValue.databaseValue, winner.site, Int64(winner.seq),
                Int64(bitPattern: winner.hlc), loserValue.databaseValue, loser.site, Int64(loser.seq),
                Int64(bitPattern: loser.hlc), Int64(bitPattern: clock.last.rawValue),
            ])
    }

    /// A write that has seen both sides of a conflict resolves it.
    private func resolveConflicts(_ db: Database, _ t: TableState, _ key: String, slot: Int, _ clocks: inout RowClocks, _ ctx: CommitContext) throws {
        let column = t.bySlot[slot]!.name
        var open = 0
        for row in try Row.fetchAll(
            db,
            sql: """
                SELECT id, winner_site, winner_seq, loser_site, loser_seq FROM _lode_conflicts
                WHERE tbl = ? AND pk = ? AND col = ? AND resolved_seq IS NULL
                """, arguments: [t.name, key, column])
        {
            let saw: Bool
            if let past = ctx.past {
                func covers(_ site: Int64, _ seq: Int64) -> Bool {
                    guard let k = siteKeys[site] else { return false }
                    return past[k] >= UInt64(seq)
                }
                saw = covers(row["winner_site"], row["winner_seq"]) && covers(row["loser_site"], row["loser_seq"])
            } else {
                saw = true  // a local write has seen everything this replica holds
            }
            if saw {
                try db.execute(
                    sql: "UPDATE _lode_conflicts SET resolved_site = ?, resolved_seq = ? WHERE id = ?",
                    arguments: [ctx.site, Int64(ctx.seq), row["id"] as Int64])
            } else {
                open += 1
            }
        }
        clocks.setConflict(slot, open > 0)
    }
}

/// The commit whose ops are being applied.
struct CommitContext {
    /// Local number of the author.
    let site: Int64
    let hlc: HLC
    let seq: UInt64
    /// The log row the commit is (or will be) stored in.
    let logID: Int64
    /// The commit's causal past; nil for a local commit, which has seen
    /// everything the replica holds.
    let past: VersionVector?
}

func encodeVector(_ v: VersionVector) -> [UInt8] {
    var w = ByteWriter(capacity: 40 * v.entries.count + 1)
    w.writeVarint(UInt64(v.entries.count))
    for (site, seq) in v.sorted {
        site.encode(into: &w)
        w.writeVarint(seq)
    }
    return w.bytes
}

func decodeVector(_ bytes: [UInt8]) throws -> VersionVector {
    try bytes.withUnsafeBytes { raw in
        var r = ByteReader(raw)
        let n = try r.readCount(limit: r.remaining / 33, "vector entries")
        var v = VersionVector()
        for _ in 0..<n {
            let s = try SiteID(from: &r)
            v[s] = try r.readVarint()
        }
        return v
    }
}
