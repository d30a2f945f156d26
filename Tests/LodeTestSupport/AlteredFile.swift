import Foundation
import GRDB

/// Copies the SQLite file `file` (a backup, a snapshot) to `path` and runs
/// `sql` on the copy: a file altered after the fact, for tests of what a
/// restore or a snapshot install refuses.
public func alteredCopy(of file: String, to path: String, _ sql: String) async throws {
    try FileManager.default.copyItem(atPath: file, toPath: path)
    let queue = try DatabaseQueue(path: path)
    try await queue.write { try $0.execute(sql: sql) }
    try queue.close()
}

/// SQL that changes every place a backup's rows of `table` are read from:
/// the table itself (rows whose history is their table row) and the
/// history (the others), so that their digest differs from the signed one.
public func forgedRows(_ table: String, set assignment: String) -> String {
    "UPDATE \(table) SET \(assignment); UPDATE _lode_history SET cells = x'00' WHERE tbl = (SELECT id FROM _lode_tables WHERE name = '\(table)')"
}
