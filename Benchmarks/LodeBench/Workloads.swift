import Foundation
import LodeCore
import LodeNode
import LodeSQLite
import LodeStore
import LodeSync

/// The workloads W1–W9 (see README, Performance).
struct Suite {
    let ws: Workspace
    let rows: Int
    let runs: Int
    let csv: String
    /// A node holding the `bench` dataset after W1 (stopped), reused by the others.
    var source: String?
    /// The plain SQLite database W1's baseline filled with the same rows.
    var rawSource: String?

    // MARK: W1 bulk import

    mutating func w1() async throws -> Result {
        var lode: [Double] = [], raw: [Double] = [], mem: [Double] = []
        for run in 0..<runs {
            let dir = try ws.makeNode("w1-\(run)")
            let node = try Node.open(dataDir: dir)
            let replica = try await node.createDataset("bench", schema: Rows.schema)
            resetPeakMemory()
            let start = ContinuousClock.now
            let report = try await replica.importCSV(table: "sites", path: csv)
            lode.append(seconds(since: start))
            mem.append(peakMemoryMB())
            guard report.rowsRead == rows else { throw BenchError("imported \(report.rowsRead) rows, expected \(rows)") }
            node.close()
            source = dir
            let rawPath = ws.path("raw.db")
            let rawStart = ContinuousClock.now
            _ = try Raw.load(csv: csv, into: rawPath, upsert: false)
            raw.append(seconds(since: rawStart))
            rawSource = rawPath
        }
        let ratio = median(lode) / median(raw)
        return Result(
            workload: "W1", what: "bulk import of \(rows) rows × 7 columns", value: median(lode), unit: "s",
            baseline: median(raw), baselineUnit: "s (raw SQLite insert)", ratio: ratio, target: "≤ 1.5× raw", met: ratio <= 1.5,
            peakMemoryMB: median(mem), runs: runs,
            notes: String(format: "%.0f rows/s; raw %.0f rows/s", Double(rows) / median(lode), Double(rows) / median(raw)))
    }

    // MARK: W2 remote apply

    func w2() async throws -> Result {
        guard let source else { throw BenchError("W2 needs W1") }
        let src = try Node.open(dataDir: source)
        defer { src.close() }
        let from = try src.replica("bench")
        var lode: [Double] = [], raw: [Double] = [], mem: [Double] = []
        for run in 0..<runs {
            let node = try Node.open(dataDir: try ws.makeNode("w2-\(run)", role: .reader))
            _ = try await node.addCertificate(src.identity.certificate.der)
            resetPeakMemory()
            let start = ContinuousClock.now
            var replica: (any SQLReplicaStore)?
            while true {
                let batch = try await from.missingCommits(after: replica?.vector ?? VersionVector(), maxBytes: 8 << 20)
                if batch.isEmpty { break }
                let commits = try batch.map { try Commit(decoding: $0.bytes) }
                // The first batch brings the dataset into being, as from a peer.
                if replica == nil { replica = try await node.replica("bench", orBroughtIntoBeingBy: commits).get() }
                let outcome = try await replica!.apply(commits)
                guard outcome.rejected.isEmpty, outcome.waiting.isEmpty else { throw BenchError("W2: commits refused or waiting") }
            }
            lode.append(seconds(since: start))
            mem.append(peakMemoryMB())
            node.close()
            let rawStart = ContinuousClock.now
            _ = try Raw.load(csv: csv, into: ws.path("raw-upsert.db"), upsert: true)
            raw.append(seconds(since: rawStart))
        }
        let ours = Double(rows) / median(lode), theirs = Double(rows) / median(raw)
        return Result(
            workload: "W2", what: "remote apply of W1's commits to an empty replica", value: ours, unit: "rows/s",
            baseline: theirs, baselineUnit: "rows/s (raw SQLite upsert)", ratio: ours / theirs, target: "≥ 0.5× raw throughput",
            met: ours / theirs >= 0.5, peakMemoryMB: median(mem), runs: runs, notes: String(format: "%.2f s vs %.2f s", median(lode), median(raw)))
    }

    // MARK: Two synced nodes holding W1's rows (W3, W4, W7)

