import Crypto
import Foundation
import LodeCore
import LodeProtocol
import LodeSQLite
import LodeStore
import LodeSync
import Logging
import Metrics
import SwiftASN1
import Synchronization
import X509

extension Node {
    /// The cluster id: SHA-256 of the CA certificate (DER).
    public var cluster: [UInt8] {
        var s = DER.Serializer()
        try! s.serialize(identity.ca)
        return Array(SHA256.hash(data: s.serializedBytes))
    }

    /// The TLS identity for the peer port and remote clients.
    public func tls() throws -> SyncTLS {
        try SyncTLS(
            certificatePEM: try String(contentsOfFile: paths.siteCert, encoding: .utf8),
            keyPEM: try String(contentsOfFile: paths.siteKey, encoding: .utf8),
            caPEM: try String(contentsOfFile: paths.caCert, encoding: .utf8))
    }

    // MARK: Certificates of other sites

    /// Every site certificate this node knows (its own included), DER.
    public func knownCertificates() throws -> [[UInt8]] { try file.certificates() }

    /// The certificates other processes sharing this node's PostgreSQL
    /// database recorded and this node does not know yet, kept here once
    /// verified (as a peer's would be). Returns them, for the sync engine
    /// to pass on: a relay serves commits another relay stored, and its
    /// peers need their authors' certificates to verify them.
    public func adoptStoreCertificates() async throws -> [[UInt8]] {
        guard let postgres else { return [] }
        let known = Set(try knownCertificates())
        var adopted: [[UInt8]] = []
        for der in try await postgres.storedCertificates() where !known.contains(der) {
            if (try? await addCertificate(der)) == true { adopted.append(der) }
        }
        return adopted
    }

    /// Verifies a site certificate against the cluster CA and keeps it,
    /// telling every replica of the site. Returns true when it was new here
    /// (or renewed).
    @discardableResult
    public func addCertificate(_ der: [UInt8]) async throws -> Bool {
        let cert = try SiteCertificate(der: der)
        guard cert.certificate.issuer == identity.ca.subject,
            identity.ca.publicKey.isValidSignature(cert.certificate.signature, for: cert.certificate)
        else {
            throw NodeError(.rejected, "the certificate of \(cert.name) is not issued by this cluster's CA")
        }
        // A revoked site's certificate is kept too: its commits up to the
        // cut-offs must verify here as everywhere, or replicas would differ.
        // Past them they are refused, and TLS refuses the site.
        let revoked = revocation(of: cert)
        if revoked != nil { noteRevokedKey(cert.site) }
        // A renewed certificate (same key, later expiry) replaces the old one.
        let until = Int64(cert.certificate.notValidAfter.timeIntervalSince1970 * 1000)
        let changed = try file.keepCertificate(site: cert.site, der: der, validUntil: until)
        // Every replica must know the site, also if registering failed before.
        for name in datasetNames() {
            let r = try replica(name)
            let known = try await r.knowsSite(cert.site)
            if changed || !known { try await register(cert, in: r) }
        }
        // Notices kept before this key was known named its cut-offs in vain: count them now.
        if let revoked, changed { try await reconsiderNotices(of: revoked, key: cert.site) }
        return changed
    }

    /// Why a batch of commits did not bring a dataset into being.
    public struct CreationRefusal: Error, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// The replica of dataset `name` if this node holds it; otherwise a new
    /// one, when one of `commits` may bring it into being
    /// (`DatasetRules.refusalToCreate`), or why not.
    public func replica(_ name: String, orBroughtIntoBeingBy commits: [Commit]) async throws -> Result<any SQLReplicaStore, CreationRefusal> {
        if let r = try heldReplica(name) { return .success(r) }
        var roles: [SiteID: Role] = [:]
        for der in try knownCertificates() {
            if let c = try? SiteCertificate(der: der) { roles[c.site] = c.role }
        }
        var first: String?
        for c in commits {
            guard let refusal = DatasetRules.refusalToCreate(name, by: c, role: roles[c.author]) else {
                return .success(try await openOrCreate(name))
            }
            if first == nil { first = refusal }
        }
        return .failure(CreationRefusal(reason: first ?? "no commit"))
    }

