import Foundation
import LodeCore
import LodeStore
import NIOCore
import PostgresNIO

/// A row's merge state as stored in `_lode_rows`.
struct PGRowMeta {
    var exists = false
    var length: UInt64 = 0
    var clocks = RowClocks()
}

/// What a batch does to a row of a user table, written when it ends: a new
/// life (every column: the written cells, defaults elsewhere), changed
/// cells of a present row, or gone.
enum PGRowImage {
    case full([String: Value])
    case partial([String: Value])
    case deleted
}

/// One write transaction on a dataset: the commits it applies (from
/// elsewhere or this site's own) merged by the CRDT's rules into an
/// overlay of row states and images, then written in a few statements per
/// table when it ends (`flush`). Its state is a copy of the replica's,
/// kept only if the transaction commits.
final class PGTx {
    let conn: PostgresConnection
    let replica: PostgresReplica
    let s: String
    let logger: Logger
    var state: PGState
    /// True once commits were added (observers are told).
    var added = false
    /// The commits added, in log order, once stored.
    var stored: [StoredCommit] = []
    /// True when the log was rewritten, not only added to (a cut).
    var rewritesLog = false

    private var metas: [String: [String: PGRowMeta]] = [:]
    /// Rows whose state changed: the log id of the write that first made
    /// them (for a row new to `_lode_rows`) or 0.
    private var dirty: [String: [String: Int64]] = [:]
    private var images: [String: [String: PGRowImage]] = [:]
    private var history: [String: [(String, Int64)]] = [:]
    private var log: [(id: Int64, site: Int64, commit: Commit)] = []
    private var feeds: Set<SiteID> = []

    init(conn: PostgresConnection, replica: PostgresReplica, state: PGState) {
        self.conn = conn
        self.replica = replica
        s = replica.schema
        logger = replica.logger
        self.state = state
    }

    func rows(_ sql: String, _ b: PostgresBindings = PostgresBindings()) async throws -> [PostgresRandomAccessRow] {
        try await conn.rows(sql, b, logger: logger)
    }

    func run(_ sql: String, _ b: PostgresBindings = PostgresBindings()) async throws {
        try await conn.run(sql, b, logger: logger)
    }

    // MARK: Sites and feeds

    /// The number of `site`, registering it if new.
    func number(_ site: SiteID) async throws -> SiteNumber {
        if let n = state.numbers[site] { return n }
        var b = Binds()
        let key = b.add(PGValue.bytes(site.bytes))
        let r = try await rows(
            "INSERT INTO \(s)._lode_sites(key) VALUES (\(key)) ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING id", b.bindings)
        let n = try r[0].int64(0)
        state.numbers[site] = n
        state.keys[n] = site
        if state.records[site] == nil { state.records[site] = SiteRecord(site: site, name: nil, role: nil, certificate: nil) }
        return n
    }

    /// Records what a site's certificate says, written only when it changes.
    func register(_ record: SiteRecord) async throws {
        let n = try await number(record.site)
        guard state.records[record.site] != record else { return }
        var b = Binds()
        let sql = """
            UPDATE \(s)._lode_sites SET name = \(record.name.map { b.add($0) } ?? "NULL"),
                role = \(record.role.map { b.add($0.rawValue) } ?? "NULL"),
                cert = \(record.certificate.map { b.add(PGValue.bytes($0)) } ?? "NULL"),
                valid_from = \(record.validFrom.map { b.add(Int64(clamping: $0)) } ?? "NULL"),
                valid_until = \(record.validUntil.map { b.add(Int64(clamping: $0)) } ?? "NULL")
            WHERE id = \(b.add(n))
            """
        try await run(sql, b.bindings)
        state.records[record.site] = record
    }

    // MARK: Commits

    /// The hashes of held commits, by feed and seq, read ahead for a batch
    /// (`prefetch`); a seq read with nothing held maps to nil.
    private var heldHashes: [SiteNumber: [UInt64: [UInt8]?]] = [:]

    /// Reads what applying `commits` will ask the database, in a few
    /// statements instead of one or two per commit: the hashes of commits
    /// already held (each compared with the one offered, to catch a fork)
    /// and the row states of the rows the others write. Over a busy
    /// database each round trip costs milliseconds; a relay applies
    /// batches of hundreds.
    func prefetch(_ commits: [Commit]) async throws {
        var held: [(SiteNumber, UInt64)] = []
        var keys: [String: [String]] = [:]
        for c in commits {
            if c.seq <= state.head(of: c.author).seq {
                if let n = state.numbers[c.author], heldHashes[n]?[c.seq] == nil { held.append((n, c.seq)) }
                continue
            }
            for op in c.ops {
                switch op {
                case .put(let put): keys[put.table, default: []] += put.keys
                case .delete(let del): keys[del.table, default: []] += del.keys
                case .defineTable: break
                }
            }
        }
        for chunk in stride(from: 0, to: held.count, by: 10_000) { try await readHeldHashes(held[chunk..<min(held.count, chunk + 10_000)]) }
        for (table, keys) in keys { try await load(table, keys) }
    }