    /// Copies the source node (same site) and a new editor holding the same
    /// dataset file, starts both and connects them.
    func pair(_ name: String) async throws -> (LaunchedNode, LaunchedNode) {
        guard let source else { throw BenchError("needs W1") }
        let a = ws.path("\(name)-a")
        try FileManager.default.copyItem(atPath: source, toPath: a)
        let b = try ws.makeNode("\(name)-b")
        for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: source + "/datasets/bench.db" + suffix) {
            try FileManager.default.copyItem(atPath: source + "/datasets/bench.db" + suffix, toPath: b + "/datasets/bench.db" + suffix)
        }
        // Read the copies once, as a node that has been running has them in
        // the OS's page cache (a fresh copy may be on disk only, and each
        // random row then costs a disk read).
        for dir in [a, b] {
            let h = try FileHandle(forReadingFrom: URL(fileURLWithPath: dir + "/datasets/bench.db"))
            while let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty {}
            try h.close()
        }
        let na = try await ws.launch(a)
        let nb = try await ws.launch(b)
        try nb.running.node.addPeer("127.0.0.1:\(na.running.sync.port!)")
        nb.running.sync.peersChanged()
        // Wait for the session (the vectors are equal from the start).
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let dialled = await nb.running.sync.status().first?.state == .connected
            let accepted = await !na.running.sync.status().isEmpty
            if dialled && accepted { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        return (na, nb)
    }

    /// The rows whose number modulo `m` is in `r`, as SQL (row `i` is
    /// named `Site i`, whatever its key).
    static func rowsWhere(_ m: Int, _ r: [Int]) -> String {
        "CAST(substr(name, 6) AS INTEGER) % \(m) IN (\(r.map(String.init).joined(separator: ", ")))"
    }

    /// Bytes of the given expression summed over matching rows.
    static func bytes(_ replica: any SQLReplicaStore, _ expr: String, _ condition: String) async throws -> Double {
        let box = Box()
        try await replica.query("SELECT total(length(CAST(\(expr) AS BLOB))) FROM sites WHERE \(condition)") { e in
            if case .row(let r) = e, case .real(let d) = r[0] { box.value = d }
        }
        return box.value
    }

    final class Box: @unchecked Sendable { var value = 0.0 }

    /// Brings two offline nodes back online and waits until they hold the
    /// same commits: seconds, peak MB, and bytes sent A→B and B→A.
    func reconnect(_ a: RunningNode, _ b: RunningNode) async throws -> (Double, Double, Double, Double) {
        let sentA = bytesSent(by: a.node.identity.local.site), sentB = bytesSent(by: b.node.identity.local.site)
        resetPeakMemory()
        let start = ContinuousClock.now
        for n in [a, b] { n.sync.setOffline(false) }
        try await waitUntilEqual([a, b], dataset: "bench")
        let time = seconds(since: start), peak = peakMemoryMB()
        return (time, peak, bytesSent(by: a.node.identity.local.site) - sentA, bytesSent(by: b.node.identity.local.site) - sentB)
    }

    // MARK: W3 delta exchange

    func w3() async throws -> Result {
        var times: [Double] = [], ratios: [Double] = [], ab: [Double] = [], ba: [Double] = [], values: [Double] = [], mem: [Double] = []
        for run in 0..<max(1, runs - 1) {
            let (na, nb) = try await pair("w3-\(run)")
            let (a, b) = (na.running, nb.running)
            for n in [a, b] { n.sync.setOffline(true) }
            let ra = try a.node.replica("bench"), rb = try b.node.replica("bench")
            let aRows = Suite.rowsWhere(10, [0]), bRows = Suite.rowsWhere(20, [0, 1]), both = Suite.rowsWhere(100, [7])
            _ = try await ra.exec("UPDATE sites SET note = 'revised at a: ' || note WHERE \(aRows)")
            _ = try await rb.exec("UPDATE sites SET grade = grade + 1 WHERE \(bRows)")
            _ = try await ra.exec("UPDATE sites SET tonnes = tonnes + 1 WHERE \(both)")
            _ = try await rb.exec("UPDATE sites SET tonnes = tonnes + 2 WHERE \(both)")
            // The changed values' own bytes: text as UTF-8, numbers as 8 bytes.
            let changed = try await Suite.bytes(ra, "note", aRows) + 8 * Double(rows / 10) + 8 * Double(rows / 20) * 2 + 16 * Double(rows / 100)
            let (time, peak, x, y) = try await reconnect(a, b)
            times.append(time)
            mem.append(peak)
            ab.append(x)
            ba.append(y)
            values.append(changed)
            ratios.append((x + y) / changed)
            await na.stop()
            await nb.stop()
        }
        let ratio = median(ratios)
        return Result(
            workload: "W3", what: "delta exchange: 10% + 10% (half overlapping) + 1% conflicting updates", value: median(times), unit: "s",
            baseline: median(values) / 1e6, baselineUnit: "MB of changed values", ratio: ratio, target: "bytes ≤ 1.3× changed values",
            met: ratio <= 1.3, peakMemoryMB: median(mem), runs: times.count,
            notes: String(format: "A→B %.1f MB, B→A %.1f MB", median(ab) / 1e6, median(ba) / 1e6))
    }

