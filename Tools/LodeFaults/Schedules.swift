import Foundation
import LodeCore

/// One fault in a schedule: it starts at `at` seconds into the run and is
/// undone `duration` seconds later.
struct Fault: CustomStringConvertible {
    enum Kind {
        case cut(String, String), isolate(String), pause(String), kill(String)
        /// A proxied editor-relay link misbehaving (`FaultProxy`).
        case link(String, String, LinkMode)
    }
    var at: Double
    var duration: Double
    var kind: Kind

    var nodes: [String] {
        switch kind {
        case .cut(let a, let b), .link(let a, let b, _): [a, b]
        case .isolate(let a), .pause(let a), .kill(let a): [a]
        }
    }

    var description: String {
        let what =
            switch kind {
            case .cut(let a, let b): "cut \(a)-\(b)"
            case .isolate(let a): "isolate \(a)"
            case .pause(let a): "pause \(a)"
            case .kill(let a): "kill -9 \(a)"
            case .link(let a, let b, let mode): "link \(a)-\(b) \(mode)"
            }
        return String(format: "%5.1fs %@ for %.1fs", at, what, duration)
    }

    /// A random schedule for `seconds`, from a seed: faults start every 0.5–3 s,
    /// last 1–6 s, and never overlap on one node, so each is undone exactly.
    /// With `proxied`, about half of them are faults of an editor-relay link.
    static func schedule(seed: UInt64, seconds: Double, nodes: [String], relays: Set<String>, proxied: Bool = false) -> [Fault] {
        var rng = SeededGenerator(seed: seed)
        var busyUntil: [String: Double] = [:]
        var faults: [Fault] = []
        var t = 1.5
        while t < seconds - 1.5 {
            let duration = min(Double.random(in: 1...6, using: &rng), seconds - t)
            let free = nodes.filter { (busyUntil[$0] ?? 0) <= t }
            let pick = Int.random(in: 0..<4, using: &rng)
            var kind: Kind?
            if proxied && Bool.random(using: &rng), let e = free.filter({ !relays.contains($0) }).randomElement(using: &rng),
                let r = free.filter(relays.contains).randomElement(using: &rng)
            {
                let modes: [LinkMode] = [
                    .latency(ms: 150, jitter: 100), .rate(bytesPerSecond: 32 << 10), .stall(after: Int.random(in: 0..<65_536, using: &rng)),
                    .drip(ms: 20), .reset,
                ]
                kind = .link(e, r, modes.randomElement(using: &rng)!)
            } else if pick == 0, let a = free.filter(relays.contains).randomElement(using: &rng),
                let b = free.filter({ $0 != a }).randomElement(using: &rng)
            {
                kind = .cut(a, b)
            } else if let a = free.randomElement(using: &rng) {
                kind = [Kind.isolate(a), .pause(a), .kill(a)][pick == 0 ? 0 : pick - 1]
            }
            if let kind {
                let f = Fault(at: t, duration: duration, kind: kind)
                for n in f.nodes { busyUntil[n] = t + duration + 0.5 }
                faults.append(f)
            }
            t += Double.random(in: 0.5...3, using: &rng)
        }
        return faults
    }
}

/// The cluster of deploy/netns-cluster.sh, driven through the script.
struct NetnsCluster {
    let script: String
    let dir: String
    let lode: Lode

    func call(_ args: [String]) throws {
        let r = run("/bin/bash", [script] + [args[0], dir] + args.dropFirst(), timeout: 60)
        guard r.ok else { throw Failure("netns-cluster.sh \(args.joined(separator: " ")): \(r)\n\(r.stdout)") }
    }

    func dataDir(_ node: String) -> String { dir + "/" + node }

    func begin(_ f: Fault) throws {
        switch f.kind {
        case .cut(let a, let b): try call(["cut", a, b])
        case .isolate(let a): try call(["isolate", a])
        case .pause(let a): try call(["pause", a])
        case .kill(let a): try call(["kill", a])
        case .link(let a, let b, let mode): try call(["link", a, b] + mode.description.split(separator: " ").map(String.init))
        }
    }

    func end(_ f: Fault) throws {
        switch f.kind {
        case .cut(let a, let b): try call(["heal", a, b])
        case .isolate(let a): try call(["heal", a])
        case .pause(let a): try call(["resume", a])
        case .kill(let a): try call(["start", a])
        case .link(let a, let b, _): try call(["link", a, b, "normal"])
        }
    }
}

/// What a client asked for and what it was told: the record a Jepsen-style
/// checker reads. `acked` means `lode exec` exited 0; anything else (an error,
/// a timeout, a node that died) leaves the outcome unknown.
struct ClientOp {
    enum Kind { case insert, delete, register, contested }
    var client: String
    var kind: Kind
    var key: String
    var value: String
    var acked: Bool
}