    /// Reads the hashes of the held commits at `pairs` (feed, seq) into
    /// `heldHashes`, nil where nothing is held.
    private func readHeldHashes(_ pairs: ArraySlice<(SiteNumber, UInt64)>) async throws {
        for (n, seq) in pairs { heldHashes[n, default: [:]][seq] = .some(nil) }
        var b = Binds()
        let sql = """
            SELECT l.site, l.seq, l.hash FROM unnest(\(b.add(pairs.map(\.0))), \(b.add(pairs.map { PGValue.int64($0.1) }))) AS u(site, seq)
            JOIN \(s)._lode_log l ON l.site = u.site AND l.seq = u.seq
            """
        for r in try await rows(sql, b.bindings) { heldHashes[try r.int64(0), default: [:]][PGValue.uint64(try r.int64(1))] = try r.bytes(2) }
    }

    /// Verifies and applies one commit from elsewhere (`CommitVerifier`).
    func applyOne(_ commit: Commit) async throws -> CommitVerifier.Verdict {
        let head = state.head(of: commit.author)
        var heldHash: [UInt8]?
        if commit.seq <= head.seq, let n = state.numbers[commit.author] {
            // Read ahead for the batch, unless an earlier commit of it moved the head.
            if heldHashes[n]?[commit.seq] == nil { try await readHeldHashes([(n, commit.seq)]) }
            heldHash = heldHashes[n]?[commit.seq] ?? nil
        }
        let verdict = CommitVerifier.verify(
            commit, dataset: replica.dataset, head: head, held: state.vector, author: state.records[commit.author],
            now: replica.wallClock(), maxDrift: replica.maxClockDrift, cutoffs: state.cutoffs, heldHash: { _ in heldHash })
        switch verdict {
        case .duplicate, .wait, .clockAhead:
            return verdict
        case .reject(let kind, let reason):
            reject(commit, kind, reason)
            return verdict
        case .apply(let past):
            if let violation = check(commit) {
                reject(commit, .invalid, violation)
                return .reject(.invalid, violation)
            }
            try await store(commit, past: past)
            return verdict
        }
    }

    /// Why the commit's ops do not fit the schema (a put or delete of a
    /// table or column that neither the schema nor an earlier op of the
    /// commit defines), or nil. Checked before anything is applied, so a
    /// refused commit changes nothing.
    func check(_ commit: Commit) -> String? {
        var schemas = state.schemas
        let stamp = SchemaStamp(hlc: commit.hlc, site: commit.author)
        for op in commit.ops {
            switch op {
            case .defineTable(let def):
                if var t = schemas[def.name] {
                    t.merge(def, stamp: stamp)
                    schemas[def.name] = t
                } else {
                    schemas[def.name] = TableSchema(def, stamp: stamp)
                }
            case .put(let put):
                guard let t = schemas[put.table] else { return "no table \(put.table)" }
                if let c = put.columns.first(where: { t.columns[$0] == nil }) { return "no column \(c) in table \(put.table)" }
            case .delete(let del):
                guard schemas[del.table] != nil else { return "no table \(del.table)" }
            }
        }
        return nil
    }

    /// Applies a commit that passed every check and logs it. `past` is its
    /// causal past; a `local` commit (this site's own) has seen everything
    /// held here, so it conflicts with nothing.
    func store(_ commit: Commit, past: VersionVector, local: Bool = false) async throws {
        let author = try await number(commit.author)
        let id = state.nextLog
        state.nextLog += 1
        let ctx = PGCommitContext(author: author, site: commit.author, hlc: commit.hlc, seq: commit.seq, logID: id, past: local ? nil : past)
        let stamp = SchemaStamp(hlc: commit.hlc, site: commit.author)
        for op in commit.ops {
            switch op {
            case .defineTable(let def):
                try await define(def, stamp: stamp)
            case .put(let put):
                try await load(put.table, put.keys)
                for i in 0..<put.rowCount {
                    try await self.put(put.table, pk: put.keys[i], length: put.lengths[i], columns: put.columns, values: put.row(i), ctx)
                }
            case .delete(let del):
                try await load(del.table, del.keys)
                for i in 0..<del.keys.count { delete(del.table, pk: del.keys[i], length: del.lengths[i], ctx) }
            }
        }
        log.append((id, author, commit))
        stored.append(StoredCommit(site: commit.author, seq: commit.seq, bytes: commit.bytes))
        let head = FeedHead(seq: commit.seq, hash: commit.hash, vector: past)
        state.heads[commit.author] = head
        state.vector[commit.author] = commit.seq
        state.clock.observe(commit.hlc)
        feeds.insert(commit.author)
        added = true
    }

