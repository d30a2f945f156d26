import Foundation
import GRDB
import LodeCore
import LodeStore
import Synchronization

/// One dataset's replica in an SQLite file: user tables any SQLite tool can
/// read, and beside them the clocks, causal lengths, log, feeds, conflicts
/// and annotations that make it a CRDT (layout: `DatasetFormat`).
///
/// All writes go through one serialized writer connection; queries run on a
/// pool of read-only connections (WAL), so readers never block the writer.
///
/// ```swift
/// let catalog = SQLiteCatalog(directory: dir, local: site)
/// let r = try await catalog.create("rare-earths", tables: try SchemaParser.parse(schema))
/// let report = try await r.importCSV(table: "elements", path: "elements.csv")
/// ```
public final class SQLiteReplica: SQLReplicaStore, @unchecked Sendable {
    /// The dataset name.
    public let dataset: String
    /// The file.
    public let path: String
    /// The local site.
    public let local: LocalSite
    let pool: DatabasePool
    let wallClock: @Sendable () -> UInt64
    /// How far ahead of `wallClock` (milliseconds) a commit from elsewhere
    /// may be stamped and still apply now (DESIGN §9).
    public let maxClockDrift: UInt64
    /// How long one step of a query may compute without producing a row
    /// before it is stopped, so that a runaway query cannot hold a reader.
    public let stepTimeLimit: TimeInterval
    /// How long a query may run in all, however steadily it produces rows
    /// (a recursive CTE can stream for ever): five step limits.
    public var queryTimeLimit: TimeInterval { stepTimeLimit * 5 }
    /// How long one `exec` may hold the dataset's single writer: a step limit.
    public var execTimeLimit: TimeInterval { stepTimeLimit }
    /// After how many rows of a table an as-of query is taken for a scan
    /// (`AsOfRows.isCurrent`); tests lower it to take that path on small tables.
    let asOfScanAfter = Mutex(AsOfRows.scanAfter)
    /// The writer's state; touched only inside `pool.write`.
    private var writerState: WriterState?
    /// The version vector after the last committed write, for readers.
    private let published = Mutex(VersionVector())
    /// The cut-offs after the last committed write, for readers.
    private let publishedCutoffs = Mutex(FeedCutoffs())
    /// Called after every committed write that added commits, with the new
    /// vector. Observers read what they need from the log; the commits
    /// themselves are never held in memory for them (an import may add
    /// hundreds of megabytes).
    private let observers = Mutex<[UUID: @Sendable (VersionVector) -> Void]>([:])
    /// Batches from several sessions applied in one write (one fsync).
    let groups = GroupCommit()
    /// The newest commits in log order, for peers nearly caught up: a relay
    /// answers each of its sessions after each new commit from here, not by
    /// reading (and inflating) the log once per session.
    let recent = Mutex(RecentCommits(limitBytes: RecentCommits.defaultLimitBytes))
    /// What the log was compacted to, once read (`compactedVector`; sync
    /// asks at every batch); cleared by what changes it, which also moves
    /// the generation on, so that a read begun before is not kept.
    let compacted = Mutex<(generation: Int, vector: VersionVector??)>((0, nil))

    /// The milliseconds since 1970 now.
    public static let systemWallClock: @Sendable () -> UInt64 = {
        UInt64(max(0, Date().timeIntervalSince1970 * 1000))
    }

