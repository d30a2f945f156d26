import Foundation
import GRDB
import LodeCore
import LodeStore

/// A node's own file (`node.db`): its settings, the peers it dials, and the
/// certificates of every site it knows. Writes change the file only when
/// something changed, so that a node starts on a full disk.
///
/// ```swift
/// let file = try NodeFile(path: dataDir + "/node.db")
/// try file.addPeer("127.0.0.1:7443", added: "2026-12-02T10:00:00.000Z")
/// ```
public final class NodeFile: Sendable {
    let queue: DatabaseQueue

    /// Opens (creating if needed) the node file at `path`.
    public init(path: String) throws {
        _ = SQLiteSetup.prepare
        queue = try StoreError.converting {
            let q = try DatabaseQueue(path: path)
            try q.write { db in
                try db.execute(
                    sql: """
                        CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                        CREATE TABLE IF NOT EXISTS peers(address TEXT PRIMARY KEY, added TEXT NOT NULL);
                        CREATE TABLE IF NOT EXISTS certificates(site BLOB PRIMARY KEY, der BLOB NOT NULL, valid_until INTEGER NOT NULL DEFAULT 0);
                        CREATE TABLE IF NOT EXISTS revocations(site TEXT PRIMARY KEY, record BLOB NOT NULL);
                        CREATE TABLE IF NOT EXISTS revocation_cutoffs(
                            site TEXT NOT NULL, dataset TEXT NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(dataset, author));
                        CREATE TABLE IF NOT EXISTS fork_evidence(
                            dataset TEXT NOT NULL, author BLOB NOT NULL, held BLOB NOT NULL, other BLOB NOT NULL,
                            PRIMARY KEY(dataset, author));
                        CREATE TABLE IF NOT EXISTS revocation_notices(
                            id INTEGER PRIMARY KEY, site TEXT NOT NULL, signer BLOB NOT NULL, bytes BLOB NOT NULL UNIQUE);
                        """ + NodeFile.peopleTables)
            }
            return q
        }
    }

    // MARK: Settings

