import Foundation
import GRDB
import LodeCore
import LodeStore
import LodeTestSupport
import Synchronization
import Testing

@testable import LodeSQLite

/// A wall clock shared by the replicas of a test: every reading is 7 ms
/// after the last, so that every commit has a time of its own.
final class SteppingClock: Sendable {
    private let now = Mutex<UInt64>(1_767_225_600_000)  // 2026-01-01
    func read() -> UInt64 {
        now.withLock {
            $0 += 7; return $0
        }
    }
}

/// A query's result: the column names and the rows.
struct Result: Equatable, Sendable {
    var columns: [String] = []
    var rows: [[Value]] = []
}

final class ResultBox: @unchecked Sendable {
    var result = Result()
    func add(_ e: QueryEvent) {
        switch e {
        case .columns(let c): result.columns = c
        case .row(let r): result.rows.append(r)
        }
    }
}

func rows(_ r: SQLiteReplica, _ sql: String, asOf: HistoryPoint? = nil) async throws -> Result {
    let out = ResultBox()
    if let asOf {
        try await r.query(sql, asOf: asOf) { e in out.add(e) }
    } else {
        try await r.query(sql) { e in out.add(e) }
    }
    return out.result
}

@Suite struct HistoryTests {
    let dir = TempDir()
    let clock = SteppingClock()

    func open(_ n: Int) throws -> SQLiteReplica {
        let clock = self.clock
        return try SQLiteReplica.open(at: dir.file("h\(n).db"), dataset: "d", local: site(UInt8(n + 1), "s\(n)"), wallClock: { clock.read() })
    }

