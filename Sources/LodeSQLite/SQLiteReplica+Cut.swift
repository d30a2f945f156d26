import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Cuts feeds off and drops what lies past them (`ReplicaStore.cut`):
    /// the remaining log is set aside in a temporary table, everything
    /// applying built is emptied, and the remaining commits are applied
    /// again in their order, each verified as a peer's would be, all in one
    /// transaction: a crash leaves the replica as it was or fully cut.
    public func cut(_ cutoffs: [SiteID: UInt64]) async throws -> Int {
        try await write { [self] tx in
            let db = tx.db
            for (author, seq) in cutoffs where seq < (tx.state.feeds.cutoffs[author] ?? .max) {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO _lode_cutoffs(site, seq) VALUES (?, ?)",
                    arguments: [try tx.state.sites.number(db, author), Int64(min(seq, UInt64(Int64.max)))])
            }
            tx.state.feeds.cutoffs.merge(cutoffs)
            let excess = tx.state.feeds.cutoffs.excess(in: tx.state.feeds.vector)
            guard !excess.isEmpty else { return 0 }
            let before = try Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_log") ?? 0
            // Keep the dropped commits' refusals (no bytes), then set the rest aside.
            var past: [String] = []
            var arguments: [any DatabaseValueConvertible] = []
            for (author, seq) in excess {
                past.append("(site = ? AND seq > ?)")
                arguments += [try tx.state.sites.number(db, author), Int64(seq)]
            }
            let dropped = "(" + past.joined(separator: " OR ") + ")"
            let droppedRows = try Row.fetchCursor(db, sql: "SELECT bytes FROM _lode_log WHERE \(dropped)", arguments: StatementArguments(arguments))
            while let row = try droppedRows.next() {
                let commit = try Commit(decoding: try LogBytes.commit(row["bytes"]))
                try reject(db, commit, .notAuthorized, tx.state.feeds.cutoffs.reason(commit))
            }
            let kept = try replayLog(tx, keeping: "NOT \(dropped)", StatementArguments(arguments))
            return before - kept
        }
    }

    /// Empties everything applying built and applies the commits of the log
    /// that `keeping` (an SQL condition on `_lode_log`) selects again, in
    /// their order, each verified as a peer's would be. Returns how many
    /// applied. Runs inside the caller's transaction.
    func replayLog(_ tx: WriteTransaction, keeping condition: String = "1", _ arguments: StatementArguments = []) throws -> Int {
        let db = tx.db
        tx.rewritesLog = true
        if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM _lode_log WHERE (\(condition)) AND length(bytes) = 0)", arguments: arguments)
            == true
        {
            throw StoreError.badInput(
                "the log was compacted (lode compact): the commits to apply again are gone, so this replica cannot be rebuilt from it")
        }
        try db.execute(sql: "CREATE TEMP TABLE _lode_replay(id INTEGER PRIMARY KEY, bytes BLOB NOT NULL)")
        try db.execute(
            sql: "INSERT INTO temp._lode_replay(id, bytes) SELECT id, bytes FROM _lode_log WHERE \(condition) ORDER BY id", arguments: arguments)
        try DatasetFormat.clearApplied(db, tables: Array(tx.state.schema.tables.keys))
        try tx.reload()
        var last: Int64 = 0
        var kept = 0
        while true {
            let rows = try Row.fetchAll(db, sql: "SELECT id, bytes FROM temp._lode_replay WHERE id > ? ORDER BY id LIMIT 256", arguments: [last])
            guard let end = rows.last else { break }
            last = end["id"]
            for row in rows {
                let commit = try Commit(decoding: try LogBytes.commit(row["bytes"]))
                if case .apply = try applyOne(tx, commit) { kept += 1 }
            }
        }
        try db.execute(sql: "DROP TABLE temp._lode_replay")
        return kept
    }
}