    /// A stored setting.
    public func setting(_ key: String) throws -> String? {
        try StoreError.converting {
            try queue.read { db in try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = ?", arguments: [key]) }
        }
    }

    /// Stores a setting.
    public func setSetting(_ key: String, _ value: String) throws {
        try StoreError.converting {
            try queue.write { db in
                try db.execute(
                    sql:
                        "INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value WHERE value IS NOT excluded.value",
                    arguments: [key, value])
            }
        }
    }

    // MARK: Peers

    /// The peers the node dials.
    public func peers() throws -> [String] {
        try StoreError.converting { try queue.read { db in try String.fetchAll(db, sql: "SELECT address FROM peers ORDER BY address") } }
    }

    /// Adds a peer. Returns false if it was already there.
    public func addPeer(_ address: String, added: String) throws -> Bool {
        try StoreError.converting {
            try queue.write { db in
                try db.execute(sql: "INSERT OR IGNORE INTO peers(address, added) VALUES (?, ?)", arguments: [address, added])
                return db.changesCount > 0
            }
        }
    }

    /// Removes a peer. Returns false if it was not there.
    public func removePeer(_ address: String) throws -> Bool {
        try StoreError.converting {
            try queue.write { db in
                try db.execute(sql: "DELETE FROM peers WHERE address = ?", arguments: [address])
                return db.changesCount > 0
            }
        }
    }

    // MARK: Revocations

    /// One feed's cut-off: commits of `author` in `dataset` past `seq` are refused.
    public struct Cutoff: Sendable, Hashable {
        /// The revoked site's name.
        public var site: String
        public var dataset: String
        public var author: SiteID
        public var seq: UInt64
        public init(site: String, dataset: String, author: SiteID, seq: UInt64) {
            self.site = site
            self.dataset = dataset
            self.author = author
            self.seq = seq
        }
    }

    /// Keeps a revocation of `site` (the first one kept stays) and its
    /// cut-offs, each merged with any kept before by taking the smaller.
    public func keepRevocation(site: String, record: Data, cutoffs: [Cutoff]) throws {
        try StoreError.converting {
            try queue.write { db in
                try db.execute(sql: "INSERT OR IGNORE INTO revocations(site, record) VALUES (?, ?)", arguments: [site, record])
                try Self.keep(db, cutoffs)
            }
        }
    }

    /// Keeps cut-offs (a feed frozen at a fork), merged by taking the smaller.
    public func keepCutoffs(_ cutoffs: [Cutoff]) throws {
        try StoreError.converting { try queue.write { db in try Self.keep(db, cutoffs) } }
    }

    private static func keep(_ db: Database, _ cutoffs: [Cutoff]) throws {
        for c in cutoffs {
            try db.execute(
                sql: """
                    INSERT INTO revocation_cutoffs(site, dataset, author, seq) VALUES (?, ?, ?, ?)
                    ON CONFLICT(dataset, author) DO UPDATE SET seq = min(seq, excluded.seq)
                    """, arguments: [c.site, c.dataset, Data(c.author.bytes), Int64(c.seq)])
        }
    }

    /// The most notices kept per revoked site and signer: a signer that
    /// keeps signing new ones costs a few of them.
    public static let noticesPerSigner = 4

    /// Keeps a signed revocation notice (`bytes`, as it travels) that
    /// `signer` signed about `site`. Returns false when it was kept already
    /// or the signer has signed `noticesPerSigner` about the site.
    public func keepNotice(site: String, signer: SiteID, bytes: [UInt8]) throws -> Bool {
        try StoreError.converting {
            try queue.write { db in
                let n =
                    try Int.fetchOne(
                        db, sql: "SELECT count(*) FROM revocation_notices WHERE site = ? AND signer = ?", arguments: [site, Data(signer.bytes)]) ?? 0
                guard n < Self.noticesPerSigner else { return false }
                try db.execute(
                    sql: "INSERT OR IGNORE INTO revocation_notices(site, signer, bytes) VALUES (?, ?, ?)",
                    arguments: [site, Data(signer.bytes), Data(bytes)])
                return db.changesCount > 0
            }
        }
    }

    /// Forgets a notice (one that could not be taken in).
    public func forgetNotice(_ bytes: [UInt8]) throws {
        try StoreError.converting {
            try queue.write { db in try db.execute(sql: "DELETE FROM revocation_notices WHERE bytes = ?", arguments: [Data(bytes)]) }
        }
    }

    /// Keeps the evidence of a fork of `author`'s feed in `dataset`: the
    /// copy that was held and the other one (only the first fork of a feed:
    /// after it the feed is frozen).
    public func keepEvidence(dataset: String, author: SiteID, held: [UInt8], other: [UInt8]) throws {
        try StoreError.converting {
            try queue.write { db in
                try db.execute(
                    sql: "INSERT OR IGNORE INTO fork_evidence(dataset, author, held, other) VALUES (?, ?, ?, ?)",
                    arguments: [dataset, Data(author.bytes), Data(held), Data(other)])
            }
        }
    }

    /// Every fork's evidence kept: its dataset and both commits.
    public func evidence() throws -> [(dataset: String, commits: [[UInt8]])] {
        try StoreError.converting {
            try queue.read { db in
                try Row.fetchAll(db, sql: "SELECT dataset, held, other FROM fork_evidence ORDER BY dataset, author").map { r in
                    (r["dataset"], [[UInt8](r["held"] as Data), [UInt8](r["other"] as Data)])
                }
            }
        }
    }

    /// Every revocation notice kept, in the order kept.
    public func notices() throws -> [[UInt8]] {
        try StoreError.converting {
            try queue.read { db in try Data.fetchAll(db, sql: "SELECT bytes FROM revocation_notices ORDER BY id").map { [UInt8]($0) } }
        }
    }

    /// Every revocation kept (the records as handed in).
    public func revocations() throws -> [Data] {
        try StoreError.converting { try queue.read { db in try Data.fetchAll(db, sql: "SELECT record FROM revocations ORDER BY site") } }
    }

    /// Every cut-off kept.
    public func cutoffs() throws -> [Cutoff] {
        try StoreError.converting {
            try queue.read { db in
                try Row.fetchAll(db, sql: "SELECT site, dataset, author, seq FROM revocation_cutoffs ORDER BY dataset, author").map { r in
                    Cutoff(
                        site: r["site"], dataset: r["dataset"], author: try SiteID(bytes: [UInt8](r["author"] as Data)),
                        seq: UInt64(r["seq"] as Int64))
                }
            }
        }
    }

    // MARK: Certificates

    /// Every site certificate kept (DER), in site order.
    public func certificates() throws -> [[UInt8]] {
        try StoreError.converting {
            try queue.read { db in try Data.fetchAll(db, sql: "SELECT der FROM certificates ORDER BY site").map { [UInt8]($0) } }
        }
    }

    /// Keeps the certificate of `site`, replacing an older one only when
    /// this one is valid longer (a renewal). Returns true when it changed.
    public func keepCertificate(site: SiteID, der: [UInt8], validUntil: Int64) throws -> Bool {
        try keep(site: site, der: der, validUntil: validUntil, replacing: "excluded.valid_until > certificates.valid_until")
    }

    /// Records this node's own certificate, replacing whatever was kept for
    /// its site (written only when it differs).
    public func keepOwnCertificate(site: SiteID, der: [UInt8], validUntil: Int64) throws {
        _ = try keep(
            site: site, der: der, validUntil: validUntil, replacing: "der IS NOT excluded.der OR valid_until IS NOT excluded.valid_until")
    }

    private func keep(site: SiteID, der: [UInt8], validUntil: Int64, replacing condition: String) throws -> Bool {
        try StoreError.converting {
            try queue.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO certificates(site, der, valid_until) VALUES (?, ?, ?)
                        ON CONFLICT(site) DO UPDATE SET der = excluded.der, valid_until = excluded.valid_until WHERE \(condition)
                        """, arguments: [Data(site.bytes), Data(der), validUntil])
                return db.changesCount > 0
            }
        }
    }
}