    /// Three sites write, delete and re-insert rows, sync now and then and
    /// add a column midway; then, at many points in the log, the as-of
    /// answer of every replica equals the tables of a fresh replica that
    /// applied only the commits stamped at or before that point, and the
    /// diff between two points equals the difference of those tables.
    @Test(arguments: [1, 2, 3]) func asOfAndDiffMatchReplayingTheLogToThatTime(seed: UInt64) async throws {
        let schema = try SchemaParser.parse("CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER, b TEXT NOT NULL DEFAULT '-', c REAL)")
        let rs = try (0..<3).map { try open($0) }
        // One replica answers every as-of query by its scan path.
        rs[2].asOfScanAfter.withLock { $0 = 0 }
        try await introduce(rs)
        _ = try await rs[0].alter(schema)
        var rng = SeededGenerator(seed: seed)
        for r in rs.dropFirst() { try await exchange(from: rs[0], to: r, &rng) }
        for round in 0..<150 {
            let r = rs[Int.random(in: 0..<3, using: &rng)]
            let key = "k\(Int.random(in: 0..<12, using: &rng))"
            if round == 70 {
                _ = try await r.alter(
                    try SchemaParser.parse("CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER, b TEXT NOT NULL DEFAULT '-', c REAL, d TEXT)"))
            }
            let hasD = try await r.schema().first { $0.name == "t" }!.columns["d"] != nil
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<2:
                _ = try await r.write([.delete(table: "t", pk: key)])
            case 2:
                // Two writes of one row in one commit.
                _ = try await r.write([
                    .put(table: "t", pk: key, columns: ["a"], values: [.integer(Int64(round))]),
                    .put(table: "t", pk: key, columns: ["a", "c"], values: [.integer(-Int64(round)), .real(Double(round) / 4)]),
                ])
            default:
                var columns = ["a", "b", "c"].filter { _ in Bool.random(using: &rng) }
                if hasD && Bool.random(using: &rng) { columns.append("d") }
                if columns.isEmpty { columns = ["b"] }
                let values: [Value] = columns.map { c in
                    switch c {
                    case "a": .integer(Int64(round))
                    case "b": Bool.random(using: &rng) ? .null : .text("b\(round)")
                    case "c": .real(Double(round) + 0.5)
                    default: .text("d\(round)")
                    }
                }
                _ = try await r.write([.put(table: "t", pk: key, columns: columns, values: values)])
            }
            if Int.random(in: 0..<6, using: &rng) == 0 {
                let a = Int.random(in: 0..<3, using: &rng)
                try await exchange(from: rs[a], to: rs[(a + 1) % 3], &rng)
            }
        }
        for _ in 0..<2 { for (a, b) in [(0, 1), (1, 2), (2, 0)] { try await exchange(from: rs[a], to: rs[b], &rng) } }
        let log = try await rs[0].commits(missingFrom: VersionVector(), limit: 100_000)
        let stamps = log.map(\.hlc).sorted()
        // Points: commits named by site and seq, and times between commits.
        var points: [(HistoryPoint, HLC)] = []
        for _ in 0..<6 {
            let c = log[Int.random(in: 0..<log.count, using: &rng)]
            points.append((.commit(site: rs.first { $0.local.site == c.author }!.local.name, seq: c.seq), c.hlc))
            let ms = stamps[Int.random(in: 0..<stamps.count, using: &rng)].millis + UInt64.random(in: 0..<7, using: &rng)
            points.append((.time(millis: ms), HistoryPoint.stamp(millis: ms)))
        }
        points.append((.time(millis: stamps[0].millis - 1), HistoryPoint.stamp(millis: stamps[0].millis - 1)))
        points.sort { $0.1 < $1.1 }
        var references: [Result?] = []
        for (i, (point, stamp)) in points.enumerated() {
            let reference = try SQLiteReplica.open(at: dir.file("ref\(i).db"), dataset: "d", local: site(9, "ref", role: .reader))
            try await introduce(rs + [reference])
            let upTo = log.filter { $0.hlc <= stamp }
            if !upTo.isEmpty {
                let outcome = try await reference.apply(upTo)
                #expect(outcome.rejected.isEmpty && outcome.waiting.isEmpty)
            }
            let expected = upTo.isEmpty ? nil : try await rows(reference, "SELECT * FROM t ORDER BY id")
            references.append(expected)
            // Other shapes of query: a key looked up (the merged rows' own
            // path), compared by the columns' types, joined with itself,
            // aggregated; each as the reference answers it now.
            let shapes =
                (0..<12).map { "SELECT * FROM t WHERE id = 'k\($0)'" } + [
                    "SELECT id, a FROM t WHERE a >= '40' ORDER BY id", "SELECT id FROM t WHERE id IN ('k1', 'k5', 'k9', 'zz') ORDER BY id",
                    "SELECT * FROM t WHERE id = NULL", "SELECT x.id, y.id FROM t AS x JOIN t AS y ON x.b = y.b AND x.id < y.id ORDER BY 1, 2",
                    "SELECT count(*), total(a), max(b), min(c) FROM t", "SELECT b, count(*) FROM t GROUP BY b ORDER BY b",
                ]
            var shapesAgreed = 0
            for r in rs {
                if upTo.isEmpty {
                    await #expect(throws: StoreError.self) { try await rows(r, "SELECT * FROM t", asOf: point) }
                } else {
                    let got = try await rows(r, "SELECT * FROM t ORDER BY id", asOf: point)
                    #expect(got == expected, "as of \(point) on \(r.local.name)")
                    var backwards = try await rows(r, "SELECT * FROM t ORDER BY id DESC", asOf: point)
                    backwards.rows.reverse()
                    #expect(backwards == expected, "as of \(point) on \(r.local.name), read backwards")
                    for q in shapes {
                        let want = try await rows(reference, q)
                        let have = try await rows(r, q, asOf: point)
                        #expect(have == want, "\(q) as of \(point) on \(r.local.name)")
                        if have == want && !want.rows.isEmpty { shapesAgreed += 1 }
                    }
                }
            }
            if !upTo.isEmpty {
                #expect(shapesAgreed >= rs.count * 3, "most shapes answer something")
                // `main.t` would read today's rows: refused, saying so. The
                // same words in a string, or as a column's name, are not.
                for q in ["SELECT * FROM main.t", "SELECT id FROM \"main\" . t", "SELECT x.id FROM t AS x JOIN MAIN.t AS y ON x.id = y.id"] {
                    await #expect(throws: StoreError.self, "\(q)") { try await rows(rs[0], q, asOf: point) }
                }
                do {
                    _ = try await rows(rs[0], "SELECT * FROM main.t", asOf: point)
                } catch let e as StoreError {
                    #expect(e.code == .badInput && e.message.contains("main.t would read today's rows"), "\(e)")
                }
                #expect(try await rows(rs[0], "SELECT 'main.t' AS main", asOf: point).rows == [[.text("main.t")]])
            }
            try reference.close()
        }
        // The points tell different states apart, so the comparison means something.
        let now = try await rows(rs[0], "SELECT * FROM t ORDER BY id")
        #expect(Set(references.compactMap { $0?.rows }).count >= 8 && references.contains { $0 != nil && $0 != now })
        #expect(references.contains { ($0?.columns.count ?? 0) == 4 } && references.contains { ($0?.columns.count ?? 0) == 5 })
        // The current answer is untouched by the views of as-of queries.
        #expect(try await rows(rs[0], "SELECT * FROM t ORDER BY id") == rows(rs[1], "SELECT * FROM t ORDER BY id"))
        // Diffs between consecutive points agree with the references.
        var changes = Set<String>()
        for i in 1..<points.count {
            guard let before = references[i - 1], let after = references[i] else { continue }
            let expected = Self.difference(before, after)
            for r in rs {
                let out = ResultBox()
                try await r.diff(from: points[i - 1].0, to: points[i].0, table: "t") { e in out.add(e) }
                #expect(out.result.columns == ["table", "key", "change", "column", "old", "new", "time", "site", "person"])
                #expect(out.result.rows.allSatisfy { $0[0] == .text("t") && $0[6] != .null && $0[7] != .null })
                let got = Set(out.result.rows.map { Array($0[1...5]) })
                for row in got { changes.insert("\(row[1])") }
                #expect(got.count == out.result.rows.count && got == expected, "diff \(points[i - 1].0) → \(points[i].0) on \(r.local.name)")
                // Backwards: the same changes undone.
                let back = ResultBox()
                try await r.diff(from: points[i].0, to: points[i - 1].0, table: "t") { e in back.add(e) }
                #expect(Set(back.result.rows.map { Array($0[1...5]) }) == Self.difference(after, before), "diff back on \(r.local.name)")
            }
        }
        #expect(changes.count == 3, "every kind of change: \(changes)")
    }

    /// The changes from one table to another, as diff states them: key,
    /// change, column, old value, new value.
    static func difference(_ before: Result, _ after: Result) -> Set<[Value]> {
        func byKey(_ r: Result) -> [Value: [Value]] { Dictionary(uniqueKeysWithValues: r.rows.map { ($0[0], $0) }) }
        let (r0, r1) = (byKey(before), byKey(after))
        var out = Set<[Value]>()
        for (key, row) in r1 {
            guard let old = r0[key] else {
                for (j, c) in after.columns.enumerated().dropFirst() { out.insert([key, .text("added"), .text(c), .null, row[j]]) }
                continue
            }
            for (j, c) in after.columns.enumerated().dropFirst() {
                let was = before.columns.firstIndex(of: c).map { old[$0] } ?? .null
                if was != row[j] { out.insert([key, .text("changed"), .text(c), was, row[j]]) }
            }
        }
        for (key, row) in r0 where r1[key] == nil {
            for (j, c) in before.columns.enumerated().dropFirst() { out.insert([key, .text("deleted"), .text(c), row[j], .null]) }
        }
        return out
    }
}

