import Foundation
import LodeCore
import LodeNode
import LodeProtocol
import LodeSQLite
import LodeStore
import LodeSync
import LodeTestSupport
import Logging
import Synchronization

// W11: fan-out through relays. A load driver holds `sites` sessions, each a
// simulated site with its own key and CA-issued certificate speaking the
// real sync protocol over mutual TLS (SyncEngine). Every site writes
// commits (one to three rows shaped like the other workloads' rows), and
// every commit must reach every other site. The relays are `lode serve`
// processes: one on SQLite (the baseline), one on PostgreSQL, and two on
// one PostgreSQL database with the sites split between them.
//
// The simulated sites keep nothing but what they need to speak the
// protocol (their own feed, and per author the last seq received): the
// driver costs far less CPU per site than a node, so that the relays are
// what is measured. All of it shares the machine's cores with the relays
// and PostgreSQL.

/// A simulated site: its feed, and what it has received.
final class LoadSite: SyncHost, @unchecked Sendable {
    let index: Int
    let local: LocalSite
    let certificate: [UInt8]
    let cluster: [UInt8]
    let tracker: FanOutTracker
    private struct State {
        var vector = VersionVector()
        var own: [StoredCommit] = []
        var head = FeedHead.empty
        var last = HLC.zero
        var rng: SeededGenerator
    }
    private let state: Mutex<State>

    init(index: Int, identity: NodeIdentity, cluster: [UInt8], tracker: FanOutTracker) {
        self.index = index
        local = identity.local
        certificate = identity.certificate.der
        self.cluster = cluster
        self.tracker = tracker
        state = Mutex(State(rng: SeededGenerator(seed: UInt64(index) &* 7919 &+ 11)))
    }

    var localSite: SiteID { local.site }
    var vector: VersionVector { state.withLock { $0.vector } }

    /// Takes commits made elsewhere as this site's own (the origin's schema).
    func adopt(_ commits: [Commit]) {
        state.withLock { s in
            for c in commits {
                s.own.append(StoredCommit(site: c.author, seq: c.seq, bytes: c.bytes))
                s.vector[c.author] = max(s.vector[c.author], c.seq)
                s.head = FeedHead(seq: c.seq, hash: c.hash, vector: s.vector)
            }
        }
    }

    /// Writes one commit of one to three new rows; returns its seq.
    func write(dataset: String, held: VersionVector) throws -> UInt64 {
        try state.withLock { s in
            let now = HLC(millis: UInt64(Date().timeIntervalSince1970 * 1000), counter: 0)
            let hlc = now > s.last ? now : HLC(millis: s.last.millis, counter: s.last.counter + 1)
            s.last = hlc
            var put = PutRows(table: "sites", columns: ["name", "country", "year", "tonnes", "grade", "note"])
            for _ in 0..<Int.random(in: 1...3, using: &s.rng) {
                let key = String(s.rng.next(), radix: 16)
                let note = (0..<Int.random(in: 2...6, using: &s.rng)).map { _ in Rows.words.randomElement(using: &s.rng)! }.joined(separator: " ")
                put.append(
                    key: String(repeating: "0", count: 16 - key.count) + key, length: 1,
                    values: [
                        .text("Site \(index)-\(s.head.seq)"), .text(Rows.countries.randomElement(using: &s.rng)!),
                        .integer(Int64.random(in: 1990...2026, using: &s.rng)), .integer(Int64.random(in: 0...500_000, using: &s.rng)),
                        .real(Double.random(in: 0..<10, using: &s.rng)), .text(note),
                    ])
            }
            var past = held
            past[local.site] = s.head.seq
            let c = try local.writer.commit(dataset: dataset, ops: [.put(put)], hlc: hlc, head: s.head, held: past)
            s.own.append(StoredCommit(site: c.author, seq: c.seq, bytes: c.bytes))
            s.vector[local.site] = c.seq
            s.head = FeedHead(seq: c.seq, hash: c.hash, vector: past)
            return c.seq
        }
    }

    func datasetVectors() async throws -> [String: VersionVector] {
        let v = vector
        return v.isEmpty ? [:] : [FanOut.dataset: v]
    }

