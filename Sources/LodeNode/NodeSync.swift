import Crypto
import Foundation
import GRDB
import LodeCore
import LodeProtocol
import LodeStore
import LodeSync
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
    public func knownCertificates() throws -> [[UInt8]] {
        try settingsQueue.read { db in try Data.fetchAll(db, sql: "SELECT der FROM certificates ORDER BY site").map { [UInt8]($0) } }
    }

    /// Verifies a site certificate against the cluster CA and keeps it.
    /// Returns the certificate's reading, and whether it was new.
    @discardableResult
    public func addCertificate(_ der: [UInt8]) async throws -> (SiteCertificate, Bool) {
        let cert = try SiteCertificate(der: der)
        guard cert.certificate.issuer == identity.ca.subject,
            identity.ca.publicKey.isValidSignature(cert.certificate.signature, for: cert.certificate)
        else {
            throw NodeError(.rejected, "the certificate of \(cert.name) is not issued by this cluster's CA")
        }
        // A renewed certificate (same key, later expiry) replaces the old one.
        let until = Int64(cert.certificate.notValidAfter.timeIntervalSince1970 * 1000)
        let changed = try await settingsQueue.write { db -> Bool in
            try db.execute(
                sql: """
                    INSERT INTO certificates(site, der, valid_until) VALUES (?, ?, ?)
                    ON CONFLICT(site) DO UPDATE SET der = excluded.der, valid_until = excluded.valid_until
                    WHERE excluded.valid_until > certificates.valid_until
                    """, arguments: [Data(cert.site.bytes), Data(der), until])
            return db.changesCount > 0
        }
        // Every replica must know the site, also if registering failed before.
        for name in datasetNames() {
            let r = try replica(name)
            let known = try await r.knowsSite(cert.site)
            if changed || !known { try await register(cert, in: r) }
        }
        return (cert, changed)
    }

    func register(_ cert: SiteCertificate, in replica: Replica) async throws {
        try await replica.registerSite(
            SiteRecord(
                site: cert.site, name: cert.name, role: cert.role, certificate: cert.der,
                validFrom: UInt64(max(0, cert.certificate.notValidBefore.timeIntervalSince1970 * 1000)),
                validUntil: UInt64(max(0, cert.certificate.notValidAfter.timeIntervalSince1970 * 1000))))
    }

    /// Opens a dataset, creating an empty replica when it is new here (a
    /// dataset first heard of from a peer), and tells it every known site.
    public func openOrCreate(_ name: String) async throws -> Replica {
        guard Identifier.isValidDataset(name) else { throw NodeError(.badInput, "\"\(name)\" is not a dataset name") }
        if let r = try? replica(name) { return r }
        let created = try opened(name)
        for der in try knownCertificates() { try await register(try SiteCertificate(der: der), in: created) }
        notifyChange()
        return created
    }
}

/// The sync engine's view of a node: datasets, logs and certificates,
/// with a buffer for commits that arrive before what they depend on.
final class NodeSyncHost: SyncHost {
    let node: Node
    let localSite: SiteID
    let cluster: [UInt8]
    /// Commits that could not be applied yet, per dataset (bounded).
    private let waiting = Mutex<[String: [Commit]]>([:])
    static let maxWaiting = 20_000

    init(node: Node) {
        self.node = node
        localSite = node.identity.local.site
        cluster = node.cluster
    }

    func datasetVectors() async throws -> [String: VersionVector] {
        var out: [String: VersionVector] = [:]
        for name in node.datasetNames() { out[name] = try node.replica(name).vector }
        return out
    }

    func openDataset(_ name: String) async throws -> VersionVector {
        try await node.openOrCreate(name).vector
    }

    func missingCommits(dataset: String, after: VersionVector, maxBytes: Int) async throws -> [(site: SiteID, seq: UInt64, bytes: [UInt8])] {
        try await node.replica(dataset).missingCommits(after: after, maxBytes: maxBytes)
    }

    func apply(dataset: String, commits: [Commit]) async throws -> SyncApplyResult {
        let replica = try await node.openOrCreate(dataset)
        let held = waiting.withLock { w in
            defer { w[dataset] = nil }
            return w[dataset] ?? []
        }
        var seen = Set<[UInt8]>()
        let batch = (held + commits).filter { seen.insert($0.hash).inserted }
        let outcome = try await replica.apply(batch)
        waiting.withLock { w in
            var keep = (w[dataset] ?? []) + outcome.waiting
            if keep.count > NodeSyncHost.maxWaiting { keep.removeFirst(keep.count - NodeSyncHost.maxWaiting) }
            w[dataset] = keep.isEmpty ? nil : keep
        }
        let rejected = outcome.rejected.map { r -> (site: SiteID, seq: UInt64, code: RejectCode, message: String) in
            let code: RejectCode =
                switch r.kind {
                case .badSignature: .badSignature
                case .forkedFeed: .gapInFeed
                case .notAuthorized: .notAuthorized
                case .invalid: .invalidCommit
                }
            return (r.commit.author, r.commit.seq, code, r.reason)
        }
        return SyncApplyResult(vector: replica.vector, rejected: rejected, waiting: outcome.waiting.count)
    }

    func knownCertificates() async throws -> [[UInt8]] { try node.knownCertificates() }

    func identifyPeer(_ der: [UInt8]) throws -> PeerIdentity {
        let c = try SiteCertificate(der: der)
        return PeerIdentity(site: c.site, name: c.name, role: c.role)
    }

    func addCertificates(_ ders: [[UInt8]]) async throws -> (added: [[UInt8]], refused: [String]) {
        var added: [[UInt8]] = []
        var refused: [String] = []
        for der in ders {
            do {
                let (_, isNew) = try await node.addCertificate(der)
                if isNew { added.append(der) }
            } catch {
                refused.append("\(error)")
            }
        }
        return (added, refused)
    }
}
