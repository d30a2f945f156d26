/// Why a commit's ops cannot be applied to a replica's schema.
public struct SchemaViolation: Error, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong, for a person to read.
    public let message: String
    /// Creates a violation.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The merged state of one table's schema.
public struct TableSchema: Hashable, Sendable {
    /// One column with the stamps that order and merge it.
    public struct Column: Hashable, Sendable {
        /// The winning definition (LWW by `stamp`).
        public var def: ColumnDef
        /// The stamp of the winning definition.
        public var stamp: SchemaStamp
        /// The earliest stamp that defined the column: fixes its position.
        public var firstStamp: SchemaStamp
        /// The column's position in that earliest definition.
        public var ordinal: Int

        /// Creates a merged column.
        public init(def: ColumnDef, stamp: SchemaStamp, firstStamp: SchemaStamp, ordinal: Int) {
            self.def = def
            self.stamp = stamp
            self.firstStamp = firstStamp
            self.ordinal = ordinal
        }
    }

    /// The table name.
    public var name: String
    /// The primary key column name (LWW by `stamp`).
    public var primaryKey: String
    /// The stamp of the definition that set `primaryKey`.
    public var stamp: SchemaStamp
    /// Columns by name.
    public var columns: [String: Column]

    /// The columns in canonical order: by first definition, then position in
    /// it. Every replica that holds the same definitions derives the same order.
    public var orderedColumns: [ColumnDef] {
        columns.values.sorted { a, b in
            if a.firstStamp != b.firstStamp { return a.firstStamp < b.firstStamp }
            if a.ordinal != b.ordinal { return a.ordinal < b.ordinal }
            return a.def.name < b.def.name
        }.map(\.def)
    }

    /// Merges one definition of this table, written with `stamp`.
    public mutating func merge(_ def: TableDef, stamp s: SchemaStamp) {
        if s > stamp {
            stamp = s
            primaryKey = def.primaryKey
        }
        for (i, c) in def.columns.enumerated() {
            if var existing = columns[c.name] {
                if s > existing.stamp { existing.def = c; existing.stamp = s }
                if s < existing.firstStamp {
                    existing.firstStamp = s
                    existing.ordinal = i
                }
                columns[c.name] = existing
            } else {
                columns[c.name] = Column(def: c, stamp: s, firstStamp: s, ordinal: i)
            }
        }
        // A column named like the primary key is the key itself.
        columns[primaryKey] = nil
    }

    /// A schema from one definition.
    public init(_ def: TableDef, stamp: SchemaStamp) {
        name = def.name
        primaryKey = def.primaryKey
        self.stamp = stamp
        columns = [:]
        merge(def, stamp: stamp)
    }
}

/// The stamp of a schema definition: (hlc, site), totally ordered.
public struct SchemaStamp: Hashable, Comparable, Sendable {
    /// The commit's clock.
    public var hlc: HLC
    /// The commit's author.
    public var site: SiteID
    /// Creates a stamp.
    public init(hlc: HLC, site: SiteID) {
        self.hlc = hlc
        self.site = site
    }
    public static func < (a: SchemaStamp, b: SchemaStamp) -> Bool { (a.hlc, a.site) < (b.hlc, b.site) }
}

/// An in-memory replica that applies commits by the merge rules alone.
///
/// It is the executable definition of the CRDT: property tests drive it
/// with random schedules, and the SQLite store is tested against it.
///
/// ```swift
/// var r = ReferenceReplica(dataset: "d")
/// try r.apply(commit)
/// r.rows(of: "mines") // [pk: [column: value]]
/// ```
public struct ReferenceReplica: Sendable {
    /// One cell: its value and stamp.
    public struct Cell: Hashable, Sendable {
        public var value: Value
        public var stamp: CellStamp
    }

    /// One row: causal length and cells.
    public struct Row: Hashable, Sendable {
        public var length: UInt64 = 0
        public var cells: [String: Cell] = [:]
    }

