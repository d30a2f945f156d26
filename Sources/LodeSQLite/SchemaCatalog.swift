import Foundation
import GRDB
import LodeCore
import LodeStore

/// The replicated tables of a dataset file: their merged schemas (kept in
/// `_lode_tables` and `_lode_columns`) and the SQLite tables that
/// materialise them. Merging a definition brings the SQLite table in line:
/// a new table, added columns, or a rebuild when the canonical column order
/// or a type changed.
final class SchemaCatalog {
    private(set) var tables: [String: TableState] = [:]

    /// Reads every table's schema from the file.
    static func load(_ db: Database) throws -> SchemaCatalog {
        let c = SchemaCatalog()
        for t in try Row.fetchAll(db, sql: "SELECT id, name, pk, hlc, site FROM _lode_tables ORDER BY id") {
            let id: Int64 = t["id"]
            let stamp = SchemaStamp(hlc: HLC(rawValue: UInt64(bitPattern: t["hlc"])), site: try SiteID(bytes: [UInt8](t["site"] as Data)))
            var schema = TableSchema(TableDef(name: t["name"], primaryKey: t["pk"], columns: []), stamp: stamp)
            var slots: [String: Int] = [:]
            for col in try Row.fetchAll(db, sql: "SELECT * FROM _lode_columns WHERE tbl = ? ORDER BY slot", arguments: [id]) {
                guard let type = ColumnType(rawValue: UInt8(col["type"] as Int)) else {
                    throw StoreError(.storage, "column \(col["name"] as String) has an unknown type code")
                }
                let def = ColumnDef(
                    name: col["name"], type: type, notNull: col["not_null"], defaultValue: try Value.decoded([UInt8](col["dflt"] as Data)))
                schema.columns[def.name] = TableSchema.Column(
                    def: def,
                    stamp: SchemaStamp(hlc: HLC(rawValue: UInt64(bitPattern: col["hlc"])), site: try SiteID(bytes: [UInt8](col["site"] as Data))),
                    firstStamp: SchemaStamp(
                        hlc: HLC(rawValue: UInt64(bitPattern: col["first_hlc"])), site: try SiteID(bytes: [UInt8](col["first_site"] as Data))),
                    ordinal: col["first_ordinal"])
                slots[def.name] = col["slot"]
            }
            // A column the key took the name of keeps its slot (its clocks
            // stay with the rows) but is no column while the key holds it.
            schema.columns[schema.primaryKey] = nil
            let physical = try physicalColumns(db, table: schema.name, schema: schema)
            c.tables[schema.name] = TableState(id: id, schema: schema, slots: slots, physical: physical)
        }
        return c
    }

    /// The columns of the SQLite table as it stands, with their merged definitions.
    private static func physicalColumns(_ db: Database, table: String, schema: TableSchema) throws -> [ColumnDef] {
        try Row.fetchAll(db, sql: "PRAGMA table_info(\(quote(table)))").compactMap { row in
            let n: String = row["name"]
            return n == schema.primaryKey ? nil : schema.columns[n]?.def
        }
    }

    /// The table named `name`.
    subscript(name: String) -> TableState? { tables[name] }

    /// The merged schemas of the user tables, by name.
    var userSchemas: [TableSchema] {
        tables.values.filter { !Identifier.isReserved($0.name) }.map(\.schema).sorted { $0.name < $1.name }
    }

    /// Looks a table up, or throws a not-found error naming the tables there are.
    func require(_ name: String, dataset: String) throws -> TableState {
        if let t = tables[name] { return t }
        throw DatasetRules.noTable(name, in: dataset, tables: Array(tables.keys))
    }

    /// Merges a table definition written with `stamp`.
    func define(_ db: Database, _ def: TableDef, stamp: SchemaStamp) throws {
        guard let t = tables[def.name] else {
            try create(db, TableSchema(def, stamp: stamp), slotOrder: def.columns.map(\.name))
            return
        }
        var merged = t.schema
        merged.merge(def, stamp: stamp)
        try adopt(db, t, merged)
    }

    /// Merges another replica's merged schema of a table (a snapshot's).
    func merge(_ db: Database, _ schema: TableSchema) throws {
        guard let t = tables[schema.name] else {
            try create(db, schema, slotOrder: schema.orderedColumns.map(\.name))
            return
        }
        var merged = t.schema
        merged.merge(schema)
        try adopt(db, t, merged)
    }

