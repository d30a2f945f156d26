import GRDB
import LodeCore
import LodeStore

/// One replicated table as the writer knows it: its merged schema, the local
/// slot number of each column (stable, used by the row clocks), the columns
/// as they stand in the SQLite table, and prepared statements.
final class TableState {
    let id: Int64
    var schema: TableSchema
    /// Column name → slot. Slots are local and never reused.
    var slots: [String: Int]
    /// The physical columns (not the key), in table order.
    var physical: [ColumnDef]
    /// Slot of each physical column.
    var physicalSlots: [Int]
    /// Column definitions by slot.
    var bySlot: [ColumnDef?]

    private var insertStatement: RawStatement?
    private var deleteStatement: RawStatement?
    private var updateStatements: [[Int]: RawStatement] = [:]
    /// For a list of written slots: for each physical column, the index in
    /// that list, or -1 (one entry: imports write one set of columns).
    private var positionsCache: (slots: [Int], positions: [Int])?
    private var selectStatements: [[Int]: RawStatement] = [:]

    init(id: Int64, schema: TableSchema, slots: [String: Int], physical: [ColumnDef]) {
        self.id = id
        self.schema = schema
        self.slots = slots
        self.physical = physical
        physicalSlots = []
        bySlot = []
        refresh()
    }

    /// The slot of a column of the schema; nil for a name that is no
    /// column (a column the key took the name of keeps a slot).
    func slot(_ column: String) -> Int? {
        schema.columns[column] == nil ? nil : slots[column]
    }

    var name: String { schema.name }
    var primaryKey: String { schema.primaryKey }

    /// Recomputes derived fields and drops prepared statements after the
    /// schema or the physical layout changed.
    func refresh() {
        physicalSlots = physical.map { slots[$0.name]! }
        bySlot = [ColumnDef?](repeating: nil, count: (slots.values.max() ?? -1) + 1)
        for (name, slot) in slots { bySlot[slot] = schema.columns[name]?.def }
        insertStatement = nil
        deleteStatement = nil
        updateStatements = [:]
        positionsCache = nil
        selectStatements = [:]
    }

    /// Where each physical column's value is in a row that writes `slots`
    /// (-1: not written, takes its default).
    func positions(of slots: [Int]) -> [Int] {
        if let c = positionsCache, c.slots == slots { return c.positions }
        let p = physicalSlots.map { slots.firstIndex(of: $0) ?? -1 }
        positionsCache = (slots, p)
        return p
    }

    /// `INSERT OR REPLACE` of a whole row: key, then every physical column.
    func insert(_ db: Database) throws -> RawStatement {
        if let s = insertStatement { return s }
        let cols = [primaryKey] + physical.map(\.name)
        let sql =
            "INSERT OR REPLACE INTO \(quote(name)) (\(cols.map(quote).joined(separator: ", "))) VALUES (\(cols.map { _ in "?" }.joined(separator: ", ")))"
        let s = try RawStatement(db, sql)
        insertStatement = s
        return s
    }

    func delete(_ db: Database) throws -> RawStatement {
        if let s = deleteStatement { return s }
        let s = try RawStatement(db, "DELETE FROM \(quote(name)) WHERE \(quote(primaryKey)) = ?")
        deleteStatement = s
        return s
    }

    /// `UPDATE` of the given slots; binds values 1…n, then the key.
    func update(_ db: Database, slots cols: [Int]) throws -> RawStatement {
        if let s = updateStatements[cols] { return s }
        let sets = cols.map { "\(quote(bySlot[$0]!.name)) = ?" }.joined(separator: ", ")
        let s = try RawStatement(db, "UPDATE \(quote(name)) SET \(sets) WHERE \(quote(primaryKey)) = ?")
        updateStatements[cols] = s
        return s
    }

    /// `SELECT` of the given slots of one row.
    func select(_ db: Database, slots cols: [Int]) throws -> RawStatement {
        if let s = selectStatements[cols] { return s }
        let list = cols.map { quote(bySlot[$0]!.name) }.joined(separator: ", ")
        let s = try RawStatement(db, "SELECT \(list) FROM \(quote(name)) WHERE \(quote(primaryKey)) = ?")
        selectStatements[cols] = s
        return s
    }

    /// The physical definition SQL of the table.
    static func createSQL(name: String, primaryKey: String, columns: [ColumnDef]) -> String {
        var parts = ["\(quote(primaryKey)) TEXT PRIMARY KEY NOT NULL"]
        for c in columns { parts.append(columnSQL(c)) }
        return "CREATE TABLE \(quote(name)) (\(parts.joined(separator: ", "))) WITHOUT ROWID"
    }

    /// A physical column: its type and default. NOT NULL is enforced by
    /// Lodestone (a NULL write materialises as the default), never by
    /// SQLite, so applying a valid commit can never fail on a constraint.
    static func columnSQL(_ c: ColumnDef) -> String {
        var s = "\(quote(c.name)) \(c.type.sqlName)"
        if !c.defaultValue.isNull { s += " DEFAULT \(c.defaultValue.sqlLiteral)" }
        return s
    }
}