    private init(
        dataset: String, path: String, local: LocalSite, pool: DatabasePool, wallClock: @escaping @Sendable () -> UInt64,
        maxClockDrift: UInt64, stepTimeLimit: TimeInterval
    ) {
        self.stepTimeLimit = stepTimeLimit
        self.maxClockDrift = maxClockDrift
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
            for f in withheldFunctions { db.add(function: f) }
        }
        return config
    }

    /// Built-in functions no query or `exec` may call, replaced on every
    /// connection by ones that refuse: Debian's SQLite is built with
    /// `fts3_tokenizer`, which hands any reader a pointer into the node (and
    /// with two arguments takes one); `load_extension` loads code.
    static let withheldFunctions: [DatabaseFunction] = [("fts3_tokenizer", 1), ("fts3_tokenizer", 2), ("load_extension", 1), ("load_extension", 2)]
        .map { name, arity in
            DatabaseFunction(name, argumentCount: arity, pure: false) { _ in
                throw DatabaseError(resultCode: .SQLITE_AUTH, message: "\(name) is not available in Lodestone")
            }
        }

    /// Opens a dataset file, creating an empty replica (no tables) if none
    /// exists. Only `SQLiteCatalog` calls it, which keeps one instance per
    /// file and is the one way a dataset comes to be.
    static func open(
        at path: String, dataset: String, local: LocalSite,
        wallClock: @escaping @Sendable () -> UInt64 = SQLiteReplica.systemWallClock,
        maxClockDrift: UInt64 = CommitVerifier.defaultMaxClockDrift, stepTimeLimit: TimeInterval = 120
    ) throws -> SQLiteReplica {
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration())
        } catch {
            throw StoreError(.storage, "cannot open \(path)", cause: error)
        }
        let replica = SQLiteReplica(
            dataset: dataset, path: path, local: local, pool: pool, wallClock: wallClock, maxClockDrift: maxClockDrift, stepTimeLimit: stepTimeLimit)
        do {
            try pool.write { db in
                var rebuild = false
                if try db.tableExists("_lode_meta") {
                    rebuild = try DatasetFormat.check(db, path: path, dataset: dataset)
                } else {
                    try DatasetFormat.create(db, dataset: dataset)
                }
                var state = try WriterState.load(db)
                try state.sites.registerLocal(db, local)
                if rebuild {
                    // An older file's history: rebuilt by applying its log
                    // again, in this transaction.
                    let tx = WriteTransaction(replica: replica, db: db, state: state)
                    _ = try replica.replayLog(tx)
                    state = tx.state
                }
                replica.writerState = state
                replica.published.withLock { $0 = state.feeds.vector }
                replica.publishedCutoffs.withLock { $0 = state.feeds.cutoffs }
            }
        } catch {
            try? pool.close()
            throw StoreError.converting(error)
        }
        return replica
    }

    /// Closes the file. The replica must not be used afterwards.
    public func close() throws {
        try pool.write { _ in writerState = nil }
        try pool.close()
    }

    /// Runs `body` in one write transaction, then publishes the new vector
    /// and tells observers of the commits added. If the transaction fails,
    /// the writer's state is dropped and reloaded from the file next time.
    func write<T: Sendable>(_ body: @escaping @Sendable (WriteTransaction) throws -> T) async throws -> T {
        // The transaction is opened and committed inside the closure so that
        // a COMMIT that fails (a full disk, an I/O error: SQLite rolls the
        // whole transaction back) also drops the in-memory state, which
        // would otherwise believe in heads and a vector that were never
        // stored, and sign the next commit on top of them.
        let (result, added) = try await StoreError.converting {
            try await pool.writeWithoutTransaction { [self] db in
                let tx = WriteTransaction(replica: self, db: db, state: try writerState ?? WriterState.load(db))
                writerState = tx.state
                var out: (T, UncheckedBox<(Int, VersionVector, FeedCutoffs)>)?
                do {
                    try db.inTransaction {
                        let r = try body(tx)
                        out = (r, UncheckedBox((tx.state.feeds.added, tx.state.feeds.vector, tx.state.feeds.cutoffs)))
                        return .commit
                    }
                    tx.state.feeds.added = 0
                    writerState = tx.state
                    // Still on the writer, so in log order.
                    recent.withLock { r in
                        if tx.rewritesLog { r.removeAll() }
                        for c in tx.stored { r.append(c) }
                    }
                } catch {
                    writerState = nil
                    throw error
                }
                return out!
            }
        }
        publishedCutoffs.withLock { $0 = added.value.2 }
        publish(vector: added.value.1, commits: added.value.0)
        return result
    }

    /// Runs `build` with a batch of local edits in one write transaction,
    /// then signs and stores the last commit.
    func edit<T: Sendable>(_ build: @escaping @Sendable (LocalBatch) throws -> T) async throws -> T {
        let person = Attribution.person
        return try await write { tx in
            let batch = try LocalBatch(tx, person: person)
            let r = try build(batch)
            try batch.finish()
            return r
        }
    }

    /// What this replica holds: for each site, the highest seq held.
    public var vector: VersionVector { published.withLock { $0 } }

    public var cutoffs: FeedCutoffs { publishedCutoffs.withLock { $0 } }

    private func publish(vector v: VersionVector, commits: Int) {
        published.withLock { $0 = v }
        guard commits > 0 else { return }
        for o in observers.withLock({ Array($0.values) }) { o(v) }
    }

    @discardableResult
    public func addObserver(_ f: @escaping @Sendable (VersionVector) -> Void) -> UUID {
        let id = UUID()
        observers.withLock { $0[id] = f }
        return id
    }

    public func removeObserver(_ id: UUID) {
        _ = observers.withLock { $0.removeValue(forKey: id) }
    }

    /// Reads with a read-only connection.
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await StoreError.converting { try await pool.read(body) }
    }

    /// The size of the dataset's files on disk, in bytes.
    public var bytesOnDisk: UInt64 {
        ["", "-wal"].reduce(0) { sum, suffix in
            sum + ((try? FileManager.default.attributesOfItem(atPath: path + suffix)[.size] as? UInt64) ?? 0)
        }
    }
}

/// One write transaction on a replica's file: the connection and the
/// writer's state, valid only inside the closure that received it.
final class WriteTransaction {
    let replica: SQLiteReplica
    let db: Database
    private(set) var state: WriterState

    init(replica: SQLiteReplica, db: Database, state: WriterState) {
        self.replica = replica
        self.db = db
        self.state = state
    }

    /// The commits this transaction stored, in log order (the newest
    /// `RecentCommits.defaultLimitBytes` or so of them), for the replica's
    /// recent commits once it commits.
    private(set) var stored: [StoredCommit] = []
    private var storedBytes = 0
    /// True when the log was rewritten, not only added to (a cut).
    var rewritesLog = false

    /// Notes a commit stored in the log.
    func noteStored(_ c: StoredCommit) {
        stored.append(c)
        storedBytes += c.bytes.count
        // An import stores far more than is kept: keep only the newest.
        let limit = RecentCommits.defaultLimitBytes
        guard storedBytes > 2 * limit else { return }
        var drop = 0
        while storedBytes > limit {
            storedBytes -= stored[drop].bytes.count
            drop += 1
        }
        stored.removeFirst(drop)
    }

    /// Reloads the state from the file (after a rolled-back savepoint).
    func reload() throws { state = try WriterState.load(db) }

    /// The stamp and seq of the next local commit.
    func nextLocalStart() -> CommitStart {
        CommitStart(hlc: state.feeds.clock.tick(wallMillis: replica.wallClock()), seq: state.feeds.head(replica.local.site).seq + 1)
    }
}

/// Carries a non-Sendable value out of a GRDB closure that ran on the
/// writer queue; only used for the writer's own state.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
