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

    /// Two concurrent writes to one cell, as `Merge.cell` found them.
    public struct Conflict: Hashable, Sendable {
        public var table: String
        public var pk: String
        public var column: String
        /// The write the cell kept, with the value it shows.
        public var winner: Cell
        /// The write it did not keep, with the value it wrote.
        public var loser: Cell
        /// The write that saw both and so resolved the conflict, if any.
        public var resolvedBy: CellStamp?
    }

    /// The dataset name.
    public let dataset: String
    /// Table schemas by name.
    public private(set) var schemas: [String: TableSchema] = [:]
    /// Rows by table, then primary key.
    public private(set) var tables: [String: [String: Row]] = [:]
    /// Conflicts in the order they were found.
    public private(set) var conflicts: [Conflict] = []
    /// Feed heads by site.
    public private(set) var heads: [SiteID: FeedHead] = [:]
    /// What this replica holds.
    public private(set) var vector = VersionVector()
    /// The row of `table` with primary key `pk`, if ever written.
    public func row(_ table: String, _ pk: String) -> Row? { tables[table]?[pk] }
    /// The replica's clock.
    public var clock = HybridLogicalClock()

    /// Creates an empty replica of `dataset`.
    public init(dataset: String) { self.dataset = dataset }

    /// The head of `site`'s feed.
    public func head(of site: SiteID) -> FeedHead { heads[site] ?? .empty }

    /// Applies a commit after checking its feed position and dependencies.
    /// A commit that fails any check changes nothing. With `local`, the
    /// commit is this replica's own: it has seen everything held here, so
    /// it conflicts with nothing and resolves every conflict it overwrites.
    /// `dependenciesHeld`, when given, is what dependencies are checked
    /// against instead of the vector (a store's cut-off feeds).
    public mutating func apply(_ commit: Commit, local: Bool = false, dependenciesHeld: VersionVector? = nil) throws {
        guard commit.dataset == dataset else { throw SchemaViolation("commit is for dataset \(commit.dataset)") }
        let past = try FeedRules.check(commit, head: head(of: commit.author), held: dependenciesHeld ?? vector)
        var next = self
        try next.applyOps(commit, past: local ? nil : past)
        next.heads[commit.author] = FeedHead(seq: commit.seq, hash: commit.hash, vector: past)
        next.vector[commit.author] = commit.seq
        next.clock.observe(commit.hlc)
        self = next
    }

    private mutating func applyOps(_ commit: Commit, past: VersionVector?) throws {
        let schemaStamp = SchemaStamp(hlc: commit.hlc, site: commit.author)
        for op in commit.ops {
            switch op {
            case .defineTable(let def):
                define(def, stamp: schemaStamp)
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
                        let column = put.columns[j]
                        let written = Cell(value: schema.columns[column]!.def.materialized(value), stamp: stamp)
                        let existing = row.cells[column]
                        let m = Merge.cell(incoming: stamp, past: past, existing: existing?.stamp, rowLength: row.length)
                        if m.isConflict, let existing {
                            conflicts.append(
                                Conflict(
                                    table: put.table, pk: put.keys[i], column: column, winner: m.replaces ? written : existing,
                                    loser: m.replaces ? existing : written))
                        } else if m.replaces {
                            resolveConflicts(table: put.table, pk: put.keys[i], column: column, by: stamp, past: past)
                        }
                        if m.replaces { row.cells[column] = written }
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

    /// Merges a table definition written with `stamp` (also how a store
    /// defines its system tables, at the zero stamp).
    public mutating func define(_ def: TableDef, stamp: SchemaStamp) {
        if var s = schemas[def.name] {
            s.merge(def, stamp: stamp)
            schemas[def.name] = s
        } else {
            schemas[def.name] = TableSchema(def, stamp: stamp)
            tables[def.name] = [:]
        }
    }

    /// A write to a cell that has seen both sides of its open conflicts resolves them.
    private mutating func resolveConflicts(table: String, pk: String, column: String, by stamp: CellStamp, past: VersionVector?) {
        for i in conflicts.indices where conflicts[i].resolvedBy == nil {
            let c = conflicts[i]
            guard c.table == table, c.pk == pk, c.column == column else { continue }
            if Merge.resolves(
                past: past, winnerSite: c.winner.stamp.site, winnerSeq: c.winner.stamp.seq, loserSite: c.loser.stamp.site,
                loserSeq: c.loser.stamp.seq)
            {
                conflicts[i].resolvedBy = stamp
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
