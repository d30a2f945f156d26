import Foundation
import LodeCore

/// Schemas as SQL text: how `schema` shows a dataset's tables, and how a
/// column is described in messages. Lodestone's schema language is SQLite's
/// `CREATE TABLE` (parsed by LodeSQLite's `SchemaParser`).
public enum SchemaSQL {
    /// Renders table schemas as `CREATE TABLE` statements, columns in
    /// canonical order.
    public static func render(_ tables: [TableSchema]) -> String {
        tables.map { t in
            var lines = ["  \(name(t.primaryKey)) TEXT PRIMARY KEY"]
            for c in t.orderedColumns { lines.append("  \(name(c.name)) \(describe(c))") }
            return "CREATE TABLE \(name(t.name)) (\n" + lines.joined(separator: ",\n") + "\n);\n"
        }.joined(separator: "\n")
    }

    /// A column's type, NOT NULL and default as SQL declares them.
    public static func describe(_ c: ColumnDef) -> String {
        var s = c.type.sqlName
        if c.notNull { s += " NOT NULL" }
        if !c.defaultValue.isNull { s += " DEFAULT \(c.defaultValue.sqlLiteral)" }
        return s
    }

    /// The name, quoted only where SQL needs it (keywords).
    public static func name(_ n: String) -> String {
        SQLKeywords.all.contains(n.uppercased()) ? quote(n) : n
    }

    /// An identifier in double quotes, inner quotes doubled.
    public static func quote(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// SQLite's keywords, which must be quoted when used as names.
enum SQLKeywords {
    static let all: Set<String> = [
        "ABORT", "ACTION", "ADD", "AFTER", "ALL", "ALTER", "ALWAYS", "ANALYZE", "AND", "AS", "ASC", "ATTACH",
        "AUTOINCREMENT", "BEFORE", "BEGIN", "BETWEEN", "BY", "CASCADE", "CASE", "CAST", "CHECK", "COLLATE",
        "COLUMN", "COMMIT", "CONFLICT", "CONSTRAINT", "CREATE", "CROSS", "CURRENT", "CURRENT_DATE", "CURRENT_TIME",
        "CURRENT_TIMESTAMP", "DATABASE", "DEFAULT", "DEFERRABLE", "DEFERRED", "DELETE", "DESC", "DETACH",
        "DISTINCT", "DO", "DROP", "EACH", "ELSE", "END", "ESCAPE", "EXCEPT", "EXCLUDE", "EXCLUSIVE", "EXISTS",
        "EXPLAIN", "FAIL", "FILTER", "FIRST", "FOLLOWING", "FOR", "FOREIGN", "FROM", "FULL", "GENERATED", "GLOB",
        "GROUP", "GROUPS", "HAVING", "IF", "IGNORE", "IMMEDIATE", "IN", "INDEX", "INDEXED", "INITIALLY", "INNER",
        "INSERT", "INSTEAD", "INTERSECT", "INTO", "IS", "ISNULL", "JOIN", "KEY", "LAST", "LEFT", "LIKE", "LIMIT",
        "MATCH", "MATERIALIZED", "NATURAL", "NO", "NOT", "NOTHING", "NOTNULL", "NULL", "NULLS", "OF", "OFFSET",
        "ON", "OR", "ORDER", "OTHERS", "OUTER", "OVER", "PARTITION", "PLAN", "PRAGMA", "PRECEDING", "PRIMARY",
        "QUERY", "RAISE", "RANGE", "RECURSIVE", "REFERENCES", "REGEXP", "REINDEX", "RELEASE", "RENAME", "REPLACE",
        "RESTRICT", "RETURNING", "RIGHT", "ROLLBACK", "ROW", "ROWS", "SAVEPOINT", "SELECT", "SET", "TABLE", "TEMP",
        "TEMPORARY", "THEN", "TIES", "TO", "TRANSACTION", "TRIGGER", "UNBOUNDED", "UNION", "UNIQUE", "UPDATE",
        "USING", "VACUUM", "VALUES", "VIEW", "VIRTUAL", "WHEN", "WHERE", "WINDOW", "WITH", "WITHOUT",
    ]
}

/// How SQLite stores a value in a column of a declared type (its column
/// affinity, for values bound as parameters): an INTEGER in a REAL column
/// becomes REAL, a REAL zero loses its sign, a REAL with no fraction in an
/// INTEGER column becomes INTEGER, and an INTEGER in a TEXT column its
/// decimal text. A store with typed columns (PostgreSQL) applies it so
/// that its tables hold what an SQLite replica's do. (A REAL in a TEXT
/// column, and TEXT that reads as a number in a numeric column, SQLite
/// converts too; the PostgreSQL store keeps those as written beside the
/// table, and exports them as written.)
public enum SQLiteAffinity {
    public static func stored(_ value: Value, in type: ColumnType) -> Value {
        switch (value, type) {
        case (.integer(let i), .real): return .real(Double(i))
        case (.real(let d), .real) where d == 0: return .real(0)
        case (.real(let d), .integer) where d == d.rounded() && d > -9.223_372_036_854_775_808e18 && d < 9.223_372_036_854_775_808e18:
            return .integer(Int64(d))
        case (.integer(let i), .text): return .text(String(i))
        default: return value
        }
    }
}
