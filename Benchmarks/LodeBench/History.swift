import Foundation
import LodeCore
import LodeNode
import LodeSQLite
import LodeStore

/// W13 and W14: history (DESIGN §12). W13 asks "as of" and "what changed"
/// of W1's table after churn; W14 measures what history costs on disk.
extension Suite {
    /// Counts the rows of a query's answer.
    final class Counter: @unchecked Sendable {
        var rows = 0
        func add(_ e: QueryEvent) { if case .row = e { rows += 1 } }
    }

    static func nowMillis() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    /// Runs `sql` now or as of `point`: seconds and rows.
    static func timed(_ r: any SQLReplicaStore, _ sql: String, asOf point: HistoryPoint?) async throws -> (Double, Int) {
        let counter = Counter()
        let start = ContinuousClock.now
        if let point {
            try await r.query(sql, asOf: point) { counter.add($0) }
        } else {
            try await r.query(sql) { counter.add($0) }
        }
        return (seconds(since: start), counter.rows)
    }

    // MARK: W13 as-of and diff

    /// On a copy of W1's table: the time `before` is taken, then two
    /// imports each change most cells of a tenth of the rows (rows spread
    /// over the table, random keys), then the time `recent` is taken and
    /// 10,000 more rows change. As of `before`, a fifth of the rows must be
    /// merged from their history. Point lookups of random keys (half of them
    /// among the changed rows) and a full scan run as of `before` and now;
    /// `diff --from recent` lists the 10,000 rows' changes.
    func w13() async throws -> [Result] {
        guard let source else { throw BenchError("W13 needs W1") }
        let dir = ws.path("w13")
        try FileManager.default.copyItem(atPath: source, toPath: dir)
        let node = try Node.open(dataDir: dir)
        defer { node.close() }
        let replica = try node.replica("bench")
        let step = max(1, rows / min(rows, 100_000))
        let rounds = [(0, 5001), (step / 2, 5002)]
        try await Task.sleep(for: .milliseconds(5))
        let before = Self.nowMillis()
        try await Task.sleep(for: .milliseconds(5))
        var changed: [Int] = []
        for (offset, seed) in rounds {
            let file = ws.path("w13-\(seed).csv")
            let which = Array(stride(from: offset, to: rows, by: step))
            changed += which
            try Rows.write(rows: which, seed: UInt64(seed), to: file)
            _ = try await replica.importCSV(table: "sites", path: file)
        }
        try await Task.sleep(for: .milliseconds(5))
        let recent = Self.nowMillis()
        try await Task.sleep(for: .milliseconds(5))
        let diffRows = min(10_000, rows / 10)
        let diffStep = rows / diffRows
        let diffWhich = Array(stride(from: 3, to: diffRows * diffStep, by: diffStep))
        let diffFile = ws.path("w13-diff.csv")
        try Rows.write(rows: diffWhich, seed: 5003, to: diffFile)
        _ = try await replica.importCSV(table: "sites", path: diffFile)

        // Point lookups: random keys, half among the rows changed since `before`.
        var rng = SeededGenerator(seed: 13)
        var asOfTimes: [Double] = [], nowTimes: [Double] = []
        for i in 0..<400 {
            let row = i % 2 == 0 ? changed[Int.random(in: 0..<changed.count, using: &rng)] : Int.random(in: 0..<rows, using: &rng)
            let sql = "SELECT * FROM sites WHERE id = '\(Rows.key(row))'"
            let (a, n) = try await Self.timed(replica, sql, asOf: .time(millis: before))
            let (b, m) = try await Self.timed(replica, sql, asOf: nil)
            guard n == 1 && m == 1 else { throw BenchError("point lookup of row \(row) found \(n) rows as of, \(m) now") }
            asOfTimes.append(a * 1000)
            nowTimes.append(b * 1000)
        }
        let lookup = median(asOfTimes)
        let p99 = asOfTimes.sorted()[asOfTimes.count * 99 / 100]
        // Full scans, streamed to a counter, alternating.
        var scanAsOf: [Double] = [], scanNow: [Double] = []
        resetPeakMemory()
        for _ in 0..<runs {
            let (a, n) = try await Self.timed(replica, "SELECT * FROM sites", asOf: .time(millis: before))
            let (b, m) = try await Self.timed(replica, "SELECT * FROM sites", asOf: nil)
            guard n == rows && m == rows else { throw BenchError("a full scan read \(n) rows as of, \(m) now") }
            scanAsOf.append(a)
            scanNow.append(b)
        }
        let scanMem = peakMemoryMB()
        // The diff of the last 10,000 rows' changes, beside reading those rows now.
        var diffTimes: [Double] = [], readTimes: [Double] = []
        var lines = 0
        let keys = diffWhich.map { "'\(Rows.key($0))'" }.joined(separator: ",")
        for _ in 0..<runs {
            let counter = Counter()
            let start = ContinuousClock.now
            try await replica.diff(from: .time(millis: recent), to: nil, table: "sites") { counter.add($0) }
            diffTimes.append(seconds(since: start))
            lines = counter.rows
            let (b, m) = try await Self.timed(replica, "SELECT * FROM sites WHERE id IN (\(keys))", asOf: nil)
            guard m == diffRows else { throw BenchError("read \(m) of the \(diffRows) changed rows") }
            readTimes.append(b)
        }
        guard lines >= diffRows else { throw BenchError("the diff listed \(lines) changes for \(diffRows) changed rows") }
        let changedShare = Double(Set(changed).count + diffWhich.count) / Double(rows) * 100
        return [
            Result(
                workload: "W13", what: "as-of point lookup by key on the \(rows)-row table, 400 keys (half changed since)", value: lookup, unit: "ms",
                baseline: median(nowTimes), baselineUnit: "ms (the same lookup now)", ratio: lookup / median(nowTimes), target: "< 10 ms",
                met: lookup < 10, peakMemoryMB: peakMemoryMB(), runs: 400,
                notes: String(format: "p99 %.2f ms; %.0f%% of rows written since the time asked", p99, changedShare)),
            Result(
                workload: "W13", what: "as-of full scan (SELECT *) of the \(rows)-row table", value: median(scanAsOf), unit: "s",
                baseline: median(scanNow), baselineUnit: "s (the same scan now)", ratio: median(scanAsOf) / median(scanNow),
                target: "≤ 3× the scan now",
                met: median(scanAsOf) <= 3 * median(scanNow), peakMemoryMB: scanMem, runs: runs,
                notes: String(format: "%.0f%% of rows merged from their history", Double(Set(changed).count + diffWhich.count) / Double(rows) * 100)),
            Result(
                workload: "W13", what: "diff of \(diffRows) changed rows (\(lines) changed cells)", value: median(diffTimes), unit: "s",
                baseline: median(readTimes), baselineUnit: "s (reading those rows now by key)", ratio: median(diffTimes) / median(readTimes),
                target: "< 2 s", met: median(diffTimes) < 2, peakMemoryMB: peakMemoryMB(), runs: runs, notes: "streamed to a counter"),
        ]
    }

