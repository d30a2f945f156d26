import Crypto

/// The canonical digest of a dataset at a version vector (DESIGN §12): what
/// a checkpoint signs, "at V the dataset is D". Every replica holding the
/// commits of V computes the same D, whatever else it holds, from the state
/// those commits produce:
///
/// - the dataset's name, V (canonically encoded), and the hash of each
///   site's last commit in V (the feed heads a snapshot starts from);
/// - each table defined at V, in the byte order of its name: its name, its
///   primary key column, and its columns defined at V (name and type), in
///   name order;
/// - each row of it that any commit of V wrote, in the byte order of its
///   key: the key, its causal length, and each cell the row shows (one
///   written in its current life), in column name order: the column, the
///   value, and the stamp of the write (causal length, clock, site).
///
/// Cells of earlier lives and rows' deletion times beyond their causal
/// length are left out: no later merge can show them.
///
/// ```swift
/// var d = CheckpointDigest(dataset: "rare-earths", vector: v, heads: hashes)
/// d.table("elements", primaryKey: "symbol", columns: [("name", .text)])
/// d.row("Nd", length: 1, cells: [("name", .text("Neodymium"), stamp)])
/// let (digest, rows) = d.finish()
/// ```
public struct CheckpointDigest: Sendable {
    private var hash = SHA256()
    private var buffer = ByteWriter(capacity: 4096)
    /// Rows hashed so far.
    public private(set) var rows = 0
    private var lastTable: [UInt8]?
    private var lastKey: [UInt8]?

    /// Starts the digest of `dataset` at `vector`, whose last commit from
    /// each site has the hash `heads` gives.
    public init(dataset: String, vector: VersionVector, heads: [SiteID: [UInt8]]) {
        buffer.writeString("lode-checkpoint-1")
        buffer.writeString(dataset)
        vector.encode(into: &buffer)
        for e in vector.sorted { buffer.writeLengthPrefixed(heads[e.site] ?? []) }
    }

    /// Starts a table; its rows follow. Tables come in the byte order of
    /// their names, columns in any order (they are sorted here).
    public mutating func table(_ name: String, primaryKey: String, columns: [(name: String, type: ColumnType)]) {
        let bytes = Array(name.utf8)
        precondition(lastTable.map { $0.lexicographicallyPrecedes(bytes) } ?? true, "tables in the byte order of their names")
        lastTable = bytes
        lastKey = nil
        buffer.writeByte(1)
        buffer.writeString(name)
        buffer.writeString(primaryKey)
        let sorted = columns.sorted { $0.name < $1.name }
        buffer.writeVarint(UInt64(sorted.count))
        for c in sorted {
            buffer.writeString(c.name)
            buffer.writeByte(c.type.rawValue)
        }
        flushIfFull()
    }

    /// Adds a row of the current table. Rows come in the byte order of
    /// their keys; `cells` are the cells the row shows, in any order.
    public mutating func row(_ key: String, length: UInt64, cells: [(column: String, value: Value, stamp: CellStamp)]) {
        let bytes = Array(key.utf8)
        precondition(lastKey.map { $0.lexicographicallyPrecedes(bytes) } ?? true, "rows in the byte order of their keys")
        lastKey = bytes
        rows += 1
        buffer.writeByte(2)
        buffer.writeLengthPrefixed(bytes)
        buffer.writeVarint(length)
        let sorted = cells.sorted { $0.column < $1.column }
        buffer.writeVarint(UInt64(sorted.count))
        for c in sorted {
            buffer.writeString(c.column)
            c.value.encode(into: &buffer)
            buffer.writeVarint(c.stamp.length)
            buffer.writeUInt64(c.stamp.hlc.rawValue)
            c.stamp.site.encode(into: &buffer)
        }
        flushIfFull()
    }

    /// The digest, and how many rows it covers.
    public consuming func finish() -> (digest: [UInt8], rows: Int) {
        buffer.writeByte(0)
        hash.update(data: buffer.bytes)
        return (Array(hash.finalize()), rows)
    }

    private mutating func flushIfFull() {
        guard buffer.bytes.count >= 1 << 16 else { return }
        hash.update(data: buffer.bytes)
        buffer.removeAll()
    }
}

extension ReferenceReplica {
    /// The canonical digest of everything this replica holds, at its own
    /// vector: the reference the stores' digests at a vector are tested
    /// against (a replica given exactly the commits of V).
    public func checkpointDigest() -> (digest: [UInt8], rows: Int) {
        var d = CheckpointDigest(dataset: dataset, vector: vector, heads: heads.mapValues(\.hash))
        for name in schemas.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            let schema = schemas[name]!
            d.table(name, primaryKey: schema.primaryKey, columns: schema.columns.values.map { ($0.def.name, $0.def.type) })
            let rows = tables[name] ?? [:]
            for key in rows.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
                let row = rows[key]!
                guard row.length > 0 else { continue }
                let cells = row.cells.filter { Merge.isVisible(cell: $0.value.stamp.length, row: row.length) }
                d.row(key, length: row.length, cells: cells.map { ($0.key, $0.value.value, $0.value.stamp) })
            }
        }
        return d.finish()
    }
}
