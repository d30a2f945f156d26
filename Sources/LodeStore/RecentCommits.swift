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
    /// How many entries were removed from the front of `entries` so far:
    /// the entry at index i is at position `removed + i`, which stays put
    /// while older entries go.
    private var removed = 0
    private var bytes = 0
    /// A feed's unbroken run of seqs, and where each of them is.
    private struct Run {
        var first: UInt64
        var last: UInt64
        /// The seq of `at[0]` (at most `first`: entries before `first` are
        /// dropped from `at` now and then, not one by one).
        var base: UInt64
        /// The positions of seqs `base...last`.
        var at: [Int]
        func position(of seq: UInt64) -> Int { at[Int(seq - base)] }
    }
    private var runs: [SiteID: Run] = [:]

    public init(limitBytes: Int) { self.limitBytes = limitBytes }

    /// The commits held.
    public var count: Int { entries.count - head }

    /// Forgets everything (another process wrote the log meanwhile, so
    /// what comes next may not follow what is held in log order).
    public mutating func removeAll() {
        entries = []
        head = 0
        removed = 0
        bytes = 0
        runs = [:]
    }

    /// Adds the next commit of the log. A commit that does not follow its
    /// feed's run starts the run afresh (the earlier ones can no longer be
    /// served from here).
    public mutating func append(_ c: StoredCommit) {
        if var run = runs[c.site], run.last + 1 == c.seq {
            run.last = c.seq
            run.at.append(removed + entries.count)
            runs[c.site] = run
        } else {
            if runs[c.site] != nil { drop(feed: c.site) }
            runs[c.site] = Run(first: c.seq, last: c.seq, base: c.seq, at: [removed + entries.count])
        }
        entries.append(c)
        bytes += c.bytes.count
        while bytes > limitBytes && head < entries.count {
            let old = entries[head]
            head += 1
            bytes -= old.bytes.count
            if var run = runs[old.site], run.first == old.seq {
                if run.last == old.seq {
                    runs[old.site] = nil
                } else {
                    run.first += 1
                    let gone = Int(run.first - run.base)
                    if gone > 64 && gone * 2 > run.at.count {
                        run.at.removeFirst(gone)
                        run.base = run.first
                    }
                    runs[old.site] = run
                }
            }
        }
        if head > 1024 && head * 2 > entries.count {
            entries.removeFirst(head)
            removed += head
            head = 0
        }
    }

    /// Removes a feed's commits (its run broke), and finds the others'
    /// positions afresh.
    private mutating func drop(feed: SiteID) {
        runs[feed] = nil
        entries = entries[head...].filter { $0.site != feed }
        bytes = entries.reduce(0) { $0 + $1.bytes.count }
        head = 0
        removed = 0
        for site in runs.keys {
            runs[site]!.base = runs[site]!.first
            runs[site]!.at = []
        }
        for (i, c) in entries.enumerated() { runs[c.site]?.at.append(i) }
    }

    /// The commits a peer holding `after` lacks, in log order, up to the one
    /// that reaches `maxBytes` or `maxCount` (as the stores read their
    /// logs: at least one), when every one of them is here
    /// and the replica holds `held`; nil when the log must be read.
    ///
    /// The walk starts at the first commit the peer lacks, not at the
    /// oldest held: a relay asks this for every session after every commit,
    /// and its sessions mostly lack only the newest few.
    public func missing(after: VersionVector, held: VersionVector, maxBytes: Int, maxCount: Int) -> [StoredCommit]? {
        var start = Int.max
        for e in held.sorted {
            let has = after[e.site]
            guard has < e.seq else { continue }
            guard let run = runs[e.site], run.first <= has + 1, run.last >= e.seq else { return nil }
            start = min(start, run.position(of: has + 1))
        }
        guard start != Int.max else { return [] }
        var out: [StoredCommit] = []
        var total = 0
        for c in entries[(start - removed)...] where c.seq > after[c.site] && c.seq <= held[c.site] {
            out.append(c)
            total += c.bytes.count
            if total >= maxBytes || out.count >= maxCount { break }
        }
        return out
    }
}
