import Foundation
import GRDB
import LodeCore
import LodeStore

extension BackupFile {
    /// What every row of the internal tables a snapshot reads must be:
    /// the types and ranges this build writes. A crafted file could
    /// otherwise hold a NULL or a text where a number is read.
    static let shapes: [(table: String, condition: String)] = [
        ("_lode_sites", "typeof(id) = 'integer' AND typeof(key) = 'blob' AND length(key) = 32"),
        (
            "_lode_log",
            "typeof(id) = 'integer' AND typeof(site) = 'integer' AND typeof(seq) = 'integer' AND seq >= 0 AND typeof(hlc) = 'integer' AND typeof(hash) = 'blob' AND typeof(bytes) = 'blob' AND (person IS NULL OR typeof(person) = 'text')"
        ),
        (
            "_lode_tables",
            "typeof(id) = 'integer' AND typeof(name) = 'text' AND typeof(pk) = 'text' AND typeof(hlc) = 'integer' AND typeof(site) = 'blob' AND length(site) = 32"
        ),
        (
            "_lode_columns",
            "typeof(tbl) = 'integer' AND typeof(slot) = 'integer' AND slot BETWEEN 0 AND \(Limits.maxColumns) AND typeof(name) = 'text' AND typeof(type) = 'integer' AND type BETWEEN 1 AND 4 AND typeof(not_null) = 'integer' AND typeof(dflt) = 'blob' AND typeof(hlc) = 'integer' AND typeof(site) = 'blob' AND length(site) = 32 AND typeof(first_hlc) = 'integer' AND typeof(first_site) = 'blob' AND length(first_site) = 32 AND typeof(first_ordinal) = 'integer' AND first_ordinal BETWEEN 0 AND \(Limits.maxColumns)"
        ),
        (
            "_lode_rows",
            "typeof(tbl) = 'integer' AND typeof(pk) = 'text' AND typeof(cl) = 'integer' AND cl >= 0 AND typeof(clocks) = 'blob' AND typeof(first_log) = 'integer' AND typeof(last) = 'integer' AND typeof(kept) = 'integer'"
        ),
        (
            "_lode_history",
            "typeof(tbl) = 'integer' AND typeof(pk) = 'text' AND typeof(hlc) = 'integer' AND typeof(site) = 'integer' AND typeof(seq) = 'integer' AND seq >= 0 AND typeof(cl) = 'integer' AND cl >= 0 AND typeof(cells) = 'blob'"
        ),
        (
            "_lode_meta",
            "(key != 'compacted_vector' OR typeof(value) = 'blob') AND (key != 'history_horizon' OR typeof(value) = 'integer')"
        ),
    ]

    /// Checks that the internal tables a snapshot reads hold what this build
    /// writes there (`shapes`), before any of it is read as a snapshot.
    public func checkShapes() throws {
        try queue.read { db in
            for s in Self.shapes {
                let bad: Int?
                do {
                    bad = try Int.fetchOne(db, sql: "SELECT count(*) FROM \(s.table) WHERE NOT (\(s.condition))")
                } catch {
                    throw StoreError.badInput("the backup's \(s.table) is not a Lodestone table: \((error as? DatabaseError)?.message ?? "\(error)")")
                }
                guard bad == 0 else {
                    throw StoreError.badInput(
                        "the backup's \(s.table) holds \(bad ?? 0) rows this build never writes: the file was altered or is damaged")
                }
            }
        }
    }

    /// How many of the backup's commits were compacted away (`compact`):
    /// a node lacking them can only start from a snapshot.
    public func compactedCommits() throws -> Int {
        try queue.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_log WHERE length(bytes) = 0") ?? 0 }
    }

    /// The digest of the backup's dataset at `vector` (`CheckpointDigest`),
    /// computed here from the file's own rows: a restore compares it with
    /// what a checkpoint's signers signed before trusting any of them.
    public func digest(at vector: VersionVector) throws -> (digest: [UInt8], rows: Int) {
        try queue.read { [dataset] db in try DatasetAt.digest(db, dataset: dataset, at: vector) }
    }
}