    // MARK: W4 deletes

    func w4() async throws -> Result {
        var times: [Double] = [], ab: [Double] = [], ba: [Double] = [], mem: [Double] = []
        for run in 0..<max(1, runs - 1) {
            let (na, nb) = try await pair("w4-\(run)")
            let (a, b) = (na.running, nb.running)
            for n in [a, b] { n.sync.setOffline(true) }
            _ = try await a.node.replica("bench").exec("DELETE FROM sites WHERE \(Suite.rowsWhere(20, [3]))")
            _ = try await b.node.replica("bench").exec("UPDATE sites SET note = 'checked' WHERE \(Suite.rowsWhere(100, [3, 50]))")
            let (time, peak, x, y) = try await reconnect(a, b)
            times.append(time)
            mem.append(peak)
            ab.append(x)
            ba.append(y)
            await na.stop()
            await nb.stop()
        }
        return Result(
            workload: "W4", what: "A deletes 5% of rows while B updates 1% (half of them deleted)", value: median(times), unit: "s",
            baseline: nil, baselineUnit: nil, ratio: nil, target: "—", met: nil, peakMemoryMB: median(mem), runs: times.count,
            notes: String(format: "A→B %.2f MB, B→A %.2f MB", median(ab) / 1e6, median(ba) / 1e6))
    }

    // MARK: W5 initial sync (separate processes)

    func w5(lode: String) throws -> Result {
        guard let source else { throw BenchError("W5 needs W1") }
        guard let rawSource else { throw BenchError("W5 needs W1") }
        var times: [Double] = [], raw: [Double] = [], memA: [Double] = [], memB: [Double] = []
        for run in 0..<max(1, runs - 1) {
            let a = ws.path("w5-a-\(run)")
            try FileManager.default.copyItem(atPath: source, toPath: a)
            let b = try ws.makeNode("w5-b-\(run)", role: .reader)
            let port = try freePort()
            let pa = try spawn(lode, ["serve", "--data-dir", a, "--listen", "127.0.0.1:\(port)"])
            try waitForSocket(a)
            let start = ContinuousClock.now
            let pb = try spawn(lode, ["serve", "--data-dir", b, "--listen", "127.0.0.1:0", "--peer", "127.0.0.1:\(port)"])
            try waitForSocket(b)
            // `sync --wait` answers for datasets both hold, and the new node
            // may not hold the dataset yet: ask until the rows are there.
            let deadline = ContinuousClock.now + .seconds(600)
            var held = ""
            while ContinuousClock.now < deadline {
                let wait = try spawn(lode, ["sync", "--wait", "--timeout", "600", "--data-dir", b])
                wait.waitUntilExit()
                let check = try spawn(lode, ["query", "bench", "SELECT count(*) FROM sites", "--data-dir", b], capture: true)
                held = check.output()
                check.process.waitUntilExit()
                if held.contains("\(rows)") { break }
                usleep(10_000)
            }
            times.append(seconds(since: start))
            memA.append(peakMemoryMB(pid: pa.processIdentifier))
            memB.append(peakMemoryMB(pid: pb.processIdentifier))
            guard held.contains("\(rows)") else { throw BenchError("W5: the new node holds \(held)") }
            for p in [pa, pb] {
                p.terminate()
                p.waitUntilExit()
            }
            let rawStart = ContinuousClock.now
            _ = try Raw.copy(from: rawSource, into: ws.path("raw-copy.db"))
            raw.append(seconds(since: rawStart))
        }
        let ratio = median(times) / median(raw)
        let ok = ratio <= 1.5 && median(memA) < 200 && median(memB) < 200
        return Result(
            workload: "W5", what: "initial sync of \(rows) rows to a new node (processes, mutual TLS)", value: median(times), unit: "s",
            baseline: median(raw), baselineUnit: "s (raw read + upsert)", ratio: ratio, target: "≤ 1.5× raw, < 200 MB per node",
            met: ok, peakMemoryMB: max(median(memA), median(memB)), runs: times.count,
            notes: String(
                format: "%.0f rows/s; peak RSS sender %.0f MB, receiver %.0f MB", Double(rows) / median(times), median(memA), median(memB)))
    }