    /// Keeps a refusal aside as `RejectionLog` says: bytes only of a fork,
    /// the newest `maxKept` of the others. Written at `flush`, with the
    /// batch's other refusals.
    func reject(_ commit: Commit, _ kind: RejectionKind, _ reason: String) {
        refusals.append((Int64(clamping: replica.wallClock()), commit, kind, RejectionLog.reason(reason)))
    }

    private var refusals: [(received: Int64, commit: Commit, kind: RejectionKind, reason: String)] = []

    /// Writes the refusals kept aside in one statement per few thousand,
    /// then, whenever the ids passed a multiple of 256, drops all but the
    /// newest `maxKept` that are not forks.
    private func flushRefusals() async throws {
        var prune = false
        for chunk in stride(from: 0, to: refusals.count, by: 2_000) {
            let part = refusals[chunk..<min(refusals.count, chunk + 2_000)]
            var b = Binds()
            let sql = """
                INSERT INTO \(s)._lode_rejected(received, site, seq, hash, kind, reason, bytes)
                SELECT * FROM unnest(\(b.add(part.map(\.received))), \(b.add(part.map { PGValue.bytes($0.commit.author.bytes) })),
                    \(b.add(part.map { PGValue.int64($0.commit.seq) })), \(b.add(part.map { PGValue.bytes($0.commit.hash) })),
                    \(b.add(part.map(\.kind.rawValue))), \(b.add(part.map(\.reason))),
                    \(b.add(part.map { PGValue.bytes(RejectionLog.keepsBytes($0.kind) ? $0.commit.bytes : []) })))
                ON CONFLICT (hash) DO NOTHING RETURNING id
                """
            let ids = try await rows(sql, b.bindings).map { try $0.int64(0) }
            if let low = ids.min(), let high = ids.max(), high / 256 > (low - 1) / 256 { prune = true }
        }
        refusals = []
        guard prune else { return }
        var p = Binds()
        try await run(
            """
            DELETE FROM \(s)._lode_rejected WHERE id IN (
                SELECT id FROM \(s)._lode_rejected WHERE kind != \(p.add(RejectionKind.forkedFeed.rawValue))
                ORDER BY id DESC OFFSET \(p.add(Int64(RejectionLog.maxKept))))
            """, p.bindings)
    }

    // MARK: Schema

