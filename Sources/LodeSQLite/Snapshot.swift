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

    /// The vector the backup's log was compacted to, if it was: a replica
    /// that does not hold all of it can get the rest only from a snapshot.
    public func compactedVector() throws -> VersionVector? {
        try queue.read { db in try SQLiteReplica.compaction(db)?.vector }
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
                let logIDs = try SnapshotLog.take(tx, from: source, at: vector, ends: ends)
                var target: TableState?
                var insert: Statement?
                var shown: [SnapshotLog.Shown] = []
                let meta = try db.makeStatement(
                    sql: "INSERT INTO _lode_rows(tbl, pk, cl, clocks, first_log, last, kept) VALUES (?, ?, ?, ?, ?, ?, 0)")
                try DatasetAt.walk(
                    source, ends,
                    table: { t, columns in
                        let (here, s) = try SnapshotLog.takeSchema(tx, t, columns)
                        target = here
                        shown = s
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
                        let first = state.lengthWrite.flatMap { logIDs[SnapshotLog.Key($0.site, $0.seq)] } ?? 0
                        try meta.execute(
                            arguments: [here.id, pk, Int64(state.length), Data(clocks.encoded), first, Int64(bitPattern: last.rawValue)])
                        rows += 1
                    })
            }
            try SnapshotLog.finish(tx, dataset: dataset, at: vector, digest: expected, previous: nil)
            return rows
        }
    }

    /// Brings a snapshot into this replica, which holds the dataset but
    /// lacks commits of `vector` that no peer can send any more (they were
    /// compacted away, DESIGN §12): what a site offline across a compaction
    /// needs. `backup` holds the dataset at `vector`, whose digest the
    /// caller found to be `digest`, which a quorum signed.
    ///
    /// The snapshot's rows are merged by the CRDT's own rules, as if the
    /// commits this replica lacks had been applied: each cell they won
    /// (and each row's causal length) is written with its commit's stamp
    /// through the path that applies commits, so this replica's own writes
    /// after V win or lose as they would have, and a write of theirs
    /// concurrent with one of the snapshot's is recorded as a conflict.
    /// Writes of commits this replica holds are left alone. The lacking
    /// commits enter the log as stamps, hashes and authors, without bytes.
    /// Refused, with nothing changed: a snapshot whose feeds fork from
    /// this replica's, that holds commits of this site it lacks, or that
    /// covers commits of a feed cut off here. Once merged, the replica's
    /// digest at V must be `digest` or nothing is kept.
    ///
    /// Not carried: the conflicts among the lacking commits themselves,
    /// and the history before V (as-of times before the latest commit of V
    /// are refused from then on, as after a compaction).
    public func mergeSnapshot(from backup: BackupFile, at vector: VersionVector, digest expected: [UInt8]) async throws -> SnapshotMerge {
        try backup.checkShapes()
        defer { forgetCompaction() }
        return try await write { [self] tx in
            let db = tx.db
            let held = tx.state.feeds.vector
            guard !held.dominates(vector) else { return SnapshotMerge() }
            guard held[local.site] >= vector[local.site] else {
                throw StoreError(
                    .rejected,
                    "the snapshot holds commits of this site (up to \(vector[local.site])) that this replica lacks (it holds \(held[local.site])): a site's own commits can only come back from a backup of it"
                )
            }
            if let (site, cut) = tx.state.feeds.cutoffs.excess(in: vector).first {
                throw StoreError(
                    .rejected, "the snapshot covers commits of site \(site.short) after \(cut), where its feed is cut off here (lode revoke)")
            }
            let previous = try SQLiteReplica.compaction(db)
            if let previous, !vector.dominates(previous.vector) {
                throw StoreError.badInput("the snapshot's checkpoint does not cover the one this replica was compacted to")
            }
            var merge = SnapshotMerge()
            try backup.queue.read { source in
                let ends = try DatasetAt.ends(source, vector)
                try SnapshotLog.checkNoFork(tx, source, vector, held: held)
                let logIDs = try SnapshotLog.take(tx, from: source, at: vector, ends: ends)
                merge.commits = logIDs.count
                var target: TableState?
                var shown: [SnapshotLog.Shown] = []
                let rows = tx.state.rows
                func context(_ site: SiteID, _ seq: UInt64, _ hlc: HLC) throws -> CommitContext {
                    guard let logID = logIDs[SnapshotLog.Key(site, seq)] else {
                        throw StoreError(
                            .rejected, "the snapshot's rows name commit \(seq) of site \(site.short), which its checkpoint does not cover")
                    }
                    return CommitContext(author: try tx.state.sites.number(db, site), hlc: hlc, seq: seq, logID: logID, past: vector)
                }
                try DatasetAt.walk(
                    source, ends,
                    table: { t, columns in (target, shown) = try SnapshotLog.takeSchema(tx, t, columns) },
                    row: { _, pk, state in
                        guard let t = target else { return }
                        // The cells of commits this replica lacks, by commit.
                        var writes: [(stamp: CellStamp, slots: [Int], values: [Value])] = []
                        for c in shown {
                            guard let cell = state.visible(c.from), held[cell.stamp.site] < cell.stamp.seq else { continue }
                            if let i = writes.firstIndex(where: { $0.stamp == cell.stamp }) {
                                writes[i].slots.append(c.to)
                                writes[i].values.append(cell.value)
                            } else {
                                writes.append((cell.stamp, [c.to], [cell.value]))
                            }
                        }
                        let length = state.lengthWrite.flatMap { held[$0.site] < $0.seq ? $0 : nil }
                        guard length != nil || !writes.isEmpty else { return }
                        if let w = length {
                            // The write of the row's causal length first: an
                            // insert with its cells, or the delete.
                            let ctx = try context(w.site, w.seq, w.hlc)
                            if state.isPresent {
                                let i = writes.firstIndex { $0.stamp.site == w.site && $0.stamp.seq == w.seq }
                                let own = i.map { writes.remove(at: $0) }
                                try rows.put(db, t, pk: pk, length: state.length, slots: own?.slots ?? [], values: (own?.values ?? [])[...], ctx)
                            } else {
                                try rows.delete(db, t, pk: pk, length: state.length, ctx)
                            }
                        }
                        for w in writes.sorted(by: { ($0.stamp.hlc, $0.stamp.site) < ($1.stamp.hlc, $1.stamp.site) }) {
                            let ctx = try context(w.stamp.site, w.stamp.seq, w.stamp.hlc)
                            try rows.put(db, t, pk: pk, length: w.stamp.length, slots: w.slots, values: w.values[...], ctx)
                        }
                        merge.rows += 1
                    })
            }
            try SnapshotLog.finish(tx, dataset: dataset, at: vector, digest: expected, previous: previous)
            return merge
        }
    }
}