    // MARK: W14 history on disk

    /// A 100,000-row table (at most `rows`) imported, then every row
    /// updated in each of 10 rounds (most cells change): the dataset file's
    /// bytes per row after the import and after the rounds, beside a plain
    /// SQLite table holding the same final rows.
    func w14() async throws -> [Result] {
        let n = min(rows, 100_000)
        let dir = try ws.makeNode("w14")
        let node = try Node.open(dataDir: dir)
        let replica = try await node.createDataset("churn", schema: Rows.schema)
        let first = ws.path("w14-0.csv")
        try Rows.write(count: n, seed: 14, to: first)
        _ = try await replica.importCSV(table: "sites", path: first)
        let path = dir + "/datasets/churn.db"
        node.close()
        let afterImport = try Raw.fileBytes(path)
        let rawImport = ws.path("w14-raw0.db")
        _ = try Raw.load(csv: first, into: rawImport, upsert: false)
        let plainImport = try Raw.fileBytes(rawImport)
        let again = try Node.open(dataDir: dir)
        let churned = try again.replica("churn")
        var last = first
        for round in 1...10 {
            last = ws.path("w14-\(round).csv")
            try Rows.write(count: n, seed: UInt64(14 + round), to: last)
            _ = try await churned.importCSV(table: "sites", path: last)
        }
        again.close()
        let afterChurn = try Raw.fileBytes(path)
        let parts = try Raw.structureBytes(path).prefix(5).map { String(format: "%@ %.0f", $0.name, Double($0.bytes) / Double(n)) }
        let rawChurn = ws.path("w14-raw.db")
        _ = try Raw.load(csv: last, into: rawChurn, upsert: false)
        let plain = try Raw.fileBytes(rawChurn)
        // A checkpoint at the end (one signature: the store is asked directly,
        // where a node would wait for its quorum), then compaction keeping no
        // history, as an operator would after the churn.
        let third = try Node.open(dataDir: dir)
        let store = try third.replica("churn")
        let checkpoint = try await store.signCheckpoint()
        let clock = ContinuousClock.now
        let report = try await store.compact(to: checkpoint, keepHistory: 0, vacuum: true)
        let compactSeconds = (ContinuousClock.now - clock) / .seconds(1)
        third.close()
        let afterCompaction = try Raw.fileBytes(path)
        let compactedParts = try Raw.structureBytes(path).prefix(5).map { String(format: "%@ %.0f", $0.name, Double($0.bytes) / Double(n)) }
        return [
            Result(
                workload: "W14", what: "bytes on disk per row after importing \(n) rows", value: Double(afterImport) / Double(n), unit: "B/row",
                baseline: Double(plainImport) / Double(n), baselineUnit: "B/row (plain table)", ratio: Double(afterImport) / Double(plainImport),
                target: "", met: nil, peakMemoryMB: peakMemoryMB(), runs: 1, notes: "a row written once keeps no history"),
            Result(
                workload: "W14", what: "bytes on disk per row after 10 rounds updating every row", value: Double(afterChurn) / Double(n),
                unit: "B/row", baseline: Double(plain) / Double(n), baselineUnit: "B/row (plain table, final rows)",
                ratio: Double(afterChurn) / Double(plain), target: "(before compaction)", met: nil, peakMemoryMB: peakMemoryMB(), runs: 1,
                notes: "per row: " + parts.joined(separator: ", ")),
            Result(
                workload: "W14", what: "bytes on disk per row after compacting the churned table (no history kept)",
                value: Double(afterCompaction) / Double(n), unit: "B/row", baseline: Double(plain) / Double(n),
                baselineUnit: "B/row (plain table, final rows)", ratio: Double(afterCompaction) / Double(plain), target: "≤ 1.5×",
                met: Double(afterCompaction) / Double(plain) <= 1.5, peakMemoryMB: peakMemoryMB(), runs: 1,
                notes: String(
                    format: "compaction %.1f s: %d commits' bytes dropped, %d history entries, %d rows folded; per row: %@", compactSeconds,
                    report.commitsDropped, report.historyEntriesDropped, report.rowsFolded, compactedParts.joined(separator: ", "))),
        ]
    }