    /// Merges a table definition: creates the table, or adds, retypes or
    /// renames what the merged definition changes.
    func define(_ def: TableDef, stamp: SchemaStamp) async throws {
        let old = state.schemas[def.name]
        var merged = old ?? TableSchema(def, stamp: stamp)
        if old != nil { merged.merge(def, stamp: stamp) }
        guard merged != old else { return }
        let t = SchemaSQL.quote(def.name)
        var slots = state.slots[def.name] ?? [:]
        if let old {
            if old.primaryKey != merged.primaryKey {
                if old.columns[merged.primaryKey] != nil {
                    try await run("ALTER TABLE \(s).\(t) DROP COLUMN \(SchemaSQL.quote(merged.primaryKey))")
                }
                try await run("ALTER TABLE \(s).\(t) RENAME COLUMN \(SchemaSQL.quote(old.primaryKey)) TO \(SchemaSQL.quote(merged.primaryKey))")
            }
            for (name, c) in merged.columns.sorted(by: { $0.key < $1.key }) {
                let q = SchemaSQL.quote(name)
                if let was = old.columns[name] {
                    guard was.def.type != c.def.type else { continue }
                    // Only an INTEGER becoming REAL converts exactly; other
                    // values are kept aside as misfits of the new type.
                    let using = was.def.type == .integer && c.def.type == .real ? "\(q)::double precision" : "NULL"
                    try await keepAside(def.name, column: name, type: was.def.type)
                    try await run("ALTER TABLE \(s).\(t) ALTER COLUMN \(q) TYPE \(PGLayout.sqlType(c.def.type)) USING \(using)")
                } else {
                    try await run("ALTER TABLE \(s).\(t) ADD COLUMN \(q) \(PGLayout.sqlType(c.def.type))")
                    if !c.def.defaultValue.isNull {
                        var b = Binds()
                        let (v, fits) = b.add(c.def.defaultValue, as: c.def.type)
                        if fits { try await run("UPDATE \(s).\(t) SET \(q) = \(v)", b.bindings) }
                    }
                }
            }
        } else {
            let cols =
                [SchemaSQL.quote(merged.primaryKey) + " text PRIMARY KEY"]
                + merged.orderedColumns.map { SchemaSQL.quote($0.name) + " " + PGLayout.sqlType($0.type) }
            try await run("CREATE TABLE \(s).\(t)(\(cols.joined(separator: ", ")))")
        }
        for name in merged.columns.keys.sorted() where slots[name] == nil { slots[name] = (slots.values.max() ?? -1) + 1 }
        state.schemas[def.name] = merged
        state.slots[def.name] = slots
        var b = Binds()
        try await run(
            """
            INSERT INTO \(s)._lode_tables(name, pk, hlc, site) VALUES (\(b.add(def.name)), \(b.add(merged.primaryKey)),
                \(b.add(PGValue.int64(merged.stamp.hlc.rawValue))), \(b.add(PGValue.bytes(merged.stamp.site.bytes))))
            ON CONFLICT (name) DO UPDATE SET pk = EXCLUDED.pk, hlc = EXCLUDED.hlc, site = EXCLUDED.site
            """, b.bindings)
        for (name, c) in merged.columns where old?.columns[name] != c {
            var b = Binds()
            try await run(
                """
                INSERT INTO \(s)._lode_columns(tbl, slot, name, type, not_null, dflt, hlc, site, first_hlc, first_site, first_ordinal)
                VALUES (\(b.add(def.name)), \(b.add(Int32(slots[name]!))), \(b.add(name)), \(b.add(Int16(c.def.type.rawValue))),
                        \(b.add(c.def.notNull)), \(b.add(PGValue.bytes(c.def.defaultValue.encoded))), \(b.add(PGValue.int64(c.stamp.hlc.rawValue))),
                        \(b.add(PGValue.bytes(c.stamp.site.bytes))), \(b.add(PGValue.int64(c.firstStamp.hlc.rawValue))),
                        \(b.add(PGValue.bytes(c.firstStamp.site.bytes))), \(b.add(Int32(clamping: c.ordinal))))
                ON CONFLICT (tbl, name) DO UPDATE SET type = EXCLUDED.type, not_null = EXCLUDED.not_null, dflt = EXCLUDED.dflt,
                    hlc = EXCLUDED.hlc, site = EXCLUDED.site, first_hlc = EXCLUDED.first_hlc, first_site = EXCLUDED.first_site,
                    first_ordinal = EXCLUDED.first_ordinal
                """, b.bindings)
        }
        if let old, old.primaryKey != merged.primaryKey, old.columns[merged.primaryKey] != nil {
            var b = Binds()
            try await run("DELETE FROM \(s)._lode_columns WHERE tbl = \(b.add(def.name)) AND name = \(b.add(merged.primaryKey))", b.bindings)
        }
    }

    /// Before a column changes type: writes what is pending and copies every
    /// value of the column to `_lode_misfits`; once retyped, values that fit
    /// the new type are put back (`restoreFits` runs at flush).
    private func keepAside(_ table: String, column: String, type: ColumnType) async throws {
        try await flush()
        let t = SchemaSQL.quote(table)
        let c = SchemaSQL.quote(column)
        guard let pk = state.schemas[table]?.primaryKey else { return }
        var rows: [(String, Value)] = []
        for r in try await self.rows("SELECT \(SchemaSQL.quote(pk)), \(c) FROM \(s).\(t) WHERE \(c) IS NOT NULL") {
            rows.append((try r.string(0), try PGValue.decode(r[1], as: type)))
        }
        for (pk, v) in rows { try await writeMisfit(table, pk: pk, column: column, value: v) }
        retyped.append((table, column))
    }

    private var retyped: [(String, String)] = []

    // MARK: Rows

    /// Reads the stored state of the rows of `keys` not yet in the overlay.
    func load(_ table: String, _ keys: [String]) async throws {
        var known = metas[table] ?? [:]
        let missing = Array(Set(keys.filter { known[$0] == nil }))
        guard !missing.isEmpty else { return }
        for chunk in stride(from: 0, to: missing.count, by: 10_000) {
            let part = Array(missing[chunk..<min(missing.count, chunk + 10_000)])
            var b = Binds()
            let sql = "SELECT pk, cl, clocks FROM \(s)._lode_rows WHERE tbl = \(b.add(table)) AND pk = ANY(\(b.add(part)))"
            for r in try await rows(sql, b.bindings) {
                known[try r.string(0)] = PGRowMeta(
                    exists: true, length: PGValue.uint64(try r.int64(1)), clocks: try RowClocks(decoding: try r.bytes(2)))
            }
            for k in part where known[k] == nil { known[k] = PGRowMeta() }
        }
        metas[table] = known
    }

