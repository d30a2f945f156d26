import Foundation
import LodeCore

/// A node whose disk fills up: the write that does not fit fails with a
/// clear error and leaves nothing half-written, the node keeps serving reads
/// and sync, survives kill -9 in that state, and takes the same write once
/// there is room again. The node's data directory is a small tmpfs (root).
func runDiskFull(lode: Lode, root: String, megabytes: Int) throws -> String {
    try? FileManager.default.removeItem(atPath: root)
    try makeSites(lode, dir: root, sites: [("a", "editor"), ("b", "editor")])
    // a's data directory moves onto a small tmpfs.
    let disk = root + "/disk"
    try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
    let mounted = run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", disk])
    guard mounted.ok else { throw Failure("cannot mount a tmpfs (needs root): \(mounted)") }
    defer { _ = run("/bin/umount", ["-l", disk]) }
    let cp = run("/bin/cp", ["-a", root + "/a", disk + "/a"])
    guard cp.ok else { throw Failure("cp: \(cp)") }
    let (a, b) = try startPair(lode, a: disk + "/a", b: root + "/b")
    defer {
        a.stop()
        b.stop()
    }
    try CrashTest.schema.write(toFile: root + "/s.sql", atomically: true, encoding: .utf8)
    try lode.must(a.dataDir, ["dataset", "create", "full", "--schema", root + "/s.sql"])

    // Imports batches of 20,000 rows until one does not fit; returns its
    // number, its file and the error.
    let rows = 20_000
    var batch = 0
    func fill() throws -> (batch: Int, file: String, refusal: String) {
        while true {
            batch += 1
            guard batch <= 400 else { throw Failure("the disk never filled up") }
            var csv = "k,batch,v,pad\n"
            var g = SeededGenerator(seed: UInt64(batch))
            for i in 0..<rows { csv += "f\(batch)-\(i),\(batch),0,\(String(g.next(), radix: 36))\(String(g.next(), radix: 36))\n" }
            let file = root + "/batch-\(batch).csv"
            try csv.write(toFile: file, atomically: true, encoding: .utf8)
            let r = lode.at(a.dataDir, ["import", "full", "t", file], timeout: 120)
            if !r.ok { return (batch, file, r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)) }
            try? FileManager.default.removeItem(atPath: file)
        }
    }
    /// a's own rows: every batch before `failed` whole, nothing of `failed`.
    func check(_ when: String, failed: Int, also: Int = 0) throws {
        let ok = try lode.scalar(a.dataDir, "full", "PRAGMA integrity_check")
        guard ok == "ok" else { throw Failure("\(when): integrity_check says \(ok)") }
        let partial = try lode.scalar(a.dataDir, "full", "SELECT count(*) FROM t WHERE batch = \(failed)")
        guard partial == "0" else { throw Failure("\(when): \(partial) rows of the import that failed are there") }
        let whole = try lode.scalar(a.dataDir, "full", "SELECT count(*) FROM t WHERE batch > 0 AND batch <> \(failed)")
        guard whole == "\((batch - 1 + also) * rows)" else { throw Failure("\(when): \(whole) rows, expected \((batch - 1 + also) * rows)") }
    }
    func remount(_ size: Int) throws {
        let r = run("/bin/mount", ["-o", "remount,size=\(size)m", disk])
        guard r.ok else { throw Failure("remount: \(r)") }
    }
    func converged() throws {
        try convergeIdentical(lode, dirs: [a.dataDir, b.dataDir], dataset: "full", tables: ["t"])
    }

    // 1. The first import that does not fit fails whole, with a clear error.
    let first = try fill()
    log("diskfull: import \(first.batch) did not fit in \(megabytes) MiB: \(first.refusal)")
    guard first.refusal.contains("disk") && first.refusal.contains("full") else {
        throw Failure("the error does not say the disk is full: \(first.refusal)")
    }
    try check("after the failed import", failed: first.batch)
    try converged()
    // 2. Room again, no restart: the same import goes through, and its
    //    commits follow a's last stored one (no phantom head).
    try remount(megabytes * 2)
    try lode.must(a.dataDir, ["import", "full", "t", first.file])
    try converged()
    // 3. Full again; b writes meanwhile: a cannot store b's commits, must not
    //    refuse them (the disk, not the commits, is at fault) and must not
    //    count them as held.
    let second = try fill()
    try check("after the second failed import", failed: second.batch)
    var other = "k,batch,v,pad\n"
    for i in 0..<rows { other += "g-\(i),0,0,\(String(repeating: "x", count: 40))\n" }
    try other.write(toFile: root + "/other.csv", atomically: true, encoding: .utf8)
    try lode.must(b.dataDir, ["import", "full", "t", root + "/other.csv"])
    usleep(3_000_000)
    guard lode.rejected(a.dataDir, "full") == 0 else { throw Failure("a refused b's commits because its disk was full") }
    // What a counts as held of b's feed is exactly what it stored: nothing,
    // everything, or whole commits in between.
    let held = Int(try lode.scalar(a.dataDir, "full", "SELECT count(*) FROM t WHERE batch = 0")) ?? -1
    let heldSeq = lode.seq(a.dataDir, "full", site: "b") ?? 0
    let bSeq = lode.seq(b.dataDir, "full", site: "b") ?? 0
    guard (heldSeq == 0 && held == 0) || (heldSeq == bSeq && held == rows) || (heldSeq > 0 && heldSeq < bSeq && held > 0 && held < rows) else {
        throw Failure("a holds \(held) of b's \(rows) rows but counts \(heldSeq) of b's \(bSeq) commits as held")
    }
    log("diskfull: while full, a stored \(heldSeq) of b's \(bSeq) commits (\(held) rows) and holds the rest back")
    // 4. kill -9 while full loses nothing.
    a.kill9()
    try a.start()
    try check("after kill -9 while full", failed: second.batch)
    // 5. Room again: a's import and b's commits both arrive.
    try remount(megabytes * 4)
    try lode.must(a.dataDir, ["import", "full", "t", second.file])
    try converged()
    let total = try lode.scalar(a.dataDir, "full", "SELECT count(*) FROM t")
    guard total == "\((batch + 1) * rows)" else { throw Failure("at the end: \(total) rows, expected \((batch + 1) * rows)") }
    let refusal = first.refusal
    return
        "diskfull: twice an import that did not fit failed whole (\"\(refusal)\"); each time the node kept serving and syncing, took the same import once there was room (once without a restart), held back without refusing a peer's commits it could not store, survived kill -9 while full, and converged"
}
