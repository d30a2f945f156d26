import Foundation
import LodeCore
import LodeStore
import NIOCore
import PostgresNIO
import Synchronization

/// The datasets of a node kept in one PostgreSQL database, one schema per
/// dataset named exactly as the dataset (`PGLayout`). Several processes may
/// share the database: a dataset another one created is found by
/// `refresh()`.
///
/// ```swift
/// let catalog = try await PostgresCatalog.open(try PostgresLocation(url), local: site)
/// let r = try await catalog.create("rare-earths", tables: try SchemaParser.parse(schema))
/// ```
public final class PostgresCatalog: DatasetCatalog, @unchecked Sendable {
    public let location: PostgresLocation
    public let local: LocalSite
    let pool: PGPool
    var client: PostgresClient { pool.client }
    let logger: Logger
    let wallClock: @Sendable () -> UInt64
    let maxClockDrift: UInt64
    let queryTimeLimit: TimeInterval
    private let replicas = Mutex<[String: PostgresReplica]>([:])
    private let onOpen: @Sendable (PostgresReplica) async -> Void

    private init(
        location: PostgresLocation, local: LocalSite, pool: PGPool, logger: Logger, wallClock: @escaping @Sendable () -> UInt64,
        maxClockDrift: UInt64, queryTimeLimit: TimeInterval, onOpen: @escaping @Sendable (PostgresReplica) async -> Void
    ) {
        self.onOpen = onOpen
        self.location = location
        self.local = local
        self.pool = pool
        self.logger = logger
        self.wallClock = wallClock
        self.maxClockDrift = maxClockDrift
        self.queryTimeLimit = queryTimeLimit
    }

