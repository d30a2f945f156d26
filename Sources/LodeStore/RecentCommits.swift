import LodeCore

/// A dataset's most recent commits in log order, at most `limitBytes` of
/// them, so that a server store answers peers that are nearly caught up
/// (every session of a relay, after each new commit) from memory instead
/// of a query per session.
///
/// It holds, per feed, an unbroken run of seqs ending at the newest it was
/// given. `missing(after:held:)` answers only when, for every feed in
/// which the peer lacks something, that run starts at or before the first
/// commit the peer lacks and ends at what the replica holds; otherwise it
/// returns nil and the store reads its log. The commits it returns are in
/// the order they were given, which must be log order (a causal order).
///
/// ```swift
/// var recent = RecentCommits(limitBytes: 8 << 20)
/// recent.append(stored)                       // after the write is durable
/// recent.missing(after: peer, held: vector)   // nil: ask the log
/// ```
public struct RecentCommits: Sendable {
    public let limitBytes: Int
    /// What a store keeps: 8 MiB, some tens of thousands of small commits.
    public static let defaultLimitBytes = 8 << 20
    private var entries: [StoredCommit] = []
    /// Entries before this index are gone (removed in bulk now and then).
    private var head = 0
    private var bytes = 0
    /// Per feed, the first and last seq of its run.
    private var runs: [SiteID: (first: UInt64, last: UInt64)] = [:]

    public init(limitBytes: Int) { self.limitBytes = limitBytes }

    /// The commits held.
    public var count: Int { entries.count - head }

    /// Forgets everything (another process wrote the log meanwhile, so
    /// what comes next may not follow what is held in log order).
    public mutating func removeAll() {
        entries = []
        head = 0
        bytes = 0
        runs = [:]
    }

    /// Adds the next commit of the log. A commit that does not follow its
    /// feed's run starts the run afresh (the earlier ones can no longer be
    /// served from here).
    public mutating func append(_ c: StoredCommit) {
        if let run = runs[c.site], run.last + 1 == c.seq {
            runs[c.site] = (run.first, c.seq)
        } else {
            if runs[c.site] != nil { drop(feed: c.site) }
            runs[c.site] = (c.seq, c.seq)
        }
        entries.append(c)
        bytes += c.bytes.count
        while bytes > limitBytes && head < entries.count {
            let old = entries[head]
            head += 1
            bytes -= old.bytes.count
            if let run = runs[old.site], run.first == old.seq {
                runs[old.site] = run.last == old.seq ? nil : (old.seq + 1, run.last)
            }
        }
        if head > 1024 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    /// Removes a feed's commits (its run broke).
    private mutating func drop(feed: SiteID) {
        runs[feed] = nil
        let kept = entries[head...].filter { $0.site != feed }
        bytes = kept.reduce(0) { $0 + $1.bytes.count }
        entries = Array(kept)
        head = 0
    }

    /// The commits a peer holding `after` lacks, in log order, up to the one
    /// that reaches `maxBytes` or `maxCount` (as the stores read their
    /// logs: at least one), when every one of them is here
    /// and the replica holds `held`; nil when the log must be read.
    public func missing(after: VersionVector, held: VersionVector, maxBytes: Int, maxCount: Int) -> [StoredCommit]? {
        var behind = false
        for (site, seq) in held.entries where after[site] < seq {
            guard let run = runs[site], run.first <= after[site] + 1, run.last >= seq else { return nil }
            behind = true
        }
        guard behind else { return [] }
        var out: [StoredCommit] = []
        var total = 0
        for c in entries[head...] where c.seq > after[c.site] && c.seq <= held[c.site] {
            out.append(c)
            total += c.bytes.count
            if total >= maxBytes || out.count >= maxCount { break }
        }
        return out
    }
}
