import Crypto
import Foundation
import LodeCore
import LodePostgres
import LodeProtocol
import LodeSQLite
import LodeStore
import Synchronization
import X509

/// Where a node keeps its files.
public struct NodePaths: Sendable {
    /// The data directory.
    public let dataDir: String
    public init(_ dataDir: String) { self.dataDir = dataDir }
    /// Settings and peers.
    public var nodeDB: String { dataDir + "/node.db" }
    /// The site's private key (0600).
    public var siteKey: String { dataDir + "/site.key" }
    /// The site's certificate.
    public var siteCert: String { dataDir + "/site.pem" }
    /// The cluster CA's certificate.
    public var caCert: String { dataDir + "/ca.pem" }
    /// One SQLite file per dataset.
    public var datasets: String { dataDir + "/datasets" }
    /// The client API's Unix socket.
    public var socket: String { dataDir + "/lode.sock" }
    /// Spooled uploads.
    public var tmp: String { dataDir + "/tmp" }
    /// Held while a node runs, so that two never share a directory.
    public var lock: String { dataDir + "/lode.lock" }
    /// The development CA a node creates for itself.
    public var devCA: String { dataDir + "/dev-ca" }

    /// The file of dataset `name`.
    public func dataset(_ name: String) -> String { datasets + "/" + name + ".db" }
}

/// A node's identity, loaded from its data directory.
public struct NodeIdentity: Sendable {
    /// What the certificate says.
    public let certificate: SiteCertificate
    /// The cluster CA.
    public let ca: Certificate
    /// The site's key.
    public let key: Curve25519.Signing.PrivateKey

    /// The site as a writer of commits.
    public var local: LocalSite {
        LocalSite(writer: FeedWriter(key: key), name: certificate.name, role: certificate.role, certificate: certificate.der)
    }
}

/// A node: its identity, settings and dataset replicas.
///
/// ```swift
/// try Node.initialize(dataDir: dir, site: "lab", role: .editor, caDir: caDir)
/// let node = try Node.open(dataDir: dir)
/// let replica = try node.replica("rare-earths")
/// ```
public final class Node: Sendable {
    /// The node's files.
    public let paths: NodePaths
    /// Who the node is.
    public let identity: NodeIdentity
    /// Settings, peers and certificates.
    let file: NodeFile
    /// The datasets, each open once.
    private let catalog: any DatasetCatalog
    private let changes: ChangeRelay
    /// How far ahead of this node's wall clock (milliseconds) a commit from
    /// elsewhere may be stamped and still apply at once (DESIGN §9).
    public let maxClockDrift: UInt64
    /// What this node has noticed about other sites' feeds.
    let alerts = SiteAlerts()
    /// Where the workspace listens (`host:port`) while it does; nil when
    /// it is off or not yet listening.
    let webAddress = Mutex<String?>(nil)

    /// The workspace's address (`http://HOST:PORT`) while it listens.
    public var workspaceURL: String? { webAddress.withLock { $0 }.map { "http://\($0)" } }
    /// Revocations handed in here, the cut-offs they fixed (and forks'), and
    /// the keys of revoked sites (whose feeds in datasets without a cut-off
    /// are cut off at 0).
    private let revoked = Mutex<(records: [Revocation], cutoffs: [String: [SiteID: UInt64]], keys: Set<SiteID>)>(([], [:], []))

    /// Calls the change handler. The handler sits in a class, not in the
    /// mutex itself: a closure kept directly in a `Mutex` (generic storage)
    /// is read through `withLock`'s `inout` access, which wraps it in a pair
    /// of reabstraction thunks and writes the wrapped closure back
    /// (swiftlang/swift#91348, also at -O). Every notification made the
    /// chain longer: after 100,000 commits, calling it was most of a node's
    /// CPU, its memory kept growing, and enough commits would overflow the
    /// stack (`lode-faults load --api` found it).
    private final class ChangeRelay: Sendable {
        private final class Handler: Sendable {
            let call: @Sendable () -> Void
            init(_ call: @escaping @Sendable () -> Void) { self.call = call }
        }
        private let handler = Mutex<Handler?>(nil)
        func set(_ f: @escaping @Sendable () -> Void) {
            let h = Handler(f)
            handler.withLock { $0 = h }
        }
        func notify() { handler.withLock { $0 }?.call() }
    }

