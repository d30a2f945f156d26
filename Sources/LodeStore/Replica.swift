import Foundation
import GRDB
import LodeCore
import Synchronization

/// This node's identity as a writer of commits.
public struct LocalSite: Sendable {
    /// Signs the site's commits.
    public let writer: FeedWriter
    /// The site's name, from its certificate.
    public let name: String
    /// The site's role, from its certificate.
    public let role: Role
    /// The site's certificate (DER), stored with its commits so that other
    /// replicas can check them.
    public let certificate: [UInt8]

    /// The site id.
    public var site: SiteID { writer.site }

    /// Creates a local site.
    public init(writer: FeedWriter, name: String, role: Role, certificate: [UInt8]) {
        self.writer = writer
        self.name = name
        self.role = role
        self.certificate = certificate
    }
}

/// One dataset's SQLite replica: user tables any SQLite tool can read, and
/// beside them the clocks, causal lengths, log, feeds, conflicts and
/// annotations that make it a CRDT.
///
/// All writes go through one serialized writer connection; queries run on a
/// pool of read-only connections (WAL), so readers never block the writer.
///
/// ```swift
/// let r = try await Replica.create(at: path, dataset: "rare-earths", local: site, tables: defs)
/// let n = try await r.importCSV(table: "elements", from: csvURL)
/// ```
public final class Replica: @unchecked Sendable {
    /// The dataset name.
    public let dataset: String
    /// The file.
    public let path: String
    /// The local site.
    public let local: LocalSite
    let pool: DatabasePool
    let wallClock: @Sendable () -> UInt64
    /// How long one step of a query may compute without producing a row
    /// before it is stopped, so that a runaway query cannot hold a reader.
    public let stepTimeLimit: TimeInterval
    /// The writer's state; touched only inside `pool.write`.
    private var writerState: WriterState?
    /// The version vector after the last committed write, for readers.
    private let published = Mutex(VersionVector())
    /// Called after every committed write that added commits, with the new
    /// vector. Observers read what they need from the log; the commits
    /// themselves are never held in memory for them (an import may add
    /// hundreds of megabytes).
    private let observers = Mutex<[UUID: @Sendable (VersionVector) -> Void]>([:])

    /// The milliseconds since 1970 now.
    public static let systemWallClock: @Sendable () -> UInt64 = {
        UInt64(max(0, Date().timeIntervalSince1970 * 1000))
    }

    private init(
        dataset: String, path: String, local: LocalSite, pool: DatabasePool, wallClock: @escaping @Sendable () -> UInt64,
        stepTimeLimit: TimeInterval
    ) {
        self.stepTimeLimit = stepTimeLimit
        self.dataset = dataset
        self.path = path
        self.local = local
        self.pool = pool
        self.wallClock = wallClock
    }