    /// The stored state of one row.
    func meta(_ table: String, _ pk: String) async throws -> PGRowMeta {
        if let m = metas[table]?[pk] { return m }
        try await load(table, [pk])
        return metas[table]![pk]!
    }

    private func setMeta(_ table: String, _ pk: String, _ m: PGRowMeta, existed: Bool, logID: Int64) {
        metas[table, default: [:]][pk] = m
        if dirty[table]?[pk] == nil { dirty[table, default: [:]][pk] = existed ? 0 : logID }
        history[table, default: []].append((pk, logID))
    }

    private func stamp(_ s: LocalStamp) -> CellStamp {
        CellStamp(length: s.length, hlc: HLC(rawValue: s.hlc), site: state.keys[s.site]!, seq: s.seq)
    }

    /// Applies one row of a put: merges causal length and cells
    /// (`Merge.cell`), records conflicts between concurrent writes and
    /// resolves those a write has seen both sides of.
    func put(_ table: String, pk: String, length: UInt64, columns: [String], values: ArraySlice<Value>, _ ctx: PGCommitContext) async throws {
        let schema = state.schemas[table]!
        let slots = state.slots[table]!
        var meta = try await meta(table, pk)
        let existed = meta.exists
        let oldLength = meta.length
        let newLength = Merge.rowLength(oldLength, length)
        let incoming = LocalStamp(length: length, hlc: ctx.hlc.rawValue, site: ctx.author, seq: ctx.seq)
        let incomingStamp = CellStamp(length: length, hlc: ctx.hlc, site: ctx.site, seq: ctx.seq)
        let stamps = meta.clocks.groups.map(stamp)
        var group = -1
        var written: [String: Value] = [:]
        for (j, column) in columns.enumerated() {
            let slot = slots[column]!
            let value = schema.columns[column]!.def.materialized(values[values.startIndex + j])
            let existing = meta.clocks.groupIndex(slot).map { stamps[$0] }
            let m = Merge.cell(incoming: incomingStamp, past: ctx.past, existing: existing, rowLength: newLength)
            if m.isConflict, let existing {
                let current = try await shown(table, pk)?[column] ?? .null
                if m.replaces {
                    try await recordConflict(table, pk, column, winner: incomingStamp, winnerValue: value, loser: existing, loserValue: current)
                } else {
                    try await recordConflict(table, pk, column, winner: existing, winnerValue: current, loser: incomingStamp, loserValue: value)
                }
                meta.clocks.setConflict(slot, true)
            } else if m.replaces && meta.clocks.hasConflict(slot) {
                meta.clocks.setConflict(slot, try await resolveConflicts(table, pk, column, ctx))
            }
            if m.replaces {
                if group < 0 { group = meta.clocks.group(for: incoming) }
                meta.clocks.set(slot, group: group)
                written[column] = value
            }
        }
        meta.length = newLength
        meta.exists = true
        if newLength > oldLength {
            images[table, default: [:]][pk] = .full(written)
        } else if Merge.isPresent(newLength) && length == newLength && !written.isEmpty {
            switch images[table]?[pk] {
            case .full(var row)?:
                row.merge(written) { _, new in new }
                images[table]![pk] = .full(row)
            case .partial(var row)?:
                row.merge(written) { _, new in new }
                images[table]![pk] = .partial(row)
            case .deleted?, nil:
                images[table, default: [:]][pk] = .partial(written)
            }
        }
        setMeta(table, pk, meta, existed: existed, logID: ctx.logID)
    }

    /// Applies one row of a delete.
    func delete(_ table: String, pk: String, length: UInt64, _ ctx: PGCommitContext) {
        var meta = metas[table]![pk]!
        let existed = meta.exists
        let newLength = Merge.rowLength(meta.length, length)
        if newLength > meta.length && Merge.isPresent(meta.length) { images[table, default: [:]][pk] = .deleted }
        meta.length = newLength
        meta.exists = true
        setMeta(table, pk, meta, existed: existed, logID: ctx.logID)
    }

    /// The values row `pk` of `table` shows now (pending writes included),
    /// by column; nil when the row is not present.
    func shown(_ table: String, _ pk: String) async throws -> [String: Value]? {
        guard let schema = state.schemas[table] else { return nil }
        switch images[table]?[pk] {
        case .deleted?: return nil
        case .full(let row)?:
            var out: [String: Value] = [:]
            for (name, c) in schema.columns { out[name] = row[name] ?? c.def.defaultValue }
            return out
        case .partial(let row)?:
            guard var stored = try await storedRow(schema, pk) else { return nil }
            stored.merge(row) { _, new in new }
            return stored
        case nil:
            return try await storedRow(schema, pk)
        }
    }

