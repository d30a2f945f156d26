import Crypto
import Foundation
import LodeCore
import LodeStore
import LodeTestSupport
import Testing

@testable import LodeSQLite

/// Moves every commit `to` lacks from `from`, in a random order (apply
/// must buffer what is not yet applicable), with duplicates.
func exchange(from: SQLiteReplica, to: SQLiteReplica, _ rng: inout SeededGenerator) async throws {
    var missing = try await from.commits(missingFrom: to.vector, limit: 100_000)
    missing += missing.prefix(2)
    missing.shuffle(using: &rng)
    var outcome = try await to.apply(missing)
    while !outcome.waiting.isEmpty {
        let before = outcome.waiting.count
        outcome = try await to.apply(outcome.waiting)
        #expect(outcome.waiting.count < before || outcome.waiting.isEmpty, "apply made no progress")
        if outcome.waiting.count >= before { break }
    }
    #expect(outcome.rejected.isEmpty, "\(outcome.rejected.map(\.reason))")
}

@Suite struct SyncApplyTests {
    let dir = TempDir()

    func cluster(_ n: Int) async throws -> [SQLiteReplica] {
        let schema = try SchemaParser.parse("CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER, b TEXT NOT NULL DEFAULT '-', c REAL)")
        let first = try await createReplica(in: dir, site: site(1, "s0"), tables: schema)
        var all = [first]
        for i in 1..<n {
            all.append(try SQLiteReplica.open(at: dir.file("r\(i).db"), dataset: "d", local: site(UInt8(i + 1), "s\(i)")))
        }
        try await introduce(all)
        var rng = SeededGenerator(seed: 0)
        for r in all.dropFirst() { try await exchange(from: first, to: r, &rng) }
        return all
    }

    /// What a peer lacks, answered from the recent commits a replica keeps
    /// in memory (its own writes, commits applied from others, and what a
    /// cut replayed), is what reading its log answers: the same replica
    /// reopened, with nothing in memory, for many peers' vectors.
    @Test func recentCommitsAnswerAsTheLogDoes() async throws {
        let rs = try await cluster(3)
        var rng = SeededGenerator(seed: 5)
        for round in 0..<40 {
            let r = rs[Int.random(in: 0..<3, using: &rng)]
            let key = "k\(Int.random(in: 0..<20, using: &rng))"
            _ = try await r.write([.put(table: "t", pk: key, columns: ["a"], values: [.integer(Int64(round))])])
            if round % 5 == 4 { for (a, b) in [(0, 1), (1, 2), (2, 0)] { try await exchange(from: rs[a], to: rs[b], &rng) } }
        }
        let target = rs[1]
        for r in [rs[0], rs[2]] { try await exchange(from: r, to: target, &rng) }
        let cutAt = max(1, target.vector[rs[2].local.site] - 3)
        _ = try await target.cut([rs[2].local.site: cutAt])
        _ = try await target.write([.put(table: "t", pk: "after-cut", columns: ["a"], values: [.integer(1)])])
        #expect(target.recent.withLock { $0.count } > 0)
        var asks = [VersionVector()] + rs.map(\.vector)
        for _ in 0..<30 {
            var v = VersionVector()
            for e in target.vector.sorted { v[e.site] = UInt64.random(in: 0...e.seq, using: &rng) }
            asks.append(v)
        }
        func answers(_ r: SQLiteReplica) async throws -> [[StoredCommit]] {
            var out: [[StoredCommit]] = []
            for a in asks {
                for (bytes, count) in [(1 << 20, 1000), (600, 1000), (1 << 20, 3)] {
                    out.append(try await r.missingCommits(after: a, maxBytes: bytes, maxCount: count))
                }
            }
            return out
        }
        let fromMemory = try await answers(target)
        try target.close()
        let reopened = try SQLiteReplica.open(at: dir.file("r1.db"), dataset: "d", local: site(2, "s1"))
        #expect(reopened.recent.withLock { $0.count } == 0)
        let fromLog = try await answers(reopened)
        func shown(_ a: [StoredCommit]) -> String { a.map { "\($0.site.short):\($0.seq)" }.joined(separator: " ") }
        for (i, (m, l)) in zip(fromMemory, fromLog).enumerated() where m != l {
            Issue.record("ask \(i / 3) (\(i % 3)): from memory \(shown(m)); from the log \(shown(l))")
        }
    }

