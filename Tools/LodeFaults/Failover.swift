import Foundation
import LodeTestSupport

/// The server tier under load and trouble: three SQLite sites write
/// through their APIs, each listing two relays that keep their datasets
/// in one PostgreSQL database. A quarter of the way in, one relay is
/// killed with kill -9; halfway, it comes back; three quarters of the way,
/// PostgreSQL itself is stopped for a few seconds and started again. At
/// the end the checker requires every acknowledged write at every site,
/// and the relays' database holding the same rows.
func runFailover(lode: Lode, root: String, seconds: Double, clientsPerSite: Int, seed: UInt64, restartPostgres: Bool) throws -> String {
    try? FileManager.default.removeItem(atPath: root)
    let relayNames = ["r1", "r2"], siteNames = ["s1", "s2", "s3"]
    try makeSites(lode, dir: root, sites: relayNames.map { ($0, "relay") } + siteNames.map { ($0, "editor") })
    let tier = try RelayTier(lode: lode, root: root, names: relayNames)
    defer { tier.stop() }
    let relays = tier.relays
    var sites: [LocalNode] = []
    for n in siteNames {
        let site = LocalNode(lode: lode, dataDir: root + "/" + n, peers: relays.map(\.address), extra: ["--web", "off"])
        try site.start()
        sites.append(site)
    }
    defer { for n in sites { n.stop() } }
    var clients: [Client] = []
    for (i, site) in sites.enumerated() {
        for c in 0..<clientsPerSite {
            clients.append(
                Client(name: "\(siteNames[i])c\(c)", dataDir: site.dataDir, lode: lode, seed: seed &* 1000 &+ UInt64(i * 10 + c), throughAPI: true))
        }
    }
    try setUpWorkload(lode, at: sites[0].dataDir, clients: clients, scratch: root)
    _ = try waitForConvergence(lode, dirs: sites.map(\.dataDir), dataset: "faults", timeout: 60)

    log("failover: \(clients.count) clients on \(sites.count) sites through 2 PostgreSQL relays for \(Int(seconds)) s")
    let stop = Flag()
    let group = startClients(clients, until: stop)
    let begun = Date()
    func at(_ share: Double) { usleep(useconds_t(max(0, begun.addingTimeInterval(seconds * share).timeIntervalSinceNow) * 1_000_000)) }
    at(0.25)
    log("failover: kill -9 r1")
    relays[0].kill9()
    at(0.5)
    log("failover: r1 starts again")
    try relays[0].start()
    if restartPostgres {
        at(0.75)
        log("failover: PostgreSQL stops for 3 s")
        try tier.postgres.stop()
        usleep(3_000_000)
        try tier.postgres.start()
        log("failover: PostgreSQL is back")
    }
    at(1)
    stop.set()
    group.wait()
    let checked = try checkLoad(lode, dirs: sites.map(\.dataDir), clients: clients, scratch: root, running: sites + relays)
    var problems = checked.problems
    // The database the relays share holds every row the sites hold.
    let (expectedRows, missing) = try tier.checkRows(lode, like: sites[0].dataDir)
    if let missing { problems.append(missing) }
    let summary = String(
        format:
            "failover: %d writes by %d clients in %.0f s, %d failed; r1 killed and restarted%@; converged %.1f s after; %@ rows at every site and in PostgreSQL",
        checked.writes, clients.count, seconds, checked.failed, restartPostgres ? ", PostgreSQL restarted" : "", checked.converge, expectedRows)
    if !problems.isEmpty { throw Failure(summary + "\n" + problems.prefix(20).map { "  " + $0 }.joined(separator: "\n")) }
    try? FileManager.default.removeItem(atPath: root)
    return summary
}
