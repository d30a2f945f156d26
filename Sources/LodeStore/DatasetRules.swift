import LodeCore

/// What an alter does: the definitions to commit, and what they add.
public struct AlterPlan: Sendable {
    /// New tables, and new columns of existing ones, as definitions.
    public var defs: [TableDef]
    /// The tables and columns added.
    public var change: SchemaChange
}

/// The rules for creating a dataset and changing its schema, the same in
/// every store.
public enum DatasetRules {
    /// Checks a new dataset before anything is written: a valid name, a site
    /// allowed to create one, no reserved table name.
    public static func checkNew(_ name: String, tables: [TableDef], by local: LocalSite) throws {
        guard Identifier.isValidDataset(name) else {
            throw StoreError.badInput(
                "\"\(name)\" is not a valid dataset name: use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit")
        }
        if !local.role.canEdit {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may create a dataset")
        }
        for t in tables { try checkNewTable(t) }
    }

    /// A table a dataset may gain: not a reserved name, and at least one
    /// column besides the key (a row is written as the values of its
    /// columns; peers refuse a write that names none).
    static func checkNewTable(_ def: TableDef) throws {
        if Identifier.isReserved(def.name) { throw StoreError.badInput("table name \(def.name) is reserved") }
        guard !def.columns.isEmpty else {
            throw StoreError.badInput(
                "table \(def.name) has only its key \(def.primaryKey): give it at least one other column (a row is replicated as the values of its columns)"
            )
        }
    }

    /// Why `commit` may not bring dataset `name` into being on a node that
    /// does not hold it, or nil when it may (DESIGN §9: a Hello or a vector
    /// creates nothing, and neither does a commit from a site that may not
    /// create datasets). A dataset's first commit is its creator's: the
    /// creator's first in it (seq 1, nothing held before), defining tables,
    /// validly signed by an editor. `role` is the author's, from its
    /// certificate; nil when its certificate is not known here.
    public static func refusalToCreate(_ name: String, by commit: Commit, role: Role?) -> String? {
        guard Identifier.isValidDataset(name), commit.dataset == name else { return "\"\(name)\" is not a valid dataset name" }
        guard let role else { return "its author's certificate is not known here" }
        guard role.canEdit else { return "its author's role is \(role.rawValue), and only an editor may create a dataset" }
        let defines = commit.ops.contains { if case .defineTable = $0 { true } else { false } }
        guard commit.seq == 1, commit.deps.isEmpty, defines else {
            return "only the dataset's first commit (its creator's, defining tables) can bring it into being here"
        }
        guard commit.hasValidSignature else { return "bad signature" }
        return nil
    }

    /// What `alter` must define so that the dataset holds the tables and
    /// columns `declared` names: new tables, and new columns of existing
    /// ones. A table or column that differs from what exists (a type or
    /// default change, another primary key, a column left out: a drop or a
    /// rename) is refused, since replicas still offline keep writing it.
    public static func planAlter(existing: [String: TableSchema], declared: [TableDef]) throws -> AlterPlan {
        var defs: [TableDef] = []
        var change = SchemaChange(tables: [], columns: [])
        for def in declared {
            if Identifier.isReserved(def.name) { throw StoreError.badInput("table name \(def.name) is reserved") }
            guard let current = existing[def.name] else {
                try checkNewTable(def)
                defs.append(def)
                change.tables.append(def.name)
                continue
            }
            guard def.primaryKey == current.primaryKey else {
                throw StoreError.badInput("table \(def.name): the primary key is \(current.primaryKey); it cannot be renamed to \(def.primaryKey)")
            }
            let names = Set(def.columns.map(\.name))
            if let missing = current.orderedColumns.first(where: { !names.contains($0.name) }) {
                throw StoreError.badInput(
                    "table \(def.name): column \(missing.name) is missing from the new schema; columns cannot be dropped or renamed, because replicas that are offline still write them"
                )
            }
            var added: [ColumnDef] = []
            for c in def.columns {
                if let e = current.columns[c.name]?.def {
                    guard e == c else {
                        throw StoreError.badInput(
                            "table \(def.name): column \(c.name) is \(SchemaSQL.describe(e)) and cannot become \(SchemaSQL.describe(c)): a type or default change cannot be merged with writes made offline"
                        )
                    }
                } else {
                    added.append(c)
                    change.columns.append("\(def.name).\(c.name)")
                }
            }
            if !added.isEmpty { defs.append(TableDef(name: def.name, primaryKey: def.primaryKey, columns: added)) }
        }
        return AlterPlan(defs: defs, change: change)
    }

    /// The error for a table that is not there, naming those that are.
    public static func noTable(_ name: String, in dataset: String, tables: [String]) -> StoreError {
        let names = tables.filter { !Identifier.isReserved($0) }.sorted()
        return StoreError.notFound("no table \(name) in dataset \(dataset)" + (names.isEmpty ? "" : " (tables: \(names.joined(separator: ", ")))"))
    }
}