    /// Connects to the database at `location` (a pool of at most
    /// `connections`) and opens every dataset it holds; `onOpen` is called
    /// for each replica as it is opened, before anything else may use it.
    public static func open(
        _ location: PostgresLocation, local: LocalSite, connections: Int = 8,
        wallClock: @escaping @Sendable () -> UInt64 = { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) },
        maxClockDrift: UInt64 = CommitVerifier.defaultMaxClockDrift, queryTimeLimit: TimeInterval = 10,
        logger: Logger = Logger(label: "lode.postgres"), onOpen: @escaping @Sendable (PostgresReplica) async -> Void = { _ in }
    ) async throws -> PostgresCatalog {
        let pool = PGPool(PostgresClient(configuration: location.configuration(connections: connections), backgroundLogger: logger))
        let catalog = PostgresCatalog(
            location: location, local: local, pool: pool, logger: logger, wallClock: wallClock, maxClockDrift: maxClockDrift,
            queryTimeLimit: queryTimeLimit, onOpen: onOpen)
        do {
            try await catalog.refresh()
        } catch {
            catalog.close()
            throw error
        }
        return catalog
    }

    /// Opens every dataset in the database not yet open here; re-reads
    /// those another process wrote since.
    public func refresh() async throws {
        let names = try await PGErrors.mapped {
            try await bounded(PostgresReplica.operationLimit) { try await self.client.withConnection { conn in try await self.storedNames(conn) } }
        }
        for name in names {
            if let r = replicas.withLock({ $0[name] }) {
                try await r.refresh()
            } else {
                _ = try await open(name, create: false)
            }
        }
    }

    /// The channel every write transaction notifies, with the dataset's name.
    static let channel = "lode_commits"

    /// Keeps this process's view current while other processes write the
    /// database (relays sharing it): `LISTEN`s for the notice each write
    /// transaction sends and re-reads the dataset it names, which tells the
    /// replica's observers (sync pushes the new commits to this process's
    /// peers); every `interval`, and after the connection is lost, re-reads
    /// everything, the safety net for a notice missed. `beforeRefresh` is
    /// called before each re-read (which may tell observers of new commits
    /// at once): a node adopts the certificates other processes recorded
    /// there, so that its peers have them before the commits. Runs until
    /// cancelled.
    public func follow(every interval: Duration = .seconds(5), beforeRefresh: @escaping @Sendable () async -> Void = {}) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    do {
                        try await self.client.withConnection { conn in
                            try await conn.listen(on: PostgresCatalog.channel) { notices in
                                await beforeRefresh()
                                await self.refreshLogged()
                                for try await notice in notices {
                                    await beforeRefresh()
                                    if let r = self.replica(notice.payload) {
                                        await self.refreshLogged(r)
                                    } else {
                                        await self.refreshLogged()
                                    }
                                }
                            }
                        }
                    } catch {
                        self.logger.debug("listening for other processes' commits failed; retrying", metadata: ["error": "\(error)"])
                    }
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    await beforeRefresh()
                    await self.refreshLogged()
                }
            }
        }
    }

    /// Re-reads one dataset (or all), logging a failure: the next notice or
    /// periodic re-read tries again.
    private func refreshLogged(_ replica: PostgresReplica? = nil) async {
        do {
            if let replica { try await replica.refresh() } else { try await refresh() }
        } catch {
            logger.warning(
                "could not re-read what other processes wrote; trying again",
                metadata: ["dataset": "\(replica?.dataset ?? "all")", "error": "\(error)"])
        }
    }

    /// Every site certificate recorded in any dataset of the database (by
    /// this process or another one sharing it), DER.
    public func storedCertificates() async throws -> [[UInt8]] {
        try await PGErrors.mapped {
            try await bounded(PostgresReplica.operationLimit) {
                try await self.client.withConnection { conn in
                    var out = Set<[UInt8]>()
                    for name in try await self.storedNames(conn) {
                        let sql = "SELECT cert FROM \(PGLayout.schema(name))._lode_sites WHERE cert IS NOT NULL"
                        for r in try await conn.rows(sql, logger: self.logger) { out.insert(try r.bytes(0)) }
                    }
                    return Array(out)
                }
            }
        }
    }

    /// The datasets the database holds (Lodestone's schemas).
    private func storedNames(_ conn: PostgresConnection) async throws -> [String] {
        try await conn.rows(
            """
            SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid
            WHERE c.relname = '_lode_meta' AND c.relkind = 'r' ORDER BY 1
            """, logger: logger
        ).map { try $0.string(0) }.filter(Identifier.isValidDataset)
    }

    /// True when the database answers within `timeout`.
    public func isReachable(timeout: Duration = .seconds(2)) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await self.client.query("SELECT 1")) != nil }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    public func names() -> [String] { replicas.withLock { $0.keys.sorted() } }

    public func store(_ name: String) throws -> (any SQLReplicaStore)? { replicas.withLock { $0[name] } }

    /// The replica of dataset `name`, if open here.
    public func replica(_ name: String) -> PostgresReplica? { replicas.withLock { $0[name] } }

    public func openOrCreateStore(_ name: String) async throws -> Opened<any SQLReplicaStore> {
        guard Identifier.isValidDataset(name) else { throw StoreError.badInput("\"\(name)\" is not a dataset name") }
        if let r = replicas.withLock({ $0[name] }) { return Opened(replica: r, created: false) }
        let (r, created) = try await open(name, create: true)
        return Opened(replica: r, created: created)
    }

    public func createStore(_ name: String, tables: [TableDef]) async throws -> any SQLReplicaStore { try await create(name, tables: tables) }

    /// Creates dataset `name` with `tables`, committed by the local site;
    /// if the tables cannot be committed, the schema is dropped again.
    public func create(_ name: String, tables: [TableDef]) async throws -> PostgresReplica {
        try DatasetRules.checkNew(name, tables: tables, by: local)
        if replicas.withLock({ $0[name] }) != nil { throw StoreError(.alreadyExists, "dataset \(name) already exists") }
        let (replica, created) = try await open(name, create: true)
        guard created else { throw StoreError(.alreadyExists, "dataset \(name) already exists") }
        do {
            if !tables.isEmpty { _ = try await replica.alter(tables) }
        } catch {
            replicas.withLock { _ = $0.removeValue(forKey: name) }
            try? await PGErrors.mapped {
                try await client.withConnection { conn in
                    try await conn.run("DROP SCHEMA \(PGLayout.schema(name)) CASCADE", logger: self.logger)
                }
            }
            throw error
        }
        return replica
    }

    /// Opens dataset `name`, laying it out first (with `create`) when the
    /// database lacks it; `created` says whether it did.
    private func open(_ name: String, create: Bool) async throws -> (PostgresReplica, Bool) {
        let s = PGLayout.schema(name)
        let (state, created) = try await PGErrors.mapped {
            try await client.withTransaction(logger: logger) { conn -> (PGState, Bool) in
                try await conn.run("SELECT pg_advisory_xact_lock(\(PGLayout.lockKey(name)))", logger: self.logger)
                var b = Binds()
                let exists =
                    try await conn.rows(
                        """
                        SELECT 1 FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid
                        WHERE n.nspname = \(b.add(name)) AND c.relname = '_lode_meta'
                        """, b.bindings, logger: self.logger
                    ).isEmpty == false
                if exists {
                    var m = [String: String]()
                    for r in try await conn.rows("SELECT key, value FROM \(s)._lode_meta", logger: self.logger) {
                        m[try r.string(0)] = try r.string(1)
                    }
                    guard m["dataset"] == name else { throw StoreError(.storage, "schema \(name) holds dataset \(m["dataset"] ?? "?"), not \(name)") }
                    guard m["format"] == String(PGLayout.version) else {
                        throw StoreError(.storage, "dataset \(name) has format \(m["format"] ?? "?"); this build reads format \(PGLayout.version)")
                    }
                    let state = try await PGState.load(conn, schema: s, logger: self.logger)
                    guard state.schemas[CheckpointRows.table] == nil else { return (state, false) }
                    // A dataset laid out before checkpoints: its system tables gain theirs.
                    let tx = PGTx(conn: conn, replica: self.makeReplica(name, state), state: state)
                    try await tx.define(CheckpointRows.definition, stamp: SchemaStamp(hlc: .zero, site: AnnotationRows.genesisSite))
                    try await tx.flush()
                    return (tx.state, false)
                }
                guard create else { throw StoreError.notFound("no dataset \(name)") }
                try await conn.run("CREATE SCHEMA \(s)", logger: self.logger)
                try await conn.script(PGLayout.bootstrap(s), logger: self.logger)
                var m = Binds()
                try await conn.run(
                    "INSERT INTO \(s)._lode_meta(key, value) VALUES ('dataset', \(m.add(name))), ('format', \(m.add(String(PGLayout.version)))), ('generation', '0')",
                    m.bindings, logger: self.logger)
                let tx = PGTx(conn: conn, replica: self.makeReplica(name, PGState()), state: PGState())
                try await PostgresReplica.layOutSystemTables(tx)
                try await tx.flush()
                return (tx.state, true)
            }
        }
        if let r = replicas.withLock({ $0[name] }) { return (r, false) }
        let fresh = makeReplica(name, state)
        await onOpen(fresh)
        let replica = replicas.withLock { open -> PostgresReplica in
            if let r = open[name] { return r }
            open[name] = fresh
            return fresh
        }
        // Listed now: its observers (sync) hear of it, and find it among the
        // datasets. Told from `onOpen`, before it was listed, sync could look
        // for it too early and never again (a relay whose peers never got a
        // dataset another relay stored, one full test run in a few).
        defer { if replica === fresh { replica.tellObservers() } }
        // This site as a writer: its name, role and certificate (their
        // validity comes with the certificate, through `registerSite`).
        var me = local.record
        if let known = state.records[local.site] {
            me.validFrom = known.validFrom
            me.validUntil = known.validUntil
        }
        try await replica.registerSite(me)
        try? await replica.refreshSize()
        return (replica, created)
    }

    private func makeReplica(_ name: String, _ state: PGState) -> PostgresReplica {
        PostgresReplica(
            dataset: name, local: local, pool: pool, logger: logger, state: state, wallClock: wallClock, maxClockDrift: maxClockDrift,
            queryTimeLimit: queryTimeLimit)
    }

    public func close() {
        replicas.withLock { $0 = [:] }
        pool.close()
    }
}

/// A connection pool and the task that runs it, shared by a catalog and
/// its replicas: it closes when the last of them lets it go.
final class PGPool: Sendable {
    let client: PostgresClient
    private let running: Task<Void, Never>

    init(_ client: PostgresClient) {
        self.client = client
        running = Task { await client.run() }
    }

    func close() { running.cancel() }

    deinit { running.cancel() }
}