    // MARK: W8 update-heavy import

    /// Imports a CSV of a tenth of the rows (at most 100,000), each with new
    /// values in most cells, into a copy of W1's dataset; the baseline
    /// upserts the same rows into a copy of W1's plain table.
    func w8() async throws -> Result {
        guard let source, let rawSource else { throw BenchError("W8 needs W1") }
        let changed = min(100_000, rows / 10), step = rows / changed
        let updates = ws.path("updates.csv")
        try Rows.write(rows: stride(from: 0, to: changed * step, by: step), seed: 4242, to: updates)
        var lode: [Double] = [], raw: [Double] = [], mem: [Double] = []
        var changedRows = 0
        for run in 0..<runs {
            let dir = ws.path("w8-\(run)")
            try FileManager.default.copyItem(atPath: source, toPath: dir)
            let node = try Node.open(dataDir: dir)
            let replica = try node.replica("bench")
            resetPeakMemory()
            let start = ContinuousClock.now
            let report = try await replica.importCSV(table: "sites", path: updates)
            lode.append(seconds(since: start))
            mem.append(peakMemoryMB())
            changedRows = report.rowsChanged
            node.close()
            try FileManager.default.removeItem(atPath: dir)
            let rawPath = ws.path("raw-w8.db")
            for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: rawSource + suffix) {
                try FileManager.default.copyItem(atPath: rawSource + suffix, toPath: rawPath + suffix)
            }
            let rawStart = ContinuousClock.now
            _ = try Raw.load(csv: updates, into: rawPath, upsert: true, fresh: false)
            raw.append(seconds(since: rawStart))
        }
        let rate = Double(changed) / median(lode)
        return Result(
            workload: "W8", what: "import of \(changed) changed rows into the \(rows)-row table", value: rate, unit: "rows/s",
            baseline: Double(changed) / median(raw), baselineUnit: "rows/s (raw upsert)", ratio: median(lode) / median(raw),
            target: "≥ 100,000 rows/s", met: rate >= 100_000, peakMemoryMB: median(mem), runs: runs,
            notes: String(format: "%.2f s vs %.2f s; %d rows changed", median(lode), median(raw), changedRows))
    }

    // MARK: W9 bytes on disk

    /// The dataset file W1 left, per row and per structure, beside the
    /// plain table holding the same rows.
    func w9() async throws -> Result {
        guard let source, let rawSource else { throw BenchError("W9 needs W1") }
        let path = source + "/datasets/bench.db"
        let ours = try Raw.fileBytes(path), theirs = try Raw.fileBytes(rawSource)
        let parts = try Raw.structureBytes(path).prefix(4).map { String(format: "%@ %.0f", $0.name, Double($0.bytes) / Double(rows)) }
        let ratio = Double(ours) / Double(theirs)
        // What the log would hold with its commits kept as they are.
        let node = try Node.open(dataDir: source)
        defer { node.close() }
        var held = VersionVector(), total = 0
        while true {
            let batch = try await node.replica("bench").missingCommits(after: held, maxBytes: 8 << 20)
            if batch.isEmpty { break }
            for c in batch {
                total += c.bytes.count
                held[c.site] = max(held[c.site], c.seq)
            }
        }
        let signed = Double(total) / Double(rows)
        return Result(
            workload: "W9", what: "bytes on disk per row after W1's import", value: Double(ours) / Double(rows), unit: "B/row",
            baseline: Double(theirs) / Double(rows), baselineUnit: "B/row (plain table)", ratio: ratio, target: "≤ 2× the plain table",
            met: ratio <= 2, peakMemoryMB: peakMemoryMB(), runs: 1,
            notes: "per row: " + parts.joined(separator: ", ") + String(format: " (the log's commits are %.0f B/row as signed)", signed))
    }

    // MARK: W6 propagation through a relay

    func w6(edits: Int = 1000) async throws -> Result {
        let nodes = [
            try await ws.launch(try ws.makeNode("w6-a")), try await ws.launch(try ws.makeNode("w6-relay", role: .relay)),
            try await ws.launch(try ws.makeNode("w6-c")),
        ]
        let (a, relay, c) = (nodes[0].running, nodes[1].running, nodes[2].running)
        for n in [a, c] {
            try n.node.addPeer("127.0.0.1:\(relay.sync.port!)")
            n.sync.peersChanged()
        }
        try await a.node.createDataset("cells", schema: "CREATE TABLE cells (id TEXT PRIMARY KEY, v INTEGER);")
        _ = try await a.node.replica("cells").exec("INSERT INTO cells(id, v) VALUES ('x', 0)")
        try await waitUntilEqual([a, c], dataset: "cells")
        let arrived = AsyncStream.makeStream(of: VersionVector.self)
        try c.node.replica("cells").addObserver { arrived.continuation.yield($0) }
        var iterator = arrived.stream.makeAsyncIterator()
        resetPeakMemory()
        var samples: [Double] = []
        for i in 1...edits {
            let start = ContinuousClock.now
            _ = try await a.node.replica("cells").exec("UPDATE cells SET v = \(i) WHERE id = 'x'")
            let target = try a.node.replica("cells").vector
            while let v = await iterator.next(), v != target {}
            samples.append(seconds(since: start) * 1000)
        }
        let mem = peakMemoryMB()
        for n in nodes { await n.stop() }
        samples.sort()
        func pct(_ p: Double) -> Double { samples[min(samples.count - 1, Int(Double(samples.count) * p))] }
        return Result(
            workload: "W6", what: "one-cell edits at A seen at C through a relay (\(edits) edits)", value: pct(0.99), unit: "ms p99",
            baseline: nil, baselineUnit: nil, ratio: nil, target: "p99 < 50 ms", met: pct(0.99) < 50, peakMemoryMB: mem, runs: 1,
            notes: String(format: "p50 %.2f ms, max %.2f ms", pct(0.5), samples.last!))
    }

    // MARK: W7 steady state

    func w7(small: String) async throws -> Result {
        let (na, nb) = try await pair("w7")
        let (a, b) = (na.running, nb.running)
        _ = try await a.node.createDataset("small", schema: Rows.schema)
        _ = try await a.node.replica("small").importCSV(table: "sites", path: small)
        try await waitUntilEqual([a, b], dataset: "small")
        resetPeakMemory()
        var results: [String: Double] = [:]
        for dataset in ["small", "bench"] {
            var samples: [Double] = []
            for round in 0..<21 {
                let start = ContinuousClock.now
                _ = try await a.node.replica(dataset).exec(
                    "UPDATE sites SET tonnes = tonnes + 1 WHERE id IN (\((0..<10).map { "'\(Rows.key($0 * 37 + round))'" }.joined(separator: ", ")))")
                try await waitUntilEqual([a, b], dataset: dataset)
                samples.append(seconds(since: start) * 1000)
            }
            results[dataset] = median(Array(samples.dropFirst()))
        }
        let mem = peakMemoryMB()
        await na.stop()
        await nb.stop()
        let ratio = results["bench"]! / results["small"]!
        return Result(
            workload: "W7", what: "sync of 10 changes: \(rows)-row dataset vs 1,000-row dataset", value: results["bench"]!, unit: "ms",
            baseline: results["small"]!, baselineUnit: "ms (1,000 rows)", ratio: ratio, target: "≤ 1.2× the small case", met: ratio <= 1.2,
            peakMemoryMB: mem, runs: 20, notes: "median of 20 rounds each")
    }
}

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func spawn(_ path: String, _ args: [String]) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    return p
}

/// A process whose output is kept.
struct Captured {
    let process: Process
    let pipe: Pipe
    func output() -> String { String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }
}

func spawn(_ path: String, _ args: [String], capture: Bool) throws -> Captured {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    try p.run()
    return Captured(process: p, pipe: pipe)
}

func waitForSocket(_ dir: String) throws {
    for _ in 0..<600 {
        if FileManager.default.fileExists(atPath: dir + "/lode.sock") { return }
        usleep(50_000)
    }
    throw BenchError("no node started in \(dir)")
}