    func missingCommits(dataset: String, after: VersionVector, maxBytes: Int, for peer: PeerIdentity) async throws -> [StoredCommit] {
        state.withLock { s in
            var out: [StoredCommit] = []
            var bytes = 0
            for c in s.own where c.seq > after[c.site] {
                if !out.isEmpty && bytes + c.bytes.count > maxBytes { break }
                out.append(c)
                bytes += c.bytes.count
            }
            return out
        }
    }

    func apply(dataset: String, commits: [Commit], from peer: SiteID) async throws -> SyncApplyResult {
        let fresh = state.withLock { s -> [Commit] in
            var fresh: [Commit] = []
            for c in commits where c.seq > s.vector[c.author] {
                s.vector[c.author] = c.seq
                fresh.append(c)
            }
            return fresh
        }
        tracker.received(fresh, by: local.site)
        return SyncApplyResult(vector: vector, rejected: [], waiting: 0)
    }

    func knownCertificates() async throws -> [[UInt8]] { [certificate] }

    func identifyPeer(_ der: [UInt8]) throws -> PeerIdentity {
        let c = try SiteCertificate(der: der)
        return PeerIdentity(site: c.site, name: c.name, role: c.role)
    }

    func addCertificates(_ ders: [[UInt8]]) async throws -> CertificateIntake { CertificateIntake(added: [], refused: []) }
    func revocationNotices() async throws -> [[UInt8]] { [] }
    func forkEvidence() async throws -> [(dataset: String, commits: [[UInt8]])] { [] }
    func takeRevocation(_ notice: [UInt8]) async throws -> RevocationTaken { RevocationTaken(forward: [], site: nil) }
}

/// When each commit was written and how many sites have it.
final class FanOutTracker: Sendable {
    struct Key: Hashable {
        var site: SiteID
        var seq: UInt64
    }
    private struct State {
        var written: [Key: (at: ContinuousClock.Instant, missing: Int)] = [:]
        var latencies: [Double] = []
        var deliveries = 0
        var lastDelivery: ContinuousClock.Instant?
    }
    private let state = Mutex(State())
    /// The writing sites (the origin's commits are not counted).
    let writers: Set<SiteID>

    init(writers: Set<SiteID>) { self.writers = writers }

    /// Forgets what earlier phases measured.
    func reset() {
        state.withLock { s in
            s.latencies = []
            s.deliveries = 0
            s.lastDelivery = nil
        }
    }

    func wrote(_ site: SiteID, _ seq: UInt64, at: ContinuousClock.Instant) {
        state.withLock { $0.written[Key(site: site, seq: seq)] = (at, writers.count - 1) }
    }

    func received(_ commits: [Commit], by site: SiteID) {
        let now = ContinuousClock.now
        state.withLock { s in
            for c in commits where c.author != site && writers.contains(c.author) {
                let k = Key(site: c.author, seq: c.seq)
                guard var w = s.written[k] else { continue }
                w.missing -= 1
                s.deliveries += 1
                s.lastDelivery = now
                if w.missing == 0 {
                    s.latencies.append((now - w.at).seconds)
                    s.written[k] = nil
                } else {
                    s.written[k] = w
                }
            }
        }
    }

    var deliveries: Int { state.withLock { $0.deliveries } }
    var complete: Bool { state.withLock { $0.written.isEmpty } }
    var latencies: [Double] { state.withLock { $0.latencies } }
    var lastDelivery: ContinuousClock.Instant? { state.withLock { $0.lastDelivery } }
}

func percentile(_ xs: [Double], _ p: Double) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return .nan }
    return s[min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)]
}

enum FanOut {
    static let dataset = "fanout"

    /// How the relays keep their data, and the CPU each may use (nil:
    /// all of the machine's, shared with everything else).
    enum Tier: CustomStringConvertible {
        case sqlite, postgres(relays: Int, cores: Double?)
        var description: String {
            switch self {
            case .sqlite: "1 SQLite relay"
            case .postgres(let n, let cores):
                "\(n) PostgreSQL relay\(n == 1 ? "" : "s")" + (cores.map { String(format: " held to %.2g core%@", $0, n == 1 ? "" : " each") } ?? "")
            }
        }
    }

