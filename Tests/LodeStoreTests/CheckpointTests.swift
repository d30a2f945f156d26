import Foundation
import GRDB
import LodeCore
import LodeSQLite
import LodeStore
import LodeTestSupport
import Testing

/// Checkpoints (DESIGN §12): the digest of a dataset at a vector, signed
/// and co-signed by sync.
@Suite struct CheckpointTests {
    let dir = TempDir("lode-checkpoint")

    func cluster(_ n: Int) async throws -> [any SQLReplicaStore] {
        var all: [any SQLReplicaStore] = []
        for i in 0..<n { all.append(try await StoreKind.sqlite.make(dir, site: site(UInt8(i + 1), "s\(i)")) as! any SQLReplicaStore) }
        try await introduce(all)
        _ = try await all[0].alter(conformanceSchema)
        var rng = SeededGenerator(seed: 0)
        for r in all.dropFirst() { try await exchange(from: all[0], to: r, &rng) }
        return all
    }

    /// The reference model given exactly the commits of `vector`, in one
    /// causal order, with the system tables every store lays out.
    func reference(_ from: any ReplicaStore, at vector: VersionVector) async throws -> ReferenceReplica {
        var model = ReferenceReplica(dataset: "d")
        for def in AnnotationRows.systemTables { model.define(def, stamp: SchemaStamp(hlc: .zero, site: AnnotationRows.genesisSite)) }
        for c in try await from.commits(missingFrom: VersionVector(), limit: 100_000) where c.seq <= vector[c.author] { try model.apply(c) }
        #expect(model.vector == vector)
        return model
    }

    /// Random schedules: a vector V taken from one replica at a random step;
    /// after more edits (deletes, re-inserts, a column added, annotations)
    /// and exchanges, every replica that holds V computes the digest at V
    /// that the reference model given exactly the commits of V computes,
    /// whatever else it holds; and a replica's digest at its own vector
    /// changes when a row does.
    @Test(arguments: 0..<5)
    func everyReplicaHoldingAVectorComputesTheSameDigestThere(seed: UInt64) async throws {
        var rng = SeededGenerator(seed: seed)
        let rs = try await cluster(3)
        var taken: [(VersionVector, [UInt8])] = []
        for step in 0..<70 {
            let r = rs.randomElement(using: &rng)!
            if step == 35 {
                _ = try await r.alter(
                    conformanceSchema.map { t in
                        t.name == "mines"
                            ? TableDef(name: t.name, primaryKey: t.primaryKey, columns: t.columns + [ColumnDef(name: "status", type: .text)]) : t
                    })
                continue
            }
            if step % 9 == 4 {
                // A vector taken here, its digest from the model.
                let v = r.vector
                taken.append((v, try await reference(r, at: v).checkpointDigest().digest))
                #expect(try await r.checkpointDigest(at: v).digest == taken.last!.1, "seed \(seed) step \(step): at its own vector")
            }
            let columns = try await r.schema().first { $0.name == "mines" }!.orderedColumns.map(\.name)
            if step % 11 == 7, let row = try await tables(r)["mines"]?.keys.sorted().first {
                _ = try await r.annotate(NewAnnotation(table: "mines", pk: row, text: "check \(step)", tags: ["t\(step % 3)"]))
            } else {
                _ = try await r.write((0..<Int.random(in: 1...3, using: &rng)).map { _ in randomEdit(&rng, columns: columns) })
            }
            if Int.random(in: 0..<3, using: &rng) == 0 {
                let a = rs.randomElement(using: &rng)!, b = rs.randomElement(using: &rng)!
                if a !== b { try await exchange(from: a, to: b, &rng) }
            }
        }
        for _ in 0..<2 { for a in rs { for b in rs where a !== b { try await exchange(from: a, to: b, &rng) } } }
        #expect(taken.count >= 6)
        for (v, expected) in taken {
            for r in rs {
                #expect(try await r.checkpointDigest(at: v).digest == expected, "seed \(seed): \(r.local.name) at \(v)")
            }
        }
        // Any change moves the digest at the replica's own vector.
        let before = try await rs[0].checkpointDigest(at: rs[0].vector)
        _ = try await rs[0].write([.put(table: "plants", pk: "p-new", columns: ["tonnes"], values: [.integer(1)])])
        let after = try await rs[0].checkpointDigest(at: rs[0].vector)
        #expect(after.digest != before.digest && after.rows == before.rows + 1)
        #expect(try await rs[0].checkpointDigest(at: rs[1].vector).digest == before.digest)
    }

