import Foundation
import LodeCore

/// Several clients writing through `lode exec` (or the HTTP API) on each of
/// three nodes for a while, as the nodes sync: every write must be
/// acknowledged, every acknowledged write present everywhere at the end, and
/// memory flat. With `postgresRelays`, the nodes sync only through two
/// relays sharing one PostgreSQL database (the server tier), whose memory
/// must stay flat too and whose database must hold the same rows.
func runLoad(
    lode: Lode, root: String, seconds: Double, clientsPerNode: Int, throughAPI: Bool, postgresRelays: Bool, seed: UInt64
) throws
    -> String
{
    try? FileManager.default.removeItem(atPath: root)
    let names = ["l1", "l2", "l3"], relayNames = postgresRelays ? ["r1", "r2"] : []
    try makeSites(lode, dir: root, sites: relayNames.map { ($0, "relay") } + names.map { ($0, "editor") })
    let tier = postgresRelays ? try RelayTier(lode: lode, root: root, names: relayNames) : nil
    defer { tier?.stop() }
    var nodes: [LocalNode] = []
    for n in names {
        let node = LocalNode(lode: lode, dataDir: root + "/" + n, peers: tier?.relays.map(\.address) ?? nodes.map(\.address))
        try node.start()
        nodes.append(node)
    }
    defer { for n in nodes { n.stop() } }
    let watched = nodes + (tier?.relays ?? []), watchedNames = names + relayNames
    var clients: [Client] = []
    for (i, node) in nodes.enumerated() {
        for c in 0..<clientsPerNode {
            clients.append(
                Client(
                    name: "\(names[i])c\(c)", dataDir: node.dataDir, lode: lode, seed: seed &* 1000 &+ UInt64(i * 10 + c),
                    throughAPI: throughAPI))
        }
    }
    try setUpWorkload(lode, at: nodes[0].dataDir, clients: clients, scratch: root)
    _ = try waitForConvergence(lode, dirs: nodes.map(\.dataDir), dataset: "faults", timeout: 60)

    log(
        "load: \(clients.count) clients on \(nodes.count) nodes\(postgresRelays ? " syncing through 2 PostgreSQL relays" : "") for \(Int(seconds)) s, through \(throughAPI ? "the API" : "lode exec")"
    )
    let stop = Flag()
    let group = startClients(clients, until: stop)
    // Resident memory of each node, once a second.
    var samples: [[Int]] = Array(repeating: [], count: watched.count)
    let begun = Date()
    while Date().timeIntervalSince(begun) < seconds {
        usleep(1_000_000)
        for (i, n) in watched.enumerated() { samples[i].append(n.memory()?.rss ?? 0) }
    }
    stop.set()
    group.wait()
    let checked = try checkLoad(lode, dirs: nodes.map(\.dataDir), clients: clients, scratch: root, running: watched)
    var problems = checked.problems
    // Flat: the median of the last quarter of samples within 1.5× (or 32 MiB
    // of) the median of the second quarter, after start-up.
    var memory: [String] = []
    for (i, s) in samples.enumerated() where s.count >= 8 {
        let q = s.count / 4
        let early = median(s[q..<(2 * q)].map(Double.init)), late = median(s[(3 * q)...].map(Double.init))
        let peak = watched[i].memory()?.peak ?? s.max() ?? 0
        memory.append("\(watchedNames[i]) \(Int(early / 1024))→\(Int(late / 1024)) MB (peak \(peak / 1024) MB)")
        if late > max(early * 1.5, early + 32 * 1024) {
            problems.append("\(watchedNames[i])'s memory grew from \(Int(early / 1024)) MB to \(Int(late / 1024)) MB under steady load")
        }
    }
    var stored = ""
    if let tier {
        let (rows, missing) = try tier.checkRows(lode, like: nodes[0].dataDir)
        if let missing { problems.append(missing) }
        stored = "; \(rows) rows at every node and in PostgreSQL"
    }
    let summary = String(
        format: "load: %d writes by %d clients (through %@%@) in %.0f s (%.0f/s), %d failed; converged %.1f s after; memory %@%@",
        checked.writes, clients.count, throughAPI ? "the API" : "lode exec", postgresRelays ? ", 2 PostgreSQL relays" : "", seconds,
        Double(checked.writes) / seconds, checked.failed, checked.converge, memory.joined(separator: ", "), stored)
    if !problems.isEmpty { throw Failure(summary + "\n" + problems.prefix(20).map { "  " + $0 }.joined(separator: "\n")) }
    try? FileManager.default.removeItem(atPath: root)
    return summary
}