    /// One run's figures.
    struct Figures {
        /// Commits delivered to sites per second, every site writing as
        /// fast as the relays take it (a burst).
        var deliveriesPerSecond: Double
        /// Edit-to-every-site latency at a steady rate, seconds.
        var p50: Double
        var p99: Double
        /// The share of deliveries made, of those due (1 when complete).
        var delivered: Double
        var relayPeakMB: Double
    }

    /// One run on new relays (and a new database) with new sites: a burst
    /// of `burst` commits per site written at once, for throughput, then
    /// `paced` commits a second for `seconds` seconds, for latency.
    static func run(
        ws: Workspace, lode: String, tier: Tier, sites: Int, burst: Int, paced: Double, seconds window: Double, postgres: PostgresServer?
    ) async throws -> Figures {
        var logger = Logger(label: "fanout")
        logger.logLevel = .critical
        // The relays.
        let url = try postgres.map { try $0.newDatabase("fanout") }
        let relayCount: Int, cores: Double?
        switch tier {
        case .sqlite: (relayCount, cores) = (1, nil)
        case .postgres(let n, let c): (relayCount, cores) = (n, c)
        }
        var relays: [(Process, String)] = []
        var budgets: [CPUBudget] = []
        defer {
            for (p, _) in relays {
                p.terminate()
                p.waitUntilExit()
            }
            for b in budgets { b.remove() }
        }
        for r in 0..<relayCount {
            let dir = try ws.makeNode("relay-\(r)", role: .relay)
            let port = try freePort()
            var args = ["serve", "--data-dir", dir, "--listen", "127.0.0.1:\(port)", "--web", "off"]
            if case .postgres = tier, let url { args += ["--store", url] }
            let process = try spawn(lode, args)
            relays.append((process, "127.0.0.1:\(port)"))
            if let cores { budgets.append(try CPUBudget(pid: process.processIdentifier, cores: cores)) }
            try waitForSocket(dir)
        }

        // The sites: an origin that creates the dataset, and the writers.
        let origin = try ws.makeNode("origin")
        var identities: [NodeIdentity] = []
        var tls: [SyncTLS] = []
        var cluster: [UInt8] = []
        for i in 0...sites {
            let dir = i == 0 ? origin : try ws.makeNode("site-\(i)")
            let node = try Node.open(dataDir: dir)
            identities.append(node.identity)
            tls.append(try node.tls())
            cluster = node.cluster
            node.close()
        }
        let tracker = FanOutTracker(writers: Set(identities.dropFirst().map(\.local.site)))
        let hosts = identities.enumerated().map { LoadSite(index: $0.offset, identity: $0.element, cluster: cluster, tracker: tracker) }
        let author = ReferenceStore(dataset: dataset, local: identities[0].local)
        _ = try await author.alter(SchemaParser.parse(Rows.schema))
        let schema = try await author.commits(missingFrom: VersionVector())
        hosts[0].adopt(schema)
        let held = hosts[0].vector

        var engines: [SyncEngine] = []
        var tasks: [Task<Void, Never>] = []
        defer { for t in tasks { t.cancel() } }
        for (i, host) in hosts.enumerated() {
            // The sites are split evenly between the relays.
            let relay = relays[i % relayCount].1
            let engine = SyncEngine(
                host: host, tls: tls[i], listen: try PeerAddress("127.0.0.1:0", allowZero: true), peers: { [relay] }, logger: logger)
            engines.append(engine)
            tasks.append(Task { try? await engine.run() })
        }
        // Every site holds the dataset before any writes.
        let ready = ContinuousClock.now + .seconds(120)
        while hosts.contains(where: { $0.vector[identities[0].local.site] < held[identities[0].local.site] }) {
            guard ContinuousClock.now < ready else { throw BenchError("W11: the sites did not all receive the dataset within 120 s") }
            try await Task.sleep(for: .milliseconds(20))
        }

        /// Writes what `schedule` says (seconds from now, site) and waits
        /// until every commit has reached every other site, or 120 s.
        func phase(_ schedule: [(Double, Int)]) async throws -> (perSecond: Double, latencies: [Double], delivered: Double, complete: Bool) {
            tracker.reset()
            let start = ContinuousClock.now
            for (at, i) in schedule {
                let due = start + .milliseconds(Int64(at * 1000))
                if due > ContinuousClock.now { try await Task.sleep(until: due) }
                let seq = try hosts[i].write(dataset: dataset, held: held)
                tracker.wrote(hosts[i].localSite, seq, at: ContinuousClock.now)
                engines[i].localChanged()
            }
            let deadline = ContinuousClock.now + .seconds(120)
            while !tracker.complete && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
            let end = tracker.lastDelivery ?? ContinuousClock.now
            return (
                Double(tracker.deliveries) / (end - start).seconds, tracker.latencies,
                Double(tracker.deliveries) / Double(schedule.count * (sites - 1)), tracker.complete
            )
        }
        var rng = SeededGenerator(seed: 2026)
        let burstSchedule = (1...sites).flatMap { i in Array(repeating: (0.0, i), count: burst) }
        var pacedSchedule: [(Double, Int)] = []
        for n in 0..<Int(paced * window) { pacedSchedule.append((Double(n) / paced, Int.random(in: 1...sites, using: &rng))) }
        let throughput = try await phase(burstSchedule)
        let latency = try await phase(pacedSchedule)
        let peak = relays.map { peakMemoryMB(pid: $0.0.processIdentifier) }.max() ?? .nan
        return Figures(
            deliveriesPerSecond: throughput.perSecond, p50: percentile(latency.latencies, 0.5),
            p99: latency.complete ? percentile(latency.latencies, 0.99) : .infinity,
            delivered: min(throughput.delivered, latency.delivered), relayPeakMB: peak)
    }
}

