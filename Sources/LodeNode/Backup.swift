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
    /// `expecting`: the dataset the file must hold (a snapshot a peer sent).
    public func restore(from path: String, expecting: String? = nil) async throws -> API.RestoreReport {
        let file = try BackupFile(path: path)
        if let expecting, file.dataset != expecting {
            throw NodeError(.rejected, "the snapshot offered as \(expecting) holds dataset \(file.dataset)")
        }
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
        var lacksCompacted = true
        if let r = replica, !r.vector.sorted.isEmpty {
            lacksCompacted = try file.compactedVector().map { !r.vector.dominates($0) } ?? false
        }
        if try file.compactedCommits() > 0, lacksCompacted {
            // Its commits up to a checkpoint are gone, and this node lacks
            // some of them: start from its rows there, or merge them in.
            let (checkpoint, r) = try await takeSnapshot(file, into: replica)
            replica = r
            report.snapshot = checkpoint
        }
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

    /// Starts dataset `file.dataset` from a compacted backup (DESIGN §12),
    /// or, when this node holds it (`held`) but lacks commits the backup
    /// compacted away, merges the backup's rows in: among the checkpoints whose
    /// signatures the backup's commits carry, each commit verified here
    /// (its signature, and its author an editor this node knows by a
    /// certificate from the cluster CA, valid then and not revoked), the
    /// newest with this node's quorum of signatures; the backup's rows at
    /// it are checked against the signed digest, computed here, before they
    /// are installed or merged (`SQLiteReplica.installSnapshot`,
    /// `mergeSnapshot`). Returns the checkpoint and the replica.
    func takeSnapshot(_ file: BackupFile, into held: (any SQLReplicaStore)?) async throws -> (String, any SQLReplicaStore) {
        guard postgres == nil else {
            throw NodeError(.badInput, "a compacted backup starts or catches up an SQLite dataset; this node keeps its datasets in PostgreSQL")
        }
        try file.checkShapes()
        var certificates: [SiteID: SiteCertificate] = [:]
        for der in try knownCertificates() {
            if let c = try? SiteCertificate(der: der) { certificates[c.site] = c }
        }
        var found: [String: Checkpoint] = [:]
        try await file.commits { batch in
            for c in batch where c.dataset == file.dataset && c.ops.contains(where: { $0.table == CheckpointRows.table }) {
                guard let cert = certificates[c.author], cert.role == .editor, !self.isRevoked(c.author), c.hasValidSignature else { continue }
                guard CommitVerifier.outsideValidity(c, cert.record) == nil, CheckpointRows.violation(in: c, authorName: cert.name) == nil
                else { continue }
                for case .put(let put) in c.ops where put.table == CheckpointRows.table {
                    guard let v = put.columns.firstIndex(of: "vector"), let d = put.columns.firstIndex(of: "digest") else { continue }
                    for i in 0..<put.rowCount {
                        let row = put.row(i)
                        guard case .blob(let bytes) = row[row.startIndex + v], let vector = try? VersionVector(decoding: bytes),
                            case .text(let hex) = row[row.startIndex + d], let digest = [UInt8](hex: hex)
                        else { continue }
                        let id = CheckpointRows.id(vector: vector, digest: digest)
                        var checkpoint = found[id] ?? Checkpoint(id: id, vector: vector, digest: digest, rows: 0, signatures: [])
                        if !checkpoint.signatures.contains(where: { $0.site == c.author }) {
                            checkpoint.signatures.append(Checkpoint.Signature(site: c.author, name: cert.name))
                        }
                        found[id] = checkpoint
                    }
                }
            }
        }
        let quorum = checkpointQuorum
        let complete = found.values.filter { $0.signatures.count >= quorum }.sorted { ($0.commits, $0.id) > ($1.commits, $1.id) }
        guard let c = complete.first else {
            throw NodeError(
                .rejected,
                "the backup's log was compacted, and it carries no checkpoint with the \(quorum) signatures this node wants (the most is \(found.values.map(\.signatures.count).max() ?? 0)): this node cannot start dataset \(file.dataset) from it"
            )
        }
        let computed = try file.digest(at: c.vector)
        guard computed.digest == c.digest else {
            throw NodeError(
                .rejected, "the backup's rows at checkpoint \(c.id) do not have the digest its signers signed: the file was altered or is damaged")
        }
        let r: any SQLReplicaStore
        if let held { r = held } else { r = try await openOrCreate(file.dataset) }
        guard let sqlite = r as? SQLiteReplica else { throw NodeError(.badInput, "a snapshot starts an SQLite dataset") }
        if held == nil || sqlite.vector.sorted.isEmpty {
            _ = try await sqlite.installSnapshot(from: file, at: c.vector, digest: c.digest)
        } else {
            _ = try await sqlite.mergeSnapshot(from: file, at: c.vector, digest: c.digest)
        }
        notifyChange()
        return (c.id, r)
    }
}