    /// One site signs; the others co-sign once they hold V (by sync); a
    /// site that does not hold V waits.
    @Test func aCheckpointIsSignedAndCoSignedBySync() async throws {
        var rng = SeededGenerator(seed: 7)
        let rs = try await cluster(3)
        for _ in 0..<20 { _ = try await rs[0].write([randomEdit(&rng, columns: ["name", "output", "note"])]) }
        try await exchange(from: rs[0], to: rs[1], &rng)
        let c = try await rs[0].signCheckpoint()
        #expect(c.signatures.map(\.name) == ["s0"] && c.vector == rs[1].vector && c.rows > 0)
        // Its signature is a commit of its own, which V does not cover.
        #expect(rs[0].vector[rs[0].local.site] == c.vector[rs[0].local.site] + 1)
        #expect(try await rs[0].checkpointDigest(at: c.vector).digest == c.digest)
        // s1 holds V: it checks and signs once the signature reaches it.
        try await exchange(from: rs[0], to: rs[1], &rng)
        #expect(try await rs[1].cosignCheckpoints() == [.signed(id: c.id)])
        #expect(try await rs[1].cosignCheckpoints().isEmpty)
        try await exchange(from: rs[1], to: rs[0], &rng)
        #expect(try await rs[0].checkpoints().first?.signatures.map(\.name) == ["s0", "s1"])
        // s2 signs only once it holds V, even with writes of its own since.
        _ = try await rs[2].write([.put(table: "plants", pk: "p2", columns: ["tonnes"], values: [.integer(2)])])
        #expect(try await rs[2].cosignCheckpoints().isEmpty)
        try await exchange(from: rs[1], to: rs[2], &rng)
        #expect(try await rs[2].cosignCheckpoints() == [.signed(id: c.id)])
        try await exchange(from: rs[2], to: rs[0], &rng)
        #expect(try await rs[0].checkpoints().first?.signatures.map(\.name) == ["s0", "s1", "s2"])
    }

    /// The PostgreSQL store carries signatures like any row and lists them,
    /// but cannot compute a digest yet, so neither signs nor co-signs.
    @Test func thePostgresStoreCarriesCheckpointsButDoesNotSign() async throws {
        var rng = SeededGenerator(seed: 4)
        let rs = try await cluster(1)
        let pg = try await StoreKind.postgres.make(dir, site: site(8, "pg")) as! any SQLReplicaStore
        try await introduce([rs[0], pg])
        _ = try await rs[0].write([.put(table: "mines", pk: "mp", columns: ["name"], values: [.text("Mountain Pass")])])
        let c = try await rs[0].signCheckpoint()
        try await exchange(from: rs[0], to: pg, &rng)
        #expect(try await pg.checkpoints() == [c])
        await #expect(throws: StoreError.self) { try await pg.signCheckpoint() }
        await #expect(throws: StoreError.self) { try await pg.cosignCheckpoints() }
    }