extension HistoryTests {
    /// A file written before the history kept values (format 3) has its
    /// history rebuilt from its log when it opens: its tables stay as they
    /// were, and as-of queries answer as on a file written since.
    @Test func anOlderFilesHistoryIsRebuiltFromItsLog() async throws {
        let r = try open(0)
        _ = try await r.alter(try SchemaParser.parse("CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER)"))
        for i in 0..<20 { _ = try await r.write([.put(table: "t", pk: "k\(i % 7)", columns: ["a"], values: [.integer(Int64(i))])]) }
        let middle = try await r.commits(missingFrom: VersionVector(), limit: 100)[10]
        _ = try await r.write([.delete(table: "t", pk: "k3")])
        let point = HistoryPoint.commit(site: "s0", seq: middle.seq)
        let now = try await rows(r, "SELECT * FROM t ORDER BY id")
        let then = try await rows(r, "SELECT * FROM t ORDER BY id", asOf: point)
        #expect(then != now)
        let digest = try await r.checkpointDigest(at: r.vector)
        try r.close()
        // Back to format 3: its history named commits, not values, and it had no checkpoints.
        let queue = try DatabaseQueue(path: dir.file("h0.db"))
        try await queue.write { db in
            try db.execute(
                sql: """
                    DROP TABLE _lode_history;
                    CREATE TABLE _lode_history(tbl INTEGER NOT NULL, pk TEXT NOT NULL, log INTEGER NOT NULL, PRIMARY KEY(tbl, pk, log)) WITHOUT ROWID;
                    ALTER TABLE _lode_rows DROP COLUMN last;
                    ALTER TABLE _lode_rows DROP COLUMN kept;
                    DROP TABLE _checkpoints;
                    DELETE FROM _lode_columns WHERE tbl = (SELECT id FROM _lode_tables WHERE name = '_checkpoints');
                    DELETE FROM _lode_tables WHERE name = '_checkpoints';
                    UPDATE _lode_meta SET value = 3 WHERE key = 'format';
                    """)
        }
        try queue.close()
        let reopened = try open(0)
        #expect(try await rows(reopened, "SELECT * FROM t ORDER BY id") == now)
        #expect(try await rows(reopened, "SELECT * FROM t ORDER BY id", asOf: point) == then)
        #expect(try await reopened.history(table: "t", pk: "k3").count == 4)
        #expect(try await reopened.commitCount() == 22)
        #expect(try await reopened.checkpointDigest(at: reopened.vector) == digest)
        #expect(try await reopened.signCheckpoint().signatures.map(\.name) == ["s0"])
    }
}

extension HistoryTests {
    /// The keys written since a time, asked about in any order (forwards,
    /// backwards, two scans interleaved, as a query reading a table twice
    /// does): each answer is set membership. Asked backwards, a key just
    /// before the last one found was once answered "absent".
    @Test(arguments: [1, 2, 3, 4]) func sortedKeysAnswerInAnyOrder(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let universe = (0..<300).map { _ in Array(String(UInt64.random(in: 0..<5000, using: &rng), radix: 16).utf8) }
        let members = Set(universe.filter { _ in Bool.random(using: &rng) })
        func less(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.withUnsafeBufferPointer { SortedKeys.compare(b, $0) > 0 } }
        let sorted = members.sorted(by: less)
        let keys = SortedKeys(sorted, kept: sorted.map { _ in true })
        let ascending = Set(universe).sorted(by: less)
        let orders = [
            ascending, Array(ascending.reversed()), zip(ascending, ascending.reversed()).flatMap { [$0, $1] }, universe.shuffled(using: &rng),
        ]
        for order in orders {
            for key in order {
                let found = key.withUnsafeBufferPointer { keys.contains($0) }
                #expect(found == members.contains(key), "\(String(decoding: key, as: UTF8.self))")
            }
        }
    }
}