    /// Sets what to call whenever any replica gains commits or a dataset
    /// appears (the sync engine's wake-up).
    public func onChange(_ f: @escaping @Sendable () -> Void) { changes.set(f) }

    func notifyChange() { changes.notify() }

    /// The software version.
    public static let version = "0.1.0"

    private init(
        paths: NodePaths, identity: NodeIdentity, file: NodeFile, maxClockDrift: UInt64, store: (any DatasetCatalog)?, changes: ChangeRelay
    ) {
        self.paths = paths
        self.maxClockDrift = maxClockDrift
        self.identity = identity
        self.file = file
        let records = ((try? file.revocations()) ?? []).compactMap { try? Revocation.decode($0) }
        var cutoffs: [String: [SiteID: UInt64]] = [:]
        for c in (try? file.cutoffs()) ?? [] { cutoffs[c.dataset, default: [:]][c.author] = c.seq }
        let keys = ((try? file.certificates()) ?? []).compactMap { try? SiteCertificate(der: $0) }.filter { c in
            records.contains { $0.covers(c) }
        }.map(\.site)
        revoked.withLock { $0 = (records, cutoffs, Set(keys)) }
        self.changes = changes
        catalog =
            store
            ?? SQLiteCatalog(
                directory: paths.datasets, local: identity.local, maxClockDrift: maxClockDrift,
                onOpen: { replica in
                    // Every commit a replica gains (local or from a peer) wakes sync.
                    replica.addObserver { _ in changes.notify() }
                })
    }

    /// The PostgreSQL database holding this node's datasets, when it keeps
    /// them there (`lode serve --store`).
    public var postgres: PostgresCatalog? { catalog as? PostgresCatalog }

    /// True when `dataDir` holds a node.
    public static func exists(dataDir: String) -> Bool {
        FileManager.default.fileExists(atPath: NodePaths(dataDir).siteKey)
    }

    /// Creates a node in `dataDir`: a site key, a certificate for the site
    /// and role signed by the CA in `caDir`, the CA certificate, and the
    /// node database. Refuses to overwrite anything.
    @discardableResult
    public static func initialize(dataDir: String, site: String, role: Role, caDir: String) throws -> SiteCertificate {
        makeFilesPrivate()
        let paths = NodePaths(dataDir)
        for p in [paths.siteKey, paths.siteCert, paths.nodeDB] where FileManager.default.fileExists(atPath: p) {
            throw NodeError(.alreadyExists, "\(dataDir) already holds a node (\(p) exists); refusing to overwrite it")
        }
        try Identity.checkName(site, "site")
        let ca = try Identity.loadCA(dir: caDir)
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let key = Curve25519.Signing.PrivateKey()
        let cert = try Identity.issueSite(name: site, role: role, key: key.publicKey, ca: ca.certificate, caKey: ca.key)
        if !FileManager.default.fileExists(atPath: paths.caCert) {
            try Identity.writeFile(ca.certificate.serializeAsPEM().pemString, to: paths.caCert)
        }
        try Identity.writeSecret(Certificate.PrivateKey(key).serializeAsPEM().pemString, to: paths.siteKey)
        try Identity.writeFile(cert.serializeAsPEM().pemString, to: paths.siteCert)
        try FileManager.default.createDirectory(atPath: paths.datasets, withIntermediateDirectories: true)
        _ = try NodeFile(path: paths.nodeDB)
        return try SiteCertificate(cert)
    }