    static func configuration() -> Configuration {
        _ = SQLiteSetup.prepare
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.maximumReaderCount = 4
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL; PRAGMA cache_size = -32768")
        }
        return config
    }

    /// Creates a new dataset file and commits the definitions of `tables`.
    /// Refuses if the file exists.
    public static func create(
        at path: String, dataset: String, local: LocalSite, tables: [TableDef],
        wallClock: @escaping @Sendable () -> UInt64 = Replica.systemWallClock
    ) async throws -> Replica {
        guard Identifier.isValidDataset(dataset) else {
            throw StoreError.badInput(
                "\"\(dataset)\" is not a valid dataset name: use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit")
        }
        guard !FileManager.default.fileExists(atPath: path) else {
            throw StoreError(.alreadyExists, "dataset \(dataset) already exists")
        }
        if !tables.isEmpty && !local.role.canEdit {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may create a dataset")
        }
        for t in tables where Identifier.isReserved(t.name) {
            throw StoreError.badInput("table name \(t.name) is reserved")
        }
        do {
            let replica = try open(at: path, dataset: dataset, local: local, wallClock: wallClock)
            if !tables.isEmpty {
                try await replica.commitLocal { db, state, pending in
                    try replica.defineLocal(db, state, pending, tables)
                }
            }
            return replica
        } catch {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            throw error
        }
    }

    /// Opens a dataset file, creating an empty replica (no tables) if none
    /// exists: how a replica of a dataset first heard of from a peer begins.
    public static func open(
        at path: String, dataset: String, local: LocalSite,
        wallClock: @escaping @Sendable () -> UInt64 = Replica.systemWallClock, stepTimeLimit: TimeInterval = 120
    ) throws -> Replica {
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration())
        } catch {
            throw StoreError(.storage, "cannot open \(path)", cause: error)
        }
        let replica = Replica(dataset: dataset, path: path, local: local, pool: pool, wallClock: wallClock, stepTimeLimit: stepTimeLimit)
        try pool.write { db in
            let exists = try db.tableExists("_lode_meta")
            if exists {
                let stored = try String.fetchOne(db, sql: "SELECT value FROM _lode_meta WHERE key = 'dataset'")
                guard stored == dataset else {
                    throw StoreError(.storage, "\(path) holds dataset \(stored ?? "?"), not \(dataset)")
                }
                let version = try Int.fetchOne(db, sql: "SELECT value FROM _lode_meta WHERE key = 'format'") ?? 0
                guard version == DatasetFormat.version else {
                    throw StoreError(.storage, "\(path) has format \(version); this build reads format \(DatasetFormat.version)")
                }
            } else {
                try db.execute(sql: DatasetFormat.bootstrap)
                try db.execute(
                    sql: "INSERT INTO _lode_meta(key, value) VALUES ('dataset', ?), ('format', ?)",
                    arguments: [dataset, DatasetFormat.version])
                let state = WriterState(dataset: dataset)
                let genesis = SchemaStamp(hlc: .zero, site: DatasetFormat.genesisSite)
                for def in DatasetFormat.systemTables { try state.define(db, def, stamp: genesis) }
                try db.execute(sql: DatasetFormat.annotationSearch)
            }
            let state = try WriterState.load(db, dataset: dataset)
            let idx = try state.siteIndex(db, local.site)
            try db.execute(
                sql: "UPDATE _lode_sites SET name = ?, role = ?, cert = ? WHERE id = ?",
                arguments: [local.name, local.role.rawValue, Data(local.certificate), idx])
            replica.writerState = state
            replica.published.withLock { $0 = state.vector }

        }
        return replica
    }

    /// Closes the file. The replica must not be used afterwards.
    public func close() throws {
        try pool.write { _ in writerState = nil }
        try pool.close()
    }

    /// Runs `body` in one write transaction with the writer's state, then
    /// publishes the new vector and tells observers of the commits added.
    /// If the transaction fails, the state is reloaded from the file.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database, WriterState) throws -> T) async throws -> T {
        // The transaction is opened and committed inside the closure so that
        // a COMMIT that fails (a full disk, an I/O error: SQLite rolls the
        // whole transaction back) also drops the in-memory state, which
        // would otherwise believe in heads and a vector that were never
        // stored, and sign the next commit on top of them.
        let (result, added) = try await pool.writeWithoutTransaction { [self] db in
            let state = try writerState ?? WriterState.load(db, dataset: dataset)
            writerState = state
            var out: (T, UncheckedBox<(Int, VersionVector)>)?
            do {
                try db.inTransaction {
                    let r = try body(db, state)
                    out = (r, UncheckedBox((state.added, state.vector)))
                    return .commit
                }
                state.added = 0
            } catch {
                writerState = nil
                throw error
            }
            return out!
        }
        publish(vector: added.value.1, commits: added.value.0)
        return result
    }

    /// What this replica holds: for each site, the highest seq held.
    public var vector: VersionVector { published.withLock { $0 } }

    func publish(vector v: VersionVector, commits: Int) {
        published.withLock { $0 = v }
        guard commits > 0 else { return }
        for o in observers.withLock({ Array($0.values) }) { o(v) }
    }

    /// Registers a callback run after each write that adds commits (local or
    /// applied from elsewhere), with the new vector. Returns a token for
    /// `removeObserver`.
    @discardableResult
    public func addObserver(_ f: @escaping @Sendable (VersionVector) -> Void) -> UUID {
        let id = UUID()
        observers.withLock { $0[id] = f }
        return id
    }

    /// Removes an observer.
    public func removeObserver(_ id: UUID) {
        _ = observers.withLock { $0.removeValue(forKey: id) }
    }

    /// Reads with a read-only connection.
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await pool.read(body)
    }
}

// MARK: - Local commits

/// A local commit being built inside a write transaction. Its ops are
/// encoded as they are added, so that a commit of a million rows is never
/// held as values.
final class PendingCommit {
    let context: CommitContext
    /// The encoded ops, and how many.
    private(set) var ops = ByteWriter(capacity: 1 << 16)
    private(set) var opCount = 0
    /// What the ops do, for the role check.
    private(set) var defines = false
    private(set) var tables = Set<String>()

    init(context: CommitContext) { self.context = context }

    /// The encoded size so far.
    var size: Int { ops.count }

    func add(_ op: Op) {
        op.encode(into: &ops)
        opCount += 1
        if case .defineTable = op { defines = true } else { tables.insert(op.table) }
    }