    func register(_ cert: SiteCertificate, in replica: any ReplicaStore) async throws {
        try await replica.registerSite(cert.record)
    }
}

extension SiteCertificate {
    /// What a replica records of the site: name, role, certificate and its
    /// validity, against which the site's commits are checked.
    var record: SiteRecord {
        SiteRecord(
            site: site, name: name, role: role, certificate: der,
            validFrom: UInt64(max(0, certificate.notValidBefore.timeIntervalSince1970 * 1000)),
            validUntil: UInt64(max(0, certificate.notValidAfter.timeIntervalSince1970 * 1000)))
    }
}

/// The sync engine's view of a node: datasets, logs and certificates,
/// with a buffer for commits that arrive before what they depend on.
final class NodeSyncHost: SyncHost {
    /// Feeds frozen because their author signed two commits with one seq.
    static let forks = Counter(label: "lode_sync_feeds_frozen_forked_total")
    let node: Node
    let localSite: SiteID
    let cluster: [UInt8]
    /// Commits that could not be applied yet, per dataset.
    let waiting = CausalBuffer(bytesPerPeer: NodeSyncHost.waitingBytesPerPeer, commitsPerPeer: 20_000)
    /// What one peer's waiting commits may hold here (DESIGN §9).
    static let waitingBytesPerPeer = 16 << 20

    let logger: Logger
    /// Snapshots sent to and received from peers.
    let snapshots: SnapshotTransfers

    init(node: Node, logger: Logger = Logger(label: "lode.sync")) {
        self.node = node
        self.logger = logger
        snapshots = SnapshotTransfers(node: node)
        localSite = node.identity.local.site
        cluster = node.cluster
    }

    func datasetVectors() async throws -> [String: VersionVector] {
        var out: [String: VersionVector] = [:]
        for name in node.datasetNames() { out[name] = try node.replica(name).vector }
        return out
    }

    func missingCommits(dataset: String, after: VersionVector, maxBytes: Int, for peer: PeerIdentity) async throws -> [StoredCommit] {
        let replica = try node.replica(dataset)
        let batch = try await replica.missingCommits(after: after, maxBytes: maxBytes, maxCount: .max)
        // Commits compacted away cannot be sent once their bytes are gone
        // from memory too: a peer that lacks one is told of in `lode status`
        // and the log. A batch short of `maxBytes` holds every missing
        // commit this node can send, so a gap it leaves is one for good.
        if batch.reduce(0, { $0 + $1.bytes.count }) < maxBytes, let compacted = try await replica.compactedVector() {
            // The feeds whose next commit the peer needs is in the batch.
            let resumed = Set(batch.lazy.filter { $0.seq == after[$0.site] + 1 }.map(\.site))
            var missing: UInt64 = 0
            for e in compacted.sorted where e.seq > after[e.site] && !resumed.contains(e.site) { missing += e.seq - after[e.site] }
            if node.alerts.asked(dataset: dataset, peer: peer.site, name: peer.name, missing: missing, now: SQLiteReplica.systemWallClock()) {
                logger.warning(
                    "a peer cannot catch up from this node",
                    metadata: ["dataset": "\(dataset)", "peer": "\(peer.name)", "detail": "\(SiteAlerts.behindDetail(missing: missing))"])
            }
        }
        return batch
    }

