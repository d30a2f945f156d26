import GRDB
import LodeCore
import LodeStore

/// Rows set aside in a temporary table and handed back in key order, so
/// that a large edit writes every B-tree (the user table, `_lode_rows`,
/// `_lode_history`) from one end to the other instead of at random places:
/// each page is read and written once for all the rows it takes, however
/// much larger than the page cache the table is. Rows with the same key
/// come back in the order they were added. Memory stays flat: the table is
/// SQLite's (on disk once it outgrows its cache) and the sort is SQLite's
/// external merge sort.
///
/// Commits cut from rows in key order are in key order too, so a replica
/// applying them (an initial sync) writes its B-trees in order as well.
final class SortedRows {
    private let db: Database
    private let width: Int
    private let insert: RawStatement
    private var count: Int64 = 0

    /// Starts an empty set of rows of `width` values each.
    init(_ db: Database, width: Int) throws {
        self.db = db
        self.width = width
        let columns = (0..<width).map { ", v\($0)" }.joined()
        try db.execute(
            sql: "DROP TABLE IF EXISTS temp._lode_sorted; CREATE TEMP TABLE _lode_sorted(n INTEGER PRIMARY KEY, pk TEXT NOT NULL\(columns))")
        insert = try RawStatement(db, "INSERT INTO temp._lode_sorted VALUES (?, ?\(String(repeating: ", ?", count: width)))")
    }

    /// Sets a row aside.
    func add(pk: String, values: [Value]) throws {
        precondition(values.count == width)
        count += 1
        insert.bind(1, count)
        insert.bind(2, pk)
        for (i, v) in values.enumerated() { insert.bind(Int32(i + 3), v) }
        try insert.run(db)
    }

    /// Hands every row back in key order (the values array is reused
    /// between calls), then drops the table.
    func drain(_ body: (_ pk: String, _ values: [Value]) throws -> Void) throws {
        let columns = (0..<width).map { ", v\($0)" }.joined()
        let select = try RawStatement(db, "SELECT pk\(columns) FROM temp._lode_sorted ORDER BY pk, n")
        var values: [Value] = []
        values.reserveCapacity(width)
        do {
            defer { select.reset() }
            while try select.step(db) {
                guard case .text(let pk) = select.value(0) else { throw StoreError(.storage, "a row set aside came back without its key") }
                values.removeAll(keepingCapacity: true)
                for i in 0..<width { values.append(select.value(Int32(i + 1))) }
                try body(pk, values)
            }
        }
        try db.execute(sql: "DROP TABLE temp._lode_sorted")
    }
}
