import Foundation
import LodeCore

/// kill -9 at random instants during an import, an `exec` and the
/// application of a large incoming sync. After every kill the node restarts,
/// `PRAGMA integrity_check` says ok, the operation is all there or not at
/// all, and the node converges with its peer.
struct CrashTest {
    let lode: Lode
    let root: String
    let rows: Int
    var rng: SeededGenerator
    var kills = 0
    var killsMidOperation = 0

    static let schema = "CREATE TABLE t (k TEXT PRIMARY KEY, batch INTEGER, v INTEGER, pad TEXT);\n"

    init(lode: Lode, root: String, rows: Int, seed: UInt64) {
        self.lode = lode
        self.root = root
        self.rows = rows
        rng = SeededGenerator(seed: seed)
    }

    /// Runs `operation` as a child process and kills `node` somewhere inside
    /// it: a random instant between 5% and 90% of `typical` seconds.
    mutating func killDuring(_ node: LocalNode, typical: Double, _ args: [String]) -> Bool {
        let devnull = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(devnull) }
        guard let child = try? spawn(lode.binary, args + ["--data-dir", node.dataDir], stdin: devnull, stdout: devnull, stderr: devnull) else {
            return false
        }
        usleep(UInt32(Double.random(in: 0.05...0.9, using: &rng) * typical * 1_000_000))
        let midway = !exited(child)
        node.kill9()
        if midway { reap(child) }
        kills += 1
        if midway { killsMidOperation += 1 }
        return midway
    }

    func integrity(_ node: LocalNode, _ dataset: String) throws {
        let check = try lode.scalar(node.dataDir, dataset, "PRAGMA integrity_check")
        guard check == "ok" else { throw Failure("\(node.dataDir): integrity_check says \(check)") }
    }

    func converge(_ a: LocalNode, _ b: LocalNode, _ dataset: String) throws {
        try convergeIdentical(lode, dirs: [a.dataDir, b.dataDir], dataset: dataset, tables: ["t"])
    }

    /// A CSV of `rows` rows for import round `batch`.
    func csv(batch: Int) throws -> String {
        let path = "\(root)/batch-\(batch).csv"
        var text = "k,batch,v,pad\n"
        text.reserveCapacity(rows * 48)
        var g = SeededGenerator(seed: UInt64(batch))
        for i in 0..<rows { text += "r\(batch)-\(i),\(batch),0,\(String(g.next(), radix: 36))\(String(g.next(), radix: 36))\n" }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func timed(_ f: () throws -> Void) rethrows -> Double {
        let t = Date()
        try f()
        return Date().timeIntervalSince(t)
    }

    mutating func run(rounds: Int) throws -> String {
        try? FileManager.default.removeItem(atPath: root)
        try makeSites(lode, dir: root, sites: [("a", "editor"), ("b", "editor"), ("c", "editor")])
        let (a, b) = try startPair(lode, a: root + "/a", b: root + "/b")
        defer {
            a.stop()
            b.stop()
        }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Self.schema.write(toFile: root + "/s.sql", atomically: true, encoding: .utf8)
        try lode.must(a.dataDir, ["dataset", "create", "crash", "--schema", root + "/s.sql"])
        try lode.must(a.dataDir, ["dataset", "create", "probe", "--schema", root + "/s.sql"])

        // 1. Imports: each round imports a new batch of rows and is killed.
        let probe = try csv(batch: 0)
        let importTime = try Self.timed { try lode.must(a.dataDir, ["import", "probe", "t", probe]) }
        log("crash: import of \(rows) rows takes \(String(format: "%.2f", importTime)) s here; killing inside it \(rounds) times")
        for round in 1...rounds {
            let file = try csv(batch: round)
            let midway = killDuring(a, typical: importTime, ["import", "crash", "t", file])
            try a.start()
            try integrity(a, "crash")
            let count = Int(try lode.scalar(a.dataDir, "crash", "SELECT count(*) FROM t WHERE batch = \(round)")) ?? -1
            guard count == 0 || count == rows else { throw Failure("import round \(round): \(count) of \(rows) rows after kill -9") }
            log("  import \(round): killed \(midway ? "mid-import" : "after it ended"); \(count == 0 ? "none" : "all") of its rows; integrity ok")
            try converge(a, b, "crash")
        }

        // 2. exec: one UPDATE of every row, killed; afterwards every row has
        //    the old value or every row the new one.
        let total = Int(try lode.scalar(a.dataDir, "crash", "SELECT count(*) FROM t")) ?? 0
        if total == 0 { try lode.must(a.dataDir, ["import", "crash", "t", probe]) }
        let execTime = try Self.timed { try lode.must(a.dataDir, ["exec", "crash", "UPDATE t SET v = v + 1"]) }
        log("crash: exec updating every row takes \(String(format: "%.2f", execTime)) s; killing inside it \(rounds) times")
        for round in 1...rounds {
            let before = try lode.scalar(a.dataDir, "crash", "SELECT min(v) FROM t")
            let midway = killDuring(a, typical: execTime, ["exec", "crash", "UPDATE t SET v = v + 1"])
            try a.start()
            try integrity(a, "crash")
            let distinct = try lode.scalar(a.dataDir, "crash", "SELECT count(DISTINCT v) FROM t")
            let after = try lode.scalar(a.dataDir, "crash", "SELECT min(v) FROM t")
            guard distinct == "1" else { throw Failure("exec round \(round): rows hold \(distinct) different values after kill -9") }
            log("  exec \(round): killed \(midway ? "mid-exec" : "after it ended"); v \(before) → \(after) on every row; integrity ok")
            try converge(a, b, "crash")
        }

        // 3. A large incoming sync: a new node c receives many commits of a
        //    known size from a, and is killed while applying them.
        let perCommit = 5000
        let commits = max(4, rows * 2 / perCommit)
        try lode.must(a.dataDir, ["dataset", "create", "bulk", "--schema", root + "/s.sql"])
        for j in 1...commits {
            try lode.must(
                a.dataDir,
                [
                    "exec", "bulk",
                    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < \(perCommit)) INSERT INTO t SELECT 'c\(j)-' || i, \(j), 0, hex(randomblob(24)) FROM c",
                ])
        }
        // How long a whole catch-up takes here, so that the kills land inside one.
        let cDir = root + "/c"
        let probeNode = LocalNode(lode: lode, dataDir: cDir, peers: [a.address])
        // From launching the node to its holding everything (less the half
        // second waitForConvergence waits to see nothing more arrive).
        let syncTime =
            try Self.timed {
                try probeNode.launch()
                try probeNode.waitUntilReady()
                _ = try waitForConvergence(lode, dirs: [a.dataDir, cDir], dataset: "bulk", timeout: 120)
            } - 0.5
        probeNode.stop()
        log(
            "crash: a new node receives \(commits) commits of \(perCommit) rows in \(String(format: "%.2f", syncTime)) s; killing inside it \(rounds) times"
        )
        // The probe overstates the sync (it polls); the window adapts so
        // that kills land while commits are arriving.
        var window = syncTime
        for round in 1...rounds {
            // A fresh, empty node each round: the whole dataset arrives.
            try? FileManager.default.removeItem(atPath: cDir)
            try? FileManager.default.removeItem(atPath: cDir + ".log")
            let r = lode_faults.run(lode.binary, ["init", "--site", "c\(round)", "--ca", root + "/ca", "--role", "editor", "--data-dir", cDir])
            guard r.ok else { throw Failure("init c: \(r)") }
            let c = LocalNode(lode: lode, dataDir: cDir, peers: [a.address])
            // Killed somewhere between its launch and its holding everything.
            try c.launch()
            usleep(UInt32(Double.random(in: 0.2...1.0, using: &rng) * window * 1_000_000))
            c.kill9()
            kills += 1
            // Restarted alone first, to see exactly what survived the kill.
            let alone = LocalNode(lode: lode, dataDir: cDir)
            try alone.start()
            var held = 0
            if lode.vector(cDir, "bulk") != nil {
                try integrity(alone, "bulk")
                let groups = try lode.must(
                    cDir, ["query", "bulk", "SELECT batch, count(*) FROM t GROUP BY batch HAVING count(*) <> \(perCommit)", "--format", "csv"])
                guard groups.split(whereSeparator: \.isNewline).count <= 1 else {
                    throw Failure("sync round \(round): commits applied in part after kill -9:\n\(groups)")
                }
                held = Int(try lode.scalar(cDir, "bulk", "SELECT count(*) FROM t")) ?? -1
            }
            alone.stop()
            let total = commits * perCommit
            if held > 0 && held < total { killsMidOperation += 1 }
            if held == total { window *= 0.6 } else if held == 0 { window *= 1.4 }
            let when = held == 0 ? "before any commit was applied" : held < total ? "while receiving" : "after it caught up"
            try c.start()
            try converge(a, c, "bulk")
            log("  sync \(round): killed \(when), holding \(held) of \(total) rows, each commit whole; integrity ok; converged")
            c.stop()
        }
        return
            "crash: \(kills) kill -9 (\(killsMidOperation) in the middle of an operation) across import, exec and incoming sync; every restart passed integrity_check, all-or-nothing and convergence"
    }
}
