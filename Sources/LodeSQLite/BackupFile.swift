import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Writes a consistent copy of the dataset file to `path` (which must
    /// not exist) while the replica keeps serving and syncing: SQLite's
    /// `VACUUM INTO` reads one snapshot of the file, so the copy holds every
    /// commit up to some point and nothing half-applied.
    public func backup(to path: String) async throws {
        guard !FileManager.default.fileExists(atPath: path) else { throw StoreError(.alreadyExists, "\(path) exists") }
        try await StoreError.converting {
            try await pool.unsafeRead { db in try db.execute(sql: "VACUUM INTO ?", arguments: [path]) }
        }
    }
}

/// A backup of one dataset (`SQLiteReplica.backup`), opened to be restored:
/// which dataset it holds, the certificates of the sites it knows, and its
/// log, read a batch at a time in the order it was applied. Nothing else of
/// the file is trusted: a restore verifies every commit as a peer's
/// (`ReplicaStore.apply`), and the file may have been made or altered by
/// anyone, so it is opened read-only, checked, and only its plain tables
/// are read.
public final class BackupFile: Sendable {
    public let dataset: String
    /// The DER certificates the file's sites carry (unverified).
    public let certificates: [[UInt8]]
    /// The commits in the log.
    public let commitCount: Int
    let queue: DatabaseQueue

    public init(path: String) throws {
        var config = Configuration()
        config.readonly = true
        config.prepareDatabase { db in
            // A crafted file gets no say: no code from its schema, and
            // every page's cells checked as they are read.
            try db.execute(sql: "PRAGMA trusted_schema = OFF; PRAGMA cell_size_check = ON")
        }
        do {
            queue = try DatabaseQueue(path: path, configuration: config)
            (dataset, certificates, commitCount) = try queue.read { db in
                let check = try String.fetchAll(db, sql: "PRAGMA quick_check")
                guard check == ["ok"] else { throw StoreError.badInput("the backup file is damaged: \(check.prefix(3).joined(separator: "; "))") }
                let tables = Set(try String.fetchAll(db, sql: "SELECT name FROM sqlite_schema WHERE type = 'table'"))
                guard tables.isSuperset(of: ["_lode_meta", "_lode_sites", "_lode_log"]) else {
                    throw StoreError.badInput("the file is not a Lodestone backup: it has no dataset log")
                }
                guard let name = try String.fetchOne(db, sql: "SELECT value FROM _lode_meta WHERE key = 'dataset'"), Identifier.isValidDataset(name)
                else {
                    throw StoreError.badInput("the backup does not name a valid dataset")
                }
                let certs = try Data.fetchAll(db, sql: "SELECT cert FROM _lode_sites WHERE cert IS NOT NULL AND length(cert) <= 65536").map {
                    [UInt8]($0)
                }
                let count = try Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_log") ?? 0
                return (name, certs, count)
            }
        } catch let e as StoreError {
            throw e
        } catch {
            let reason = (error as? DatabaseError)?.message ?? "\(error)"
            throw StoreError.badInput("the file is not a Lodestone backup: \(reason)")
        }
    }

    /// Hands the log's commits to `each` in batches of about `maxBytes`,
    /// in the order the backed-up replica applied them, leaving out those it
    /// compacted away. A commit that does not decode is a bad backup.
    public func commits(maxBytes: Int = 8 << 20, _ each: ([Commit]) async throws -> Void) async throws {
        var after: Int64 = .min
        while true {
            let rows = try await queue.read { [after] db in
                var out: [(Int64, Data)] = []
                var total = 0
                let cursor = try Row.fetchCursor(db, sql: "SELECT id, bytes FROM _lode_log WHERE id > ? ORDER BY id", arguments: [after])
                while total < maxBytes, let row = try cursor.next() {
                    let bytes: Data = row["bytes"] ?? Data()
                    total += bytes.count
                    out.append((row["id"], bytes))
                }
                return out
            }
            guard let last = rows.last else { return }
            after = last.0
            var batch: [Commit] = []
            for (id, bytes) in rows {
                // A commit the backed-up replica compacted away (`compact`):
                // the node restoring must already hold it, or start from a snapshot.
                if bytes.isEmpty { continue }
                do {
                    batch.append(try Commit(decoding: try LogBytes.commit(bytes)))
                } catch {
                    throw StoreError.badInput("the backup's log entry \(id) is not a valid commit: \(error)")
                }
            }
            try await each(batch)
        }
    }
}
