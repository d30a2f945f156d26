import LodeCore

/// Feeds cut off in one dataset (DESIGN §9), the same in every store: for
/// each author, the last seq that counts. A revoked site's feed is cut at
/// the seq fixed where the revocation was handed in; a forked feed at the
/// seq before the fork. Cut-offs merge by the smaller seq (commutative,
/// associative, idempotent), so every replica ends with the same ones.
///
/// Past its cut-off an author's commit is refused, and one a replica held
/// already is dropped, the tables recomputed from the remaining commits
/// (`ReplicaStore.cut`). A dependency on a dropped commit counts as held
/// once everything up to the cut-off is: another site's commit that saw the
/// dropped one still applies, without it.
///
/// ```swift
/// var c = FeedCutoffs()
/// c.merge([mallory: 4])          // true: new
/// c.refuses(commit)              // true for mallory's seq 5 on
/// ```
public struct FeedCutoffs: Sendable, Hashable {
    /// The last seq that counts, per author.
    public private(set) var seqs: [SiteID: UInt64]

    /// No feed cut off.
    public init(_ seqs: [SiteID: UInt64] = [:]) { self.seqs = seqs }

    /// True when no feed is cut off.
    public var isEmpty: Bool { seqs.isEmpty }

    /// The cut-off of `author`'s feed, if any.
    public subscript(author: SiteID) -> UInt64? { seqs[author] }

    /// Merges `other` in, keeping the smaller seq per author. Returns true
    /// when a cut-off was added or lowered.
    @discardableResult
    public mutating func merge(_ other: [SiteID: UInt64]) -> Bool {
        var changed = false
        for (author, seq) in other where seq < (seqs[author] ?? .max) {
            seqs[author] = seq
            changed = true
        }
        return changed
    }

    /// True when `commit` lies past its author's cut-off.
    public func refuses(_ commit: Commit) -> Bool { seqs[commit.author].map { commit.seq > $0 } ?? false }

    /// Why such a commit is refused.
    public func reason(_ commit: Commit) -> String {
        "its author's feed is cut off after seq \(seqs[commit.author] ?? 0) here (the site is revoked, or its feed forked)"
    }

    /// The authors of `held` whose feed holds more than its cut-off, with
    /// the cut-off: what a replica holding `held` must drop.
    public func excess(in held: VersionVector) -> [SiteID: UInt64] { seqs.filter { held[$0.key] > $0.value } }

    /// `held` as dependencies see it: a cut-off feed held up to its cut-off
    /// counts as holding every seq, since nothing past the cut-off will come.
    public func satisfying(_ held: VersionVector) -> VersionVector {
        var v = held
        for (author, seq) in seqs where held[author] >= seq { v[author] = .max }
        return v
    }
}