    func apply(dataset: String, commits: [Commit], from peer: SiteID) async throws -> SyncApplyResult {
        let replica: any SQLReplicaStore
        switch try await node.replica(dataset, orBroughtIntoBeingBy: commits) {
        case .success(let r): replica = r
        case .failure(let refusal):
            // Nothing is kept: no file, no buffered commit, no session state.
            var firstSeq: [SiteID: UInt64] = [:]
            for c in commits { firstSeq[c.author] = min(firstSeq[c.author] ?? c.seq, c.seq) }
            let rejected = firstSeq.sorted { $0.key < $1.key }.map { site, seq in
                CommitRejection(site: site, seq: seq, code: .notAuthorized, reason: "dataset \(dataset) is not held here: \(refusal.reason)")
            }
            return SyncApplyResult(vector: VersionVector(), rejected: rejected, waiting: 0, held: false)
        }
        // A cut-off feed (revoked, or forked) reaches no replica: past the
        // cut-off a commit is refused; at or before it, this node holds the
        // seq already, so it is a duplicate or yet another fork, of which
        // the first is kept as evidence: dropped unread, so that a forking
        // site cannot fill the disk with evidence.
        var past: [SiteID: UInt64] = [:]
        let cutoff = node.cutoffs(dataset: dataset)
        let admitted =
            cutoff.map { cutoff in
                commits.filter { c in
                    guard let at = cutoff(c.author) else { return true }
                    if c.seq > at { past[c.author] = min(past[c.author] ?? c.seq, c.seq) }
                    return false
                }
            } ?? commits
        let outcome = try await waiting.apply(admitted, from: peer, to: replica)
        var rejected = outcome.rejected.map { r in
            CommitRejection(site: r.commit.author, seq: r.commit.seq, code: RejectCode(r.kind), reason: r.reason)
        }
        for (site, seq) in past.sorted(by: { $0.key < $1.key }) {
            let cutoff = cutoff?(site) ?? 0
            rejected.append(
                CommitRejection(
                    site: site, seq: seq, code: .notAuthorized,
                    reason: "the site's feed is cut off here (revoked, or it forked): its commits after seq \(cutoff) of this dataset are refused"))
        }
        // A fork proves the key signed two histories: freeze the feed before
        // the fork, pass both commits on, once, as evidence, and drop what
        // is held from the fork on, so that replicas that got different
        // copies first end alike: without either.
        var evidence: [[UInt8]] = []
        for r in outcome.rejected where r.kind == .forkedFeed && r.commit.author != localSite {
            let author = r.commit.author
            let held = replica.vector[author]
            // Two copies of one seq fork there; a commit naming another
            // previous one forks at the seq before it, at the latest.
            let at = (r.commit.seq <= held ? r.commit.seq : r.commit.seq - 1) - 1
            guard try node.freeze(dataset: dataset, author: author, at: at) else { continue }
            NodeSyncHost.forks.increment()
            var before = replica.vector
            before[author] = min(before[author], r.commit.seq - 1)
            if let copy = try await replica.commits(missingFrom: before, limit: 1_000).first(where: {
                $0.author == author && $0.seq == r.commit.seq
            }) {
                evidence += [copy.bytes, r.commit.bytes]
                try node.keepEvidence(dataset: dataset, author: author, held: copy.bytes, other: r.commit.bytes)
            }
            _ = try await replica.cut([author: at])
        }
        let vector = replica.vector
        let held = node.alerts.applied(dataset: dataset, held: outcome.aheadOfClock, vector: vector, now: SQLiteReplica.systemWallClock())
        let drift = SiteAlerts.duration(node.maxClockDrift)
        let ahead = held.sorted { $0.key < $1.key }.map { site, seq in
            CommitRejection(
                site: site, seq: seq, code: .clockAhead,
                reason: "stamped more than \(drift) ahead of this node's clock; held back until it catches up")
        }
        return SyncApplyResult(vector: vector, rejected: rejected, waiting: outcome.waiting.count, aheadOfClock: ahead, evidence: evidence)
    }

    // MARK: Snapshots (DESIGN §12)