    /// A replica whose rows differ at V (here a file changed behind the
    /// store's back) does not sign, and says so.
    @Test func aReplicaThatDiffersDoesNotSign() async throws {
        var rng = SeededGenerator(seed: 3)
        let rs = try await cluster(2)
        _ = try await rs[0].write([.put(table: "mines", pk: "mp", columns: ["name"], values: [.text("Mountain Pass")])])
        try await exchange(from: rs[0], to: rs[1], &rng)
        let c = try await rs[0].signCheckpoint()
        try await exchange(from: rs[0], to: rs[1], &rng)
        let queue = try DatabaseQueue(path: (rs[1] as! SQLiteReplica).path)
        try await queue.write { try $0.execute(sql: "UPDATE mines SET name = 'Mountain Pass (altered)' WHERE id = 'mp'") }
        try queue.close()
        let checks = try await rs[1].cosignCheckpoints()
        guard case .differs(let id, let ours, let theirs)? = checks.first, checks.count == 1 else {
            Issue.record("\(checks)")
            return
        }
        #expect(id == c.id && theirs == c.digest && ours != c.digest)
        #expect(try await rs[1].checkpoints().first?.signatures.map(\.name) == ["s0"])
        #expect(try await rs[1].cosignCheckpoints(skipping: [c.id]).isEmpty)
    }

    /// What a peer may not write to the checkpoint table is refused: a
    /// signature under another site's key, under an id its vector and
    /// digest do not give, naming another signer, or a delete.
    @Test func forgedSignaturesAreRefused() async throws {
        let rs = try await cluster(2)
        let c = try await rs[0].signCheckpoint()
        var rng = SeededGenerator(seed: 1)
        try await exchange(from: rs[0], to: rs[1], &rng)
        let v = c.vector
        let d = c.digest
        let me = site(1, "s0")
        let other = site(2, "s1")
        let id = CheckpointRows.id(vector: v, digest: d)
        func row(_ key: String, _ cid: String, _ digest: String, _ signer: String) -> Op {
            var put = PutRows(table: CheckpointRows.table, columns: ["checkpoint", "vector", "digest", "rows", "signer"])
            put.append(key: key, length: 1, values: [.text(cid), .blob(v.encoded), .text(digest), .integer(1), .text(signer)])
            return .put(put)
        }
        let wrongID = (id.first == "0" ? "1" : "0") + id.dropFirst()
        var delete = DeleteRows(table: CheckpointRows.table)
        delete.append(key: CheckpointRows.key(id: id, site: me.site), length: 2)
        let bad: [Op] = [
            row(CheckpointRows.key(id: id, site: other.site), id, d.hexString, "s0"),
            row(CheckpointRows.key(id: wrongID, site: me.site), wrongID, d.hexString, "s0"),
            row(CheckpointRows.key(id: id, site: me.site), id, d.hexString, "s1"),
            row(CheckpointRows.key(id: id, site: me.site), id, d.hexString.uppercased(), "s0"),
            .delete(delete),
        ]
        // Each as s0's next commit, as s1 holds its feed.
        let last = try await rs[1].commits(missingFrom: VersionVector(), limit: 1000).last { $0.author == me.site }!
        let head = FeedHead(seq: last.seq, hash: last.hash, vector: rs[1].vector)
        let before = try await rs[1].checkpoints()
        for op in bad {
            let commit = try me.writer.commit(
                dataset: "d", ops: [op], hlc: HLC(millis: last.hlc.millis + 1, counter: 0), head: head, held: rs[1].vector)
            let outcome = try await rs[1].apply([commit])
            #expect(outcome.rejected.count == 1 && outcome.applied.isEmpty, "\(op)")
        }
        #expect(try await rs[1].checkpoints() == before)
        // The same commit with a well-made row applies: what was refused was the row.
        let good = try me.writer.commit(
            dataset: "d", ops: [row(CheckpointRows.key(id: id, site: me.site), id, d.hexString, "s0")],
            hlc: HLC(millis: last.hlc.millis + 1, counter: 0), head: head, held: rs[1].vector)
        #expect(try await rs[1].apply([good]).applied.count == 1)
    }

    /// The rows of a query as the store answers it (`asOf`: at that point).
    func answer(_ r: any SQLReplicaStore, _ sql: String, asOf: HistoryPoint? = nil) async throws -> [QueryEvent] {
        let box = Collected()
        if let asOf { try await r.query(sql, asOf: asOf) { box.add($0) } } else { try await r.query(sql) { box.add($0) } }
        return box.all
    }