    // MARK: W15 a new node joins

    /// A dataset of `rows` rows with 10 rounds of updating every row behind
    /// it, joined over sync (real nodes, mutual TLS on loopback) by a new
    /// node two ways: while the writer keeps its full log (every commit
    /// sent, verified and applied) and after it compacted to a checkpoint
    /// two editors signed (a snapshot offered and sent, its signatures and
    /// digest checked, then installed, then the commits after it). Time
    /// until the new node holds what the writer holds, and the bytes the
    /// writer sent; the full log is the baseline.
    ///
    /// Then a site that went offline after 5 of the 10 rounds, and updated
    /// 1,000 rows meanwhile, catches up the same two ways: from the node
    /// that kept its full log, and from the writer after its compaction
    /// (the snapshot merged into what it holds). Its edits travel back.
    func w15() async throws -> [Result] {
        let n = rows
        let dir = try ws.makeNode("w15-a")
        let midway = ws.path("w15-midway.db")
        do {
            let writer = try Node.open(dataDir: dir)
            let replica = try await writer.createDataset("joined", schema: Rows.schema)
            for round in 0...10 {
                let csv = ws.path("w15-\(round).csv")
                try Rows.write(count: n, seed: UInt64(150 + round), to: csv)
                _ = try await replica.importCSV(table: "sites", path: csv)
                try FileManager.default.removeItem(atPath: csv)
                // What a site that synced then and went offline holds.
                if round == 5 { try await writer.backup("joined", to: midway) }
            }
            writer.close()
        }
        let la = try await ws.launch(dir)
        let a = la.running
        let replica = try a.node.replica("joined")
        let address = "127.0.0.1:\(a.sync.port!)"
        /// A new node that lists a as its peer: seconds until it holds
        /// what a holds, and the bytes a sent meanwhile.
        func join(_ name: String) async throws -> (LaunchedNode, Double, Double) {
            let l = try await ws.launch(try ws.makeNode(name))
            let sent = bytesSent(by: a.node.identity.local.site)
            let clock = ContinuousClock.now
            try l.running.node.addPeer(address)
            l.running.sync.peersChanged()
            try await waitUntilEqual([a, l.running], dataset: "joined", timeout: 7200)
            return (l, seconds(since: clock), bytesSent(by: a.node.identity.local.site) - sent)
        }
        resetPeakMemory()
        let (lb, logSeconds, logBytes) = try await join("w15-b")
        let logPeak = peakMemoryMB()
        /// A site that holds the dataset as of the fifth round and updated
        /// 1,000 rows of its own, back in touch with `peer`: seconds until
        /// they hold the same, and the bytes `peer` sent meanwhile.
        func catchUp(_ name: String, from peer: RunningNode) async throws -> (LaunchedNode, Double, Double) {
            let nodeDir = try ws.makeNode(name)
            try FileManager.default.createDirectory(atPath: nodeDir + "/datasets", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: midway, toPath: nodeDir + "/datasets/joined.db")
            let l = try await ws.launch(nodeDir)
            let own = try l.running.node.replica("joined")
            _ = try await own.exec("UPDATE sites SET note = 'checked offline at \(name)' WHERE id IN (SELECT id FROM sites ORDER BY id LIMIT 1000)")
            let sent = bytesSent(by: peer.node.identity.local.site)
            let clock = ContinuousClock.now
            try l.running.node.addPeer("127.0.0.1:\(peer.sync.port!)")
            l.running.sync.peersChanged()
            try await waitUntilEqual([peer, l.running], dataset: "joined", timeout: 7200)
            return (l, seconds(since: clock), bytesSent(by: peer.node.identity.local.site) - sent)
        }
        let (ld, offlineLogSeconds, offlineLogBytes) = try await catchUp("w15-d", from: lb.running)
        // a signs a checkpoint, b (holding everything) co-signs it, and a
        // compacts to it, keeping no history.
        let signed = try await replica.signCheckpoint()
        let joinedB = try lb.running.node.replica("joined")
        var complete: Checkpoint?
        let deadline = ContinuousClock.now + .seconds(600)
        while complete == nil && ContinuousClock.now < deadline {
            if joinedB.vector.dominates(replica.vector) { _ = try await joinedB.cosignCheckpoints() }
            complete = try await replica.checkpoints().first { $0.id == signed.id && $0.signatures.count >= 2 }
            try await Task.sleep(for: .milliseconds(100))
        }
        guard let complete else { throw BenchError("the checkpoint was not co-signed") }
        let clock = ContinuousClock.now
        let compaction = try await replica.compact(to: complete, keepHistory: 0, vacuum: true)
        let compactSeconds = seconds(since: clock)
        resetPeakMemory()
        let (lc, snapshotSeconds, snapshotBytes) = try await join("w15-c")
        let snapshotPeak = peakMemoryMB()
        let joinedC = try lc.running.node.replica("joined")
        guard try await joinedC.compactedVector() != nil else { throw BenchError("the new node did not start from a snapshot") }
        resetPeakMemory()
        let (le, offlineSnapshotSeconds, offlineSnapshotBytes) = try await catchUp("w15-e", from: a)
        let offlinePeak = peakMemoryMB()
        let joinedE = try le.running.node.replica("joined")
        guard try await joinedE.compactedVector() != nil else { throw BenchError("the offline site did not merge a snapshot") }
        // All at one vector: an editor that holds a checkpoint may co-sign
        // it meanwhile, and its signature is a commit.
        let at = replica.vector
        let atA = try await replica.checkpointDigest(at: at)
        for (name, r) in [("the node started from the snapshot", joinedC), ("the site that merged the snapshot", joinedE)] {
            let there = try await r.checkpointDigest(at: at)
            guard there.digest == atA.digest else {
                for l in [le, ld, lc, lb, la] { await l.stop() }
                throw BenchError(
                    "\(name) does not hold what the writer holds at \(at): \(there.rows) rows against \(atA.rows); vectors now \(r.vector) and \(replica.vector)"
                )
            }
        }
        for l in [le, ld, lc, lb, la] { await l.stop() }
        return [
            Result(
                workload: "W15", what: "a new node joins \(n) rows with 10 rounds of churn behind them over sync, from a snapshot",
                value: snapshotSeconds, unit: "s", baseline: logSeconds, baselineUnit: "s (over sync from the full log)",
                ratio: snapshotSeconds / logSeconds, target: "", met: nil, peakMemoryMB: snapshotPeak, runs: 1,
                notes: String(
                    format:
                        "the snapshot made on request, sent, its signatures and digest checked, installed, then the commits after; the writer's compaction before took %.1f s (%d commits' bytes dropped); peak %.0f MB joining from the full log",
                    compactSeconds, compaction.commitsDropped, logPeak)),
            Result(
                workload: "W15", what: "… bytes the writer sent the new node", value: snapshotBytes / 1_048_576, unit: "MiB",
                baseline: logBytes / 1_048_576, baselineUnit: "MiB (the full log over sync)", ratio: snapshotBytes / logBytes,
                target: "", met: nil, peakMemoryMB: snapshotPeak, runs: 1, notes: "all sync frames, as lode_sync_bytes_sent_total counts them"),
            Result(
                workload: "W15",
                what: "a site offline for the last 5 rounds, with 1,000 rows updated there, catches up over sync, merging a snapshot",
                value: offlineSnapshotSeconds, unit: "s", baseline: offlineLogSeconds,
                baselineUnit: "s (over sync from a node that kept the full log)", ratio: offlineSnapshotSeconds / offlineLogSeconds, target: "",
                met: nil, peakMemoryMB: offlinePeak, runs: 1,
                notes:
                    "until it and its peer hold the same: the snapshot sent, checked, merged into its own rows, the commits after it, and its own 1,000 updates sent back"
            ),
            Result(
                workload: "W15", what: "… bytes its peer sent it", value: offlineSnapshotBytes / 1_048_576, unit: "MiB",
                baseline: offlineLogBytes / 1_048_576, baselineUnit: "MiB (the rest of the log over sync)",
                ratio: offlineSnapshotBytes / offlineLogBytes, target: "", met: nil, peakMemoryMB: offlinePeak, runs: 1,
                notes: "all sync frames, as lode_sync_bytes_sent_total counts them"),
        ]
    }
}
