import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// The canonical digest of the dataset at `vector` (`CheckpointDigest`),
    /// which this replica must hold, and the rows it covers. Read from the
    /// history like an as-of query, whatever the replica holds beyond
    /// `vector` (`DatasetAt`).
    public func checkpointDigest(at vector: VersionVector) async throws -> (digest: [UInt8], rows: Int) {
        try await read { [dataset] db in try DatasetAt.digest(db, dataset: dataset, at: vector) }
    }

    /// Writes this site's signature of the checkpoint (V, D) as a local
    /// commit (`CheckpointRows`).
    public func sign(checkpointAt vector: VersionVector, digest: [UInt8], rows: Int) async throws {
        try CheckpointRows.checkSigner(local)
        let row = CheckpointRows.signature(vector: vector, digest: digest, rows: rows, by: local)
        _ = try await edit { batch in try batch.apply(row) }
    }
}

/// A dataset file's tables as the commits of a vector V left them, read
/// from its history (`HistoryReader`), whatever else the file holds: a
/// write belongs to V when its clock is at or before that of its site's
/// last commit in V, since a site's commits are stamped in the order of
/// their seqs. Serves checkpoint digests and snapshots; it reads only, and
/// reads a backup file as well as a replica's own.
enum DatasetAt {
    /// Where V ends: per site, the clock and hash of its last commit in V.
    struct Ends {
        var clocks: [SiteID: HLC] = [:]
        var hashes: [SiteID: [UInt8]] = [:]
        /// The latest of them.
        var last: HLC { clocks.values.max() ?? .zero }

        func covers(_ hlc: HLC, _ site: SiteID) -> Bool {
            (site == AnnotationRows.genesisSite && hlc == .zero) || clocks[site].map { hlc <= $0 } ?? false
        }
        func covers(_ s: SchemaStamp) -> Bool { covers(s.hlc, s.site) }
    }

    static func ends(_ db: Database, _ vector: VersionVector) throws -> Ends {
        if let compacted = try SQLiteReplica.compaction(db), !vector.dominates(compacted.vector) {
            throw StoreError.notFound("the history was compacted past that vector (lode compact): it can no longer tell the dataset there")
        }
        let sites = try SiteRegistry.load(db)
        var ends = Ends()
        let clock = try db.makeStatement(sql: "SELECT hlc, hash FROM _lode_log WHERE site = ? AND seq = ?")
        for e in vector.sorted {
            guard let number = sites.numbers[e.site], e.seq <= UInt64(Int64.max),
                let head = try Row.fetchOne(clock, arguments: [number, Int64(e.seq)])
            else {
                throw StoreError.notFound("this file does not hold commit \(e.seq) of site \(e.site.short), which the checkpoint covers")
            }
            ends.clocks[e.site] = HLC(rawValue: UInt64(bitPattern: head["hlc"]))
            ends.hashes[e.site] = [UInt8](head["hash"] as Data)
        }
        return ends
    }

    /// Calls `table` for each table defined at V, in the byte order of its
    /// name, with its columns defined at V; then `row` for each of its rows
    /// a commit of V wrote, in key order, as those commits left it.
    static func walk(
        _ db: Database, _ ends: Ends, table: (TableState, [ColumnDef]) throws -> Void, row: (TableState, String, RowAsOf) throws -> Void
    ) throws {
        let schema = try SchemaCatalog.load(db)
        let reader = try HistoryReader(db)
        let rows = try RawStatement(db, "SELECT cl, clocks, last, kept, first_log, pk FROM _lode_rows WHERE tbl = ? ORDER BY pk")
        for t in schema.tables.values.sorted(by: { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }) {
            let columns = t.physical.filter { c in
                t.schema.columns[c.name].map { ends.covers($0.firstStamp) || ends.covers($0.stamp) } ?? false
            }
            guard ends.covers(t.schema.stamp) || !columns.isEmpty else { continue }
            try table(t, columns)
            rows.bind(1, t.id)
            defer { rows.reset() }
            while try rows.step(db) {
                guard case .text(let pk) = rows.value(5) else { continue }
                let meta = try RowMeta(rows)
                var state = RowAsOf()
                for w in try reader.writes(t, pk: pk, meta: meta, upTo: ends.last) where ends.covers(w.hlc, w.site) { state.merge(w) }
                guard state.length > 0 else { continue }
                try row(t, pk, state)
            }
        }
    }

    /// The canonical digest at `vector` (`CheckpointDigest`) and its rows.
    static func digest(_ db: Database, dataset: String, at vector: VersionVector) throws -> (digest: [UInt8], rows: Int) {
        let ends = try ends(db, vector)
        var digest = CheckpointDigest(dataset: dataset, vector: vector, heads: ends.hashes)
        var shown: [(name: String, slot: Int)] = []
        try walk(
            db, ends,
            table: { t, columns in
                digest.table(t.name, primaryKey: t.primaryKey, columns: columns.map { ($0.name, $0.type) })
                shown = columns.map { ($0.name, t.slots[$0.name]!) }
            },
            row: { _, pk, state in
                digest.row(pk, length: state.length, cells: shown.compactMap { c in state.visible(c.slot).map { (c.name, $0.value, $0.stamp) } })
            })
        return digest.finish()
    }
}
