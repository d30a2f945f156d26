import Crypto
import Foundation
import GRDB
import LodeCore
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
    private let settings: DatabaseQueue
    let replicas = Mutex<[String: Replica]>([:])
    private let changeHandler = Mutex<ChangeHandler?>(nil)

    /// The handler sits in a class, not in the mutex itself: a closure kept
    /// directly in a `Mutex` (generic storage) is read through `withLock`'s
    /// `inout` access, which wraps it in a pair of reabstraction thunks and
    /// writes the wrapped closure back (swiftlang/swift#91348, also at -O).
    /// Every notification made the chain longer: after 100,000 commits,
    /// calling it was most of a node's CPU, its memory kept growing, and
    /// enough commits would overflow the stack (`lode-faults load --api`
    /// found it).
    private final class ChangeHandler: Sendable {
        let call: @Sendable () -> Void
        init(_ call: @escaping @Sendable () -> Void) { self.call = call }
    }

    /// The node database (settings, peers, certificates).
    var settingsQueue: DatabaseQueue { settings }

    /// Sets what to call whenever any replica gains commits or a dataset
    /// appears (the sync engine's wake-up).
    public func onChange(_ f: @escaping @Sendable () -> Void) {
        let handler = ChangeHandler(f)
        changeHandler.withLock { $0 = handler }
    }

    func notifyChange() {
        changeHandler.withLock { $0 }?.call()
    }

    /// The software version.
    public static let version = "0.1.0"

    private init(paths: NodePaths, identity: NodeIdentity, settings: DatabaseQueue) {
        self.paths = paths
        self.identity = identity
        self.settings = settings
    }

    /// True when `dataDir` holds a node.
    public static func exists(dataDir: String) -> Bool {
        FileManager.default.fileExists(atPath: NodePaths(dataDir).siteKey)
    }

    /// Creates a node in `dataDir`: a site key, a certificate for the site
    /// and role signed by the CA in `caDir`, the CA certificate, and the
    /// node database. Refuses to overwrite anything.
    @discardableResult
    public static func initialize(dataDir: String, site: String, role: Role, caDir: String) throws -> SiteCertificate {
        let paths = NodePaths(dataDir)
        for p in [paths.siteKey, paths.siteCert, paths.nodeDB] where FileManager.default.fileExists(atPath: p) {
            throw NodeError(.alreadyExists, "\(dataDir) already holds a node (\(p) exists); refusing to overwrite it")
        }
        try Identity.checkName(site, "site")
        let (caCert, caKey) = try Identity.loadCA(dir: caDir)
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let key = Curve25519.Signing.PrivateKey()
        let cert = try Identity.issueSite(name: site, role: role, key: key.publicKey, ca: caCert, caKey: caKey)
        if !FileManager.default.fileExists(atPath: paths.caCert) {
            try Identity.writeFile(caCert.serializeAsPEM().pemString, to: paths.caCert)
        }
        try Identity.writeSecret(Certificate.PrivateKey(key).serializeAsPEM().pemString, to: paths.siteKey)
        try Identity.writeFile(cert.serializeAsPEM().pemString, to: paths.siteCert)
        try FileManager.default.createDirectory(atPath: paths.datasets, withIntermediateDirectories: true)
        _ = try openSettings(paths)
        return try SiteCertificate(cert)
    }

    static func openSettings(_ paths: NodePaths) throws -> DatabaseQueue {
        _ = SQLiteSetup.prepare
        let q = try DatabaseQueue(path: paths.nodeDB)
        try q.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                    CREATE TABLE IF NOT EXISTS peers(address TEXT PRIMARY KEY, added TEXT NOT NULL);
                    CREATE TABLE IF NOT EXISTS certificates(site BLOB PRIMARY KEY, der BLOB NOT NULL, valid_until INTEGER NOT NULL DEFAULT 0);
                    """)
        }
        return q
    }

    /// Opens the node in `dataDir`, checking that its key, certificate and
    /// CA belong together.
    public static func open(dataDir: String) throws -> Node {
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
        let settings = try openSettings(paths)
        // Written only when it changed: a node must start on a full disk.
        try settings.write { db in
            try db.execute(
                sql: """
                    INSERT INTO certificates(site, der, valid_until) VALUES (?, ?, ?)
                    ON CONFLICT(site) DO UPDATE SET der = excluded.der, valid_until = excluded.valid_until
                    WHERE der IS NOT excluded.der OR valid_until IS NOT excluded.valid_until
                    """,
                arguments: [Data(site.site.bytes), Data(site.der), Int64(site.certificate.notValidAfter.timeIntervalSince1970 * 1000)])
        }
        return Node(paths: paths, identity: NodeIdentity(certificate: site, ca: ca, key: key), settings: settings)
    }

    /// Closes every replica.
    public func close() {
        let all = replicas.withLock { r in
            defer { r = [:] }
            return Array(r.values)
        }
        for r in all { try? r.close() }
    }

    // MARK: Datasets

    /// The datasets this node holds, by name.
    public func datasetNames() -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: paths.datasets)) ?? []
        return files.filter { $0.hasSuffix(".db") }.map { String($0.dropLast(3)) }.filter(Identifier.isValidDataset).sorted()
    }

    /// The replica of dataset `name`, opened on first use.
    public func replica(_ name: String) throws -> Replica {
        if let r = replicas.withLock({ $0[name] }) { return r }
        guard Identifier.isValidDataset(name), FileManager.default.fileExists(atPath: paths.dataset(name)) else {
            let names = datasetNames()
            throw NodeError(
                .notFound,
                "no dataset \(name)" + (names.isEmpty ? "; create one with `lode dataset create`" : " (datasets: \(names.joined(separator: ", ")))"))
        }
        return try opened(name)
    }

    /// The replica of `name`, opening (or creating) its file and watching
    /// it for changes on first use.
    func opened(_ name: String) throws -> Replica {
        try replicas.withLock { r in
            if let existing = r[name] { return existing }
            let replica = try Replica.open(at: paths.dataset(name), dataset: name, local: identity.local)
            replica.addObserver { [weak self] _ in self?.notifyChange() }
            r[name] = replica
            return replica
        }
    }

    /// Creates a dataset from `CREATE TABLE` statements.
    @discardableResult
    public func createDataset(_ name: String, schema: String) async throws -> Replica {
        guard identity.certificate.role.canEdit else {
            throw NodeError(
                .forbidden, "site \(identity.certificate.name) is a \(identity.certificate.role.rawValue): only an editor may create a dataset")
        }
        let defs = try SchemaParser.parse(schema)
        guard Identifier.isValidDataset(name) else {
            throw NodeError(
                .badInput, "\"\(name)\" is not a valid dataset name: use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit"
            )
        }
        for t in defs where Identifier.isReserved(t.name) { throw NodeError(.badInput, "table name \(t.name) is reserved") }
        // One instance per file: the replica is opened (created empty) under
        // the lock that every other opener takes, then given its tables.
        let r: Replica = try replicas.withLock { r in
            guard r[name] == nil, !FileManager.default.fileExists(atPath: paths.dataset(name)) else {
                throw NodeError(.alreadyExists, "dataset \(name) already exists")
            }
            let replica = try Replica.open(at: paths.dataset(name), dataset: name, local: identity.local)
            replica.addObserver { [weak self] _ in self?.notifyChange() }
            r[name] = replica
            return replica
        }
        do {
            _ = try await r.alter(defs)
        } catch {
            // Nothing was committed: remove the empty dataset again.
            replicas.withLock { _ = $0.removeValue(forKey: name) }
            try? r.close()
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: paths.dataset(name) + suffix) }
            throw error
        }
        for der in try knownCertificates() { try await register(try SiteCertificate(der: der), in: r) }
        notifyChange()
        return r
    }

    // MARK: Settings and peers

    /// A stored setting.
    public func setting(_ key: String) -> String? {
        try? settings.read { db in try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = ?", arguments: [key]) }
    }

    /// Stores a setting.
    public func setSetting(_ key: String, _ value: String) throws {
        try settings.write { db in
            // Written only when it changed: a node must start on a full disk.
            try db.execute(
                sql:
                    "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value WHERE value IS NOT excluded.value",
                arguments: [key, value])
        }
    }

    /// The peers this node dials, kept across restarts.
    public func peers() throws -> [String] {
        try settings.read { db in try String.fetchAll(db, sql: "SELECT address FROM peers ORDER BY address") }
    }

    /// Adds a peer to dial. Returns false if it was already there.
    @discardableResult
    public func addPeer(_ address: String) throws -> Bool {
        try PeerAddress.check(address)
        return try settings.write { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO peers(address, added) VALUES (?, ?)",
                arguments: [address, formatISO8601(millis: Replica.systemWallClock())])
            return db.changesCount > 0
        }
    }

    /// Removes a peer. Returns false if it was not there.
    @discardableResult
    public func removePeer(_ address: String) throws -> Bool {
        try settings.write { db in
            try db.execute(sql: "DELETE FROM peers WHERE address = ?", arguments: [address])
            return db.changesCount > 0
        }
    }
}

/// `HOST:PORT` addresses.
public enum PeerAddress {
    /// Splits and checks `HOST:PORT` (IPv6 hosts in brackets). Port 0 (any
    /// free port) is allowed only where a node listens.
    public static func parse(_ s: String, allowZero: Bool = false) throws -> (host: String, port: Int) {
        guard let colon = s.lastIndex(of: ":") else {
            throw NodeError(.badInput, "\"\(s)\" is not HOST:PORT")
        }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(s[s.index(after: colon)...]), ((allowZero ? 0 : 1)...65535).contains(port) else {
            throw NodeError(.badInput, "\"\(s)\" is not HOST:PORT with a port from 1 to 65535")
        }
        return (host, port)
    }

    /// Throws unless `s` parses.
    public static func check(_ s: String, allowZero: Bool = false) throws { _ = try parse(s, allowZero: allowZero) }
}