    /// Makes every file this process creates from now on its user's alone
    /// (umask 077): dataset files and their WAL, the API socket (whose
    /// chmod used to follow its creation), spooled imports. A process that
    /// holds a node's data writes nothing meant for others.
    static func makeFilesPrivate() { umask(0o077) }

    /// Opens the node in `dataDir`, checking that its key, certificate and
    /// CA belong together. Commits from elsewhere stamped more than
    /// `maxClockDrift` milliseconds ahead of the wall clock are held back.
    public static func open(dataDir: String, maxClockDrift: UInt64 = CommitVerifier.defaultMaxClockDrift) throws -> Node {
        let (paths, identity, file) = try openFiles(dataDir: dataDir)
        return Node(paths: paths, identity: identity, file: file, maxClockDrift: maxClockDrift, store: nil, changes: ChangeRelay())
    }

    /// Opens the node in `dataDir` with its datasets in the PostgreSQL
    /// database at `store` (`lode serve --store postgresql://…`); the
    /// identity, peers and settings stay in the data directory.
    public static func open(dataDir: String, maxClockDrift: UInt64 = CommitVerifier.defaultMaxClockDrift, store: String) async throws -> Node {
        let (paths, identity, file) = try openFiles(dataDir: dataDir)
        let changes = ChangeRelay()
        let catalog = try await PostgresCatalog.open(
            try PostgresLocation(store), local: identity.local, maxClockDrift: maxClockDrift,
            onOpen: { replica in
                // Every site this node knows, also in a dataset another
                // process brought into the database.
                for der in (try? file.certificates()) ?? [] {
                    if let c = try? SiteCertificate(der: der) { try? await replica.registerSite(c.record) }
                }
                // Told once it is open and listed (and of every commit after):
                // sync offers the dataset.
                replica.addObserver { _ in changes.notify() }
            })
        return Node(paths: paths, identity: identity, file: file, maxClockDrift: maxClockDrift, store: catalog, changes: changes)
    }

    private static func openFiles(dataDir: String) throws -> (NodePaths, NodeIdentity, NodeFile) {
        makeFilesPrivate()
        let paths = NodePaths(dataDir)
        guard exists(dataDir: dataDir) else {
            throw NodeError(.notFound, "no node in \(dataDir): create one with `lode init --site NAME --ca DIR --data-dir \(dataDir)`")
        }
        guard let pem = try? String(contentsOfFile: paths.siteKey, encoding: .utf8) else {
            throw NodeError(.storage, "cannot read \(paths.siteKey)")
        }
        let key = try Curve25519.Signing.PrivateKey(pemRepresentation: pem)
        let cert = try Identity.loadCertificate(paths.siteCert)
        let ca = try Identity.loadCertificate(paths.caCert)
        let site = try SiteCertificate(cert)
        guard site.site.bytes == Array(key.publicKey.rawRepresentation) else {
            throw NodeError(.badInput, "\(paths.siteCert) does not belong to \(paths.siteKey)")
        }
        guard Identity.isIssued(cert, by: ca) else {
            throw NodeError(.badInput, "\(paths.siteCert) is not issued by \(paths.caCert), or has expired")
        }
        try FileManager.default.createDirectory(atPath: paths.datasets, withIntermediateDirectories: true)
        let file = try NodeFile(path: paths.nodeDB)
        try file.keepOwnCertificate(site: site.site, der: site.der, validUntil: Int64(site.certificate.notValidAfter.timeIntervalSince1970 * 1000))
        return (paths, NodeIdentity(certificate: site, ca: ca, key: key), file)
    }

    /// Closes every replica.
    public func close() { catalog.close() }

    // MARK: Revocation

