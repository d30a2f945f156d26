import GRDB
import LodeCore
import LodeStore

/// Turns `CREATE TABLE` statements into table definitions, refusing what
/// the CRDT cannot honour with a message saying why.
///
/// SQLite itself parses the statements (in a private in-memory database),
/// so the accepted syntax is exactly SQLite's; the checks then read the
/// parsed schema back with `PRAGMA table_xinfo`, `index_list` and
/// `foreign_key_list`.
///
/// ```swift
/// let defs = try SchemaParser.parse("CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT);")
/// ```
public enum SchemaParser {
    /// Parses `sql`, which must hold only `CREATE TABLE` statements.
    public static func parse(_ sql: String) throws -> [TableDef] {
        let statements = SQLLexer.statements(sql)
        guard !statements.isEmpty else { throw StoreError.badInput("the schema holds no CREATE TABLE statement") }
        for tokens in statements {
            try checkStatement(tokens)
        }
        let db = try DatabaseQueue()
        do {
            try db.write { db in try db.execute(sql: sql) }
        } catch let e as DatabaseError {
            throw StoreError.badInput("the schema is not valid SQL: \(e.message ?? "\(e)")")
        }
        return try db.read { db in
            let names = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")
            return try names.map { try tableDef(db, $0) }
        }
    }

    static func checkStatement(_ t: [SQLToken]) throws {
        func word(_ i: Int) -> String? { i < t.count && t[i].kind == .word ? t[i].text : nil }
        guard word(0) == "CREATE" else {
            throw StoreError.badInput("only CREATE TABLE statements may appear in a schema, not \(word(0) ?? "this statement")")
        }
        if word(1) == "TEMP" || word(1) == "TEMPORARY" {
            throw StoreError.badInput("temporary tables are not replicated; remove TEMP")
        }
        if word(1) == "VIRTUAL" { throw StoreError.badInput("virtual tables cannot be replicated") }
        guard word(1) == "TABLE" else {
            let what = word(1) ?? "?"
            if what == "INDEX" || what == "UNIQUE" {
                throw StoreError.badInput("CREATE INDEX is not supported in a schema: indexes are not replicated yet")
            }
            throw StoreError.badInput("only CREATE TABLE statements may appear in a schema, not CREATE \(what)")
        }
        let name = t.count > 2 ? t[2].text : "?"
        for (i, tok) in t.enumerated() where tok.kind == .word {
            switch tok.text {
            case "CHECK":
                throw StoreError.badInput("table \(name): CHECK constraints cannot be honoured when concurrent edits merge; remove them")
            case "REFERENCES", "FOREIGN":
                throw StoreError.badInput(
                    "table \(name): foreign keys cannot be honoured when a referenced row is deleted at another site; store the key as a plain column"
                )
            case "AUTOINCREMENT":
                throw StoreError.badInput(
                    "table \(name): AUTOINCREMENT cannot work across sites that insert offline; use a text primary key such as a UUID")
            case "COLLATE":
                throw StoreError.badInput("table \(name): COLLATE is not supported; remove it")
            case "UNIQUE":
                throw StoreError.badInput(
                    "table \(name): UNIQUE beyond the primary key cannot be honoured when two sites insert the same value offline; remove it")
            case "AS" where i > 2 && ["SELECT", "WITH", "VALUES"].contains(word(i + 1) ?? ""):
                // Also kept it from running: AS WITH RECURSIVE … never ended.
                throw StoreError.badInput("table \(name): CREATE TABLE … AS \(word(i + 1)!) is not supported; declare the columns")
            case "AS" where i + 1 < t.count && t[i + 1].text == "(":
                throw StoreError.badInput("table \(name): generated columns are not supported")
            case "GENERATED":
                throw StoreError.badInput("table \(name): generated columns are not supported")
            default: break
            }
        }
    }

    static func tableDef(_ db: Database, _ rawName: String) throws -> TableDef {
        let name = rawName.lowercased()
        guard Identifier.isValid(name) else {
            throw StoreError.badInput("table name \"\(rawName)\" is not allowed: use letters, digits and _, starting with a letter (at most 64)")
        }
        guard !Identifier.isReserved(name) else {
            throw StoreError.badInput("table name \"\(rawName)\" is reserved: names starting with _ or sqlite_ belong to Lodestone and SQLite")
        }
        let rows = try Row.fetchAll(db, sql: "PRAGMA table_xinfo(\(quote(rawName)))")
        let pkCount = rows.filter { ($0["pk"] as Int? ?? 0) > 0 }.count
        guard pkCount > 0 else {
            throw StoreError.badInput("table \(name) has no primary key: declare one TEXT PRIMARY KEY column")
        }
        guard pkCount == 1 else {
            throw StoreError.badInput(
                "table \(name) has a composite primary key: Lodestone rows have one text key; combine the columns into one key column")
        }
        var pk = ""
        var columns: [ColumnDef] = []
        for row in rows {
            let rawColumn: String = row["name"]
            let colName = rawColumn.lowercased()
            guard Identifier.isValid(colName), !Identifier.isReserved(colName) || colName == "_" else {
                throw StoreError.badInput(
                    "column name \"\(rawColumn)\" in table \(name) is not allowed: use letters, digits and _, starting with a letter")
            }
            let hidden: Int = row["hidden"]
            guard hidden == 0 else { throw StoreError.badInput("table \(name): generated column \(colName) is not supported") }
            let declared: String = row["type"] ?? ""
            guard let type = ColumnType(declared: declared) else {
                let shown = declared.isEmpty ? "no type" : "type \(declared)"
                throw StoreError.badInput("column \(name).\(colName) has \(shown): declare INTEGER, REAL, TEXT or BLOB")
            }
            if (row["pk"] as Int? ?? 0) > 0 {
                guard type == .text else {
                    throw StoreError.badInput(
                        "the primary key \(name).\(colName) is \(type.sqlName): Lodestone needs a TEXT primary key (integer keys collide between sites that insert offline)"
                    )
                }
                pk = colName
                continue
            }
            var dflt = Value.null
            if let expr: String = row["dflt_value"] {
                let upper = expr.uppercased()
                if upper.contains("CURRENT_") || upper.contains("RANDOM") || upper.contains("(") {
                    throw StoreError.badInput("column \(name).\(colName): DEFAULT \(expr) is not a constant; every site must agree on a default")
                }
                dflt = Value(try DatabaseValue.fetchOne(db, sql: "SELECT \(expr)") ?? .null)
            }
            let notNull: Bool = row["notnull"]
            if notNull && dflt.isNull {
                throw StoreError.badInput(
                    "column \(name).\(colName) is NOT NULL without a DEFAULT: a row inserted at one site while another adds the column would have no value; add a DEFAULT"
                )
            }
            columns.append(ColumnDef(name: colName, type: type, notNull: notNull, defaultValue: dflt))
        }
        let indexes = try Row.fetchAll(db, sql: "PRAGMA index_list(\(quote(rawName)))")
        if indexes.contains(where: { ($0["origin"] as String?) == "u" }) {
            throw StoreError.badInput(
                "table \(name): UNIQUE beyond the primary key cannot be honoured when two sites insert the same value offline; remove it")
        }
        if try !Row.fetchAll(db, sql: "PRAGMA foreign_key_list(\(quote(rawName)))").isEmpty {
            throw StoreError.badInput("table \(name): foreign keys cannot be honoured when a referenced row is deleted at another site")
        }
        return TableDef(name: name, primaryKey: pk, columns: columns)
    }
}