/// What `SQLiteReplica.mergeSnapshot` brought into a replica.
public struct SnapshotMerge: Sendable, Equatable {
    /// Commits of the snapshot's vector the replica lacked: now held as
    /// stamps, hashes and authors, without their bytes.
    public var commits = 0
    /// Rows those commits wrote, merged here.
    public var rows = 0

    public init(commits: Int = 0, rows: Int = 0) {
        self.commits = commits
        self.rows = rows
    }
}

/// The steps a snapshot's install and merge share.
private enum SnapshotLog {
    struct Key: Hashable {
        var site: SiteID
        var seq: UInt64
        init(_ site: SiteID, _ seq: UInt64) {
            self.site = site
            self.seq = seq
        }
    }

    /// A column the snapshot shows: its definition, its slot in the
    /// snapshot's file and here.
    struct Shown {
        var def: ColumnDef
        var from: Int
        var to: Int
    }

    /// Refuses a snapshot whose feeds fork from the replica's: for each
    /// feed both hold, the later of the two commits both hold must have the
    /// same hash on both sides (a feed is a chain of hashes).
    static func checkNoFork(_ tx: WriteTransaction, _ source: Database, _ vector: VersionVector, held: VersionVector) throws {
        let sourceSites = try SiteRegistry.load(source)
        for e in vector.sorted {
            let both = min(e.seq, held[e.site])
            guard both > 0 else { continue }
            let theirs = try sourceSites.numbers[e.site].flatMap { n in
                try Data.fetchOne(source, sql: "SELECT hash FROM _lode_log WHERE site = ? AND seq = ?", arguments: [n, Int64(both)])
            }
            let ours = try FeedLog.hash(tx.db, site: e.site, seq: both)
            guard let theirs, let ours, [UInt8](theirs) == ours else {
                throw StoreError(
                    .rejected,
                    "the snapshot's feed of site \(e.site.short) differs from this replica's at commit \(both): a fork, so nothing was taken")
            }
        }
    }

