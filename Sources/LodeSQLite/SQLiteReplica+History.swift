import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Every write to one row, oldest first: time, site, column, value, and
    /// whether it is what the row shows now (`HistoryRules`). The commits
    /// that touched the row are found by index (`_lode_history`), not by
    /// scanning the log.
    public func history(table: String, pk: String) async throws -> [HistoryEntry] {
        try await read { db in
            let schema = try SchemaCatalog.load(db)
            guard let t = schema[table], !Identifier.isReserved(table) || Role.annotationTables.contains(table) else {
                throw StoreError.notFound("no table \(table) in dataset \(self.dataset)")
            }
            guard
                let row = try Row.fetchOne(db, sql: "SELECT cl, clocks, first_log FROM _lode_rows WHERE tbl = ? AND pk = ?", arguments: [t.id, pk])
            else {
                throw StoreError.notFound("no row \(pk) in table \(table): nothing was ever written to it")
            }
            let sites = try SiteRegistry.load(db)
            let names = try SiteRegistry.records(db).reduce(into: [SiteID: String]()) { $0[$1.site] = $1.name }
            let clocks = try RowClocks(decoding: [UInt8](row["clocks"] as Data))
            var logs: [Int64] = [row["first_log"]]
            logs += try Int64.fetchAll(
                db, sql: "SELECT l.id FROM _lode_history h JOIN _lode_log l ON l.site = h.site AND l.seq = h.seq WHERE h.tbl = ? AND h.pk = ?",
                arguments: [t.id, pk])
            var commits: [Commit] = []
            for id in Set(logs).sorted() {
                guard let bytes = try Data.fetchOne(db, sql: "SELECT bytes FROM _lode_log WHERE id = ?", arguments: [id]) else { continue }
                commits.append(try Commit(decoding: try LogBytes.commit(bytes)))
            }
            return HistoryRules.entries(
                table: table, pk: pk, commits: commits, length: UInt64(row["cl"] as Int64),
                stamp: { column in
                    guard let slot = t.slots[column], let s = clocks.stamp(slot), let site = sites.key(s.site) else { return nil }
                    return CellStamp(length: s.length, hlc: HLC(rawValue: s.hlc), site: site, seq: s.seq)
                },
                name: { names[$0].flatMap { $0 } ?? $0.short })
        }
    }

    /// Concurrent writes to one cell that this replica has seen, newest first.
    public func conflicts(includeResolved: Bool) async throws -> [ConflictRecord] {
        try await read { db in
            let names = try SiteRegistry.names(db)
            let sql = """
                SELECT c.*,
                       (SELECT person FROM _lode_log WHERE site = c.winner_site AND seq = c.winner_seq) AS winner_person,
                       (SELECT person FROM _lode_log WHERE site = c.loser_site AND seq = c.loser_seq) AS loser_person
                FROM _lode_conflicts c \(includeResolved ? "" : "WHERE c.resolved_seq IS NULL") ORDER BY c.id DESC
                """
            return try Row.fetchAll(db, sql: sql).map { r in
                ConflictRecord(
                    table: r["tbl"], pk: r["pk"], column: r["col"],
                    winnerValue: Value(r["winner_value"] as DatabaseValue), winnerSiteName: names[r["winner_site"]] ?? "?",
                    winnerTime: HLC(rawValue: UInt64(bitPattern: r["winner_hlc"])).iso8601,
                    loserValue: Value(r["loser_value"] as DatabaseValue), loserSiteName: names[r["loser_site"]] ?? "?",
                    loserTime: HLC(rawValue: UInt64(bitPattern: r["loser_hlc"])).iso8601,
                    resolved: (r["resolved_seq"] as Int64?) != nil, winnerPerson: r["winner_person"], loserPerson: r["loser_person"])
            }
        }
    }
}