/// One client writing through `lode exec` (or, with `throughAPI`, the
/// node's HTTP API on its socket) at one node, sequentially, forever (until
/// told to stop).
final class Client: @unchecked Sendable {
    let name: String
    let dataDir: String
    let lode: Lode
    let throughAPI: Bool
    private var rng: SeededGenerator
    private(set) var ops: [ClientOp] = []
    private(set) var errors: [String: Int] = [:]
    private var counter = 0
    private var liveItems: [String] = []

    init(name: String, dataDir: String, lode: Lode, seed: UInt64, throughAPI: Bool = false) {
        self.name = name
        self.dataDir = dataDir
        self.lode = lode
        self.throughAPI = throughAPI
        rng = SeededGenerator(seed: seed)
    }

    func runUntil(_ stop: Flag) {
        while !stop.isSet { step() }
    }

    private func step() {
        counter += 1
        let n = counter
        let roll = Int.random(in: 0..<100, using: &rng)
        let op: ClientOp
        let sql: String
        if roll < 15, !liveItems.isEmpty {
            let key = liveItems.remove(at: Int.random(in: 0..<liveItems.count, using: &rng))
            op = ClientOp(client: name, kind: .delete, key: key, value: "", acked: false)
            sql = "DELETE FROM items WHERE k = '\(key)'"
        } else if roll < 35 {
            op = ClientOp(client: name, kind: .register, key: name, value: "\(n)", acked: false)
            sql = "UPDATE regs SET v = \(n) WHERE k = '\(name)'"
        } else if roll < 55 {
            let key = "s\(Int.random(in: 0..<4, using: &rng))"
            op = ClientOp(client: name, kind: .contested, key: key, value: "\(name):\(n)", acked: false)
            sql = "UPDATE shared SET v = '\(name):\(n)' WHERE k = '\(key)'"
        } else {
            let key = "\(name)-\(n)"
            op = ClientOp(client: name, kind: .insert, key: key, value: "\(n)", acked: false)
            sql = "INSERT INTO items (k, owner, n) VALUES ('\(key)', '\(name)', \(n))"
        }
        // A paused node never answers; a client gives up after a while.
        let r =
            throughAPI
            ? apiExec(socket: dataDir + "/lode.sock", dataset: "faults", sql: sql, timeout: 6)
            : lode.at(dataDir, ["exec", "faults", sql], timeout: 6)
        var done = op
        done.acked = r.ok
        ops.append(done)
        if r.ok {
            if op.kind == .insert { liveItems.append(op.key) }
        } else {
            let reason = r.timedOut ? "timed out" : String(r.stderr.prefix(60))
            errors[reason, default: 0] += 1
            usleep(100_000)
        }
    }
}

/// Starts every client writing on its own thread until `stop` is set;
/// wait on the group for them to finish their last write.
func startClients(_ clients: [Client], until stop: Flag) -> DispatchGroup {
    let group = DispatchGroup()
    for c in clients {
        group.enter()
        Thread {
            c.runUntil(stop)
            group.leave()
        }.start()
    }
    return group
}

/// Checks the final replica against the clients' records.
/// - Items (a set per client, each key written once, maybe deleted once):
///   every acked insert is present unless a delete of it was attempted;
///   every acked delete is absent; nothing is present that was never written.
/// - Registers (one writer each, increasing values): the final value was
///   written by its client, and is at least the last acked one.
/// - Contested cells: the final value was written by some client.
func checkHistory(ops: [ClientOp], items: [String: String], regs: [String: String], shared: [String: String]) -> [String] {
    var problems: [String] = []
    var attemptedInserts = Set<String>(), attemptedDeletes = Set<String>()
    for op in ops where op.kind == .insert { attemptedInserts.insert(op.key) }
    for op in ops where op.kind == .delete { attemptedDeletes.insert(op.key) }
    for op in ops where op.acked {
        switch op.kind {
        case .insert:
            if items[op.key] == nil && !attemptedDeletes.contains(op.key) {
                problems.append("lost write: acknowledged insert of \(op.key) is missing")
            } else if let v = items[op.key], v != op.value {
                problems.append("item \(op.key) holds \(v), written \(op.value)")
            }
        case .delete:
            if items[op.key] != nil { problems.append("acknowledged delete of \(op.key), but the row is there") }
        default: break
        }
    }
    for key in items.keys where !attemptedInserts.contains(key) {
        problems.append("item \(key) was never written")
    }
    var byClient: [String: [ClientOp]] = [:]
    for op in ops where op.kind == .register { byClient[op.client, default: []].append(op) }
    for (client, writes) in byClient {
        let final = regs[client] ?? "missing"
        let written = Set(writes.map(\.value)).union(["0"])
        if !written.contains(final) { problems.append("register \(client) holds \(final), which no one wrote") }
        if let lastAcked = writes.last(where: \.acked), let f = Int(final), let a = Int(lastAcked.value), f < a {
            problems.append("lost write: register \(client) holds \(f), but \(a) was acknowledged after it")
        }
    }
    let contested = Set(ops.filter { $0.kind == .contested }.map(\.value)).union(["init"])
    for (key, value) in shared where !contested.contains(value) {
        problems.append("contested cell \(key) holds \(value), which no one wrote")
    }
    return problems
}