extension Suite {
    // MARK: W11 fan-out through relays

    /// W11a: what two PostgreSQL relays sharing one database deliver beside
    /// one; W11b: one PostgreSQL relay beside one SQLite relay. Each run
    /// starts new relays and sites.
    func w11(lode: String, sites: Int, relayCores: Double) async throws -> [Result] {
        let postgres = try PostgresServer.standalone(durable: true)
        defer { try? postgres.stop() }
        let budgetsUnavailable = CPUBudget.unavailable
        var tiers: [FanOut.Tier] = [.sqlite, .postgres(relays: 1, cores: nil), .postgres(relays: 2, cores: nil)]
        if budgetsUnavailable == nil { tiers += [.postgres(relays: 1, cores: relayCores), .postgres(relays: 2, cores: relayCores)] }
        var figures: [[FanOut.Figures]] = Array(repeating: [], count: tiers.count)
        for _ in 0..<runs {
            for (t, tier) in tiers.enumerated() {
                figures[t].append(
                    try await FanOut.run(
                        ws: ws, lode: lode, tier: tier, sites: sites, burst: 5, paced: 20, seconds: 10,
                        postgres: { if case .postgres = tier { postgres } else { nil } }()))
            }
        }
        let rate = figures.map { median($0.map(\.deliveriesPerSecond)) }
        let p50 = figures.map { median($0.map(\.p50)) }
        let p99 = figures.map { median($0.map(\.p99)) }
        let delivered = figures.map { $0.map(\.delivered).min() ?? 0 }
        let peak = figures.map { median($0.map(\.relayPeakMB)) }
        func describe(_ t: Int) -> String {
            String(
                format: "%@: %.0f deliveries/s, p50 %.0f ms, p99 %.0f ms, %.1f%% delivered, relay peak %.0f MB", tiers[t].description, rate[t],
                p50[t] * 1000, p99[t] * 1000, delivered[t] * 100, peak[t])
        }
        let load = "\(sites) sites, bursts of 5 commits per site, then 20 commits/s for 10 s"
        let shared = rate[2] / rate[1], vsSQLite = rate[1] / rate[0]
        var results: [Result] = []
        // W11a: the scale-out. Each relay is held to the same share of CPU,
        // as if on a machine of its own, so that a second relay brings CPU
        // of its own; the load driver and PostgreSQL use the rest.
        if budgetsUnavailable == nil {
            let scale = rate[4] / rate[3]
            results.append(
                Result(
                    workload: "W11a",
                    what: String(format: "fan-out through 2 PostgreSQL relays on one database, each held to %.2g core (\(load))", relayCores),
                    value: rate[4], unit: "deliveries/s", baseline: rate[3],
                    baselineUnit: String(format: "deliveries/s (1 PostgreSQL relay held to %.2g core)", relayCores), ratio: scale,
                    target: "≥ 1.6× one relay", met: scale >= 1.6 && delivered[4] == 1 && delivered[3] == 1, peakMemoryMB: peak[4], runs: runs,
                    notes: describe(4) + "; " + describe(3)))
        } else {
            results.append(
                Result(
                    workload: "W11a", what: "fan-out through 2 PostgreSQL relays, each held to a share of CPU: not measured", value: 0,
                    unit: "deliveries/s", baseline: nil, baselineUnit: nil, ratio: nil, target: "≥ 1.6× one relay", met: false,
                    peakMemoryMB: 0, runs: 0, notes: budgetsUnavailable!))
        }
        results += [
            Result(
                workload: "W11b", what: "fan-out through 1 PostgreSQL relay beside 1 SQLite relay (\(load))", value: rate[1],
                unit: "deliveries/s", baseline: rate[0], baselineUnit: "deliveries/s (1 SQLite relay)", ratio: vsSQLite,
                target: "≥ 0.5× the SQLite relay", met: vsSQLite >= 0.5 && delivered[1] == 1 && delivered[0] == 1, peakMemoryMB: peak[1],
                runs: runs, notes: describe(1) + "; " + describe(0)),
            // W11c: the same two tiers with nothing held back. The relays, the
            // 200 sessions' driver and PostgreSQL share this machine's
            // cores, so a second relay process can only split the CPU the
            // first had; no target.
            Result(
                workload: "W11c",
                what:
                    "fan-out through 2 PostgreSQL relays beside 1, sharing \(ProcessInfo.processInfo.activeProcessorCount) cores with the load driver (\(load))",
                value: rate[2], unit: "deliveries/s", baseline: rate[1], baselineUnit: "deliveries/s (1 PostgreSQL relay)", ratio: shared,
                target: "none (one machine's cores)", met: nil, peakMemoryMB: peak[2], runs: runs, notes: describe(2) + "; " + describe(1)),
        ]
        return results
    }
}

