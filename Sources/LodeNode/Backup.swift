import Foundation
import LodeCore
import LodeProtocol
import LodeSQLite
import LodeStore

extension Node {
    /// The most commits a restore holds back waiting for what they follow.
    static let restoreWaitingLimit = 100_000

    /// Writes a consistent copy of dataset `name` to a new file at `path`
    /// while the node keeps serving and syncing.
    public func backup(_ name: String, to path: String) async throws {
        try await backup(try replica(name), to: path)
    }

    func backup(_ replica: any SQLReplicaStore, to path: String) async throws {
        guard let r = replica as? SQLiteReplica else {
            throw NodeError(.badInput, "backup copies SQLite datasets; back up a PostgreSQL store with pg_dump")
        }
        try await r.backup(to: path)
    }

    /// Brings the dataset of a backup file (`backup`) onto this node: the
    /// certificates it carries are verified against the cluster CA, and its
    /// commits are applied as any peer's are, each verified (signature,
    /// feed, author's role and certificate, cut-offs). A dataset this node
    /// lacks comes into being only if the backup's commits may create it
    /// (as through sync); one it holds gains the commits it lacks.
    public func restore(from path: String) async throws -> API.RestoreReport {
        let file = try BackupFile(path: path)
        var report = API.RestoreReport(dataset: file.dataset)
        report.commits = file.commitCount
        func note(_ reason: String) { if report.reasons.count < 10 { report.reasons.append(reason) } }
        for der in file.certificates {
            do {
                if try await addCertificate(der) { report.certificatesAdded += 1 }
            } catch {
                note("a certificate was refused: \(error)")
            }
        }
        var replica = try heldReplica(file.dataset)
        var waiting: [Commit] = []
        func apply(_ commits: [Commit], to r: any SQLReplicaStore) async throws {
            let outcome = try await r.apply(commits)
            report.applied += outcome.applied.count
            report.alreadyHeld += outcome.duplicates
            report.refused += outcome.rejected.count
            for rejection in outcome.rejected { note("commit \(rejection.commit.seq) of \(rejection.commit.author.short): \(rejection.reason)") }
            waiting = outcome.waiting + outcome.aheadOfClock
        }
        try await file.commits { batch in
            if replica == nil {
                switch try await self.replica(file.dataset, orBroughtIntoBeingBy: batch) {
                case .success(let r): replica = r
                case .failure(let refusal):
                    throw NodeError(.rejected, "the backup cannot bring dataset \(file.dataset) into being here: \(refusal.reason)")
                }
            }
            try await apply(waiting + batch, to: replica!)
            guard waiting.count <= Self.restoreWaitingLimit else {
                throw NodeError(.badInput, "more than \(Self.restoreWaitingLimit) of the backup's commits follow commits it does not hold")
            }
        }
        // Commits that arrived before what they follow, once more.
        while let r = replica, !waiting.isEmpty {
            let before = waiting.count
            try await apply(waiting, to: r)
            if waiting.count >= before { break }
        }
        report.unapplied = waiting.count
        if report.unapplied > 0 { note("\(report.unapplied) commits follow commits neither the backup nor this node holds") }
        return report
    }
}