/// Parses a two-column-or-more CSV export into key → the given column.
func column(_ csv: String, _ index: Int) -> [String: String] {
    var out: [String: String] = [:]
    for line in csv.split(whereSeparator: \.isNewline).dropFirst() {
        let fields = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if fields.count > index { out[fields[0]] = fields[index] }
    }
    return out
}

/// Runs one seeded schedule on a fresh 5-node cluster in namespaces.
/// Returns a summary line, or throws with what went wrong.
func runSchedule(
    seed: UInt64, seconds: Double, clientsPerSite: Int, skew: Int, root: String, lode: Lode, script: String, proxy: Bool = false
) throws -> String {
    let dir = "\(root)/seed-\(seed)"
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let cluster = NetnsCluster(script: script, dir: dir, lode: lode)
    let nodes = ["n1", "n2", "n3", "n4", "n5"]
    let editors = ["n3", "n4", "n5"]
    let faults = Fault.schedule(seed: seed, seconds: seconds, nodes: nodes, relays: ["n1", "n2"], proxied: proxy)
    log(
        "seed \(seed): \(faults.count) faults over \(Int(seconds)) s; n1 n2 relays, n3 n4 n5 editors, n5's clock \(skew) s ahead"
            + (proxy ? "; editor-relay links through fault proxies" : ""))
    for f in faults { log("  \(f)") }
    try cluster.call(["up", "--nodes", "5", "--relays", "2", "--skew", "n5:\(skew)"] + (proxy ? ["--proxy"] : []))
    var passed = false
    defer {
        _ = try? cluster.call(["down"])
        if passed { try? FileManager.default.removeItem(atPath: dir) }
    }

    var clients: [Client] = []
    for (e, node) in editors.enumerated() {
        for c in 0..<clientsPerSite {
            clients.append(Client(name: "\(node)c\(c)", dataDir: cluster.dataDir(node), lode: lode, seed: seed &* 1000 &+ UInt64(e * 10 + c)))
        }
    }
    try setUpWorkload(lode, at: cluster.dataDir("n3"), clients: clients, scratch: dir)
    _ = try waitForConvergence(lode, dirs: nodes.map(cluster.dataDir), dataset: "faults", timeout: 60)

    // Clients write the whole time; the faults run on their own thread.
    let stop = Flag()
    let faultError = Box<String?>(nil)
    let kills = Box(0)
    let begun = Date()
    let group = startClients(clients, until: stop)
    var events: [(at: Double, begin: Bool, fault: Fault)] = []
    for f in faults { events += [(f.at, true, f), (f.at + f.duration, false, f)] }
    events.sort { $0.at < $1.at }
    for e in events {
        let wait = e.at - Date().timeIntervalSince(begun)
        if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
        do {
            if e.begin {
                try cluster.begin(e.fault)
                if case .kill = e.fault.kind { kills.update { $0 += 1 } }
            } else {
                try cluster.end(e.fault)
            }
        } catch {
            faultError.value = "\(error)"
            break
        }
    }
    let rest = seconds - Date().timeIntervalSince(begun)
    if rest > 0 { usleep(UInt32(rest * 1_000_000)) }
    stop.set()
    group.wait()
    if let e = faultError.value { throw Failure("fault injection failed: \(e)") }

    // Heal everything, bring every node back, and wait.
    try cluster.call(["heal"])
    if proxy { for e in editors { for r in ["n1", "n2"] { try cluster.call(["link", e, r, "normal"]) } } }
    for n in nodes {
        _ = try? cluster.call(["resume", n])
        try cluster.call(["start", n])
    }
    let converge = try waitForConvergence(lode, dirs: nodes.map(cluster.dataDir), dataset: "faults", timeout: 120)

    let problems = try verifyWorkload(lode, dirs: nodes.map(cluster.dataDir), clients: clients, scratch: dir)
    let ops = clients.flatMap(\.ops)
    let acked = ops.filter(\.acked).count
    var errors: [String: Int] = [:]
    for c in clients { errors.merge(c.errors, uniquingKeysWith: +) }
    let summary = String(
        format: "seed %llu: %d writes (%d acknowledged, %d unknown), %d faults (%d kill -9, %d on proxied links), converged %.1f s after healing",
        seed, ops.count, acked, ops.count - acked, faults.count, kills.value, faults.count { if case .link = $0.kind { true } else { false } },
        converge)
    if !problems.isEmpty {
        throw Failure(summary + "\n" + problems.prefix(20).map { "  " + $0 }.joined(separator: "\n"))
    }
    for (e, n) in errors.sorted(by: { $0.value > $1.value }).prefix(4) {
        log("  client errors: \(n)× \(e.replacingOccurrences(of: "\n", with: " "))")
    }
    passed = true
    return summary
}