    /// Takes a revocation handed in here (DESIGN §9), once its CA signature
    /// is checked: fixes, for each dataset held, the cut-off of every feed
    /// of the site (the last seq held here), signs them in a notice that
    /// sync spreads (`revocationNotices`), and from then refuses the
    /// site's connections and drops its commits past the cut-offs, also
    /// those applied here. Returns the cut-offs kept for the site. Handed
    /// in again, or with a later record, the smaller cut-off stays.
    @discardableResult
    public func revoke(_ r: Revocation) async throws -> [NodeFile.Cutoff] {
        try r.verify(ca: identity.ca)
        if r.site == identity.local.name {
            throw NodeError(.badInput, "this node is site \(r.site): hand the revocation to the other nodes")
        }
        try await adopt(r, from: nil)
        return revocationCutoffs(of: r)
    }

    /// What a revocation notice from a peer brought.
    public struct RevocationIntake: Sendable {
        /// Notices new here, to pass on to every other peer: the one received
        /// and, when this node fixed cut-offs of its own, its notice of them.
        public var forward: [[UInt8]] = []
        /// The revoked site, whose sessions are to close.
        public var site: String?
    }

    /// Takes in a revocation notice a peer passed on: checks the CA's
    /// signature on the record and the signer's on the notice, keeps it,
    /// merges its cut-offs of the revoked site's feeds (the smaller seq
    /// wins) and fixes this node's own for the feeds no notice covered,
    /// then cuts every replica. A notice held already changes nothing.
    public func receiveRevocation(_ bytes: [UInt8]) async throws -> RevocationIntake {
        let notice = try RevocationNotice.decode(bytes)
        let signer = try notice.verify(ca: identity.ca)
        if let r = revocation(of: signer) {
            throw NodeError(.rejected, "the revocation notice is signed by \(signer.name), which is revoked (\(r.reason))")
        }
        // A node told of its own revocation keeps serving what it holds; its peers refuse it.
        guard notice.record.site != identity.local.name else { return RevocationIntake() }
        guard try file.keepNotice(site: notice.record.site, signer: signer.site, bytes: bytes) else { return RevocationIntake() }
        let own: RevocationNotice?
        do {
            own = try await adopt(notice.record, from: notice)
        } catch {
            // Not taken in: forget it, so that it is taken in when offered again.
            try? file.forgetNotice(bytes)
            throw error
        }
        return RevocationIntake(forward: [bytes] + (own.map { [$0.bytes] } ?? []), site: notice.record.site)
    }

    /// Takes in again the notices kept about `r` that name `key`'s feeds,
    /// once `key`'s certificate is known: until then their cut-offs of it
    /// could not be checked, and counted for nothing.
    func reconsiderNotices(of r: Revocation, key: SiteID) async throws {
        for bytes in try file.notices() {
            guard let n = try? RevocationNotice.decode(bytes), n.record.site == r.site, n.cutoffs.contains(where: { $0.author == key }) else {
                continue
            }
            try await adopt(n.record, from: n)
        }
    }

    /// The revocation notices kept here, to hand to every peer.
    public func revocationNotices() throws -> [[UInt8]] { try file.notices() }