    func snapshotOffer(dataset: String, peerHolds: VersionVector, for peer: PeerIdentity) async throws -> SnapshotOffer? {
        guard let replica = try node.heldReplica(dataset) as? SQLiteReplica, let compacted = try await replica.compactedVector(),
            !compacted.isEmpty, !peerHolds.dominates(compacted)
        else { return nil }
        return SnapshotOffer(vector: compacted, bytes: replica.bytesOnDisk)
    }

    func openSnapshot(dataset: String, session: UInt64) async throws -> UInt64 {
        try await snapshots.open(dataset: dataset, session: session)
    }

    func readSnapshot(dataset: String, session: UInt64, offset: UInt64, count: Int) async throws -> [UInt8] {
        try snapshots.read(dataset: dataset, session: session, offset: offset, count: count)
    }

    func beginSnapshot(dataset: String, vector: VersionVector, bytes: UInt64, from peer: PeerIdentity, session: UInt64) async throws {
        try snapshots.begin(dataset: dataset, vector: vector, total: bytes, from: peer.site, session: session)
    }

    func storeSnapshot(dataset: String, offset: UInt64, total: UInt64, bytes: [UInt8], session: UInt64) async throws {
        try snapshots.store(dataset: dataset, offset: offset, total: total, bytes: bytes, session: session)
    }

    func installSnapshot(dataset: String, session: UInt64) async throws -> String {
        let held = !(try node.heldReplica(dataset)?.vector.sorted.isEmpty ?? true)
        let report = try await snapshots.install(dataset: dataset, session: session)
        guard let checkpoint = report.snapshot else {
            // This node got what the snapshot covers elsewhere while it
            // travelled: its commits were applied as a restore's, nothing more.
            return "this node came to hold what the snapshot covers meanwhile: \(report.applied) of its commits applied"
        }
        return (held ? "merged the rows of checkpoint \(checkpoint) into the dataset held here" : "started from checkpoint \(checkpoint)")
            + ", then applied \(report.applied) commits after it"
            + (report.unapplied > 0 ? " (\(report.unapplied) wait for what they follow)" : "")
    }

    func releaseSnapshots(session: UInt64, dataset: String?) {
        snapshots.release(session: session, dataset: dataset)
    }

    func knownCertificates() async throws -> [[UInt8]] { try node.knownCertificates() }

    func revocationNotices() async throws -> [[UInt8]] { try node.revocationNotices() }

    func forkEvidence() async throws -> [(dataset: String, commits: [[UInt8]])] { try node.forkEvidence() }

    func takeRevocation(_ notice: [UInt8]) async throws -> RevocationTaken {
        let intake = try await node.receiveRevocation(notice)
        return RevocationTaken(forward: intake.forward, site: intake.site)
    }

    func identifyPeer(_ der: [UInt8]) throws -> PeerIdentity {
        let c = try SiteCertificate(der: der)
        if let r = node.revocation(of: c) {
            throw NodeError(.forbidden, "site \(c.name) is revoked (\(r.reason)): its connections are refused")
        }
        return PeerIdentity(site: c.site, name: c.name, role: c.role)
    }

    func addCertificates(_ ders: [[UInt8]]) async throws -> CertificateIntake {
        var intake = CertificateIntake(added: [], refused: [])
        for der in ders {
            do {
                if try await node.addCertificate(der) { intake.added.append(der) }
            } catch {
                intake.refused.append("\(error)")
            }
        }
        return intake
    }
}

extension RejectCode {
    /// The code a peer is told for a commit refused for `kind`.
    init(_ kind: RejectionKind) {
        switch kind {
        case .badSignature: self = .badSignature
        case .forkedFeed: self = .forkedFeed
        case .notAuthorized: self = .notAuthorized
        case .invalid: self = .invalidCommit
        }
    }
}

extension Node {
    /// The sync engine's view of this node, as `lode serve` hands it to its
    /// engine: for driving a session without a socket (`OfflineSession`).
    public func makeSyncHost() -> any SyncHost { NodeSyncHost(node: self) }
}