extension SQLiteReplica {
    /// Starts this replica, which must hold nothing yet, from a snapshot:
    /// the tables of `backup` as the commits of `vector` left them, which
    /// the caller found to have the digest `digest` a quorum signed
    /// (DESIGN §12). Each row gets its causal length and its shown cells
    /// with their stamps; the log gets each covered commit's stamp, hash and
    /// author but not its bytes; the feeds start at V. The history before V
    /// is not carried: as-of queries reach back to the latest commit of V.
    /// The replica's own digest at V is checked against `digest` before
    /// the transaction commits, so a snapshot is installed whole and right
    /// or not at all. Commits after V then apply as any peer's.
    public func installSnapshot(from backup: BackupFile, at vector: VersionVector, digest expected: [UInt8]) async throws -> Int {
        try backup.checkShapes()
        defer { forgetCompaction() }
        return try await write { [self] tx in
            let db = tx.db
            guard tx.state.feeds.vector.sorted.isEmpty else {
                throw StoreError(.alreadyExists, "dataset \(dataset) already holds commits: a snapshot starts only an empty replica")
            }
            var rows = 0
            try backup.queue.read { source in
                let ends = try DatasetAt.ends(source, vector)
                // The log: every commit V covers, bytes left out, in the order the backup applied them.
                let sourceSites = try SiteRegistry.load(source)
                var logIDs: [String: Int64] = [:]
                let log = try Row.fetchCursor(source, sql: "SELECT site, seq, hlc, hash, person FROM _lode_log ORDER BY id")
                while let l = try log.next() {
                    guard let key = sourceSites.key(l["site"]) else { continue }
                    let seq = UInt64(l["seq"] as Int64)
                    guard seq <= vector[key] else { continue }
                    let number = try tx.state.sites.number(db, key)
                    try db.execute(
                        sql: "INSERT INTO _lode_log(site, seq, hlc, hash, bytes, person) VALUES (?, ?, ?, ?, x'', ?)",
                        arguments: [number, l["seq"] as Int64, l["hlc"] as Int64, l["hash"] as Data, l["person"] as String?])
                    logIDs["\(key.hex)/\(seq)"] = db.lastInsertedRowID
                }
                for e in vector.sorted {
                    try db.execute(
                        sql: "INSERT INTO _lode_feeds(site, seq, hash, vector) VALUES (?, ?, ?, ?)",
                        arguments: [try tx.state.sites.number(db, e.site), Int64(e.seq), Data(ends.hashes[e.site] ?? []), Data(vector.encoded)])
                }
                // The tables and their rows.
                var target: TableState?
                var insert: Statement?
                var shown: [(def: ColumnDef, from: Int, to: Int)] = []
                let meta = try db.makeStatement(
                    sql: "INSERT INTO _lode_rows(tbl, pk, cl, clocks, first_log, last, kept) VALUES (?, ?, ?, ?, ?, ?, 0)")
                try DatasetAt.walk(
                    source, ends,
                    table: { t, columns in
                        let ordered = columns.sorted { a, b in
                            let (x, y) = (t.schema.columns[a.name]!, t.schema.columns[b.name]!)
                            return (x.firstStamp.hlc, x.firstStamp.site, x.ordinal) < (y.firstStamp.hlc, y.firstStamp.site, y.ordinal)
                        }
                        // Stamped so that V covers the definition here as it did there.
                        let stamp =
                            ends.covers(t.schema.stamp)
                            ? t.schema.stamp
                            : ordered.compactMap { t.schema.columns[$0.name]?.firstStamp }.filter(ends.covers).min { $0.hlc < $1.hlc }
                                ?? t.schema.stamp
                        try tx.state.schema.define(db, TableDef(name: t.name, primaryKey: t.primaryKey, columns: ordered), stamp: stamp)
                        guard let here = tx.state.schema[t.name] else { throw StoreError(.storage, "table \(t.name) was not defined") }
                        target = here
                        shown = try ordered.map { c in
                            guard let to = here.slots[c.name] else { throw StoreError(.storage, "column \(c.name) of \(t.name) was not defined") }
                            return (c, t.slots[c.name]!, to)
                        }
                        let names = ([here.primaryKey] + shown.map(\.def.name)).map(quote)
                        insert = try db.makeStatement(
                            sql:
                                "INSERT INTO \(quote(t.name))(\(names.joined(separator: ", "))) VALUES (\(names.map { _ in "?" }.joined(separator: ", ")))"
                        )
                    },
                    row: { _, pk, state in
                        guard let here = target, let insert else { return }
                        var clocks = RowClocks()
                        var last = state.lengthWrite?.hlc ?? .zero
                        var values: [DatabaseValueConvertible?] = [pk]
                        for c in shown {
                            let cell = state.visible(c.from)
                            values.append(SQLiteAffinity.stored(cell?.value ?? c.def.defaultValue, in: c.def.type).databaseValue)
                            guard let cell else { continue }
                            let stamp = LocalStamp(
                                length: cell.stamp.length, hlc: cell.stamp.hlc.rawValue, site: try tx.state.sites.number(db, cell.stamp.site),
                                seq: cell.stamp.seq)
                            let group = clocks.groups.firstIndex(of: stamp) ?? (clocks.groups.count)
                            if group == clocks.groups.count { clocks.groups.append(stamp) }
                            while clocks.slots.count <= c.to { clocks.slots.append(0) }
                            clocks.slots[c.to] = UInt32(group + 1) << 1
                            last = max(last, cell.stamp.hlc)
                        }
                        if state.isPresent { try insert.execute(arguments: StatementArguments(values)) }
                        let first = state.lengthWrite.flatMap { logIDs["\($0.site.hex)/\($0.seq)"] } ?? 0
                        try meta.execute(
                            arguments: [here.id, pk, Int64(state.length), Data(clocks.encoded), first, Int64(bitPattern: last.rawValue)])
                        rows += 1
                    })
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO _lode_meta(key, value) VALUES ('compacted_vector', ?), ('history_horizon', ?)",
                arguments: [Data(vector.encoded), Int64(bitPattern: try DatasetAt.ends(db, vector).last.rawValue)])
            try tx.reload()
            let installed = try DatasetAt.digest(db, dataset: dataset, at: vector)
            guard installed.digest == expected else {
                throw StoreError(.rejected, "the snapshot, once installed, does not have the digest its signers signed; nothing was kept")
            }
            return rows
        }
    }
}