    /// Creates a table this file did not have, its columns taking slots in
    /// `slotOrder` (names the schema lacks keep theirs empty).
    private func create(_ db: Database, _ schema: TableSchema, slotOrder: [String]) throws {
        try db.execute(
            sql: "INSERT INTO _lode_tables(name, pk, hlc, site) VALUES (?, ?, ?, ?)",
            arguments: [schema.name, schema.primaryKey, Int64(bitPattern: schema.stamp.hlc.rawValue), Data(schema.stamp.site.bytes)])
        let id = db.lastInsertedRowID
        var slots: [String: Int] = [:]
        for (i, name) in slotOrder.enumerated() where schema.columns[name] != nil { slots[name] = i }
        let ordered = schema.orderedColumns
        let t = TableState(id: id, schema: schema, slots: slots, physical: ordered)
        try db.execute(sql: TableState.createSQL(name: schema.name, primaryKey: schema.primaryKey, columns: ordered))
        tables[schema.name] = t
        try persist(db, t)
    }

    /// Brings table `t` to its merged schema `merged`: new columns, or a
    /// rebuild when the key, the column order or a type changed.
    private func adopt(_ db: Database, _ t: TableState, _ merged: TableSchema) throws {
        guard merged != t.schema else { return }
        let oldKey = t.schema.primaryKey
        t.schema = merged
        for c in merged.columns.keys where t.slots[c] == nil {
            t.slots[c] = (t.slots.values.max() ?? -1) + 1
        }
        try persist(db, t)
        let target = merged.orderedColumns
        let current = t.physical
        let isPrefix = current.count <= target.count && zip(current, target).allSatisfy { $0 == $1 }
        if merged.primaryKey != oldKey {
            // The key may take the name of a column (whose values it
            // hides) or give its old name to one: a rename cannot do that.
            try rebuild(db, t, to: target, oldKey: oldKey)
        } else if isPrefix {
            for c in target.dropFirst(current.count) {
                try db.execute(sql: "ALTER TABLE \(quote(t.name)) ADD COLUMN \(TableState.columnSQL(c))")
            }
        } else {
            try rebuild(db, t, to: target, oldKey: oldKey)
        }
        t.physical = target
        t.refresh()
    }

    private func persist(_ db: Database, _ t: TableState) throws {
        try db.execute(
            sql: "UPDATE _lode_tables SET pk = ?, hlc = ?, site = ? WHERE id = ?",
            arguments: [t.schema.primaryKey, Int64(bitPattern: t.schema.stamp.hlc.rawValue), Data(t.schema.stamp.site.bytes), t.id])
        for (name, col) in t.schema.columns {
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO _lode_columns(tbl, slot, name, type, not_null, dflt, hlc, site, first_hlc, first_site, first_ordinal)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    t.id, t.slots[name]!, name, Int(col.def.type.rawValue), col.def.notNull, Data(col.def.defaultValue.encoded),
                    Int64(bitPattern: col.stamp.hlc.rawValue), Data(col.stamp.site.bytes),
                    Int64(bitPattern: col.firstStamp.hlc.rawValue), Data(col.firstStamp.site.bytes), col.ordinal,
                ])
        }
    }

    /// Recreates a table with the columns in `target` order under the
    /// schema's key, which holds the old key's values; columns in both the
    /// old table and `target` keep theirs, new ones take their default.
    private func rebuild(_ db: Database, _ t: TableState, to target: [ColumnDef], oldKey: String) throws {
        let temp = "_lode_rebuild"
        try db.execute(sql: TableState.createSQL(name: temp, primaryKey: t.schema.primaryKey, columns: target))
        let had = Set(t.physical.map(\.name))
        let common = target.map(\.name).filter { had.contains($0) && $0 != oldKey }
        let into = ([t.schema.primaryKey] + common).map(quote).joined(separator: ", ")
        let from = ([oldKey] + common).map(quote).joined(separator: ", ")
        try db.execute(sql: "INSERT INTO \(temp) (\(into)) SELECT \(from) FROM \(quote(t.name))")
        try db.execute(sql: "DROP TABLE \(quote(t.name))")
        try db.execute(sql: "ALTER TABLE \(temp) RENAME TO \(quote(t.name))")
    }
}