/// Creates the workload's dataset at one node: items (a set per client), one
/// register per client and four contested cells.
func setUpWorkload(_ lode: Lode, at dataDir: String, clients: [Client], scratch: String) throws {
    let schema = scratch + "/faults.sql"
    try """
    CREATE TABLE items (k TEXT PRIMARY KEY, owner TEXT, n INTEGER);
    CREATE TABLE regs (k TEXT PRIMARY KEY, v INTEGER);
    CREATE TABLE shared (k TEXT PRIMARY KEY, v TEXT);
    """.write(toFile: schema, atomically: true, encoding: .utf8)
    try lode.must(dataDir, ["dataset", "create", "faults", "--schema", schema])
    let regs = clients.map { "('\($0.name)', 0)" }.joined(separator: ", ")
    try lode.must(dataDir, ["exec", "faults", "INSERT INTO regs (k, v) VALUES \(regs)"])
    try lode.must(dataDir, ["exec", "faults", "INSERT INTO shared (k, v) VALUES ('s0', 'init'), ('s1', 'init'), ('s2', 'init'), ('s3', 'init')"])
}

/// Once the clients have stopped: waits for `dirs` to converge, checks the
/// workload (`verifyWorkload`) and that every write succeeded. Returns
/// the seconds convergence took, the writes made and failed, and every
/// problem found.
///
/// When the replicas do not converge, every node in `running` (the sites and
/// any relays) dumps its threads' stacks beside its log before the error is
/// thrown, for the diagnosis.
func checkLoad(
    _ lode: Lode, dirs: [String], clients: [Client], scratch: String, running: [LocalNode]
) throws -> (
    converge: Double, writes: Int, failed: Int, problems: [String]
) {
    let converge: Double
    do { converge = try waitForConvergence(lode, dirs: dirs, dataset: "faults", timeout: 120) } catch {
        for n in running { n.dumpStacks() }
        throw error
    }
    var problems = try verifyWorkload(lode, dirs: dirs, clients: clients, scratch: scratch)
    let ops = clients.flatMap(\.ops)
    let failed = ops.filter { !$0.acked }.count
    if failed > 0 {
        var errors: [String: Int] = [:]
        for c in clients { errors.merge(c.errors, uniquingKeysWith: +) }
        problems.append("\(failed) writes failed: \(errors)")
    }
    return (converge, ops.count, failed, problems)
}

/// After convergence: every replica dumps byte-identical, no node refused a
/// commit, and the final state agrees with every client's record.
func verifyWorkload(_ lode: Lode, dirs: [String], clients: [Client], scratch: String) throws -> [String] {
    var problems: [String] = []
    let names = dirs.map { ($0 as NSString).lastPathComponent }
    let dumps = try dirs.map { try lode.dump($0, "faults", tables: ["items", "regs", "shared"]) }
    for (n, d) in zip(names, dumps) where d != dumps[0] {
        try? d.write(toFile: "\(scratch)/\(n).dump", atomically: true, encoding: .utf8)
        try? dumps[0].write(toFile: "\(scratch)/\(names[0]).dump", atomically: true, encoding: .utf8)
        problems.append("replica \(n) differs from \(names[0]) (dumps in \(scratch))")
    }
    for (n, d) in zip(names, dirs) {
        if let r = lode.rejected(d, "faults"), r > 0 { problems.append("\(n) refused \(r) commits") }
    }
    let sections = dumps[0].components(separatedBy: "-- ")
    func table(_ name: String) -> String { sections.first { $0.hasPrefix(name + "\n") }.map { String($0.dropFirst(name.count + 1)) } ?? "" }
    problems += checkHistory(
        ops: clients.flatMap(\.ops), items: column(table("items"), 2), regs: column(table("regs"), 1), shared: column(table("shared"), 1))
    return problems
}
