import Crypto
import Foundation
import LodeCore

/// A checkpoint (DESIGN §12): "at version vector V the dataset's canonical
/// digest is D" (`CheckpointDigest`), with the sites that have signed it.
public struct Checkpoint: Sendable, Hashable {
    /// A site's signature: a row of `_checkpoints` written by that site, so
    /// signed by it as every commit is.
    public struct Signature: Sendable, Hashable {
        /// The signing site's key and name.
        public var site: SiteID
        public var name: String

        public init(site: SiteID, name: String) {
            self.site = site
            self.name = name
        }
    }

    /// Names the pair (V, D): `CheckpointRows.id`.
    public var id: String
    public var vector: VersionVector
    public var digest: [UInt8]
    /// How many rows the digest covers.
    public var rows: Int
    /// The sites that signed, by name.
    public var signatures: [Signature]

    public init(id: String, vector: VersionVector, digest: [UInt8], rows: Int, signatures: [Signature]) {
        self.id = id
        self.vector = vector
        self.digest = digest
        self.rows = rows
        self.signatures = signatures
    }

    /// The number of commits V covers.
    public var commits: UInt64 { vector.sorted.reduce(0) { $0 + $1.seq } }
}

/// What compacting a dataset did (`SQLReplicaStore.compact`).
public struct CompactionReport: Sendable, Codable, Equatable {
    /// The checkpoint compacted to.
    public var checkpoint: String
    /// Commits whose bytes were dropped from the log (their stamps, hashes
    /// and authors stay).
    public var commitsDropped = 0
    /// History entries dropped or emptied of cells no time after the
    /// horizon can show.
    public var historyEntriesDropped = 0
    /// Rows whose whole history now lies in their table row and clocks.
    public var rowsFolded = 0
    /// As-of queries and diffs reach back to here, no further.
    public var horizon: String
    public var bytesBefore: UInt64 = 0
    public var bytesAfter: UInt64 = 0

    public init(checkpoint: String, horizon: String) {
        self.checkpoint = checkpoint
        self.horizon = horizon
    }
}

/// What a replica found when it checked a checkpoint another site signed.
public enum CheckpointCheck: Sendable, Hashable {
    /// Its own digest at V is the same: it signed too.
    case signed(id: String)
    /// Its digest at V differs: it did not sign. The replicas disagree about
    /// the same commits, which the CRDT rules out; an operator must look.
    case differs(id: String, ours: [UInt8], theirs: [UInt8])
    /// It can no longer tell the dataset at V (its history was compacted
    /// past it): it neither signs nor disputes.
    case unavailable(id: String, reason: String)
}

/// How checkpoints are kept: rows of a system table, one per (checkpoint,
/// signing site), written and replicated like any row, so a signature
/// travels by sync and is signed by its commit. Every store writes and
/// reads them through these functions.
public enum CheckpointRows {
    /// The table.
    public static let table = "_checkpoints"

    /// Its definition: part of every dataset's system tables.
    public static let definition = TableDef(
        name: table, primaryKey: "id",
        columns: [
            ColumnDef(name: "checkpoint", type: .text),
            ColumnDef(name: "vector", type: .blob),
            ColumnDef(name: "digest", type: .text),
            ColumnDef(name: "rows", type: .integer),
            ColumnDef(name: "signer", type: .text),
        ])

    /// The id of (V, D): 32 hex digits of the SHA-256 of V's canonical
    /// encoding followed by D.
    public static func id(vector: VersionVector, digest: [UInt8]) -> String {
        String(Array(SHA256.hash(data: vector.encoded + digest)).hexString.prefix(32))
    }

    /// The key of `site`'s signature of checkpoint `id`.
    public static func key(id: String, site: SiteID) -> String { id + ":" + site.hex }

    /// The row that records `local`'s signature of (V, D).
    public static func signature(vector: VersionVector, digest: [UInt8], rows: Int, by local: LocalSite) -> RowEdit {
        let id = id(vector: vector, digest: digest)
        return .put(
            table: table, pk: key(id: id, site: local.site),
            columns: ["checkpoint", "vector", "digest", "rows", "signer"],
            values: [.text(id), .blob(vector.encoded), .text(digest.hexString), .integer(Int64(rows)), .text(local.name)])
    }

