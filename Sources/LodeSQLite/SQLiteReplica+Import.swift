import Foundation
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Inserts or updates rows of `table` from a CSV file whose header names
    /// the columns (one must be the primary key). All or nothing: a bad
    /// line anywhere leaves the dataset exactly as it was. Memory stays
    /// constant however large the file: the rows read are set aside on disk
    /// (`SortedRows`), then applied in key order (for a file whose keys are
    /// random, as ids usually are, that is several times faster once the
    /// table outgrows the page cache), and commits are cut at
    /// `LocalCommitBuilder.budget` bytes. A key that appears twice takes
    /// its last line.
    ///
    /// ```swift
    /// let report = try await replica.importCSV(table: "facilities", path: "facilities.csv", progress: nil)
    /// ```
    public func importCSV(table: String, path: String, progress: (@Sendable (ImportProgress) -> Void)?) async throws -> ImportReport {
        try CSVImport.check(table: table, by: local)
        return try await edit { batch in
            let t = try batch.table(table)
            var plan: ImportPlan?
            var sorted: SortedRows?
            let rows = try CSVImport.read(path: path, table: t.schema, progress: progress) { p, pk, values in
                if sorted == nil {
                    plan = p
                    sorted = try SortedRows(batch.db, width: p.columns.count)
                }
                try sorted!.add(pk: pk, values: values)
            }
            if let plan, let sorted {
                let slots = plan.columns.map { t.slots[$0]! }
                let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? nil
                var written = 0
                var lastReport: ContinuousClock.Instant?  // the first report goes out at once
                try sorted.drain { pk, values in
                    try batch.put(t, pk: pk, columns: plan.columns, slots: slots, values: values, onlyChanges: true)
                    written += 1
                    if let progress, written % 4096 == 0, lastReport.map({ ContinuousClock.now - $0 > .milliseconds(200) }) ?? true {
                        lastReport = .now
                        progress(ImportProgress(rows: rows, bytes: size ?? 0, totalBytes: size, written: written))
                    }
                }
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
            throw StoreError.managedTable(table)
        }
        return try await edit { batch in
            for e in edits { try batch.apply(e) }
            let commits = try batch.finish()
            return WriteReport(rowsChanged: batch.changedRows, commits: commits)
        }
    }
}