    /// A row as the database holds it, misfits put back.
    private func storedRow(_ schema: TableSchema, _ pk: String) async throws -> [String: Value]? {
        let cols = schema.orderedColumns
        var b = Binds()
        let list = cols.isEmpty ? "1" : cols.map { SchemaSQL.quote($0.name) }.joined(separator: ", ")
        let sql = "SELECT \(list) FROM \(s).\(SchemaSQL.quote(schema.name)) WHERE \(SchemaSQL.quote(schema.primaryKey)) = \(b.add(pk))"
        guard let r = try await rows(sql, b.bindings).first else { return nil }
        var out: [String: Value] = [:]
        for (i, c) in cols.enumerated() { out[c.name] = try PGValue.decode(r[i], as: c.type) }
        if state.misfitTables.contains(schema.name) {
            var m = Binds()
            let q = "SELECT col, value FROM \(s)._lode_misfits WHERE tbl = \(m.add(schema.name)) AND pk = \(m.add(pk))"
            for r in try await rows(q, m.bindings) { out[try r.string(0)] = try Value.decoded(try r.bytes(1)) }
        }
        return out
    }

    private func recordConflict(
        _ table: String, _ pk: String, _ column: String, winner: CellStamp, winnerValue: Value, loser: CellStamp, loserValue: Value
    ) async throws {
        var b = Binds()
        let sql = """
            INSERT INTO \(s)._lode_conflicts(tbl, pk, col, winner_value, winner_site, winner_seq, winner_hlc,
                                             loser_value, loser_site, loser_seq, loser_hlc, detected)
            VALUES (\(b.add(table)), \(b.add(pk)), \(b.add(column)), \(b.add(PGValue.bytes(winnerValue.encoded))),
                    \(b.add(try await number(winner.site))), \(b.add(PGValue.int64(winner.seq))), \(b.add(PGValue.int64(winner.hlc.rawValue))),
                    \(b.add(PGValue.bytes(loserValue.encoded))), \(b.add(try await number(loser.site))), \(b.add(PGValue.int64(loser.seq))),
                    \(b.add(PGValue.int64(loser.hlc.rawValue))), \(b.add(PGValue.int64(state.clock.last.rawValue))))
            """
        try await run(sql, b.bindings)
    }

    /// A write that has seen both sides of a conflict resolves it
    /// (`Merge.resolves`). Returns whether the cell still has one open.
    private func resolveConflicts(_ table: String, _ pk: String, _ column: String, _ ctx: PGCommitContext) async throws -> Bool {
        var b = Binds()
        let sql = """
            SELECT id, winner_site, winner_seq, loser_site, loser_seq FROM \(s)._lode_conflicts
            WHERE tbl = \(b.add(table)) AND pk = \(b.add(pk)) AND col = \(b.add(column)) AND resolved_seq IS NULL
            """
        var open = false
        for r in try await rows(sql, b.bindings) {
            guard let winner = state.keys[try r.int64(1)], let loser = state.keys[try r.int64(3)] else {
                open = true
                continue
            }
            let resolved = Merge.resolves(
                past: ctx.past, winnerSite: winner, winnerSeq: PGValue.uint64(try r.int64(2)), loserSite: loser,
                loserSeq: PGValue.uint64(try r.int64(4)))
            if resolved {
                var u = Binds()
                try await run(
                    "UPDATE \(s)._lode_conflicts SET resolved_site = \(u.add(ctx.author)), resolved_seq = \(u.add(PGValue.int64(ctx.seq))) WHERE id = \(u.add(try r.int64(0)))",
                    u.bindings)
            } else {
                open = true
            }
        }
        return open
    }

    private func writeMisfit(_ table: String, pk: String, column: String, value: Value) async throws {
        var b = Binds()
        try await run(
            """
            INSERT INTO \(s)._lode_misfits(tbl, pk, col, value) VALUES (\(b.add(table)), \(b.add(pk)), \(b.add(column)), \(b.add(PGValue.bytes(value.encoded))))
            ON CONFLICT (tbl, pk, col) DO UPDATE SET value = EXCLUDED.value
            """, b.bindings)
        state.misfitTables.insert(table)
    }

    // MARK: Writing it out