    /// Adopts revocation `r`: the cut-offs of `notice` (of feeds whose key
    /// `r` covers) merged in, this node's own fixed for every feed of the
    /// site that no notice covered (every feed when handed in here, with
    /// `notice` nil), each replica cut. Returns this node's own notice, if
    /// it signed one: always when handed in (so that the record spreads),
    /// otherwise when it fixed a cut-off.
    @discardableResult
    private func adopt(_ r: Revocation, from notice: RevocationNotice?) async throws -> RevocationNotice? {
        // The revoked site's keys: every certificate known here (also the
        // ones only a replica recorded) issued to its name before the revocation.
        var keys = Set(try knownCertificates().compactMap { try? SiteCertificate(der: $0) }.filter(r.covers).map(\.site))
        var held: [String: VersionVector] = [:]
        for name in datasetNames() {
            let replica = try replica(name)
            held[name] = replica.vector
            for s in try await replica.sites() where s.name == r.site && (s.validFrom ?? 0) <= r.revoked { keys.insert(s.site) }
        }
        let given = (notice?.cutoffs ?? []).filter { keys.contains($0.author) }.map {
            NodeFile.Cutoff(site: r.site, dataset: $0.dataset, author: $0.author, seq: $0.seq)
        }
        let covered = Set(revocationCutoffs(of: r).map { "\($0.dataset)/\($0.author.hex)" } + given.map { "\($0.dataset)/\($0.author.hex)" })
        var own: [NodeFile.Cutoff] = []
        for (name, vector) in held.sorted(by: { $0.key < $1.key }) {
            for key in keys.sorted() where notice == nil || !covered.contains("\(name)/\(key.hex)") {
                own.append(NodeFile.Cutoff(site: r.site, dataset: name, author: key, seq: vector[key]))
            }
        }
        try file.keepRevocation(site: r.site, record: r.encoded, cutoffs: given + own)
        revoked.withLock { state in
            if !state.records.contains(where: { $0.site == r.site }) { state.records.append(r) }
            state.keys.formUnion(keys)
            for c in given + own { state.cutoffs[c.dataset, default: [:]][c.author] = min(state.cutoffs[c.dataset]?[c.author] ?? .max, c.seq) }
        }
        var signed: RevocationNotice?
        if notice == nil || !own.isEmpty {
            let n = try RevocationNotice.sign(
                r, cutoffs: own.map { RevocationNotice.Cutoff(dataset: $0.dataset, author: $0.author, seq: $0.seq) }, by: identity)
            if try file.keepNotice(site: r.site, signer: identity.local.site, bytes: n.bytes) { signed = n }
        }
        try await cutReplicas()
        return signed
    }

    /// Cuts every replica at the cut-offs kept for it (revocations and
    /// forks): drops what a replica holds past them. Cheap when nothing is
    /// past them; run at start too, so that a crash between keeping a
    /// cut-off and cutting the replica loses nothing.
    public func cutReplicas() async throws {
        for name in datasetNames() {
            guard let feeds = revoked.withLock({ $0.cutoffs[name] }), !feeds.isEmpty else { continue }
            let replica = try replica(name)
            guard !FeedCutoffs(feeds).excess(in: replica.vector).isEmpty || replica.cutoffs.seqs != feeds else { continue }
            _ = try await replica.cut(feeds)
        }
    }

    /// Counts `key` as a revoked site's: its feed is cut off at 0 in every
    /// dataset no notice fixed a cut-off for.
    func noteRevokedKey(_ key: SiteID) { _ = revoked.withLock { $0.keys.insert(key) } }

    /// True when `key`'s certificate was revoked here.
    func isRevoked(_ key: SiteID) -> Bool { revoked.withLock { $0.keys.contains(key) } }

    /// The cut-offs kept for a revoked site's feeds.
    public func revocationCutoffs(of r: Revocation) -> [NodeFile.Cutoff] {
        ((try? file.cutoffs()) ?? []).filter { $0.site == r.site }
    }

    /// What a fork's cut-off is kept under (no site name has parentheses).
    static let forkMarker = "(fork)"

    /// Freezes `author`'s feed in `dataset` at `seq`, the seq before a fork
    /// (DESIGN §9): the site signed two histories, so nothing of that feed
    /// past `seq` is accepted here; kept across restarts. The caller cuts
    /// the replica. Returns true when it froze.
    @discardableResult
    func freeze(dataset: String, author: SiteID, at seq: UInt64) throws -> Bool {
        let fresh = revoked.withLock { state in
            guard state.cutoffs[dataset]?[author].map({ $0 > seq }) ?? true else { return false }
            state.cutoffs[dataset, default: [:]][author] = seq
            return true
        }
        if fresh { try file.keepCutoffs([NodeFile.Cutoff(site: Self.forkMarker, dataset: dataset, author: author, seq: seq)]) }
        return fresh
    }

    /// Keeps a fork's evidence, to pass to every peer at each new session.
    func keepEvidence(dataset: String, author: SiteID, held: [UInt8], other: [UInt8]) throws {
        try file.keepEvidence(dataset: dataset, author: author, held: held, other: other)
    }

