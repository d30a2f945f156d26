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

    /// Merges another replica's merged schema of this table: the same as
    /// merging every definition that replica merged (the key and each
    /// column's definition by the later stamp, each column's place by the
    /// earliest), so a replica can take a peer's schema without the
    /// definitions themselves (a snapshot, DESIGN §12).
    public mutating func merge(_ other: TableSchema) {
        if other.stamp > stamp {
            stamp = other.stamp
            primaryKey = other.primaryKey
        }
        for (name, c) in other.columns {
            guard var existing = columns[name] else {
                columns[name] = c
                continue
            }
            if c.stamp > existing.stamp {
                existing.def = c.def
                existing.stamp = c.stamp
            }
            if c.firstStamp < existing.firstStamp || (c.firstStamp == existing.firstStamp && c.ordinal < existing.ordinal) {
                existing.firstStamp = c.firstStamp
                existing.ordinal = c.ordinal
            }
            columns[name] = existing
        }
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
