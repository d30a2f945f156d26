import LodeCore
import Synchronization

/// Commits from elsewhere that cannot be applied yet (DESIGN §3): a gap in
/// their feed, a dependency not held, or an author whose certificate has
/// not arrived. They are offered again with the next batch for the same
/// dataset, and the buffer keeps at most `limit` per dataset, dropping the
/// oldest: a peer resends what a replica still lacks.
///
/// ```swift
/// let buffer = CausalBuffer(limit: 20_000)
/// let outcome = try await buffer.apply(commits, to: replica)
/// ```
public final class CausalBuffer: Sendable {
    /// The most commits kept per dataset.
    public let limit: Int
    private let waiting = Mutex<[String: [Commit]]>([:])

    /// Creates an empty buffer.
    public init(limit: Int) { self.limit = limit }

    /// Applies `commits` with those waiting for the same dataset (each
    /// once), and keeps back what must still wait.
    public func apply(_ commits: [Commit], to replica: some ReplicaStore) async throws -> ApplyOutcome {
        let dataset = replica.dataset
        let held = waiting.withLock { w in
            defer { w[dataset] = nil }
            return w[dataset] ?? []
        }
        var seen = Set<[UInt8]>()
        let batch = (held + commits).filter { seen.insert($0.hash).inserted }
        let outcome: ApplyOutcome
        do {
            outcome = try await replica.apply(batch)
        } catch {
            hold(held, dataset: dataset)
            throw error
        }
        hold(outcome.waiting, dataset: dataset)
        return outcome
    }

    private func hold(_ commits: [Commit], dataset: String) {
        guard !commits.isEmpty else { return }
        waiting.withLock { w in
            var keep = (w[dataset] ?? []) + commits
            if keep.count > limit { keep.removeFirst(keep.count - limit) }
            w[dataset] = keep
        }
    }

    /// How many commits wait for `dataset`.
    public func count(dataset: String) -> Int { waiting.withLock { $0[dataset]?.count ?? 0 } }
}
