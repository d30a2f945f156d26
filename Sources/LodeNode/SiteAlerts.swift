import LodeCore
import LodeProtocol
import LodeStore
import Metrics
import Synchronization

/// What this node has noticed about other sites' feeds, per dataset, that
/// an operator must see in `lode status`: feeds held back because their
/// author's clock runs ahead of this node's (DESIGN §9). Kept in memory: a
/// held feed is offered again by its peers every vector round, which keeps
/// its entry fresh; an entry not seen for an hour is dropped.
final class SiteAlerts: Sendable {
    struct ClockAhead: Sendable, Equatable {
        /// The first commit of the feed held back.
        var seq: UInt64
        /// The latest stamp seen on a held commit (Unix milliseconds).
        var stamp: UInt64
        /// When it was first and last held (this node's wall clock).
        var since: UInt64
        var lastSeen: UInt64
    }

    static let heldCommits = Counter(label: "lode_sync_commits_held_clock_ahead_total")
    /// How long an entry is kept once its feed is no longer offered.
    static let forgetAfter: UInt64 = 3_600_000

    private let clockAhead = Mutex<[String: [SiteID: ClockAhead]]>([:])

    /// A peer that asked for commits this node compacted away (DESIGN §12):
    /// they cannot be sent, so it cannot catch up from here.
    struct BehindCompaction: Sendable, Equatable {
        var name: String
        /// How many compacted commits it lacks.
        var missing: UInt64
        var since: UInt64
        var lastSeen: UInt64
    }

    private let behindCompaction = Mutex<[String: [SiteID: BehindCompaction]]>([:])
    static let peersBehindCompaction = Gauge(label: "lode_sync_peers_behind_compaction")

    /// How long a peer stays listed as behind once it no longer asks for
    /// compacted commits. (What a session believes a peer holds runs ahead
    /// of what it acknowledged, so a request that lacks nothing does not
    /// clear the entry; a peer still stuck asks again at every vector
    /// exchange.)
    static let behindForgetAfter: UInt64 = 600_000

    /// Records that a peer asked for `missing` commits of `dataset` this
    /// node compacted away. Returns true the first time a peer is found
    /// behind (to log it once).
    @discardableResult
    func asked(dataset: String, peer: SiteID, name: String, missing: UInt64, now: UInt64) -> Bool {
        let (first, count) = behindCompaction.withLock { all in
            var d = (all[dataset] ?? [:]).filter { now &- $0.value.lastSeen < Self.behindForgetAfter }
            var first = false
            if missing == 0 {
                // Nothing learnt; entries age out.
            } else if var e = d[peer] {
                e.missing = missing
                e.lastSeen = now
                d[peer] = e
            } else {
                d[peer] = BehindCompaction(name: name, missing: missing, since: now, lastSeen: now)
                first = true
            }
            all[dataset] = d.isEmpty ? nil : d
            return (first, all.values.reduce(0) { $0 + $1.count })
        }
        Self.peersBehindCompaction.record(count)
        return first
    }

    /// Records an apply of `dataset`: `held` are the commits held back for
    /// their clock, `vector` what the replica holds afterwards (feeds that
    /// caught up are cleared). Returns, per author, the first seq held.
    @discardableResult
    func applied(dataset: String, held: [Commit], vector: VersionVector, now: UInt64) -> [SiteID: UInt64] {
        if !held.isEmpty { Self.heldCommits.increment(by: held.count) }
        var first: [SiteID: (seq: UInt64, stamp: UInt64)] = [:]
        for c in held {
            let f = first[c.author]
            first[c.author] = (min(f?.seq ?? c.seq, c.seq), max(f?.stamp ?? 0, c.hlc.millis))
        }
        clockAhead.withLock { all in
            var d = all[dataset] ?? [:]
            d = d.filter { vector[$0.key] < $0.value.seq && now &- $0.value.lastSeen < Self.forgetAfter }
            for (site, f) in first {
                if var e = d[site] {
                    e.seq = min(e.seq, f.seq)
                    e.stamp = max(e.stamp, f.stamp)
                    e.lastSeen = now
                    d[site] = e
                } else {
                    d[site] = ClockAhead(seq: f.seq, stamp: f.stamp, since: now, lastSeen: now)
                }
            }
            all[dataset] = d.isEmpty ? nil : d
        }
        return first.mapValues(\.seq)
    }

    /// The alerts for `dataset`, by site key, naming sites with `names`.
    func alerts(dataset: String, names: [SiteID: String], now: UInt64) -> [API.SiteAlert] {
        let entries = clockAhead.withLock { $0[dataset] ?? [:] }
        let held = entries.filter { now &- $0.value.lastSeen < Self.forgetAfter }.sorted { $0.key < $1.key }.map { site, e in
            API.SiteAlert(
                kind: .clockAhead, site: names[site] ?? site.short, key: site.hex, seq: e.seq, since: formatISO8601(millis: e.since),
                detail: "commits from seq \(e.seq) are held back: stamped up to \(formatISO8601(millis: e.stamp)), "
                    + "\(Self.duration(e.stamp &- min(e.stamp, now))) ahead of this node's clock; they apply once it catches up")
        }
        let behind = behindCompaction.withLock { $0[dataset] ?? [:] }
        return held
            + behind.filter { now &- $0.value.lastSeen < Self.behindForgetAfter }.sorted { $0.key < $1.key }.map { site, e in
                API.SiteAlert(
                    kind: .needsSnapshot, site: names[site] ?? e.name, key: site.hex, seq: e.missing, since: formatISO8601(millis: e.since),
                    detail: Self.behindDetail(missing: e.missing))
            }
    }

    /// What a peer behind this node's compaction must do.
    static func behindDetail(missing: UInt64) -> String {
        "lacks \(missing) commits this node compacted away (lode compact), so it cannot catch up from here: "
            + "start it from a snapshot (lode backup here, then lode restore there into an empty dataset), "
            + "or let it sync from a node that kept its log"
    }

    /// `ms` as a short human duration ("3 h 5 min", "42 s").
    static func duration(_ ms: UInt64) -> String {
        let s = ms / 1000
        if s < 60 { return "\(s) s" }
        if s < 3600 { return "\(s / 60) min \(s % 60) s" }
        if s < 86_400 * 2 { return "\(s / 3600) h \(s % 3600 / 60) min" }
        return "\(s / 86_400) days"
    }
}