    /// Adds a put op whose rows (`count` of them) were encoded by the caller.
    func addPut(table: String, columns: [String], count: Int, rows: ByteWriter) {
        ops.writeByte(Op.Tag.put.rawValue)
        ops.writeString(table)
        ops.writeVarint(UInt64(columns.count))
        for c in columns { ops.writeString(c) }
        ops.writeVarint(UInt64(count))
        ops.writeBytes(rows.bytes)
        opCount += 1
        tables.insert(table)
    }

    /// Adds a delete op whose rows (`count` of them) were encoded by the caller.
    func addDelete(table: String, count: Int, rows: ByteWriter) {
        ops.writeByte(Op.Tag.delete.rawValue)
        ops.writeString(table)
        ops.writeVarint(UInt64(count))
        ops.writeBytes(rows.bytes)
        opCount += 1
        tables.insert(table)
    }
}

extension Replica {
    /// The largest local commit, in encoded bytes: imports and large
    /// `exec`s are split into commits of this size.
    static let commitBudget = 1 << 20

    /// Starts a local commit: a stamp, the next seq, the next log row.
    func beginLocal(_ db: Database, _ state: WriterState) throws -> PendingCommit {
        let hlc = state.clock.tick(wallMillis: wallClock())
        let idx = try state.siteIndex(db, local.site)
        let head = state.heads[local.site] ?? .empty
        return PendingCommit(context: CommitContext(site: idx, hlc: hlc, seq: head.seq + 1, logID: state.nextLogID, past: nil))
    }

    /// Signs the pending commit and stores it in the log and feed. Returns
    /// false (storing nothing) when it has no op.
    @discardableResult
    func finishLocal(_ db: Database, _ state: WriterState, _ pending: PendingCommit) throws -> Bool {
        guard pending.opCount > 0 else { return false }
        guard local.role.permits(defines: pending.defines, tables: pending.tables) else {
            let what = pending.defines ? "change the schema" : "write table \(pending.tables.sorted().joined(separator: ", "))"
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue) and may not \(what)")
        }
        let head = state.heads[local.site] ?? .empty
        let signed = try local.writer.commit(
            dataset: dataset, opCount: pending.opCount, encodedOps: pending.ops.bytes, hlc: pending.context.hlc, head: head, held: state.vector)
        try storeCommit(
            db, state, author: local.site, seq: pending.context.seq, hlc: pending.context.hlc, hash: signed.hash, bytes: signed.bytes,
            logID: pending.context.logID, site: pending.context.site,
            past: FeedRules.causalPast(author: local.site, seq: pending.context.seq, deps: signed.deps, previous: head.vector))
        return true
    }

    /// Appends a commit to the log and advances its feed.
    func storeCommit(
        _ db: Database, _ state: WriterState, author: SiteID, seq: UInt64, hlc: HLC, hash: [UInt8], bytes: [UInt8],
        logID: Int64, site: Int64, past: VersionVector
    ) throws {
        try db.execute(
            sql: "INSERT INTO _lode_log(id, site, seq, hlc, hash, bytes) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [logID, site, Int64(seq), Int64(bitPattern: hlc.rawValue), Data(hash), Data(bytes)])
        try db.execute(
            sql: "INSERT OR REPLACE INTO _lode_feeds(site, seq, hash, vector) VALUES (?, ?, ?, ?)",
            arguments: [site, Int64(seq), Data(hash), Data(encodeVector(past))])
        state.heads[author] = FeedHead(seq: seq, hash: hash, vector: past)
        state.vector[author] = seq
        state.nextLogID = logID + 1
        state.clock.observe(hlc)
        state.added += 1
    }

    /// Runs `build` to fill one local commit (applying its ops as it adds
    /// them), then signs and stores it, all in one transaction.
    func commitLocal<T: Sendable>(_ build: @escaping @Sendable (Database, WriterState, PendingCommit) throws -> T) async throws -> T {
        try await write { [self] db, state in
            let pending = try beginLocal(db, state)
            let r = try build(db, state, pending)
            try finishLocal(db, state, pending)
            return r
        }
    }

    /// Applies table definitions locally and adds them to `pending`.
    func defineLocal(_ db: Database, _ state: WriterState, _ pending: PendingCommit, _ tables: [TableDef]) throws {
        let stamp = SchemaStamp(hlc: pending.context.hlc, site: local.site)
        for def in tables {
            try state.define(db, def, stamp: stamp)
            pending.add(.defineTable(def))
        }
    }
}

/// Carries a non-Sendable value out of a GRDB closure that ran on the
/// writer queue; only used for the writer's own state.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