    /// Writes everything pending: the log and feeds, each table's row
    /// states, history and images, a few statements per table.
    func flush() async throws {
        try await flushRefusals()
        try await flushLog()
        for (table, rows) in dirty { try await flushMetas(table, rows) }
        dirty = [:]
        for (table, entries) in history where !entries.isEmpty {
            for chunk in stride(from: 0, to: entries.count, by: 20_000) {
                let part = entries[chunk..<min(entries.count, chunk + 20_000)]
                var b = Binds()
                try await run(
                    """
                    INSERT INTO \(s)._lode_history(tbl, pk, log) SELECT \(b.add(table)), k, l FROM unnest(\(b.add(part.map(\.0))), \(b.add(part.map(\.1)))) AS u(k, l)
                    ON CONFLICT DO NOTHING
                    """, b.bindings)
            }
        }
        history = [:]
        for (table, rows) in images { try await flushImages(table, rows) }
        images = [:]
        metas = [:]
        for (table, column) in retyped { try await restoreFits(table, column) }
        retyped = []
    }

    private func flushLog() async throws {
        var start = 0
        while start < log.count {
            var end = start
            var bytes = 0
            while end < log.count && (end == start || bytes < 8 << 20) {
                bytes += log[end].commit.bytes.count
                end += 1
            }
            let part = log[start..<end]
            var b = Binds()
            let ids = b.add(part.map(\.id))
            let sites = b.add(part.map(\.site))
            let seqs = b.add(part.map { PGValue.int64($0.commit.seq) })
            let hlcs = b.add(part.map { PGValue.int64($0.commit.hlc.rawValue) })
            let hashes = b.add(part.map { PGValue.bytes($0.commit.hash) })
            let bodies = b.add(part.map { PGValue.bytes($0.commit.bytes) })
            let people = b.add(part.map { $0.commit.person })
            try await run(
                """
                INSERT INTO \(s)._lode_log(id, site, seq, hlc, hash, bytes, person)
                SELECT i, si, sq, h, hs, by, NULLIF(p, '') FROM unnest(\(ids), \(sites), \(seqs), \(hlcs), \(hashes), \(bodies), \(people))
                    AS u(i, si, sq, h, hs, by, p)
                """, b.bindings)
            start = end
        }
        log = []
        for site in feeds {
            let head = state.head(of: site)
            var b = Binds()
            try await run(
                """
                INSERT INTO \(s)._lode_feeds(site, seq, hash, vector) VALUES (\(b.add(try await number(site))), \(b.add(PGValue.int64(head.seq))),
                    \(b.add(PGValue.bytes(head.hash))), \(b.add(PGValue.bytes(head.vector.encoded))))
                ON CONFLICT (site) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, vector = EXCLUDED.vector
                """, b.bindings)
        }
        feeds = []
    }

    private func flushMetas(_ table: String, _ rows: [String: Int64]) async throws {
        let all = Array(rows)
        for chunk in stride(from: 0, to: all.count, by: 20_000) {
            let part = all[chunk..<min(all.count, chunk + 20_000)]
            var b = Binds()
            let tbl = b.add(table)
            let pks = b.add(part.map(\.key))
            let cls = b.add(part.map { PGValue.int64(metas[table]![$0.key]!.length) })
            let clocks = b.add(part.map { PGValue.bytes(metas[table]![$0.key]!.clocks.encoded) })
            let first = b.add(part.map(\.value))
            try await run(
                """
                INSERT INTO \(s)._lode_rows(tbl, pk, cl, clocks, first_log)
                SELECT \(tbl), k, c, x, f FROM unnest(\(pks), \(cls), \(clocks), \(first)) AS u(k, c, x, f)
                ON CONFLICT (tbl, pk) DO UPDATE SET cl = EXCLUDED.cl, clocks = EXCLUDED.clocks
                """, b.bindings)
        }
    }

