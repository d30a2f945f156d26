import Foundation
import LodeCore
import LodeStore
import Synchronization

/// The datasets of a node as SQLite files in one directory, one file per
/// dataset (`NAME.db`), each open at most once. `create` is the one way a
/// dataset with tables comes to be here; `openOrCreate` opens one, creating
/// it empty when a peer's commit brings it into being (the caller checks
/// `DatasetRules.refusalToCreate` first).
///
/// ```swift
/// let catalog = SQLiteCatalog(directory: "/var/lib/lode/datasets", local: site)
/// let r = try await catalog.create("rare-earths", tables: try SchemaParser.parse(schema))
/// ```
public final class SQLiteCatalog: DatasetCatalog {
    /// The directory holding the files.
    public let directory: String
    /// The site that writes local edits.
    public let local: LocalSite
    /// The clock replicas stamp local commits with.
    public let wallClock: @Sendable () -> UInt64
    /// How far ahead of the wall clock (milliseconds) a commit from
    /// elsewhere may be stamped and still apply now (DESIGN §9).
    public let maxClockDrift: UInt64
    private let replicas = Mutex<[String: SQLiteReplica]>([:])
    private let onOpen: @Sendable (SQLiteReplica) -> Void

    /// A catalog of the files in `directory`; `onOpen` is called for each
    /// replica as it is opened (with the catalog's lock held: keep it short).
    public init(
        directory: String, local: LocalSite, wallClock: @escaping @Sendable () -> UInt64 = SQLiteReplica.systemWallClock,
        maxClockDrift: UInt64 = CommitVerifier.defaultMaxClockDrift, onOpen: @escaping @Sendable (SQLiteReplica) -> Void = { _ in }
    ) {
        self.directory = directory
        self.maxClockDrift = maxClockDrift
        self.local = local
        self.wallClock = wallClock
        self.onOpen = onOpen
    }

    /// The file of dataset `name`.
    public func path(_ name: String) -> String { directory + "/" + name + ".db" }

    public func names() -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return files.filter { $0.hasSuffix(".db") }.map { String($0.dropLast(3)) }.filter(Identifier.isValidDataset).sorted()
    }

    /// The replica of dataset `name`, opened on first use; nil when the
    /// catalog holds no such dataset.
    public func replica(_ name: String) throws -> SQLiteReplica? {
        if let r = replicas.withLock({ $0[name] }) { return r }
        guard Identifier.isValidDataset(name), FileManager.default.fileExists(atPath: path(name)) else { return nil }
        return try openOrCreate(name).replica
    }

    /// Opens dataset `name`, creating an empty replica (no tables) when it
    /// has no file yet. `created` says which.
    public func openOrCreate(_ name: String) throws -> Opened<SQLiteReplica> {
        guard Identifier.isValidDataset(name) else { throw StoreError.badInput("\"\(name)\" is not a dataset name") }
        return try replicas.withLock { open -> Opened<SQLiteReplica> in
            if let r = open[name] { return Opened(replica: r, created: false) }
            let existed = FileManager.default.fileExists(atPath: path(name))
            let r = try openFile(name)
            open[name] = r
            return Opened(replica: r, created: !existed)
        }
    }

    /// Creates dataset `name` with `tables`, committed by the local site.
    /// Refuses a name in use, and anything `DatasetRules.checkNew` refuses;
    /// if the tables cannot be committed, no file is left behind.
    public func create(_ name: String, tables: [TableDef]) async throws -> SQLiteReplica {
        try DatasetRules.checkNew(name, tables: tables, by: local)
        // One instance per file: the replica is opened (created empty) under
        // the lock every opener takes, then given its tables.
        let replica = try replicas.withLock { open -> SQLiteReplica in
            guard open[name] == nil, !FileManager.default.fileExists(atPath: path(name)) else {
                throw StoreError(.alreadyExists, "dataset \(name) already exists")
            }
            let r = try openFile(name)
            open[name] = r
            return r
        }
        do {
            if !tables.isEmpty { _ = try await replica.alter(tables) }
        } catch {
            // Nothing was committed: remove the empty dataset again.
            replicas.withLock { _ = $0.removeValue(forKey: name) }
            try? replica.close()
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path(name) + suffix) }
            throw error
        }
        return replica
    }

    /// Closes every replica.
    public func close() {
        let all = replicas.withLock { r in
            defer { r = [:] }
            return Array(r.values)
        }
        for r in all { try? r.close() }
    }

    /// Opens a file (under the lock) and tells `onOpen`.
    private func openFile(_ name: String) throws -> SQLiteReplica {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let r = try SQLiteReplica.open(at: path(name), dataset: name, local: local, wallClock: wallClock, maxClockDrift: maxClockDrift)
        onOpen(r)
        return r
    }

    // MARK: DatasetCatalog

    public func store(_ name: String) throws -> (any SQLReplicaStore)? { try replica(name) }
    public func openOrCreateStore(_ name: String) async throws -> Opened<any SQLReplicaStore> {
        let opened = try openOrCreate(name)
        return Opened(replica: opened.replica, created: opened.created)
    }
    public func createStore(_ name: String, tables: [TableDef]) async throws -> any SQLReplicaStore { try await create(name, tables: tables) }
}