    /// Enters into the log every commit `vector` covers that the replica
    /// lacks, without bytes, in the order the snapshot's file applied them,
    /// and moves the feeds it advances to their ends in `vector`. Returns
    /// the log rows taken by commit. Refused when the file lacks one.
    static func take(_ tx: WriteTransaction, from source: Database, at vector: VersionVector, ends: DatasetAt.Ends) throws -> [Key: Int64] {
        let db = tx.db
        let held = tx.state.feeds.vector
        let sourceSites = try SiteRegistry.load(source)
        var logIDs: [Key: Int64] = [:]
        var taken: [SiteID: UInt64] = [:]
        let log = try Row.fetchCursor(source, sql: "SELECT site, seq, hlc, hash, person FROM _lode_log ORDER BY id")
        let insert = try db.makeStatement(sql: "INSERT INTO _lode_log(site, seq, hlc, hash, bytes, person) VALUES (?, ?, ?, ?, x'', ?)")
        while let l = try log.next() {
            guard let key = sourceSites.key(l["site"]) else { continue }
            let seq = UInt64(l["seq"] as Int64)
            guard seq > held[key], seq <= vector[key], logIDs[Key(key, seq)] == nil else { continue }
            try insert.execute(arguments: [
                try tx.state.sites.number(db, key), l["seq"] as Int64, l["hlc"] as Int64, l["hash"] as Data, l["person"] as String?,
            ])
            logIDs[Key(key, seq)] = db.lastInsertedRowID
            taken[key, default: 0] += 1
        }
        // Each seq taken once and within (held, V]: a count per feed says
        // none is missing (without walking seqs a crafted vector could make
        // astronomically many).
        for e in vector.sorted where e.seq > held[e.site] {
            guard taken[e.site] == e.seq - held[e.site] else {
                throw StoreError(.rejected, "the snapshot's log lacks commits of site \(e.site.short) that its checkpoint covers")
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO _lode_feeds(site, seq, hash, vector) VALUES (?, ?, ?, ?)",
                arguments: [try tx.state.sites.number(db, e.site), Int64(e.seq), Data(ends.hashes[e.site] ?? []), Data(vector.encoded)])
        }
        return logIDs
    }

    /// Merges a table of the snapshot, with the columns it shows at V and
    /// their stamps, into the replica's schema; returns the table here and
    /// where each shown column is in both files.
    static func takeSchema(_ tx: WriteTransaction, _ t: TableState, _ columns: [ColumnDef]) throws -> (TableState, [Shown]) {
        var schema = t.schema
        let names = Set(columns.map(\.name))
        schema.columns = schema.columns.filter { names.contains($0.key) }
        try tx.state.schema.merge(tx.db, schema)
        guard let here = tx.state.schema[t.name] else { throw StoreError(.storage, "table \(t.name) was not defined") }
        let shown = try columns.map { c in
            guard let to = here.slots[c.name], let from = t.slots[c.name] else {
                throw StoreError(.storage, "column \(c.name) of \(t.name) was not defined")
            }
            return Shown(def: c, from: from, to: to)
        }
        return (here, shown)
    }

    /// Marks the replica as holding no bytes of the commits `vector`
    /// covers and no history before its latest commit, reloads the
    /// writer's state, and checks the replica's own digest at `vector`.
    static func finish(
        _ tx: WriteTransaction, dataset: String, at vector: VersionVector, digest expected: [UInt8], previous: (vector: VersionVector, horizon: HLC)?
    ) throws {
        let db = tx.db
        let horizon = max(try DatasetAt.ends(db, vector).last, previous?.horizon ?? .zero)
        try db.execute(
            sql: "INSERT OR REPLACE INTO _lode_meta(key, value) VALUES ('compacted_vector', ?), ('history_horizon', ?)",
            arguments: [Data(vector.encoded), Int64(bitPattern: horizon.rawValue)])
        try tx.reload()
        let installed = try DatasetAt.digest(db, dataset: dataset, at: vector)
        guard installed.digest == expected else {
            throw StoreError(.rejected, "the snapshot, once installed, does not have the digest its signers signed; nothing was kept")
        }
    }
}
