import LodeCore

/// The checks a commit from elsewhere passes before any of it is applied,
/// the same in every store (DESIGN §3 and §9): the dataset, its place in
/// its author's feed, its dependencies, the author's certificate (arrived,
/// valid when the commit was stamped, a role allowed to write every op),
/// the signature, and that only an annotation's author edits it, naming
/// itself (`AnnotationRows.violation`).
/// Cheap checks come first: a commit that must wait costs no signature check.
///
/// ```swift
/// switch try CommitVerifier.verify(commit, dataset: "d", head: head, held: vector,
///                                  author: record, heldHash: { seq in hashOfHeld(seq) }) {
/// case .apply(let past): …
/// case .duplicate, .wait: …
/// case .reject(let kind, let reason): …
/// }
/// ```
public enum CommitVerifier {
    /// What to do with a commit.
    public enum Verdict: Equatable, Sendable {
        /// Apply it: it is the next in its feed, everything it depends on is
        /// held, and it may be applied. `past` is its full causal past.
        case apply(past: VersionVector)
        /// It is held already (a replay or a duplicate): skip it.
        case duplicate
        /// It cannot be applied yet (a gap, a missing dependency, or an
        /// author whose certificate has not arrived): offer it again later.
        case wait
        /// Refuse it for good, keeping it aside with the reason.
        case reject(RejectionKind, String)
        /// Hold it back: it is stamped further ahead of this node's wall
        /// clock than the drift allows (DESIGN §9). It is neither applied
        /// nor kept, so its author's clock cannot drag this node's forward;
        /// offered again once the wall clock has caught up, it applies.
        case clockAhead
    }

    /// How far ahead of the wall clock a commit may be stamped by default: 10 minutes.
    public static let defaultMaxClockDrift: UInt64 = 600_000

    /// Allowed difference between a commit's clock and its author's
    /// certificate validity (clock drift between sites).
    public static let validitySlackMillis: UInt64 = 3_600_000

    /// Judges `commit` for a replica of `dataset` whose feed head for the
    /// author is `head` and which holds `held`. `author` is what the replica
    /// knows of the author (nil if nothing); `heldHash` gives the hash of
    /// the author's commit with a seq already held, to tell a duplicate
    /// from a fork. `now` is the wall clock (Unix milliseconds), and a
    /// commit stamped more than `maxDrift` milliseconds ahead of it is held.
    /// A commit past its author's cut-off (`cutoffs`) is refused, and a
    /// dependency on one counts as held (`FeedCutoffs.satisfying`).
    public static func verify(
        _ commit: Commit, dataset: String, head: FeedHead, held: VersionVector, author: SiteRecord?,
        now: UInt64, maxDrift: UInt64 = defaultMaxClockDrift, cutoffs: FeedCutoffs = FeedCutoffs(),
        heldHash: (UInt64) throws -> [UInt8]?
    ) rethrows -> Verdict {
        if commit.dataset != dataset {
            return .reject(.invalid, "commit is for dataset \(commit.dataset), not \(dataset)")
        }
        if cutoffs.refuses(commit) { return .reject(.notAuthorized, cutoffs.reason(commit)) }
        let past: VersionVector
        do {
            past = try FeedRules.check(commit, head: head, held: cutoffs.isEmpty ? held : cutoffs.satisfying(held))
        } catch {
            switch error {
            case .alreadyHeld:
                // The same seq with other bytes is tampering or a fork.
                guard let hash = try heldHash(commit.seq), hash != commit.hash else { return .duplicate }
                if !commit.hasValidSignature { return .reject(.badSignature, "bad signature on a copy of seq \(commit.seq)") }
                return .reject(.forkedFeed, "the author signed two different commits with seq \(commit.seq)")
            case .gap, .missingDependency:
                return .wait
            case .wrongPrevious:
                return .reject(.forkedFeed, "previous hash does not match the feed's head at seq \(head.seq): a forked or altered feed")
            }
        }
        guard let author, let role = author.role else { return .wait }
        guard commit.hasValidSignature else { return .reject(.badSignature, "bad signature") }
        let (limit, overflow) = now.addingReportingOverflow(maxDrift)
        if !overflow && commit.hlc.millis > limit { return .clockAhead }
        if let outside = Self.outsideValidity(commit, author) { return .reject(.notAuthorized, outside) }
        if case .defineTable(let def)? = commit.ops.first(where: { Identifier.isReserved($0.table) && $0.isDefinition }) {
            return .reject(.invalid, "table name \(def.name) is reserved")
        }
        if let op = commit.ops.first(where: { !role.permits($0) }) {
            return .reject(.notAuthorized, "author \(commit.author.short) is a \(role.rawValue) and may not write table \(op.table)")
        }
        if let violation = AnnotationRows.violation(in: commit, authorName: author.name ?? "")
            ?? CheckpointRows.violation(in: commit, authorName: author.name ?? "")
        {
            return .reject(violation.kind, violation.reason)
        }
        return .apply(past: past)
    }

    /// Why `commit` is stamped outside its author's certificate validity
    /// (give or take `validitySlackMillis`), or nil.
    public static func outsideValidity(_ commit: Commit, _ author: SiteRecord) -> String? {
        let millis = commit.hlc.millis
        if let from = author.validFrom, millis + validitySlackMillis < from {
            return "commit is stamped before its author's certificate was valid"
        }
        if let until = author.validUntil, millis > until + validitySlackMillis {
            return "commit is stamped after its author's certificate expired"
        }
        return nil
    }
}

extension ApplyOutcome {
    /// Offers each commit to `applyOne` (which verifies and, on `.apply`,
    /// applies it), in order; then offers again the ones that waited, while
    /// that makes progress, since a batch may come out of causal order.
    /// What still waits is returned in `waiting`; commits stamped too far
    /// ahead in `aheadOfClock`.
    public static func collecting(_ commits: [Commit], _ applyOne: (Commit) throws -> CommitVerifier.Verdict) rethrows -> ApplyOutcome {
        var outcome = ApplyOutcome()
        var pending = commits
        var progress = true
        while progress {
            progress = false
            var next: [Commit] = []
            for commit in pending {
                switch try applyOne(commit) {
                case .apply:
                    outcome.applied.append(commit)
                    progress = true
                case .duplicate: outcome.duplicates += 1
                case .wait: next.append(commit)
                case .reject(let kind, let reason): outcome.rejected.append(Rejection(commit: commit, kind: kind, reason: reason))
                case .clockAhead: outcome.aheadOfClock.append(commit)
                }
            }
            pending = next
        }
        outcome.waiting = pending
        return outcome
    }

    /// The same, for a store whose `applyOne` awaits (the database is a
    /// server). Keep the two in step.
    public static func collecting(
        _ commits: [Commit], _ applyOne: (Commit) async throws -> CommitVerifier.Verdict
    ) async rethrows -> ApplyOutcome {
        var outcome = ApplyOutcome()
        var pending = commits
        var progress = true
        while progress {
            progress = false
            var next: [Commit] = []
            for commit in pending {
                switch try await applyOne(commit) {
                case .apply:
                    outcome.applied.append(commit)
                    progress = true
                case .duplicate: outcome.duplicates += 1
                case .wait: next.append(commit)
                case .reject(let kind, let reason): outcome.rejected.append(Rejection(commit: commit, kind: kind, reason: reason))
                case .clockAhead: outcome.aheadOfClock.append(commit)
                }
            }
            pending = next
        }
        outcome.waiting = pending
        return outcome
    }
}