    /// Random SQL edits at 3 replicas, exchanged in random orders with
    /// duplicates, converge to byte-identical tables that match the
    /// reference model fed the same commits.
    @Test(arguments: 0..<12)
    func randomEditsConvergeAndMatchTheModel(seed: UInt64) async throws {
        var rng = SeededGenerator(seed: seed)
        let rs = try await cluster(3)
        for _ in 0..<40 {
            let r = rs.randomElement(using: &rng)!
            let k = "k\(Int.random(in: 0..<6, using: &rng))"
            let sql: String
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4:
                sql =
                    "INSERT INTO t(id, a, b) VALUES ('\(k)', \(Int.random(in: 0..<9, using: &rng)), 'v\(Int.random(in: 0..<3, using: &rng))') ON CONFLICT(id) DO UPDATE SET a = excluded.a"
            case 4..<7:
                sql = "UPDATE t SET c = \(Double(Int.random(in: 0..<5, using: &rng)) / 4), b = 'u\(seed)' WHERE id = '\(k)'"
            case 7..<9:
                sql = "DELETE FROM t WHERE id = '\(k)'"
            default:
                // Alter may only add: keep every column this replica has.
                var cols = try await r.schema().first!.orderedColumns
                let name = "x\(Int.random(in: 0..<3, using: &rng))"
                if !cols.contains(where: { $0.name == name }) { cols.append(ColumnDef(name: name, type: .text)) }
                _ = try await r.alter([TableDef(name: "t", primaryKey: "id", columns: cols)])
                continue
            }
            _ = try await r.exec(sql)
            if Int.random(in: 0..<4, using: &rng) == 0 {
                let a = rs.randomElement(using: &rng)!, b = rs.randomElement(using: &rng)!
                if a !== b { try await exchange(from: a, to: b, &rng) }
            }
        }
        for _ in 0..<2 {
            for a in rs { for b in rs where a !== b { try await exchange(from: a, to: b, &rng) } }
        }
        let expected = try await fullDump(rs[0])
        for r in rs.dropFirst() {
            #expect(r.vector == rs[0].vector)
            #expect(try await fullDump(r) == expected, "seed \(seed)")
        }
        // The reference model, fed every commit, shows the same rows.
        var model = ReferenceReplica(dataset: "d")
        let all = try await rs[0].commits(missingFrom: VersionVector(), limit: 100_000)
        for c in all { try model.apply(c) }
        let modelRows = model.rows(of: "t")
        let storeRows = Rows()
        try await rs[1].query("SELECT * FROM t") { e in storeRows.add("\(e)") }
        #expect(storeRows.all.count - 1 == modelRows.count)
        for (key, cells) in modelRows {
            let cols = cells.keys.sorted()
            let got = Rows()
            try await rs[2].query("SELECT \(cols.joined(separator: ", ")) FROM t WHERE id = '\(key)'") { e in got.add("\(e)") }
            #expect(got.all.last == "\(QueryEvent.row(cols.map { cells[$0]! }))", "seed \(seed) key \(key)")
        }
    }

    /// A row written with its key alone (an import whose header names only
    /// the key, an INSERT of the key, a put naming no column) is a commit
    /// peers accept: the node once signed a put naming no column, which
    /// every peer refuses, and its feed then stood still everywhere (found
    /// by the csv fuzz target).
    @Test func aRowWrittenWithItsKeyAloneReachesPeers() async throws {
        let rs = try await cluster(2)
        let dir = TempDir()
        let before = rs[0].vector
        _ = try await rs[0].importCSV(table: "t", path: dir.write("keys.csv", "id\nk1\nk2\n"))
        _ = try await rs[0].exec("INSERT INTO t(id) VALUES ('k3')")
        _ = try await rs[0].write([.put(table: "t", pk: "k4", columns: [], values: [])])
        _ = try await rs[0].exec("UPDATE t SET a = 5 WHERE id = 'k1'")
        _ = try await rs[0].exec("DELETE FROM t WHERE id IN ('k1', 'k2')")
        // Brought back with the key alone: its cells are the defaults again.
        _ = try await rs[0].importCSV(table: "t", path: dir.write("again.csv", "id\nk1\n"))
        _ = try await rs[0].write([.put(table: "t", pk: "k2", columns: [], values: [])])
        // The same keys again change nothing and make no commit.
        let held = rs[0].vector
        #expect(try await rs[0].importCSV(table: "t", path: dir.write("same.csv", "id\nk1\nk3\n")).commits == 0)
        #expect(try await rs[0].write([.put(table: "t", pk: "k4", columns: [], values: [])]).commits == 0)
        #expect(rs[0].vector == held)
        for c in try await rs[0].missingCommits(after: before, maxBytes: .max, maxCount: .max) {
            #expect(throws: Never.self) { try Commit(decoding: c.bytes) }
        }
        var rng = SeededGenerator(seed: 3)
        try await exchange(from: rs[0], to: rs[1], &rng)
        #expect(rs[1].vector == rs[0].vector)
        #expect(try await fullDump(rs[1]) == fullDump(rs[0]))
        #expect(
            try await dump(rs[1], "SELECT id, a, b FROM t ORDER BY id") == [
                "columns([\"id\", \"a\", \"b\"])",
                "row([LodeCore.Value.text(\"k1\"), LodeCore.Value.null, LodeCore.Value.text(\"-\")])",
                "row([LodeCore.Value.text(\"k2\"), LodeCore.Value.null, LodeCore.Value.text(\"-\")])",
                "row([LodeCore.Value.text(\"k3\"), LodeCore.Value.null, LodeCore.Value.text(\"-\")])",
                "row([LodeCore.Value.text(\"k4\"), LodeCore.Value.null, LodeCore.Value.text(\"-\")])",
            ])
    }

    @Test func concurrentWritesToOneCellAreConflictsAndKeepBothValues() async throws {
        let rs = try await cluster(2)
        _ = try await rs[0].exec("INSERT INTO t(id, a) VALUES ('k', 1)")
        var rng = SeededGenerator(seed: 1)
        try await exchange(from: rs[0], to: rs[1], &rng)
        _ = try await rs[0].exec("UPDATE t SET a = 10 WHERE id = 'k'")
        _ = try await rs[1].exec("UPDATE t SET a = 20 WHERE id = 'k'")
        try await exchange(from: rs[0], to: rs[1], &rng)
        try await exchange(from: rs[1], to: rs[0], &rng)
        for r in rs {
            let cs = try await r.conflicts()
            #expect(cs.count == 1)
            #expect(Set([cs[0].winnerValue, cs[0].loserValue]) == [.integer(10), .integer(20)])
            let h = try await r.history(table: "t", pk: "k")
            #expect(h.filter { $0.column == "a" }.map(\.value).count == 3)
            #expect(h.filter { $0.won && $0.column == "a" }.count == 1)
        }
        #expect(try await fullDump(rs[0]) == fullDump(rs[1]))
        // A later write that saw both resolves the conflict.
        _ = try await rs[1].exec("UPDATE t SET a = 30 WHERE id = 'k'")
        try await exchange(from: rs[1], to: rs[0], &rng)
        for r in rs { #expect(try await r.conflicts().isEmpty) }
        #expect(try await rs[0].conflicts(includeResolved: true).count == 1)
    }

    @Test func forgedAlteredAndUnauthorizedCommitsAreRejectedAndNothingApplied() async throws {
        let rs = try await cluster(2)
        let reader = site(9, "reader", role: .reader)
        for r in rs { try await r.registerSite(SiteRecord(site: reader.site, name: "reader", role: .reader, certificate: nil)) }
        let before = try await fullDump(rs[1])
        var put = PutRows(table: "t", columns: ["a"])
        put.append(key: "evil", length: 1, values: [.integer(666)])
        // A reader's commit: refused by role.
        let byReader = try reader.writer.commit(dataset: "d", ops: [.put(put)], hlc: HLC(millis: 1, counter: 0), head: .empty, held: VersionVector())
        // An altered commit: valid structure, signature no longer matches.
        _ = try await rs[0].exec("INSERT INTO t(id, a) VALUES ('k', 1)")
        let good = try await rs[0].commits(missingFrom: rs[1].vector).last!
        var bytes = good.bytes
        bytes[bytes.count - 1] ^= 0x01
        let altered = try Commit(decoding: bytes)
        // A commit from an unknown site.
        let stranger = site(7, "stranger")
        let unknown = try stranger.writer.commit(dataset: "d", ops: [.put(put)], hlc: HLC(millis: 1, counter: 0), head: .empty, held: VersionVector())
        var batch = [byReader, unknown]  // and the altered one below
        batch.append(altered)
        let outcome = try await rs[1].apply(batch)
        #expect(outcome.applied.isEmpty)
        // The reader's and the altered commit are refused; the stranger's
        // waits for a certificate that never comes.
        #expect(outcome.rejected.count == batch.count - 1)
        #expect(Set(outcome.rejected.map(\.kind)) == [.notAuthorized, .badSignature])
        #expect(outcome.waiting.map(\.hash) == [unknown.hash])
        #expect(try await fullDump(rs[1]) == before)
        #expect(try await rs[1].rejections().count == batch.count - 1)
        // Offered again, a refused commit is recorded once.
        _ = try await rs[1].apply(batch)
        #expect(try await rs[1].rejections().count == batch.count - 1)
        // The genuine commit still applies afterwards.
        #expect(try await rs[1].apply([good]).applied.count == 1)
    }

    @Test func aCommitWritingAnUnknownColumnIsRejectedWhole() async throws {
        let rs = try await cluster(2)
        let s = rs[0].local
        let head = FeedHead(seq: 1, hash: try await rs[0].commits(missingFrom: VersionVector()).first!.hash, vector: VersionVector([s.site: 1]))
        var ok = PutRows(table: "t", columns: ["a"])
        ok.append(key: "fine", length: 1, values: [.integer(1)])
        var bad = PutRows(table: "t", columns: ["nope"])
        bad.append(key: "fine", length: 1, values: [.integer(1)])
        let c = try s.writer.commit(
            dataset: "d", ops: [.put(ok), .put(bad)], hlc: HLC(millis: 99_999_999_999, counter: 0), head: head, held: VersionVector([s.site: 1]))
        let before = try await fullDump(rs[1])
        let outcome = try await rs[1].apply([c])
        #expect(outcome.rejected.first?.reason.contains("no column nope") == true)
        #expect(try await fullDump(rs[1]) == before)
    }
}