    /// The evidence of every fork found here (both commits, by dataset).
    public func forkEvidence() throws -> [(dataset: String, commits: [[UInt8]])] { try file.evidence() }

    /// The revocations handed in here.
    public func revocations() -> [Revocation] { revoked.withLock { $0.records } }

    /// The revocation covering a certificate, if any.
    public func revocation(of certificate: SiteCertificate) -> Revocation? {
        revoked.withLock { $0.records.first { $0.covers(certificate) } }
    }

    /// The cut-off of `author`'s feed in `dataset`, if the site is revoked
    /// or its feed forked: 0 for a revoked site in a dataset it had written
    /// nothing to here when the revocation was handed in.
    public func cutoff(dataset: String, author: SiteID) -> UInt64? { cutoffs(dataset: dataset)?(author) }

    /// The cut-offs of `dataset` as one lookup, taken under one lock (for a
    /// batch of commits), or nil when no feed is cut off anywhere.
    func cutoffs(dataset: String) -> ((SiteID) -> UInt64?)? {
        let (feeds, keys) = revoked.withLock { ($0.cutoffs[dataset] ?? [:], $0.keys) }
        if feeds.isEmpty && keys.isEmpty { return nil }
        return { feeds[$0] ?? (keys.contains($0) ? 0 : nil) }
    }

    // MARK: Datasets

    /// The datasets this node holds, by name.
    public func datasetNames() -> [String] { catalog.names() }

    /// The replica of dataset `name`, opened on first use.
    public func replica(_ name: String) throws -> any SQLReplicaStore {
        if let r = try catalog.store(name) { return r }
        let names = datasetNames()
        if names.isEmpty { throw NodeError(.notFound, "no dataset \(name)", remedy: .createDataset) }
        throw NodeError(.notFound, "no dataset \(name) (datasets: \(names.joined(separator: ", ")))")
    }

    /// The replica of dataset `name`, or nil when this node does not hold it.
    func heldReplica(_ name: String) throws -> (any SQLReplicaStore)? { try catalog.store(name) }

    /// Creates a dataset from `CREATE TABLE` statements and tells it every
    /// site this node knows.
    @discardableResult
    public func createDataset(_ name: String, schema: String) async throws -> any SQLReplicaStore {
        let replica = try await catalog.createStore(name, tables: try SchemaParser.parse(schema))
        for der in try knownCertificates() { try await register(try SiteCertificate(der: der), in: replica) }
        notifyChange()
        return replica
    }

    /// Opens a dataset, creating an empty replica when it is new here (a
    /// dataset brought into being by a peer's commit, which the caller has
    /// checked may create it), and tells it every known site.
    func openOrCreate(_ name: String) async throws -> any SQLReplicaStore {
        let opened = try await catalog.openOrCreateStore(name)
        if opened.created {
            for der in try knownCertificates() { try await register(try SiteCertificate(der: der), in: opened.replica) }
            notifyChange()
        }
        return opened.replica
    }

    // MARK: Settings and peers

    /// A stored setting.
    public func setting(_ key: String) -> String? { try? file.setting(key) }

    /// Stores a setting (the file is written only when it changes).
    public func setSetting(_ key: String, _ value: String) throws { try file.setSetting(key, value) }

    /// The peers this node dials, kept across restarts.
    public func peers() throws -> [String] { try file.peers() }

    /// Adds a peer to dial. Returns false if it was already there.
    @discardableResult
    public func addPeer(_ address: String) throws -> Bool {
        do {
            _ = try PeerAddress(address)
        } catch {
            throw NodeError(.badInput, error.message)
        }
        return try file.addPeer(address, added: formatISO8601(millis: SQLiteReplica.systemWallClock()))
    }

    /// Removes a peer. Returns false if it was not there.
    @discardableResult
    public func removePeer(_ address: String) throws -> Bool { try file.removePeer(address) }
}
