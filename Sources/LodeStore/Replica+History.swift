import Foundation
import GRDB
import LodeCore

/// One write to a row, from the log.
public struct HistoryEntry: Sendable, Codable, Hashable {
    /// When (the commit's clock, ISO 8601).
    public var time: String
    /// The author's site name (or key prefix when unknown).
    public var site: String
    /// The commit's seq in the author's feed.
    public var seq: UInt64
    /// The column written; nil for a delete.
    public var column: String?
    /// The value written; nil for a delete.
    public var value: Value?
    /// True when this write is what the row shows now.
    public var won: Bool
}

/// Two concurrent writes to one cell.
public struct ConflictRecord: Sendable, Codable, Hashable {
    public var table: String
    public var key: String
    public var column: String
    public var winnerValue: Value
    public var winnerSite: String
    public var winnerTime: String
    public var loserValue: Value
    public var loserSite: String
    public var loserTime: String
    /// True once a later write that saw both replaced them.
    public var resolved: Bool
}

extension Replica {
    /// Every write to one row, oldest first: time, site, column, value, and
    /// whether it is what the row shows now.
    public func history(table: String, key: String) async throws -> [HistoryEntry] {
        try await read { db in
            let state = try WriterState.load(db, dataset: self.dataset)
            guard let t = state.tables[table], !Identifier.isReserved(table) || Role.annotationTables.contains(table) else {
                throw StoreError.notFound("no table \(table) in dataset \(self.dataset)")
            }
            guard
                let row = try Row.fetchOne(db, sql: "SELECT cl, clocks, first_log FROM _lode_rows WHERE tbl = ? AND pk = ?", arguments: [t.id, key])
            else {
                throw StoreError.notFound("no row \(key) in table \(table): nothing was ever written to it")
            }
            let length = UInt64(row["cl"] as Int64)
            let clocks = try RowClocks(decoding: [UInt8](row["clocks"] as Data))
            var logs: [Int64] = [row["first_log"]]
            logs += try Int64.fetchAll(db, sql: "SELECT log FROM _lode_history WHERE tbl = ? AND pk = ? ORDER BY log", arguments: [t.id, key])
            let names = try Dictionary(
                Row.fetchAll(db, sql: "SELECT key, name FROM _lode_sites").map {
                    (try SiteID(bytes: [UInt8]($0["key"] as Data)), $0["name"] as String?)
                }, uniquingKeysWith: { a, _ in a })
            var out: [HistoryEntry] = []
            for id in Set(logs).sorted() {
                guard let bytes = try Data.fetchOne(db, sql: "SELECT bytes FROM _lode_log WHERE id = ?", arguments: [id]) else { continue }
                let c = try Commit(decoding: [UInt8](bytes))
                let site = names[c.author].flatMap { $0 } ?? c.author.short
                let siteIndex = state.sites[c.author]
                for op in c.ops {
                    switch op {
                    case .put(let p) where p.table == table:
                        for i in 0..<p.rowCount where p.keys[i] == key {
                            for (j, v) in p.row(i).enumerated() {
                                let slot = t.slots[p.columns[j]]
                                let current = slot.flatMap { clocks.stamp($0) }
                                let won =
                                    current == LocalStamp(length: p.lengths[i], hlc: c.hlc.rawValue, site: siteIndex ?? -1, seq: c.seq)
                                    && p.lengths[i] == length
                                out.append(HistoryEntry(time: c.hlc.iso8601, site: site, seq: c.seq, column: p.columns[j], value: v, won: won))
                            }
                        }
                    case .delete(let d) where d.table == table:
                        for i in 0..<d.keys.count where d.keys[i] == key {
                            out.append(
                                HistoryEntry(time: c.hlc.iso8601, site: site, seq: c.seq, column: nil, value: nil, won: d.lengths[i] == length))
                        }
                    default: break
                    }
                }
            }
            // A cell written twice in one commit: only the last write counts.
            var seen = Set<String>()
            for i in out.indices.reversed() where out[i].won {
                let id = "\(out[i].site)/\(out[i].seq)/\(out[i].column ?? "")"
                if !seen.insert(id).inserted { out[i].won = false }
            }
            return out
        }
    }

    /// Concurrent writes to one cell that this replica has seen, newest first.
    public func conflicts(includeResolved: Bool = false) async throws -> [ConflictRecord] {
        try await read { db in
            let names = try Dictionary(
                Row.fetchAll(db, sql: "SELECT id, coalesce(name, hex(substr(key, 1, 4))) AS n FROM _lode_sites").map {
                    ($0["id"] as Int64, ($0["n"] as String).lowercased())
                }, uniquingKeysWith: { a, _ in a })
            let sql = """
                SELECT * FROM _lode_conflicts \(includeResolved ? "" : "WHERE resolved_seq IS NULL") ORDER BY id DESC
                """
            return try Row.fetchAll(db, sql: sql).map { r in
                ConflictRecord(
                    table: r["tbl"], key: r["pk"], column: r["col"],
                    winnerValue: Value(r["winner_value"] as DatabaseValue), winnerSite: names[r["winner_site"]] ?? "?",
                    winnerTime: HLC(rawValue: UInt64(bitPattern: r["winner_hlc"])).iso8601,
                    loserValue: Value(r["loser_value"] as DatabaseValue), loserSite: names[r["loser_site"]] ?? "?",
                    loserTime: HLC(rawValue: UInt64(bitPattern: r["loser_hlc"])).iso8601,
                    resolved: (r["resolved_seq"] as Int64?) != nil)
            }
        }
    }
}
