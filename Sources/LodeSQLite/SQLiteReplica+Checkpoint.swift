import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// The canonical digest of the dataset at `vector` (`CheckpointDigest`),
    /// which this replica must hold, and the rows it covers. Read from the
    /// history like an as-of query, whatever the replica holds beyond
    /// `vector`: a write belongs to V when its clock is at or before that
    /// of its site's last commit in V, since a site's commits are stamped
    /// in the order of their seqs.
    public func checkpointDigest(at vector: VersionVector) async throws -> (digest: [UInt8], rows: Int) {
        try await read { [self] db in
            if let compacted = try self.compaction(db), !vector.dominates(compacted.vector) {
                throw StoreError.notFound(
                    "this replica's history was compacted past that vector (lode compact): it can no longer tell the dataset there")
            }
            let sites = try SiteRegistry.load(db)
            var bound: [SiteID: HLC] = [:]
            let clock = try db.makeStatement(sql: "SELECT hlc FROM _lode_log WHERE site = ? AND seq = ?")
            for e in vector.sorted {
                guard let number = sites.numbers[e.site], e.seq <= UInt64(Int64.max),
                    let hlc = try Int64.fetchOne(clock, arguments: [number, Int64(e.seq)])
                else {
                    throw StoreError.notFound("this replica does not hold commit \(e.seq) of site \(e.site.short), which the checkpoint covers")
                }
                bound[e.site] = HLC(rawValue: UInt64(bitPattern: hlc))
            }
            func covered(_ hlc: HLC, _ site: SiteID) -> Bool {
                (site == AnnotationRows.genesisSite && hlc == .zero) || bound[site].map { hlc <= $0 } ?? false
            }
            func covered(_ s: SchemaStamp) -> Bool { covered(s.hlc, s.site) }
            let upTo = bound.values.max() ?? .zero
            let schema = try SchemaCatalog.load(db)
            let reader = try HistoryReader(db)
            let rows = try RawStatement(db, "SELECT cl, clocks, last, kept, first_log, pk FROM _lode_rows WHERE tbl = ? ORDER BY pk")
            var digest = CheckpointDigest(dataset: dataset, vector: vector)
            for t in schema.tables.values.sorted(by: { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }) {
                let columns = t.physical.filter { c in
                    t.schema.columns[c.name].map { covered($0.firstStamp) || covered($0.stamp) } ?? false
                }
                guard covered(t.schema.stamp) || !columns.isEmpty else { continue }
                digest.table(t.name, primaryKey: t.primaryKey, columns: columns.map { ($0.name, $0.type) })
                let slots = columns.map { t.slots[$0.name]! }
                rows.bind(1, t.id)
                defer { rows.reset() }
                while try rows.step(db) {
                    guard case .text(let pk) = rows.value(5) else { continue }
                    let meta = try RowMeta(rows)
                    var row = RowAsOf()
                    for w in try reader.writes(t, pk: pk, meta: meta, upTo: upTo) where covered(w.hlc, w.site) { row.merge(w) }
                    guard row.length > 0 else { continue }
                    var cells: [(column: String, value: Value, stamp: CellStamp)] = []
                    for (c, slot) in zip(columns, slots) {
                        if let cell = row.visible(slot) { cells.append((c.name, cell.value, cell.stamp)) }
                    }
                    digest.row(pk, length: row.length, cells: cells)
                }
            }
            return digest.finish()
        }
    }

    /// Writes this site's signature of the checkpoint (V, D) as a local
    /// commit (`CheckpointRows`).
    public func sign(checkpointAt vector: VersionVector, digest: [UInt8], rows: Int) async throws {
        try CheckpointRows.checkSigner(local)
        let row = CheckpointRows.signature(vector: vector, digest: digest, rows: rows, by: local)
        _ = try await edit { batch in try batch.apply(row) }
    }
}
