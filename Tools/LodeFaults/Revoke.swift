import Foundation

/// A stolen laptop on the network-namespace cluster (relays n1 n2, editors
/// n3 n4 n5; n5 is the laptop): n5's writes before its revocation stay;
/// what it wrote that only some nodes saw, and what it writes offline after
/// the revocation, reaches nobody in the end, though n4 had built on it;
/// every honest replica ends identical. Returns a summary.
func runRevocation(root: String, lode: Lode, script: String) throws -> String {
    let dir = "\(root)/revoke"
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let cluster = NetnsCluster(script: script, dir: dir, lode: lode)
    let honest = ["n1", "n2", "n3", "n4"]
    let all = honest + ["n5"]
    try cluster.call(["up", "--nodes", "5", "--relays", "2"])
    var passed = false
    defer {
        _ = try? cluster.call(["down"])
        if passed { try? FileManager.default.removeItem(atPath: dir) }
    }
    func exec(_ node: String, _ sql: String) throws { try lode.must(cluster.dataDir(node), ["exec", "notes", sql]) }
    func seq(_ node: String) -> UInt64 { lode.seq(cluster.dataDir(node), "notes", site: "n5") ?? 0 }
    func waitFor(_ what: String, timeout: Double = 60, _ done: () -> Bool) throws {
        let start = Date()
        while !done() {
            guard Date().timeIntervalSince(start) < timeout else { throw Failure("timed out waiting until \(what)") }
            usleep(200_000)
        }
    }

    let schema = dir + "/notes.sql"
    try "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, by TEXT);".write(toFile: schema, atomically: true, encoding: .utf8)
    try lode.must(cluster.dataDir("n3"), ["dataset", "create", "notes", "--schema", schema])
    try exec("n3", "INSERT INTO notes (id, body, by) VALUES ('n3-1', 'first', 'n3')")
    _ = try waitForConvergence(lode, dirs: all.map(cluster.dataDir), dataset: "notes", timeout: 60)

    // Before the theft: n5's notes reach everyone and stay.
    try exec("n5", "INSERT INTO notes (id, body, by) VALUES ('n5-1', 'before the theft', 'n5'), ('n5-2', 'also before', 'n5')")
    _ = try waitForConvergence(lode, dirs: all.map(cluster.dataDir), dataset: "notes", timeout: 60)
    let cutoff = seq("n3")

    // n3, where the operator will hand the revocation in, is cut off; the
    // thief writes with n5's key and the others take it in; n4 builds on it.
    try cluster.call(["isolate", "n3"])
    try exec("n5", "INSERT INTO notes (id, body, by) VALUES ('n5-3', 'THIEF seen by some', 'n5')")
    try exec("n5", "UPDATE notes SET body = 'THIEF rewrote this' WHERE id = 'n3-1'")
    try waitFor("n4 holds the thief's writes") { seq("n4") == cutoff + 2 }
    try exec("n4", "INSERT INTO notes (id, body, by) VALUES ('n4-1', 'n4, after seeing the thief', 'n4')")
    try exec("n4", "UPDATE notes SET body = 'n4 checked this' WHERE id = 'n5-1'")

    // The thief goes offline; the CA revokes n5 and the operator hands it
    // in at n3, still cut off (so n3 fixes the cut-off before the thief's
    // later writes); then n3 comes back (healing all of n3's links, its
    // link to n5 too, so that is cut again; editors dial relays anyway).
    try cluster.call(["isolate", "n5"])
    let applied = honest.filter { seq($0) > cutoff }
    let file = try run(lode.binary, ["ca", "revoke", "--dir", dir + "/ca", "--site", "n5", "--reason", "laptop stolen"]).checked()
        .trimmingCharacters(in: .whitespacesAndNewlines)
    try lode.must(cluster.dataDir("n3"), ["revoke", file])
    try cluster.call(["heal", "n3"])
    try cluster.call(["cut", "n3", "n5"])
    // Offline, after its revocation, n5 keeps writing.
    try exec("n5", "INSERT INTO notes (id, body, by) VALUES ('n5-4', 'THIEF written offline', 'n5')")
    let written = seq("n5") - cutoff

    // Every honest node learns it by sync, drops what lies past n3's cut-off, and ends identical.
    try waitFor("every honest node holds the revocation") {
        honest.allSatisfy { lode.at(cluster.dataDir($0), ["status", "--format", "table"]).stdout.contains("revoked\n  n5 since") }
    }
    try waitFor("every honest node dropped the thief's writes") { honest.allSatisfy { seq($0) == cutoff } }
    let converged = try convergeIdentical(lode, dirs: honest.map(cluster.dataDir), dataset: "notes", tables: ["notes"])

    // The thief comes back: it cannot connect anywhere, and nothing of it arrives.
    try cluster.call(["heal", "n5"])
    sleep(8)
    try convergeIdentical(lode, dirs: honest.map(cluster.dataDir), dataset: "notes", tables: ["notes"])
    let rows = try lode.dump(cluster.dataDir("n1"), "notes", tables: ["notes"])
    var problems: [String] = []
    if rows.contains("THIEF") { problems.append("a write made with the stolen key after the cut-off survived:\n\(rows)") }
    // n5's first note as n4 rewrote it, its second as written, n4's own, and
    // n3's first note as it was before the thief rewrote it.
    for kept in ["n5-1,n4 checked this,n5", "n5-2,also before,n5", "n4-1,\"n4, after seeing the thief\",n4", "n3-1,first,n3"]
    where !rows.contains(kept) {
        problems.append("an honest write is missing (\(kept)):\n\(rows)")
    }
    for n in honest where seq(n) != cutoff { problems.append("\(n) holds n5's feed up to \(seq(n)), not the cut-off \(cutoff)") }
    let refused = honest.filter { n in
        ((try? String(contentsOfFile: cluster.dataDir(n) + ".log", encoding: .utf8)) ?? "").contains("n5 is revoked")
    }
    if refused.isEmpty { problems.append("no honest node logged refusing n5's connection") }
    guard problems.isEmpty else { throw Failure(problems.joined(separator: "\n")) }
    passed = true
    return String(
        format: "revocation: n5 cut off at seq %llu; its %llu later commits dropped at every honest node (%@ had applied some); "
            + "honest replicas identical (checked in %.1f s); n5's connections refused at %@",
        cutoff, written, applied.joined(separator: " "), converged, refused.joined(separator: " "))
}

extension Outcome {
    /// The standard output, or a failure naming the command's error.
    func checked() throws -> String {
        guard ok else { throw Failure("\(self)") }
        return stdout
    }
}
