import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Every write to one row, oldest first: time, site, column, value, and
    /// whether it is what the row shows now (`HistoryRules`). The commits
    /// that touched the row are found by index (`_lode_history`), not by
    /// scanning the log; what compaction folded away is not shown.
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
            let names = try SiteRegistry.records(db).reduce(into: [SiteID: String]()) { $0[$1.site] = $1.name }
            let clocks = try RowClocks(decoding: [UInt8](row["clocks"] as Data))
            let length = UInt64(row["cl"] as Int64)
            let reader = try HistoryReader(db)
            let sites = reader.sites
            func stamp(_ column: String) -> CellStamp? {
                guard let slot = t.slots[column], let s = clocks.stamp(slot), let site = sites.key(s.site) else { return nil }
                return CellStamp(length: s.length, hlc: HLC(rawValue: s.hlc), site: site, seq: s.seq)
            }
            func name(_ site: SiteID) -> String { names[site].flatMap { $0 } ?? site.short }
            // The commits that wrote the row, in the order they were applied.
            // One compacted away (`compact`) is told from its history entry.
            var writes: [String: RowWrite] = [:]
            var logs: [Int64] = [row["first_log"]]
            let logID = try db.makeStatement(sql: "SELECT id FROM _lode_log WHERE site = ? AND seq = ?")
            for w in try reader.writes(t, pk: pk, upTo: HLC(rawValue: UInt64(Int64.max))) {
                guard let number = sites.numbers[w.site], let id = try Int64.fetchOne(logID, arguments: [number, Int64(w.seq)]) else { continue }
                writes["\(id)"] = w
                logs.append(id)
            }
            let columns = Dictionary(uniqueKeysWithValues: t.slots.map { ($1, $0) })
            var out: [HistoryEntry] = []
            for id in Set(logs).sorted() {
                guard let log = try Row.fetchOne(db, sql: "SELECT bytes, person FROM _lode_log WHERE id = ?", arguments: [id]) else { continue }
                let bytes: Data = log["bytes"]
                if !bytes.isEmpty {
                    let commit = try Commit(decoding: try LogBytes.commit(bytes))
                    out += HistoryRules.entries(table: table, pk: pk, commits: [commit], length: length, stamp: stamp, name: name)
                } else if let w = writes["\(id)"] {
                    out += HistoryRules.entries(
                        table: table, pk: pk, write: w, person: log["person"], length: length, columns: columns, stamp: stamp, name: name)
                }
            }
            return out
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
