import LodeCore
import Synchronization

/// Commits from elsewhere that cannot be applied yet (DESIGN §3): a gap in
/// their feed, a dependency not held, or an author whose certificate has
/// not arrived. They are offered again with the next batch for the same
/// dataset, from any peer.
///
/// The buffer is bounded per peer (DESIGN §9): what one peer's commits may
/// hold here, over all datasets, is at most `bytesPerPeer` bytes of commits
/// and `commitsPerPeer` commits; beyond that its newest waiting commits are
/// dropped (a peer resends what a replica still lacks). A commit enters
/// only with a valid signature, checked once as it enters: a forgery waits
/// for nothing.
///
/// ```swift
/// let buffer = CausalBuffer(bytesPerPeer: 16 << 20, commitsPerPeer: 20_000)
/// let outcome = try await buffer.apply(commits, from: peer, to: replica)
/// ```
public final class CausalBuffer: Sendable {
    /// The most bytes of commits kept for one peer.
    public let bytesPerPeer: Int
    /// The most commits kept for one peer.
    public let commitsPerPeer: Int

    struct Held: Sendable {
        var commit: Commit
        var from: SiteID
    }
    struct Use: Sendable {
        var bytes = 0
        var commits = 0
    }
    struct State: Sendable {
        var held: [String: [Held]] = [:]
        var use: [SiteID: Use] = [:]

        mutating func take(_ dataset: String) -> [Held] {
            let out = held.removeValue(forKey: dataset) ?? []
            for h in out { release(h) }
            return out
        }

        mutating func release(_ h: Held) {
            use[h.from, default: Use()].bytes -= h.commit.bytes.count
            use[h.from, default: Use()].commits -= 1
            if use[h.from]!.commits == 0 { use[h.from] = nil }
        }
    }
    private let state = Mutex(State())

    /// Creates an empty buffer.
    public init(bytesPerPeer: Int, commitsPerPeer: Int) {
        self.bytesPerPeer = bytesPerPeer
        self.commitsPerPeer = commitsPerPeer
    }

    /// Applies `commits`, received from `peer`, with those waiting for the
    /// same dataset (each once), and keeps back what must still wait.
    public func apply(_ commits: [Commit], from peer: SiteID, to replica: some ReplicaStore) async throws -> ApplyOutcome {
        let dataset = replica.dataset
        let held = state.withLock { $0.take(dataset) }
        var seen = Set<[UInt8]>()
        var origin: [[UInt8]: SiteID] = [:]
        var fresh = Set<[UInt8]>()
        var batch: [Commit] = []
        batch.reserveCapacity(held.count + commits.count)
        for h in held where seen.insert(h.commit.hash).inserted {
            batch.append(h.commit)
            origin[h.commit.hash] = h.from
        }
        for c in commits where seen.insert(c.hash).inserted {
            batch.append(c)
            origin[c.hash] = peer
            fresh.insert(c.hash)
        }
        let outcome: ApplyOutcome
        do {
            outcome = try await replica.apply(batch)
        } catch {
            hold(held, dataset: dataset)
            throw error
        }
        var keep: [Held] = []
        for c in outcome.waiting {
            // Signatures are checked as commits enter, once each.
            if fresh.contains(c.hash) && !c.hasValidSignature { continue }
            keep.append(Held(commit: c, from: origin[c.hash] ?? peer))
        }
        hold(keep, dataset: dataset)
        return outcome
    }

    /// Keeps what each peer's budget allows, in order.
    private func hold(_ commits: [Held], dataset: String) {
        guard !commits.isEmpty else { return }
        state.withLock { s in
            var list = s.held[dataset] ?? []
            for h in commits {
                let use = s.use[h.from] ?? Use()
                guard use.commits < commitsPerPeer, use.bytes + h.commit.bytes.count <= bytesPerPeer else { continue }
                s.use[h.from] = Use(bytes: use.bytes + h.commit.bytes.count, commits: use.commits + 1)
                list.append(h)
            }
            s.held[dataset] = list.isEmpty ? nil : list
        }
    }

    /// How many commits wait for `dataset`.
    public func count(dataset: String) -> Int { state.withLock { $0.held[dataset]?.count ?? 0 } }

    /// The bytes of commits held for `peer`, over all datasets.
    public func bytes(from peer: SiteID) -> Int { state.withLock { $0.use[peer]?.bytes ?? 0 } }
}
