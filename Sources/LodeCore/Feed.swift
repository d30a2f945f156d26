/// Why a commit cannot be appended to its feed.
public enum FeedViolation: Error, Equatable, Sendable, CustomStringConvertible {
    /// The commit's seq is already held: a replay or duplicate.
    case alreadyHeld(seq: UInt64, held: UInt64)
    /// Commits between the held head and this one are missing.
    case gap(seq: UInt64, held: UInt64)
    /// The previous-hash field does not name the held head.
    case wrongPrevious
    /// A causal dependency is not held yet.
    case missingDependency(Dependency)

    public var description: String {
        switch self {
        case .alreadyHeld(let s, let h): "seq \(s) is already held (feed is at \(h))"
        case .gap(let s, let h): "gap in feed: got seq \(s), next expected is \(h + 1)"
        case .wrongPrevious: "previous hash does not match the feed's head"
        case .missingDependency(let d): "depends on \(d.site.short):\(d.seq), which is not held"
        }
    }
}

/// The head of one feed as a replica holds it.
public struct FeedHead: Hashable, Sendable {
    /// The last seq held, 0 for none.
    public var seq: UInt64
    /// The hash of that commit, zero for none.
    public var hash: [UInt8]
    /// The author's full causal past at that commit.
    public var vector: VersionVector

    /// The head of an empty feed.
    public static let empty = FeedHead(seq: 0, hash: Commit.zeroHash, vector: VersionVector())

    /// Creates a head.
    public init(seq: UInt64, hash: [UInt8], vector: VersionVector) {
        self.seq = seq
        self.hash = hash
        self.vector = vector
    }
}

/// The rules for appending a commit to a feed, shared by every replica.
public enum FeedRules {
    /// Checks that `commit` is the next in its feed and that its causal
    /// dependencies are held, given the author's feed head and the replica's
    /// vector. Returns the commit's full causal past on success.
    public static func check(_ commit: Commit, head: FeedHead, held: VersionVector) throws(FeedViolation) -> VersionVector {
        if commit.seq <= head.seq { throw .alreadyHeld(seq: commit.seq, held: head.seq) }
        if commit.seq != head.seq + 1 { throw .gap(seq: commit.seq, held: head.seq) }
        if commit.prev != head.hash { throw .wrongPrevious }
        for d in commit.deps where !held.covers(d) { throw .missingDependency(d) }
        return causalPast(of: commit, previous: head.vector)
    }

    /// The full causal past of `commit`: its author's vector at the previous
    /// commit, raised by the dependencies, with the author's own entry at seq.
    public static func causalPast(of commit: Commit, previous: VersionVector) -> VersionVector {
        causalPast(author: commit.author, seq: commit.seq, deps: commit.deps, previous: previous)
    }

    /// The same, from the commit's fields.
    public static func causalPast(author: SiteID, seq: UInt64, deps: [Dependency], previous: VersionVector) -> VersionVector {
        var v = previous
        for d in deps where d.seq > v[d.site] { v[d.site] = d.seq }
        v[author] = seq
        return v
    }
}
