import LodeCore
import Synchronization

/// Batches of commits from several peers applied in one transaction (group
/// commit), by the SQLite and the PostgreSQL store alike. Each batch waits
/// in a queue; one drain task at a time takes everything waiting (about
/// `maxBytes`) and applies it together, so a relay with many sessions pays
/// a transaction's fixed cost (the fsync of its commit; on PostgreSQL also
/// the lock, the re-read and the round trips writing out each table) once
/// per group instead of once per session. Each batch still gets its own
/// outcome.
///
/// When a group of several fails for any reason but the store being
/// unavailable (PostgreSQL down), its batches are applied again one by one,
/// so a batch that cannot be stored fails alone and does not hold the
/// others back.
public final class GroupCommit: Sendable {
    public typealias Apply = @Sendable ([[Commit]]) async throws -> [ApplyOutcome]

    private struct Request {
        let commits: [Commit]
        let done: CheckedContinuation<ApplyOutcome, any Error>
    }

    private let maxBytes: Int
    private let state = Mutex<(draining: Bool, queue: [Request])>((false, []))

    public init(maxBytes: Int = 8 << 20) { self.maxBytes = maxBytes }

    /// Applies `commits`, in a transaction shared with the batches waiting
    /// beside it; `apply` applies a group of batches in one transaction
    /// and returns their outcomes in order (the same function on every call).
    public func submit(_ commits: [Commit], apply: @escaping Apply) async throws -> ApplyOutcome {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<ApplyOutcome, any Error>) in
            let start = state.withLock { s -> Bool in
                s.queue.append(Request(commits: commits, done: done))
                if s.draining { return false }
                s.draining = true
                return true
            }
            if start { Task { await self.drain(apply) } }
        }
    }

    /// How many batches wait for the next group.
    public var waiting: Int { state.withLock { $0.queue.count } }

    /// Applies groups until nothing waits.
    private func drain(_ apply: Apply) async {
        while true {
            let group = state.withLock { s -> [Request] in
                var taken = 0
                var bytes = 0
                while taken < s.queue.count && (taken == 0 || bytes < maxBytes) {
                    bytes += s.queue[taken].commits.reduce(0) { $0 + $1.bytes.count }
                    taken += 1
                }
                let group = Array(s.queue.prefix(taken))
                s.queue.removeFirst(taken)
                if group.isEmpty { s.draining = false }
                return group
            }
            if group.isEmpty { return }
            do {
                let outcomes = try await apply(group.map(\.commits))
                for (r, o) in zip(group, outcomes) { r.done.resume(returning: o) }
            } catch {
                guard group.count > 1, (error as? StoreError)?.code != .unavailable else {
                    for r in group { r.done.resume(throwing: error) }
                    continue
                }
                for r in group {
                    do { r.done.resume(returning: try await apply([r.commits])[0]) } catch { r.done.resume(throwing: error) }
                }
            }
        }
    }
}
