import Foundation
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Inserts or updates rows of `table` from a CSV file whose header names
    /// the columns (one must be the primary key). All or nothing: a bad
    /// line anywhere leaves the dataset exactly as it was. Memory stays
    /// constant however large the file: rows are applied as they are read
    /// and commits are cut at `LocalCommitBuilder.budget` bytes.
    ///
    /// ```swift
    /// let report = try await replica.importCSV(table: "facilities", path: "facilities.csv", progress: nil)
    /// ```
    public func importCSV(table: String, path: String, progress: (@Sendable (ImportProgress) -> Void)?) async throws -> ImportReport {
        try CSVImport.check(table: table, by: local)
        return try await edit { batch in
            let t = try batch.table(table)
            var slots: [Int] = []
            let rows = try CSVImport.read(path: path, table: t.schema, progress: progress) { plan, pk, values in
                if slots.count != plan.columns.count { slots = plan.columns.map { t.slots[$0]! } }
                try batch.put(t, pk: pk, columns: plan.columns, slots: slots, values: values, onlyChanges: true)
            }
            let commits = try batch.finish()
            return ImportReport(rowsRead: rows, rowsChanged: batch.changedRows, commits: commits)
        }
    }
}

extension SQLiteReplica {
    /// Applies row edits as local commits, all or none.
    public func write(_ edits: [RowEdit]) async throws -> WriteReport {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may change rows")
        }
        for case .put(let table, _, _, _) in edits where Identifier.isReserved(table) {
            throw StoreError(.forbidden, "table \(table) is managed by Lodestone", remedy: .annotate)
        }
        return try await edit { batch in
            for e in edits { try batch.apply(e) }
            let commits = try batch.finish()
            return WriteReport(rowsChanged: batch.changedRows, commits: commits)
        }
    }
}
