import Foundation
import LodeCore
import LodeProtocol
import LodeStore
import Logging
import ServiceLifecycle

extension Node {
    /// How many editor sites must sign a checkpoint before this node counts
    /// it complete (`serve --checkpoint-quorum`, default 2; DESIGN §12).
    public var checkpointQuorum: Int { setting(Node.checkpointQuorumSetting).flatMap(Int.init) ?? 2 }

    static let checkpointQuorumSetting = "checkpoint_quorum"
    /// The largest quorum accepted.
    public static let maxCheckpointQuorum = 1000

    /// A dataset's checkpoints as the API shows them, the one covering the
    /// most commits first.
    func checkpoints(_ r: any SQLReplicaStore) async throws -> [API.Checkpoint] {
        let names = try await r.sites().reduce(into: [SiteID: String]()) { $0[$1.site] = $1.displayName }
        let quorum = checkpointQuorum
        return try await r.checkpoints().map { c in
            API.Checkpoint(
                id: c.id, vector: c.vector.sorted.map { API.VectorEntry(site: names[$0.site] ?? $0.site.short, key: $0.site.hex, seq: $0.seq) },
                commits: c.commits, digest: c.digest.hexString, rows: c.rows, signers: c.signatures.map(\.name), quorum: quorum)
        }
    }

    /// The history kept when a compaction names no span: 30 days.
    public static let defaultKeepHistory: UInt64 = 30 * 86_400

    /// Compacts dataset `r` to the newest checkpoint it holds that has the
    /// signatures `checkpointQuorum` asks for, keeping `keepHistory` seconds
    /// of history (DESIGN §12).
    func compact(_ r: any SQLReplicaStore, keepHistory: UInt64) async throws -> API.CompactionReport {
        let quorum = checkpointQuorum
        let held = r.vector
        let all = try await r.checkpoints()
        guard let c = all.first(where: { $0.signatures.count >= quorum && held.dominates($0.vector) }) else {
            let best = all.map(\.signatures.count).max() ?? 0
            throw NodeError(
                .badInput,
                all.isEmpty
                    ? "dataset \(r.dataset) has no checkpoint: sign one with lode checkpoint \(r.dataset) on an editor site; others co-sign as they sync"
                    : "no checkpoint of dataset \(r.dataset) has the \(quorum) signatures this node wants yet (the most is \(best)); editor sites co-sign as they sync"
            )
        }
        let (millis, overflow) = keepHistory.multipliedReportingOverflow(by: 1000)
        let report = try await r.compact(to: c, keepHistory: overflow ? .max : millis, vacuum: true)
        return API.CompactionReport(
            checkpoint: report.checkpoint, commitsDropped: report.commitsDropped, historyEntriesDropped: report.historyEntriesDropped,
            rowsFolded: report.rowsFolded, horizon: report.horizon, bytesBefore: report.bytesBefore, bytesAfter: report.bytesAfter)
    }

    /// Signs a checkpoint of dataset `r` at what this node holds now.
    func signCheckpoint(_ r: any SQLReplicaStore) async throws -> API.Checkpoint {
        let c = try await r.signCheckpoint()
        guard let shown = try await checkpoints(r).first(where: { $0.id == c.id }) else {
            throw NodeError(.storage, "checkpoint \(c.id) was signed but is not listed")
        }
        return shown
    }
}

/// Co-signs, on an editor node with SQLite datasets, the checkpoints other
/// sites signed once this node holds their commits and finds the same
/// digest (DESIGN §12): so signatures gather by sync alone. A checkpoint
/// whose digest differs here is logged as an error, once, and never signed.
struct CheckpointService: Service {
    let node: Node
    let interval: Duration
    let logger: Logger

    func run() async throws {
        guard node.identity.local.role.canEdit, node.postgres == nil else {
            // Nothing to do here; a service that returned would stop the node.
            try? await gracefulShutdown()
            return
        }
        try await cancelWhenGracefulShutdown {
            var checked: [String: Set<String>] = [:]
            while !Task.isCancelled {
                for name in node.datasetNames() {
                    guard let r = try? node.replica(name) else { continue }
                    do {
                        for check in try await r.cosignCheckpoints(skipping: checked[name] ?? []) {
                            switch check {
                            case .signed(let id):
                                logger.info("co-signed a checkpoint", metadata: ["dataset": "\(name)", "checkpoint": "\(id)"])
                            case .unavailable(let id, let reason):
                                checked[name, default: []].insert(id)
                                logger.info(
                                    "a checkpoint cannot be checked here",
                                    metadata: ["dataset": "\(name)", "checkpoint": "\(id)", "reason": "\(reason)"])
                            case .differs(let id, let ours, let theirs):
                                checked[name, default: []].insert(id)
                                logger.error(
                                    "a checkpoint's digest differs from this replica's at the same commits: not signed; compare the replicas",
                                    metadata: [
                                        "dataset": "\(name)", "checkpoint": "\(id)", "ours": "\(ours.hexString)", "theirs": "\(theirs.hexString)",
                                    ])
                            }
                        }
                    } catch {
                        logger.warning("could not check checkpoints", metadata: ["dataset": "\(name)", "error": "\(error)"])
                    }
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