    /// The dataset name.
    public let dataset: String
    /// Table schemas by name.
    public private(set) var schemas: [String: TableSchema] = [:]
    /// Rows by table, then primary key.
    public private(set) var tables: [String: [String: Row]] = [:]
    /// Feed heads by site.
    public private(set) var heads: [SiteID: FeedHead] = [:]
    /// What this replica holds.
    public private(set) var vector = VersionVector()
    /// The replica's clock.
    public var clock = HybridLogicalClock()

    /// Creates an empty replica of `dataset`.
    public init(dataset: String) { self.dataset = dataset }

    /// The head of `site`'s feed.
    public func head(of site: SiteID) -> FeedHead { heads[site] ?? .empty }

    /// Applies a commit after checking its feed position and dependencies.
    /// A commit that fails any check changes nothing.
    public mutating func apply(_ commit: Commit) throws {
        guard commit.dataset == dataset else { throw SchemaViolation("commit is for dataset \(commit.dataset)") }
        let past = try FeedRules.check(commit, head: head(of: commit.author), held: vector)
        var next = self
        try next.applyOps(commit)
        next.heads[commit.author] = FeedHead(seq: commit.seq, hash: commit.hash, vector: past)
        next.vector[commit.author] = commit.seq
        next.clock.observe(commit.hlc)
        self = next
    }

    private mutating func applyOps(_ commit: Commit) throws {
        let schemaStamp = SchemaStamp(hlc: commit.hlc, site: commit.author)
        for op in commit.ops {
            switch op {
            case .defineTable(let def):
                if var s = schemas[def.name] {
                    s.merge(def, stamp: schemaStamp)
                    schemas[def.name] = s
                } else {
                    schemas[def.name] = TableSchema(def, stamp: schemaStamp)
                    tables[def.name] = [:]
                }
            case .put(let put):
                guard let schema = schemas[put.table] else { throw SchemaViolation("no table \(put.table)") }
                for c in put.columns where schema.columns[c] == nil {
                    throw SchemaViolation("no column \(c) in \(put.table)")
                }
                for i in 0..<put.rowCount {
                    var row = tables[put.table]![put.keys[i]] ?? Row()
                    row.length = Merge.rowLength(row.length, put.lengths[i])
                    let stamp = CellStamp(length: put.lengths[i], hlc: commit.hlc, site: commit.author, seq: commit.seq)
                    for (j, value) in put.row(i).enumerated() {
                        let col = put.columns[j]
                        if Merge.replaces(stamp, row.cells[col]?.stamp) {
                            row.cells[col] = Cell(value: value, stamp: stamp)
                        }
                    }
                    tables[put.table]![put.keys[i]] = row
                }
            case .delete(let del):
                guard schemas[del.table] != nil else { throw SchemaViolation("no table \(del.table)") }
                for i in 0..<del.keys.count {
                    var row = tables[del.table]![del.keys[i]] ?? Row()
                    row.length = Merge.rowLength(row.length, del.lengths[i])
                    tables[del.table]![del.keys[i]] = row
                }
            }
        }
    }

    /// The visible rows of a table: present rows, each cell's visible value
    /// or the column default.
    public func rows(of table: String) -> [String: [String: Value]] {
        guard let schema = schemas[table], let rows = tables[table] else { return [:] }
        var out: [String: [String: Value]] = [:]
        for (pk, row) in rows where Merge.isPresent(row.length) {
            var r: [String: Value] = [:]
            for (name, col) in schema.columns {
                if let cell = row.cells[name], Merge.isVisible(cell: cell.stamp.length, row: row.length) {
                    r[name] = cell.value
                } else {
                    r[name] = col.def.defaultValue
                }
            }
            out[pk] = r
        }
        return out
    }

    /// The causal length of a row, 0 when never seen.
    public func length(of table: String, key: String) -> UInt64 {
        tables[table]?[key]?.length ?? 0
    }
}