    /// Random schedules with checkpoints and compactions: two sites compact
    /// (to complete checkpoints, keeping a random span of history), one
    /// never does, and one edits offline across both compactions, then
    /// catches up from a site that compacted, by merging its snapshot.
    /// Every replica ends with
    /// the tables of the one that never compacted, which are the reference
    /// model's of the same commits (so no deleted row came back); as-of
    /// queries after the horizon answer the same there; the digests agree;
    /// before the horizon, as-of is refused; every row's history reads.
    @Test(arguments: 0..<8)
    func compactedReplicasConvergeWithOnesThatNeverCompacted(seed: UInt64) async throws {
        var rng = SeededGenerator(seed: 100 + seed)
        let clock = TestClock()
        var rs: [any SQLReplicaStore] = []
        for i in 0..<4 { rs.append(try await StoreKind.sqlite.make(dir, site: site(UInt8(i + 1), "s\(i)"), clock: clock) as! any SQLReplicaStore) }
        try await introduce(rs)
        _ = try await rs[0].alter(conformanceSchema)
        for r in rs.dropFirst() { try await exchange(from: rs[0], to: r, &rng) }
        let (a, b, offline, archive) = (rs[0], rs[1], rs[2], rs[3])
        let online = [a, b, archive]
        var compactions = 0
        var (dropped, folded) = (0, 0)
        var horizon: UInt64 = 0
        for step in 0..<90 {
            let r = step < 12 ? rs.randomElement(using: &rng)! : [a, b, offline, archive].randomElement(using: &rng)!
            _ = try await r.write(
                (0..<Int.random(in: 1...3, using: &rng)).map { _ in randomEdit(&rng, columns: ["name", "output", "grade", "note"]) })
            if step < 12 || Int.random(in: 0..<3, using: &rng) == 0 {
                let pool = step < 12 ? rs : online
                let x = pool.randomElement(using: &rng)!, y = pool.randomElement(using: &rng)!
                if x !== y { try await exchange(from: x, to: y, &rng) }
            }
            if step == 35 || step == 70 {
                // A checkpoint signed at a, co-signed by b once it holds V, compacted at a and b.
                for x in online { for y in online where x !== y { try await exchange(from: x, to: y, &rng) } }
                let c = try await a.signCheckpoint()
                try await exchange(from: a, to: b, &rng)
                #expect(try await b.cosignCheckpoints() == [.signed(id: c.id)])
                try await exchange(from: b, to: a, &rng)
                let complete = try await a.checkpoints().first { $0.id == c.id }!
                #expect(complete.signatures.count == 2)
                for r in [a, b] {
                    let keep: UInt64 = [0, 40, 400].randomElement(using: &rng)!
                    // What sync asks (`compactedVector`, kept in memory) follows each compaction.
                    let earlier = try await r.compactedVector()
                    #expect(earlier == nil || earlier != complete.vector)
                    let report = try await (r as! SQLiteReplica).compact(to: complete, keepHistory: keep)
                    #expect(report.commitsDropped > 0, "\(report)")
                    #expect(try await r.compactedVector() == complete.vector)
                    dropped += report.historyEntriesDropped
                    folded += report.rowsFolded
                    horizon = max(horizon, clock.now() - keep)
                    compactions += 1
                }
            }
        }
        #expect(compactions == 4 && dropped > 0 && folded > 0, "\(dropped) entries dropped, \(folded) rows folded")
        // The offline site catches up from a, which compacted: a's snapshot
        // at the last checkpoint is merged into what it holds, then a sends
        // what followed and takes the offline site's edits. The archive,
        // which kept its log, is not asked.
        let last = try await a.checkpoints().filter { $0.signatures.count >= 2 }.max { $0.commits < $1.commits }!
        #expect(!offline.vector.dominates(last.vector), "seed \(seed): the offline site missed nothing")
        let file = dir.file("offline-\(seed)-\(UUID().uuidString.prefix(6)).db")
        try await (a as! SQLiteReplica).backup(to: file)
        let snapshot = try BackupFile(path: file)
        #expect(try snapshot.digest(at: last.vector).digest == last.digest)
        let before = offline.vector
        let merged = try await (offline as! SQLiteReplica).mergeSnapshot(from: snapshot, at: last.vector, digest: last.digest)
        #expect(merged.commits > 0 && offline.vector == before.merged(with: last.vector), "seed \(seed) \(merged)")
        #expect(try await offline.checkpointDigest(at: last.vector).digest == last.digest)
        // Merging it again takes nothing.
        #expect(try await (offline as! SQLiteReplica).mergeSnapshot(from: snapshot, at: last.vector, digest: last.digest) == SnapshotMerge())
        try await exchange(from: a, to: offline, &rng)
        try await exchange(from: offline, to: a, &rng)
        try await exchange(from: a, to: offline, &rng)
        #expect(offline.vector == a.vector, "seed \(seed)")
        #expect(try await tables(offline) == tables(a), "seed \(seed)")
        for _ in 0..<2 { for x in rs { for y in rs where x !== y { try await exchange(from: x, to: y, &rng) } } }
        let expected = try await tables(archive)
        let model = try await reference(archive, at: archive.vector)
        #expect(expected["mines"] == model.rows(of: "mines"), "seed \(seed)")
        let digest = try await archive.checkpointDigest(at: archive.vector)
        for r in rs {
            #expect(r.vector == archive.vector, "seed \(seed) \(r.local.name)")
            #expect(try await tables(r) == expected, "seed \(seed) \(r.local.name)")
            #expect(try await r.checkpointDigest(at: archive.vector) == digest, "seed \(seed) \(r.local.name)")
            for pk in (0..<8).map({ "m\($0)" }) { _ = try? await r.history(table: "mines", pk: pk) }
        }
        // As of times after the horizon: the same answers with and without compaction.
        let now = clock.now()
        for t in [horizon, horizon + (now - horizon) / 2, now] {
            let sql = "SELECT * FROM mines ORDER BY id"
            let want = try await answer(archive, sql, asOf: .time(millis: t))
            for r in [a, b] { #expect(try await answer(r, sql, asOf: .time(millis: t)) == want, "seed \(seed) at \(t)") }
        }
        // The offline site's history reaches back to the snapshot's last commit.
        #expect(
            try await answer(offline, "SELECT * FROM mines ORDER BY id", asOf: .time(millis: now))
                == answer(archive, "SELECT * FROM mines ORDER BY id", asOf: .time(millis: now)))
        do {
            _ = try await answer(a, "SELECT * FROM mines", asOf: .time(millis: horizon - 10_000))
            Issue.record("an as-of query before the horizon was answered")
        } catch let e as StoreError {
            #expect(e.code == .badInput && e.message.contains("compacted"), "\(e)")
        }
        // Another checkpoint after all that: everyone agrees on it.
        let late = try await archive.signCheckpoint()
        for r in rs where r !== archive {
            try await exchange(from: archive, to: r, &rng)
            // The offline site also signs the two it missed: it holds their vectors and agrees.
            let checks = try await r.cosignCheckpoints()
            #expect(checks.contains(.signed(id: late.id)) && checks.count == (r === offline ? 3 : 1), "seed \(seed) \(r.local.name) \(checks)")
        }
    }