    private func flushImages(_ table: String, _ rows: [String: PGRowImage]) async throws {
        guard let schema = state.schemas[table] else { return }
        let t = "\(s).\(SchemaSQL.quote(table))"
        let pkName = SchemaSQL.quote(schema.primaryKey)
        let cols = schema.orderedColumns
        var gone: [String] = []
        var full: [(String, [String: Value])] = []
        var partial: [[String]: [(String, [String: Value])]] = [:]
        for (pk, image) in rows {
            switch image {
            case .deleted: gone.append(pk)
            case .full(let r): full.append((pk, r))
            case .partial(let r): partial[r.keys.sorted(), default: []].append((pk, r))
            }
        }
        if state.misfitTables.contains(table) {
            // A row gone or begun anew drops its misfits; a cell written again drops its own.
            let cleared = gone + full.map(\.0)
            for chunk in stride(from: 0, to: cleared.count, by: 20_000) {
                var b = Binds()
                let part = Array(cleared[chunk..<min(cleared.count, chunk + 20_000)])
                try await run("DELETE FROM \(s)._lode_misfits WHERE tbl = \(b.add(table)) AND pk = ANY(\(b.add(part)))", b.bindings)
            }
            for (names, group) in partial {
                var b = Binds()
                let sql =
                    "DELETE FROM \(s)._lode_misfits WHERE tbl = \(b.add(table)) AND col = ANY(\(b.add(names))) AND pk = ANY(\(b.add(group.map(\.0))))"
                try await run(sql, b.bindings)
            }
        }
        for chunk in stride(from: 0, to: gone.count, by: 20_000) {
            var b = Binds()
            let part = Array(gone[chunk..<min(gone.count, chunk + 20_000)])
            try await run("DELETE FROM \(t) WHERE \(pkName) = ANY(\(b.add(part)))", b.bindings)
        }
        var misfits: [(String, String, Value)] = []
        if !full.isEmpty {
            let names = ([pkName] + cols.map { SchemaSQL.quote($0.name) }).joined(separator: ", ")
            let update =
                cols.isEmpty
                ? "NOTHING"
                : "UPDATE SET " + cols.map { "\(SchemaSQL.quote($0.name)) = EXCLUDED.\(SchemaSQL.quote($0.name))" }.joined(separator: ", ")
            let perRow = max(1, 30_000 / (cols.count + 1))
            for chunk in stride(from: 0, to: full.count, by: perRow) {
                var b = Binds()
                var tuples: [String] = []
                for (pk, row) in full[chunk..<min(full.count, chunk + perRow)] {
                    var items = [b.add(pk)]
                    for c in cols {
                        let v = row[c.name] ?? c.defaultValue
                        let (p, fits) = b.add(v, as: c.type)
                        if !fits { misfits.append((pk, c.name, v)) }
                        items.append(p)
                    }
                    tuples.append("(" + items.joined(separator: ", ") + ")")
                }
                try await run("INSERT INTO \(t)(\(names)) VALUES \(tuples.joined(separator: ", ")) ON CONFLICT (\(pkName)) DO \(update)", b.bindings)
            }
        }
        for (names, group) in partial {
            let types = names.map { schema.columns[$0]!.def.type }
            let perRow = max(1, 30_000 / (names.count + 1))
            for chunk in stride(from: 0, to: group.count, by: perRow) {
                var b = Binds()
                var tuples: [String] = []
                for (pk, row) in group[chunk..<min(group.count, chunk + perRow)] {
                    var items = [b.add(pk) + "::text"]
                    for (name, type) in zip(names, types) {
                        let (p, fits) = b.add(row[name]!, as: type)
                        if !fits { misfits.append((pk, name, row[name]!)) }
                        items.append(p)
                    }
                    tuples.append("(" + items.joined(separator: ", ") + ")")
                }
                let aliases = (0..<names.count).map { "c\($0)" }
                let sets = zip(names, aliases).map { "\(SchemaSQL.quote($0)) = v.\($1)" }.joined(separator: ", ")
                try await run(
                    "UPDATE \(t) AS x SET \(sets) FROM (VALUES \(tuples.joined(separator: ", "))) AS v(k, \(aliases.joined(separator: ", "))) WHERE x.\(pkName) = v.k",
                    b.bindings)
            }
        }
        for (pk, column, value) in misfits { try await writeMisfit(table, pk: pk, column: column, value: value) }
    }

    /// After a column changed type: every value kept aside that fits the
    /// new type goes back into the table (and leaves `_lode_misfits`).
    private func restoreFits(_ table: String, _ column: String) async throws {
        guard let schema = state.schemas[table], let def = schema.columns[column]?.def else { return }
        var b = Binds()
        let sql = "SELECT pk, value FROM \(s)._lode_misfits WHERE tbl = \(b.add(table)) AND col = \(b.add(column))"
        for r in try await rows(sql, b.bindings) {
            let pk = try r.string(0)
            let value = try Value.decoded(try r.bytes(1))
            guard PGValue.fits(value, def.type) else { continue }
            var u = Binds()
            let (v, _) = u.add(value, as: def.type)
            try await run(
                "UPDATE \(s).\(SchemaSQL.quote(table)) SET \(SchemaSQL.quote(column)) = \(v) WHERE \(SchemaSQL.quote(schema.primaryKey)) = \(u.add(pk))",
                u.bindings)
            var d = Binds()
            try await run(
                "DELETE FROM \(s)._lode_misfits WHERE tbl = \(d.add(table)) AND pk = \(d.add(pk)) AND col = \(d.add(column))", d.bindings)
        }
    }
}

/// The commit whose ops are being applied.
struct PGCommitContext {
    let author: SiteNumber
    let site: SiteID
    let hlc: HLC
    let seq: UInt64
    let logID: Int64
    /// The commit's causal past; nil for this site's own.
    let past: VersionVector?
}