    /// Checks that `local` may sign: an editor site (DESIGN §12).
    public static func checkSigner(_ local: LocalSite) throws {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only editor sites sign checkpoints")
        }
    }

    /// Why `commit`'s writes to the checkpoint table are not allowed, or
    /// nil (DESIGN §9). A signature row is written whole, once, by the site
    /// its key names, under the id its own vector and digest give, naming
    /// its author; none is ever deleted.
    public static func violation(in commit: Commit, authorName: String) -> (kind: RejectionKind, reason: String)? {
        for op in commit.ops where op.table == table {
            switch op {
            case .put(let put):
                let wanted = definition.columns.map(\.name)
                guard Set(put.columns) == Set(wanted) else {
                    return (.invalid, "a checkpoint signature is written whole: \(wanted.joined(separator: ", "))")
                }
                let at = Dictionary(uniqueKeysWithValues: put.columns.enumerated().map { ($1, $0) })
                for i in 0..<put.rowCount {
                    let row = put.row(i)
                    func cell(_ c: String) -> Value { row[row.startIndex + at[c]!] }
                    let key = put.keys[i]
                    guard key.hasSuffix(":" + commit.author.hex) else {
                        return (.notAuthorized, "checkpoint signature \(key.prefix(80)) names a site other than the one that signed it")
                    }
                    guard case .blob(let v) = cell("vector"), let vector = try? VersionVector(decoding: v),
                        case .text(let hex) = cell("digest"), let digest = [UInt8](hex: hex), digest.count == 32, hex == digest.hexString,
                        case .integer(let rows) = cell("rows"), rows >= 0
                    else {
                        return (.invalid, "checkpoint signature \(key.prefix(80)) has no valid vector, digest and row count")
                    }
                    let id = id(vector: vector, digest: digest)
                    guard key == self.key(id: id, site: commit.author), cell("checkpoint") == .text(id) else {
                        return (.invalid, "checkpoint signature \(key.prefix(80)) is not filed under the id of its vector and digest")
                    }
                    guard cell("signer") == .text(authorName) else {
                        return (.invalid, "a checkpoint signature names a signer other than the site that signed it")
                    }
                    guard vector[commit.author] < commit.seq else {
                        return (.invalid, "a site's checkpoint cannot cover the commit that signs it")
                    }
                }
            case .delete:
                return (.notAuthorized, "checkpoint signatures are never deleted")
            default:
                continue
            }
        }
        return nil
    }
}

extension SQLReplicaStore {
    /// Signs a checkpoint at what this replica holds now: its vector V and
    /// its digest there. Signing the same (V, D) again writes nothing.
    public func signCheckpoint() async throws -> Checkpoint {
        try CheckpointRows.checkSigner(local)
        let v = vector
        let (digest, rows) = try await checkpointDigest(at: v)
        let id = CheckpointRows.id(vector: v, digest: digest)
        if try await !checkpoints().contains(where: { $0.id == id && $0.signatures.contains { $0.site == local.site } }) {
            try await sign(checkpointAt: v, digest: digest, rows: rows)
        }
        guard let signed = try await checkpoints().first(where: { $0.id == id }) else {
            throw StoreError(.storage, "the signature of checkpoint \(id) was written but cannot be read back")
        }
        return signed
    }

    /// The checkpoints signed so far by any site, the one covering the most
    /// commits first; each with the sites that signed it.
    public func checkpoints() async throws -> [Checkpoint] {
        let found = RowsCollector()
        try await query("SELECT id, checkpoint, vector, digest, rows, signer FROM \(CheckpointRows.table)") { event in
            if case .row(let r) = event { found.add(r) }
        }
        var byID: [String: Checkpoint] = [:]
        for r in found.rows {
            guard r.count == 6, case .text(let key) = r[0], case .text(let id) = r[1], case .blob(let v) = r[2],
                case .text(let hex) = r[3], case .integer(let rows) = r[4], case .text(let signer) = r[5],
                let colon = key.lastIndex(of: ":"), let keyBytes = [UInt8](hex: String(key[key.index(after: colon)...])),
                let site = try? SiteID(bytes: keyBytes),
                let vector = try? VersionVector(decoding: v), let digest = [UInt8](hex: hex)
            else { continue }
            byID[id, default: Checkpoint(id: id, vector: vector, digest: digest, rows: Int(rows), signatures: [])]
                .signatures.append(Checkpoint.Signature(site: site, name: signer))
        }
        return byID.values.map { c in
            var c = c
            c.signatures.sort { $0.name < $1.name }
            return c
        }.sorted { ($0.commits, $0.id) > ($1.commits, $1.id) }
    }

    /// Checks the checkpoints other sites signed and this one has not, once
    /// it holds their commits: where its own digest at V is the same, it
    /// signs too (co-signing, DESIGN §12). Nothing for a site that may not
    /// sign. `skipping` names checkpoints already checked (found to differ,
    /// or past this replica's history).
    public func cosignCheckpoints(skipping: Set<String> = []) async throws -> [CheckpointCheck] {
        guard local.role.canEdit else { return [] }
        var out: [CheckpointCheck] = []
        for c in try await checkpoints()
        where !skipping.contains(c.id) && !c.signatures.contains(where: { $0.site == local.site }) && vector.dominates(c.vector) {
            let ours: (digest: [UInt8], rows: Int)
            do {
                ours = try await checkpointDigest(at: c.vector)
            } catch let e as StoreError where e.code == .notFound {
                out.append(.unavailable(id: c.id, reason: e.message))
                continue
            }
            if ours.digest == c.digest {
                try await sign(checkpointAt: c.vector, digest: ours.digest, rows: ours.rows)
                out.append(.signed(id: c.id))
            } else {
                out.append(.differs(id: c.id, ours: ours.digest, theirs: c.digest))
            }
        }
        return out
    }
}

/// Rows a query callback collects (it runs on the store's own thread).
private final class RowsCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var collected: [[Value]] = []
    func add(_ row: [Value]) { lock.withLock { collected.append(row) } }
    var rows: [[Value]] { lock.withLock { collected } }
}