    /// A compacted backup is a snapshot: its rows at a checkpoint have the
    /// digest the checkpoint's signers signed, a fresh replica started from
    /// them holds the same tables and digest and takes later commits as any
    /// replica; a backup altered after the fact has another digest, and
    /// installing it anyway is refused, leaving the replica empty.
    @Test func aCompactedBackupStartsAReplicaFromItsCheckpoint() async throws {
        var rng = SeededGenerator(seed: 21)
        let rs = try await cluster(2)
        for _ in 0..<40 { _ = try await rs[0].write([randomEdit(&rng, columns: ["name", "output", "grade", "note"])]) }
        _ = try await rs[0].annotate(NewAnnotation(table: "mines", pk: try await tables(rs[0])["mines"]!.keys.sorted().first!, text: "check"))
        try await exchange(from: rs[0], to: rs[1], &rng)
        let c = try await rs[0].signCheckpoint()
        try await exchange(from: rs[0], to: rs[1], &rng)
        _ = try await rs[1].cosignCheckpoints()
        try await exchange(from: rs[1], to: rs[0], &rng)
        _ = try await rs[0].write([.put(table: "plants", pk: "after", columns: ["tonnes"], values: [.integer(9)])])
        let a = rs[0] as! SQLiteReplica
        _ = try await a.compact(to: try await a.checkpoints().first { $0.id == c.id }!, keepHistory: 0)
        let file = dir.file("snap-\(UUID().uuidString.prefix(6)).db")
        try await a.backup(to: file)
        let backup = try BackupFile(path: file)
        #expect(try backup.compactedCommits() > 0)
        #expect(try backup.digest(at: c.vector).digest == c.digest)
        // A fresh replica from the snapshot, then the commits after it.
        let fresh = try await StoreKind.sqlite.make(dir, site: site(7, "new")) as! SQLiteReplica
        try await introduce([rs[0], rs[1], fresh])
        let rows = try await fresh.installSnapshot(from: backup, at: c.vector, digest: c.digest)
        #expect(rows > 0 && fresh.vector == c.vector)
        #expect(try await fresh.checkpointDigest(at: c.vector).digest == c.digest)
        try await exchange(from: rs[0], to: fresh, &rng)
        #expect(fresh.vector == rs[0].vector)
        #expect(try await tables(fresh) == tables(rs[0]))
        #expect(try await fresh.annotations().map(\.text) == ["check"])
        _ = try await fresh.write([.put(table: "plants", pk: "after", columns: ["tonnes"], values: [.integer(10)])])
        try await exchange(from: fresh, to: rs[0], &rng)
        #expect(try await tables(rs[0])["plants"]?["after"]?["tonnes"] == .integer(10))
        // Altered after the fact: another digest, and no install.
        let altered = dir.file("altered-\(UUID().uuidString.prefix(6)).db")
        try await alteredCopy(of: file, to: altered, forgedRows("mines", set: "note = 'forged'"))
        let forged = try BackupFile(path: altered)
        #expect(try forged.digest(at: c.vector).digest != c.digest)
        let victim = try await StoreKind.sqlite.make(dir, site: site(8, "victim")) as! SQLiteReplica
        try await introduce([rs[0], victim])
        await #expect(throws: StoreError.self) { try await victim.installSnapshot(from: forged, at: c.vector, digest: c.digest) }
        let left = try await tables(victim)
        #expect(victim.vector.sorted.isEmpty && (left["mines"] ?? [:]).isEmpty)
        // Crafted internal rows are refused with an error, never trapped on:
        // a text where a clock is read, clocks naming a stamp group they lack.
        for sql in [
            "UPDATE _lode_log SET hlc = 'soon' WHERE id = 1",
            "UPDATE _lode_rows SET clocks = x'0101010101' || x'01' || x'08'",
            "UPDATE _lode_rows SET clocks = x'0101ffffffffffffffffff0101'",
        ] {
            let crafted = dir.file("crafted-\(UUID().uuidString.prefix(6)).db")
            try await alteredCopy(of: file, to: crafted, sql)
            let bad = try BackupFile(path: crafted)
            #expect(throws: (any Error).self, "\(sql)") {
                try bad.checkShapes()
                _ = try bad.digest(at: c.vector)
            }
            await #expect(throws: (any Error).self, "\(sql)") { try await victim.installSnapshot(from: bad, at: c.vector, digest: c.digest) }
        }
        #expect(victim.vector.sorted.isEmpty)
    }

    /// A site offline across a compaction, with edits of its own, catches
    /// up from a site that compacted by merging its snapshot: it ends with
    /// the tables of the sites that applied every commit (a delete it did
    /// not see still wins over its update; a column added meanwhile comes
    /// with the rows), records the conflict a concurrent write makes as
    /// they do, and answers as-of queries after the snapshot as they do. A
    /// snapshot whose feed forks from the site's, whose log lacks a commit
    /// it covers, or whose rows were altered, is refused and leaves the
    /// site as it was.
    @Test func aSiteOfflineAcrossACompactionMergesASnapshot() async throws {
        var rng = SeededGenerator(seed: 41)
        let rs = try await cluster(3)
        let (a, b, off) = (rs[0] as! SQLiteReplica, rs[1], rs[2] as! SQLiteReplica)
        func put(_ r: any SQLReplicaStore, _ pk: String, _ columns: [String], _ values: [Value]) async throws {
            _ = try await r.write([.put(table: "mines", pk: pk, columns: columns, values: values)])
        }
        for i in 1...3 { try await put(a, "m\(i)", ["name", "output"], [.text("Mine \(i)"), .integer(Int64(i))]) }
        for r in [b, off] { try await exchange(from: a, to: r, &rng) }
        // Offline: an update a also makes, an update of a row a deletes, a new row.
        try await put(off, "m1", ["output"], [.integer(100)])
        try await put(off, "m2", ["note"], [.text("seen offline")])
        try await put(off, "m9", ["name"], [.text("Offline find")])
        // Meanwhile a: the same cell, the delete, a new column and a row using it.
        try await put(a, "m1", ["output"], [.integer(7)])
        _ = try await a.write([.delete(table: "mines", pk: "m2")])
        _ = try await a.alter(
            conformanceSchema.map { t in
                t.name == "mines"
                    ? TableDef(name: t.name, primaryKey: t.primaryKey, columns: t.columns + [ColumnDef(name: "region", type: .text)]) : t
            })
        try await put(a, "m4", ["name", "region"], [.text("Mine 4"), .text("Bayan Obo")])
        try await exchange(from: a, to: b, &rng)
        let c = try await a.signCheckpoint()
        try await exchange(from: a, to: b, &rng)
        _ = try await b.cosignCheckpoints()
        try await exchange(from: b, to: a, &rng)
        let complete = try await a.checkpoints().first { $0.id == c.id }!
        _ = try await a.compact(to: complete, keepHistory: 0)
        try await put(a, "m3", ["name"], [.text("Renamed after the checkpoint")])
        let file = dir.file("offline-\(UUID().uuidString.prefix(6)).db")
        try await a.backup(to: file)
        let snapshot = try BackupFile(path: file)
        let (vectorBefore, tablesBefore) = (off.vector, try await tables(off))
        #expect(!vectorBefore.dominates(c.vector))

        /// The snapshot file altered by `sql` is refused with a message saying `why`.
        func refused(_ sql: String, saying why: String) async throws {
            let altered = dir.file("altered-\(UUID().uuidString.prefix(6)).db")
            try await alteredCopy(of: file, to: altered, sql)
            do {
                _ = try await off.mergeSnapshot(from: try BackupFile(path: altered), at: c.vector, digest: c.digest)
                Issue.record("a snapshot altered by \(sql) was merged")
            } catch let e as StoreError {
                #expect(e.code == .rejected && e.message.contains(why), "\(e)")
            }
        }
        let ofA = "site = (SELECT id FROM _lode_sites WHERE key = x'\(a.local.site.hex)')"
        // A fork: a's commit the site holds has another hash in the file.
        try await refused("UPDATE _lode_log SET hash = randomblob(32) WHERE \(ofA) AND seq = \(vectorBefore[a.local.site])", saying: "fork")
        // A commit the site lacks missing from the file's log.
        try await refused("DELETE FROM _lode_log WHERE \(ofA) AND seq = \(vectorBefore[a.local.site] + 1)", saying: "lacks commits")
        // Rows altered after signing: the merged digest differs.
        try await refused(forgedRows("mines", set: "name = 'forged'"), saying: "digest")
        #expect(off.vector == vectorBefore)
        #expect(try await tables(off) == tablesBefore)

        let merged = try await off.mergeSnapshot(from: snapshot, at: c.vector, digest: c.digest)
        #expect(merged.commits == Int(c.vector[a.local.site] - vectorBefore[a.local.site]) && merged.rows > 0, "\(merged)")
        #expect(off.vector == vectorBefore.merged(with: c.vector))
        #expect(try await off.checkpointDigest(at: c.vector).digest == c.digest)
        for (x, y) in [(a, off), (off, a), (a, b as any SQLReplicaStore), (off, b)] as [(any SQLReplicaStore, any SQLReplicaStore)] {
            try await exchange(from: x, to: y, &rng)
        }
        let expected = try await tables(a)
        for r in [b, off] as [any SQLReplicaStore] {
            #expect(r.vector == a.vector)
            #expect(try await tables(r) == expected, "\(r.local.name)")
        }
        let mines = expected["mines"]!
        #expect(mines["m2"] == nil && mines["m9"]?["name"] == .text("Offline find") && mines["m4"]?["region"] == .text("Bayan Obo"))
        #expect(mines["m3"]?["name"] == .text("Renamed after the checkpoint"))
        // The concurrent write to m1's output is a conflict at both ends.
        func m1Conflicts(_ r: any SQLReplicaStore) async throws -> [String] {
            try await r.conflicts().filter { $0.pk == "m1" && $0.column == "output" }.map { "\($0.winnerValue) over \($0.loserValue)" }
        }
        #expect(try await m1Conflicts(off).count == 1)
        #expect(try await m1Conflicts(off) == m1Conflicts(a))
        // History after the snapshot's last commit answers as elsewhere.
        let (sql, now) = ("SELECT * FROM mines ORDER BY id", UInt64(Date().timeIntervalSince1970 * 1000))
        #expect(try await answer(off, sql, asOf: .time(millis: now)) == answer(b, sql, asOf: .time(millis: now)))
    }

    /// A checkpoint older than what a replica compacted to cannot be
    /// checked there: it neither signs nor reports a difference.
    @Test func aCheckpointBeforeTheCompactionIsNotChecked() async throws {
        var rng = SeededGenerator(seed: 31)
        let rs = try await cluster(3)
        for _ in 0..<10 { _ = try await rs[0].write([randomEdit(&rng, columns: ["name", "output"])]) }
        for r in rs.dropFirst() { try await exchange(from: rs[0], to: r, &rng) }
        let old = try await rs[2].signCheckpoint()
        for _ in 0..<10 { _ = try await rs[0].write([randomEdit(&rng, columns: ["name", "output"])]) }
        try await exchange(from: rs[0], to: rs[1], &rng)
        let c = try await rs[0].signCheckpoint()
        try await exchange(from: rs[0], to: rs[1], &rng)
        #expect(try await rs[1].cosignCheckpoints() == [.signed(id: c.id)])
        try await exchange(from: rs[1], to: rs[0], &rng)
        _ = try await rs[0].compact(to: try await rs[0].checkpoints().first { $0.id == c.id }!, keepHistory: 0, vacuum: false)
        try await exchange(from: rs[2], to: rs[0], &rng)
        let checks = try await rs[0].cosignCheckpoints()
        guard case .unavailable(let id, let reason)? = checks.first, checks.count == 1 else {
            Issue.record("\(checks)")
            return
        }
        #expect(id == old.id && reason.contains("compacted"))
        #expect(try await rs[0].cosignCheckpoints(skipping: [old.id]).isEmpty)
    }
}
