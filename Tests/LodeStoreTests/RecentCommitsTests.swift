import LodeCore
import LodeStore
import LodeTestSupport
import Testing

/// The recent commits a server store answers nearly caught-up peers from:
/// whatever the log, the byte bound and the peer, an answer is exactly
/// what reading the log would give, and there is an answer whenever
/// nothing the peer lacks was evicted.
@Suite struct RecentCommitsTests {
    let feeds = (1...4).map { site(UInt8($0), "s\($0)").site }

    /// What the stores' logs give a peer holding `after`: commits past it,
    /// in log order, up to the one that reaches `maxBytes` (so at least
    /// one) or `maxCount`.
    func fromLog(_ log: [StoredCommit], after: VersionVector, maxBytes: Int, maxCount: Int) -> [StoredCommit] {
        var out: [StoredCommit] = []
        var total = 0
        for c in log where c.seq > after[c.site] {
            out.append(c)
            total += c.bytes.count
            if total >= maxBytes || out.count >= maxCount { break }
        }
        return out
    }

    @Test(arguments: 0..<40)
    func answersAreTheLogsOrNothing(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(seed))
        let limit = [64, 600, 5_000, 1 << 20][seed % 4]
        var recent = RecentCommits(limitBytes: limit)
        var log: [StoredCommit] = []
        var held = VersionVector()
        var answered = 0
        for _ in 0..<200 {
            let feed = feeds[Int.random(in: 0..<feeds.count, using: &rng)]
            let c = StoredCommit(site: feed, seq: held[feed] + 1, bytes: [UInt8](repeating: 1, count: Int.random(in: 1...120, using: &rng)))
            held[feed] = c.seq
            log.append(c)
            recent.append(c)
            // A peer somewhere behind on each feed.
            var after = VersionVector()
            for f in feeds where held[f] > 0 { after[f] = UInt64.random(in: 0...held[f], using: &rng) }
            let maxBytes = Int.random(in: 1...2_000, using: &rng), maxCount = Int.random(in: 1...50, using: &rng)
            let expected = fromLog(log, after: after, maxBytes: maxBytes, maxCount: maxCount)
            if let got = recent.missing(after: after, held: held, maxBytes: maxBytes, maxCount: maxCount) {
                #expect(got == expected)
                answered += 1
            } else {
                // Only when something the peer lacks is no longer held.
                let kept = log.suffix(recent.count)
                let lacking = log.filter { $0.seq > after[$0.site] }
                #expect(!lacking.allSatisfy { c in kept.contains(c) })
            }
        }
        if limit == 1 << 20 { #expect(answered == 200) }
        #expect(recent.missing(after: held, held: held, maxBytes: 100, maxCount: 10) == [])
    }

    /// Long logs (so that old entries are dropped in bulk and positions
    /// move), with runs broken by commits another process wrote (in the
    /// log, never given here), and peers mostly a few commits behind, as a
    /// relay's sessions are: an answer is always the log's, and a peer
    /// lacking only what was given since the last break gets one.
    @Test(arguments: 0..<12)
    func longLogsWithBrokenRunsAnswerAsTheLogDoes(seed: Int) {
        var rng = SeededGenerator(seed: UInt64(1000 + seed))
        let many = (1...8).map { site(UInt8(10 + $0), "f\($0)").site }
        let limit = [5_000, 40_000, 1 << 20][seed % 3]
        // Breaks are rare in some runs, so that old entries pile up and go
        // in bulk between them.
        let breakOneIn = [0, 50, 600][(seed / 3) % 3]
        var recent = RecentCommits(limitBytes: limit)
        var log: [StoredCommit] = []
        var held = VersionVector()
        var answered = 0
        for step in 0..<3_000 {
            let feed = many[Int.random(in: 0..<many.count, using: &rng)]
            if breakOneIn > 0 && Int.random(in: 0..<breakOneIn, using: &rng) == 0 {
                // Another process appended to this feed meanwhile.
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    held[feed] += 1
                    log.append(StoredCommit(site: feed, seq: held[feed], bytes: [9]))
                }
            }
            held[feed] += 1
            let c = StoredCommit(
                site: feed, seq: held[feed], bytes: [UInt8](repeating: UInt8(step % 251), count: Int.random(in: 20...200, using: &rng)))
            log.append(c)
            recent.append(c)
            var after = held
            for f in many where held[f] > 0 {
                let behind = Int.random(in: 0..<10, using: &rng) == 0 ? held[f] : min(held[f], UInt64.random(in: 0...3, using: &rng))
                after[f] = held[f] - UInt64.random(in: 0...behind, using: &rng)
            }
            let maxBytes = Int.random(in: 1...4_000, using: &rng), maxCount = Int.random(in: 1...80, using: &rng)
            if let got = recent.missing(after: after, held: held, maxBytes: maxBytes, maxCount: maxCount) {
                #expect(got == fromLog(log, after: after, maxBytes: maxBytes, maxCount: maxCount))
                answered += 1
            }
            // The peer that lacks only the newest commit is always answered.
            var justBehind = held
            justBehind[feed] -= 1
            #expect(recent.missing(after: justBehind, held: held, maxBytes: 1 << 20, maxCount: 100) == [c])
        }
        #expect(answered > 300)
        #expect(recent.missing(after: held, held: held, maxBytes: 100, maxCount: 10) == [])
    }

    /// A feed whose run breaks (a commit that does not follow the last one
    /// held) is answered only from the new run on; `removeAll` forgets all.
    @Test func aBrokenRunIsNotServedAcrossTheGap() {
        let (a, b) = (feeds[0], feeds[1])
        var recent = RecentCommits(limitBytes: 1 << 20)
        for seq in 1...3 { recent.append(StoredCommit(site: a, seq: UInt64(seq), bytes: [1])) }
        recent.append(StoredCommit(site: b, seq: 1, bytes: [2]))
        recent.append(StoredCommit(site: a, seq: 6, bytes: [3]))
        let held = VersionVector([a: 6, b: 1])
        #expect(recent.missing(after: VersionVector([a: 3]), held: held, maxBytes: 100, maxCount: 100) == nil)
        #expect(
            recent.missing(after: VersionVector([a: 5]), held: held, maxBytes: 100, maxCount: 100)
                == [StoredCommit(site: b, seq: 1, bytes: [2]), StoredCommit(site: a, seq: 6, bytes: [3])])
        recent.removeAll()
        #expect(recent.count == 0)
        #expect(recent.missing(after: VersionVector([a: 5]), held: held, maxBytes: 100, maxCount: 100) == nil)
    }
}