extension Suite {
    // MARK: W12 signature checks on every core

    /// Checks the signatures of 20,000 small commits (one row each, as
    /// analysts' edits are) on every core, beside checking them one by one
    /// on one core, as every store did before.
    func w12() async throws -> Result {
        let writer = FeedWriter(key: .init())
        var head = FeedHead.empty
        var commits: [Commit] = []
        var rng = SeededGenerator(seed: 12)
        for i in 0..<20_000 {
            var put = PutRows(table: "sites", columns: ["name", "country", "tonnes"])
            put.append(
                key: String(rng.next(), radix: 16), length: 1,
                values: [.text("Site \(i)"), .text(Rows.countries.randomElement(using: &rng)!), .integer(Int64.random(in: 0...500_000, using: &rng))])
            let c = try writer.commit(
                dataset: "bench", ops: [.put(put)], hlc: HLC(millis: 1_700_000_000_000 + UInt64(i), counter: 0), head: head, held: VersionVector())
            head = FeedHead(seq: c.seq, hash: c.hash, vector: VersionVector())
            commits.append(try Commit(decoding: c.bytes))
        }
        var parallel: [Double] = [], serial: [Double] = []
        for _ in 0..<runs {
            let s = ContinuousClock.now
            let valid = commits.filter(\.hasValidSignature).count
            serial.append(Double(commits.count) / seconds(since: s))
            let p = ContinuousClock.now
            let checked = await Commit.checkingSignatures(commits)
            parallel.append(Double(commits.count) / seconds(since: p))
            guard valid == commits.count, checked.allSatisfy(\.hasValidSignature) else { throw BenchError("W12: a signature did not verify") }
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let ratio = median(parallel) / median(serial)
        return Result(
            workload: "W12", what: "Ed25519 checks of 20,000 one-row commits on every core", value: median(parallel), unit: "checks/s",
            baseline: median(serial), baselineUnit: "checks/s (one core)", ratio: ratio, target: "≥ 0.8 × cores (\(cores)) × one core",
            met: ratio >= 0.8 * Double(cores), peakMemoryMB: peakMemoryMB(), runs: runs,
            notes: String(format: "%.0f checks/s per core", median(parallel) / Double(cores)))
    }
}
