import Foundation
import LodeCore
import LodeStore
import Metrics
import NIOCore
import PostgresNIO
import Synchronization

/// One dataset's replica in PostgreSQL: the schema named exactly as the
/// dataset holds the user tables under their own names, typed for BI tools
/// (TEXT, BIGINT, DOUBLE PRECISION, BYTEA), and beside them the clocks,
/// causal lengths, log, feeds, conflicts and annotations (`PGLayout`).
/// It passes the conformance suite every store passes.
///
/// Writes are transactions that first take the dataset's advisory lock,
/// so several processes (relays sharing one database) may write one
/// dataset; each reloads what it caches when another wrote in between.
/// A value that does not fit its column's type (a hostile peer's TEXT in a
/// BIGINT column, or TEXT holding NUL) is shown as NULL in the table and
/// kept whole in `_lode_misfits`: exports and history show it as written.
///
/// ```swift
/// let catalog = try await PostgresCatalog.open(PostgresLocation("postgresql://lode@127.0.0.1:5432/lode"), local: site)
/// let r = try await catalog.create("rare-earths", tables: try SchemaParser.parse(schema))
/// ```
public final class PostgresReplica: SQLReplicaStore, @unchecked Sendable {
    public let dataset: String
    public let local: LocalSite
    let pool: PGPool
    var client: PostgresClient { pool.client }
    let logger: Logger
    /// The dataset's schema, quoted.
    let schema: String
    let wallClock: @Sendable () -> UInt64
    let maxClockDrift: UInt64
    /// How long a query may run before PostgreSQL stops it.
    public let queryTimeLimit: TimeInterval
    private let gate = AsyncGate()
    /// Batches from several sessions applied in one transaction.
    private let groups = GroupCommit()
    private let state: Mutex<PGState>
    /// The dataset's size in the database, and when it was last read.
    private let size = Mutex<(bytes: UInt64, read: ContinuousClock.Instant?)>((0, nil))
    private let observers = Mutex<[UUID: @Sendable (VersionVector) -> Void]>([:])
    /// The newest commits in log order, for peers nearly caught up: a relay
    /// answers each session after each new commit from here, not with a
    /// query per session.
    private let recent = Mutex(RecentCommits(limitBytes: RecentCommits.defaultLimitBytes))

    init(
        dataset: String, local: LocalSite, pool: PGPool, logger: Logger, state: PGState, wallClock: @escaping @Sendable () -> UInt64,
        maxClockDrift: UInt64, queryTimeLimit: TimeInterval
    ) {
        self.dataset = dataset
        self.local = local
        self.pool = pool
        self.logger = logger
        schema = PGLayout.schema(dataset)
        self.wallClock = wallClock
        self.maxClockDrift = maxClockDrift
        self.queryTimeLimit = queryTimeLimit
        self.state = Mutex(state)
    }

    public var vector: VersionVector { state.withLock { $0.vector } }
    public var cutoffs: FeedCutoffs { state.withLock { $0.cutoffs } }
    public var bytesOnDisk: UInt64 { size.withLock { $0.bytes } }

    @discardableResult
    public func addObserver(_ f: @escaping @Sendable (VersionVector) -> Void) -> UUID {
        let id = UUID()
        observers.withLock { $0[id] = f }
        return id
    }

    public func removeObserver(_ id: UUID) { _ = observers.withLock { $0.removeValue(forKey: id) } }

    /// Tells the observers what the replica holds now (the catalog, once a
    /// dataset another process stored is open and listed here).
    func tellObservers() {
        let v = vector
        for o in observers.withLock({ Array($0.values) }) { o(v) }
    }

    // MARK: Transactions

    /// Runs `body` in a write transaction holding the dataset's advisory
    /// lock, on a fresh state if another process wrote since; keeps the
    /// state only if the transaction commits, then tells observers.
    /// `limit` bounds how long the transaction may wait on PostgreSQL (a
    /// batch from a peer, a site's record, an annotation); a bulk write (an
    /// import, rows written, a cut that replays the log) passes nil. Work
    /// cut off by the limit may still commit: the next write reads it back.
    func write<T: Sendable>(limit: Duration? = PostgresReplica.operationLimit, _ body: @escaping (PGTx) async throws -> T) async throws -> T {
        let started = ContinuousClock.now
        do {
            let r = try await transaction(limit: limit, body)
            PGMetrics.transaction(started, "committed")
            return r
        } catch let e as StoreError {
            PGMetrics.transaction(started, e.code == .unavailable ? "unavailable" : e.code == .storage ? "failed" : "refused")
            throw e
        }
    }

    /// How long an operation from a peer or a reader may wait on PostgreSQL.
    static let operationLimit: Duration = .seconds(30)

    private func transaction<T: Sendable>(limit: Duration?, _ body: @escaping (PGTx) async throws -> T) async throws -> T {
        let unchecked = UncheckedSendable(body)
        return try await PGErrors.mapped {
            try await gate.run {
                let cached = state.withLock { $0 }
                let (result, next, added, others, stored) = try await bounded(limit) {
                    try await self.commitTransaction(cached: cached, unchecked.value)
                }.value
                state.withLock { $0 = next }
                recent.withLock { r in
                    if let others { for c in others { r.append(c) } } else { r.removeAll() }
                    for c in stored { r.append(c) }
                }
                // Commits this write added, or another process's found under
                // the lock: this view is now current, so no later re-read
                // (`refresh`) would tell of the latter.
                if added || next.vector != cached.vector {
                    for o in observers.withLock({ Array($0.values) }) { o(next.vector) }
                }
                // Read again after writes, at most every few seconds: it is a
                // query of its own, and a busy relay writes many times a second.
                if size.withLock({ $0.read.map { ContinuousClock.now - $0 > .seconds(5) } ?? true }) { try? await refreshSize() }
                return result
            }
        }
    }

    /// One write transaction under the dataset's advisory lock; returns
    /// the result, the state after, whether commits were added, what
    /// another process stored since `cached` (nil: too much, or the log
    /// was rewritten), and the commits stored.
    private func commitTransaction<T: Sendable>(
        cached: PGState, _ body: @escaping (PGTx) async throws -> T
    ) async throws
        -> UncheckedSendable<(T, PGState, Bool, [StoredCommit]?, [StoredCommit])>
    {
        try await client.withTransaction(logger: logger) { conn in
            try await conn.run("SELECT pg_advisory_xact_lock(\(PGLayout.lockKey(self.dataset)))", logger: self.logger)
            let generation =
                try await conn.rows("SELECT value FROM \(self.schema)._lode_meta WHERE key = 'generation'", logger: self.logger)
                .first.map { Int64(try $0.string(0)) ?? 0 } ?? 0
            var start = cached
            // What another process stored since, for the recent
            // commits (nil when there is too much of it to keep).
            var others: [StoredCommit]? = []
            if generation != cached.generation {
                start = try await PGState.load(conn, schema: self.schema, logger: self.logger, reusing: cached)
                start.clock.observe(cached.clock.last)
                others = try await self.newer(conn, than: cached.vector, state: start)
            }
            let tx = PGTx(conn: conn, replica: self, state: start)
            let result = try await body(tx)
            try await tx.flush()
            tx.state.generation = generation + 1
            var b = Binds()
            var rows = ["('generation', \(b.add(String(generation + 1))))"]
            // Other processes re-read all of the state only after this.
            if tx.rewritesLog || start.catalog == nil || !tx.state.sameCatalog(as: start) {
                tx.state.catalog = generation + 1
                rows.append("('catalog', \(b.add(String(generation + 1))))")
            }
            try await conn.run(
                "INSERT INTO \(self.schema)._lode_meta(key, value) VALUES \(rows.joined(separator: ", ")) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                b.bindings, logger: self.logger)
            if tx.added {
                // Other processes sharing the database re-read the dataset (`PostgresCatalog.follow`).
                var n = Binds()
                try await conn.run("SELECT pg_notify('\(PostgresCatalog.channel)', \(n.add(self.dataset)))", n.bindings, logger: self.logger)
            }
            return UncheckedSendable((result, tx.state, tx.added, tx.rewritesLog ? nil : others, tx.stored))
        }
    }

    /// Runs `body` on a connection in a read-only transaction that sees one
    /// snapshot, giving up after `limit` (nil for a result streamed to a
    /// client, which may be long: an export, a query).
    func read<T: Sendable>(
        limit: Duration? = PostgresReplica.operationLimit, _ body: @escaping (PostgresConnection) async throws -> T
    )
        async throws -> T
    {
        let unchecked = UncheckedSendable(body)
        return try await PGErrors.mapped {
            try await bounded(limit) {
                try await self.client.withConnection { conn in
                    try await conn.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: self.logger)
                    do {
                        let r = try await unchecked.value(conn)
                        try await conn.run("COMMIT", logger: self.logger)
                        return r
                    } catch {
                        try? await conn.run("ROLLBACK", logger: self.logger)
                        throw error
                    }
                }
            }
        }
    }

    func rows(_ conn: PostgresConnection, _ sql: String, _ b: Binds = Binds()) async throws -> [PostgresRandomAccessRow] {
        try await conn.rows(sql, b.bindings, logger: logger)
    }

    /// Re-reads the dataset's state when another process wrote it since
    /// (a relay sharing the database): returns true when it had.
    @discardableResult
    public func refresh() async throws -> Bool {
        try await PGErrors.mapped {
            try await gate.run {
                let cached = state.withLock { $0 }
                let read = try await bounded(PostgresReplica.operationLimit) {
                    try await self.client.withConnection { conn -> UncheckedSendable<(PGState, [StoredCommit]?)>? in
                        let generation =
                            try await conn.rows("SELECT value FROM \(self.schema)._lode_meta WHERE key = 'generation'", logger: self.logger)
                            .first.map { Int64(try $0.string(0)) ?? 0 } ?? 0
                        guard generation != cached.generation else { return nil }
                        try await conn.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: self.logger)
                        let next = try await PGState.load(conn, schema: self.schema, logger: self.logger, reusing: cached)
                        let others = try await self.newer(conn, than: cached.vector, state: next)
                        try await conn.run("COMMIT", logger: self.logger)
                        return UncheckedSendable((next, others))
                    }
                }
                guard let (fresh, others) = read?.value else { return false }
                var next = fresh
                recent.withLock { r in
                    if let others { for c in others { r.append(c) } } else { r.removeAll() }
                }
                next.clock.observe(cached.clock.last)
                let grew = next.vector != cached.vector
                state.withLock { $0 = next }
                if grew { for o in observers.withLock({ Array($0.values) }) { o(next.vector) } }
                return true
            }
        }
    }

    func refreshSize() async throws {
        let bytes = try await client.withConnection { conn in
            var b = Binds()
            let sql = """
                SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = \(b.add(self.dataset)) AND c.relkind = 'r'
                """
            return try await conn.rows(sql, b.bindings, logger: self.logger).first.map { try $0.int64(0) } ?? 0
        }
        size.withLock { $0 = (UInt64(max(0, bytes)), ContinuousClock.now) }
    }

    // MARK: Commits

    public func apply(_ commits: [Commit]) async throws -> ApplyOutcome {
        // Signatures are checked on every core before the one writer applies.
        try await groups.submit(await Commit.checkingSignatures(commits, except: vector)) { batches in
            try await self.write { tx in
                try await tx.prefetch(batches.flatMap { $0 })
                var outcomes: [ApplyOutcome] = []
                for commits in batches { outcomes.append(try await ApplyOutcome.collecting(commits) { try await tx.applyOne($0) }) }
                return outcomes
            }
        }
    }

    public func missingCommits(after vector: VersionVector, maxBytes: Int, maxCount: Int) async throws -> [StoredCommit] {
        let current = state.withLock { $0 }
        if let answer = recent.withLock({ $0.missing(after: vector, held: current.vector, maxBytes: maxBytes, maxCount: maxCount) }) {
            return answer
        }
        return try await read { conn in try await self.logCommits(conn, after: vector, state: current, maxBytes: maxBytes, maxCount: maxCount) }
    }

    /// What the log holds past `vector`, in log order, about `maxBytes` at
    /// most (at least one commit).
    private func logCommits(
        _ conn: PostgresConnection, after vector: VersionVector, state: PGState, maxBytes: Int, maxCount: Int
    ) async throws
        -> [StoredCommit]
    {
        // The first missing commit of each feed the peer lacks something
        // of, found by index: the scan starts at the earliest of them.
        var b = Binds()
        var firsts: [String] = []
        for (n, key) in state.keys where vector[key] < state.vector[key] {
            firsts.append("(SELECT id FROM \(schema)._lode_log WHERE site = \(b.add(n)) AND seq = \(b.add(Int64(vector[key] + 1))))")
        }
        guard !firsts.isEmpty,
            let start = try await rows(conn, "SELECT least(\(firsts.joined(separator: ", ")))", b).first.flatMap({ try $0.optionalInt64(0) })
        else { return [] }
        var out: [StoredCommit] = []
        var total = 0
        var from = start
        while true {
            var p = Binds()
            let page = try await rows(
                conn, "SELECT id, site, seq, bytes FROM \(schema)._lode_log WHERE id >= \(p.add(from)) ORDER BY id LIMIT 256", p)
            guard let last = page.last else { return out }
            for r in page {
                guard let key = state.keys[try r.int64(1)] else { continue }
                let seq = PGValue.uint64(try r.int64(2))
                guard seq > vector[key] else { continue }
                let bytes = try r.bytes(3)
                out.append(StoredCommit(site: key, seq: seq, bytes: bytes))
                total += bytes.count
                if total >= maxBytes || out.count >= maxCount { return out }
            }
            from = try last.int64(0) + 1
        }
    }

    /// The commits another process stored past `vector` (which `state`,
    /// read in the same transaction, holds), for the recent commits; nil
    /// when they are more than those keep.
    private func newer(_ conn: PostgresConnection, than vector: VersionVector, state: PGState) async throws -> [StoredCommit]? {
        let found = try await logCommits(conn, after: vector, state: state, maxBytes: RecentCommits.defaultLimitBytes, maxCount: .max)
        var reached = vector
        for c in found { reached[c.site] = max(reached[c.site], c.seq) }
        return reached == state.vector ? found : nil
    }

    public func commitCount() async throws -> Int {
        try await read { conn in Int(try await self.rows(conn, "SELECT count(*) FROM \(self.schema)._lode_log")[0].int64(0)) }
    }

    public func registerSite(_ record: SiteRecord) async throws {
        if state.withLock({ $0.records[record.site] == record }) { return }
        try await write { tx in try await tx.register(record) }
    }

    public func knowsSite(_ site: SiteID) async throws -> Bool { state.withLock { $0.records[site]?.role != nil } }

    public func sites() async throws -> [SiteRecord] { state.withLock { Array($0.records.values) } }

    public func rejections(limit: Int, kind: RejectionKind?) async throws -> [RejectionRecord] {
        try await read { conn in
            var b = Binds()
            let filter = kind.map { "WHERE kind = \(b.add($0.rawValue))" } ?? ""
            let sql =
                "SELECT site, seq, kind, reason, received FROM \(self.schema)._lode_rejected \(filter) ORDER BY id DESC LIMIT \(b.add(Int64(max(0, limit))))"
            return try await self.rows(conn, sql, b).map { r in
                RejectionRecord(
                    site: try SiteID(bytes: try r.bytes(0)), seq: PGValue.uint64(try r.int64(1)),
                    kind: RejectionKind(rawValue: try r.string(2)) ?? .invalid, reason: try r.string(3),
                    received: UInt64(max(0, try r.int64(4))))
            }
        }
    }

    public func rejectionCount() async throws -> Int {
        try await read { conn in Int(try await self.rows(conn, "SELECT count(*) FROM \(self.schema)._lode_rejected")[0].int64(0)) }
    }

    /// Cuts feeds off and drops what lies past them (`ReplicaStore.cut`):
    /// the remaining log is set aside, everything applying built is
    /// emptied, and the remaining commits are applied again in their order,
    /// each verified as a peer's would be, all in one transaction.
    public func cut(_ cutoffs: [SiteID: UInt64]) async throws -> Int {
        try await write(limit: nil) { tx in
            let s = tx.s
            tx.rewritesLog = true
            for (author, seq) in cutoffs where seq < (tx.state.cutoffs[author] ?? .max) {
                var b = Binds()
                try await tx.run(
                    """
                    INSERT INTO \(s)._lode_cutoffs(site, seq) VALUES (\(b.add(PGValue.bytes(author.bytes))), \(b.add(Int64(min(seq, UInt64(Int64.max))))))
                    ON CONFLICT (site) DO UPDATE SET seq = EXCLUDED.seq
                    """, b.bindings)
            }
            _ = tx.state.cutoffs.merge(cutoffs)
            let excess = tx.state.cutoffs.excess(in: tx.state.vector)
            guard !excess.isEmpty else { return 0 }
            let before = Int(try await tx.rows("SELECT count(*) FROM \(s)._lode_log")[0].int64(0))
            var b = Binds()
            var past: [String] = []
            for (author, seq) in excess {
                past.append("(site = \(b.add(try await tx.number(author))) AND seq > \(b.add(PGValue.int64(seq))))")
            }
            let dropped = "(" + past.joined(separator: " OR ") + ")"
            for r in try await tx.rows("SELECT bytes FROM \(s)._lode_log WHERE \(dropped) ORDER BY id", b.bindings) {
                let commit = try Commit(decoding: try r.bytes(0))
                tx.reject(commit, .notAuthorized, tx.state.cutoffs.reason(commit))
            }
            try await tx.run("CREATE TEMP TABLE _lode_replay ON COMMIT DROP AS SELECT id, bytes FROM \(s)._lode_log WHERE NOT \(dropped)", b.bindings)
            try await tx.conn.script(PGLayout.clearApplied(s, tables: Array(tx.state.schemas.keys)), logger: tx.logger)
            tx.state.schemas = [:]
            tx.state.slots = [:]
            tx.state.heads = [:]
            tx.state.vector = VersionVector()
            tx.state.nextLog = 1
            tx.state.misfitTables = []
            try await PostgresReplica.layOutSystemTables(tx)
            var last: Int64 = 0
            var kept = 0
            while true {
                var p = Binds()
                let page = try await tx.rows("SELECT id, bytes FROM _lode_replay WHERE id > \(p.add(last)) ORDER BY id LIMIT 256", p.bindings)
                guard let end = page.last else { break }
                last = try end.int64(0)
                for r in page {
                    if case .apply = try await tx.applyOne(try Commit(decoding: try r.bytes(1))) { kept += 1 }
                }
                try await tx.flush()
            }
            return before - kept
        }
    }

    /// Defines the system tables (annotations) at the genesis stamp.
    static func layOutSystemTables(_ tx: PGTx) async throws {
        let genesis = SchemaStamp(hlc: .zero, site: AnnotationRows.genesisSite)
        for def in AnnotationRows.systemTables { try await tx.define(def, stamp: genesis) }
    }

    // MARK: Reading

    public func schema() async throws -> [TableSchema] { state.withLock { $0.userTables } }

    public func rowCounts() async throws -> [TableRowCount] {
        let tables = state.withLock { $0.userTables }
        return try await read { conn in
            var out: [TableRowCount] = []
            for t in tables {
                let n = try await self.rows(conn, "SELECT count(*) FROM \(self.schema).\(SchemaSQL.quote(t.name))")[0].int64(0)
                out.append(TableRowCount(table: t.name, rows: Int(n)))
            }
            return out
        }
    }

    public func export(table: String, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        let (tables, misfits) = state.withLock { ($0.userTables, $0.misfitTables.contains(table)) }
        guard let t = tables.first(where: { $0.name == table }) else {
            throw DatasetRules.noTable(table, in: dataset, tables: tables.map(\.name))
        }
        let cols = t.orderedColumns
        try await read(limit: nil) { conn in
            var kept: [String: [String: Value]] = [:]
            if misfits {
                var b = Binds()
                for r in try await self.rows(conn, "SELECT pk, col, value FROM \(self.schema)._lode_misfits WHERE tbl = \(b.add(table))", b) {
                    kept[try r.string(0), default: [:]][try r.string(1)] = try Value.decoded(try r.bytes(2))
                }
            }
            try each(.columns([t.primaryKey] + cols.map(\.name)))
            let pk = SchemaSQL.quote(t.primaryKey)
            let list = ([pk] + cols.map { SchemaSQL.quote($0.name) }).joined(separator: ", ")
            // In the order SQLite sorts text: by its UTF-8 bytes.
            let sql = "SELECT \(list) FROM \(self.schema).\(SchemaSQL.quote(table)) ORDER BY \(pk) COLLATE \"C\""
            for try await row in try await conn.query(PostgresQuery(unsafeSQL: sql), logger: self.logger) {
                let r = row.makeRandomAccess()
                let key = try r.string(0)
                var values: [Value] = [.text(key)]
                for (i, c) in cols.enumerated() {
                    if let v = kept[key]?[c.name] { values.append(v) } else { values.append(try PGValue.decode(r[i + 1], as: c.type)) }
                }
                try each(.row(values))
            }
        }
    }

    public func history(table: String, pk: String) async throws -> [HistoryEntry] {
        let st = state.withLock { $0 }
        guard let t = st.schemas[table], !Identifier.isReserved(table) || Role.annotationTables.contains(table) else {
            throw StoreError.notFound("no table \(table) in dataset \(dataset)")
        }
        return try await read { conn in
            var b = Binds()
            let tb = b.add(table)
            let kb = b.add(pk)
            guard let row = try await self.rows(conn, "SELECT cl, clocks FROM \(self.schema)._lode_rows WHERE tbl = \(tb) AND pk = \(kb)", b).first
            else {
                throw StoreError.notFound("no row \(pk) in table \(table): nothing was ever written to it")
            }
            let clocks = try RowClocks(decoding: try row.bytes(1))
            let logs = try await self.rows(
                conn,
                """
                SELECT l.bytes FROM \(self.schema)._lode_history h JOIN \(self.schema)._lode_log l ON l.id = h.log
                WHERE h.tbl = \(tb) AND h.pk = \(kb) ORDER BY l.id
                """, b)
            let commits = try logs.map { try Commit(decoding: try $0.bytes(0)) }
            let slots = st.slots[table] ?? [:]
            _ = t
            return HistoryRules.entries(
                table: table, pk: pk, commits: commits, length: PGValue.uint64(try row.int64(0)),
                stamp: { column in
                    guard let slot = slots[column], let s = clocks.stamp(slot), let site = st.keys[s.site] else { return nil }
                    return CellStamp(length: s.length, hlc: HLC(rawValue: s.hlc), site: site, seq: s.seq)
                },
                name: { st.records[$0]?.displayName ?? $0.short })
        }
    }

    public func conflicts(includeResolved: Bool) async throws -> [ConflictRecord] {
        let st = state.withLock { $0 }
        func name(_ n: Int64) -> String {
            guard let key = st.keys[n] else { return "?" }
            return (st.records[key]?.name ?? String(key.hex.prefix(8)).uppercased()).lowercased()
        }
        return try await read { conn in
            let s = self.schema
            let sql = """
                SELECT c.tbl, c.pk, c.col, c.winner_value, c.winner_site, c.winner_hlc, c.loser_value, c.loser_site, c.loser_hlc,
                       c.resolved_seq IS NOT NULL,
                       (SELECT person FROM \(s)._lode_log WHERE site = c.winner_site AND seq = c.winner_seq),
                       (SELECT person FROM \(s)._lode_log WHERE site = c.loser_site AND seq = c.loser_seq)
                FROM \(s)._lode_conflicts c \(includeResolved ? "" : "WHERE c.resolved_seq IS NULL") ORDER BY c.id DESC
                """
            return try await self.rows(conn, sql).map { r in
                ConflictRecord(
                    table: try r.string(0), pk: try r.string(1), column: try r.string(2),
                    winnerValue: try Value.decoded(try r.bytes(3)), winnerSiteName: name(try r.int64(4)),
                    winnerTime: HLC(rawValue: PGValue.uint64(try r.int64(5))).iso8601,
                    loserValue: try Value.decoded(try r.bytes(6)), loserSiteName: name(try r.int64(7)),
                    loserTime: HLC(rawValue: PGValue.uint64(try r.int64(8))).iso8601, resolved: try r[9].decode(Bool.self),
                    winnerPerson: try r.optionalString(10), loserPerson: try r.optionalString(11))
            }
        }
    }

    public func annotations(_ f: AnnotationFilter) async throws -> [Annotation] {
        try await read { conn in
            let s = self.schema
            var b = Binds()
            var conditions: [String] = []
            if let t = f.table { conditions.append("a.target_table = \(b.add(t))") }
            if let k = f.pk { conditions.append("a.target_pk = \(b.add(k))") }
            if let tag = f.tag {
                conditions.append("EXISTS (SELECT 1 FROM \(s)._annotation_tags g WHERE g.annotation_id = a.id AND g.tag = \(b.add(tag)))")
            }
            // Every word of the search, as a whole word, in any case.
            for word in Set(f.search.map(AnnotationRows.words) ?? []).sorted() {
                conditions.append("a.body ~* \(b.add("\\m" + word + "\\M"))")
            }
            let sql = """
                SELECT a.id, a.target_table, a.target_pk, a.target_column, a.body, a.author, a.status, a.reply_to, a.created,
                       (SELECT string_agg(tag, chr(31) ORDER BY tag COLLATE "C") FROM \(s)._annotation_tags g WHERE g.annotation_id = a.id),
                       EXISTS (SELECT 1 FROM \(s)._lode_rows r WHERE r.tbl = a.target_table AND r.pk = a.target_pk AND r.cl % 2 = 1),
                       (SELECT l.person FROM \(s)._lode_rows r JOIN \(s)._lode_log l ON l.id = r.first_log
                        WHERE r.tbl = '_annotations' AND r.pk = a.id)
                FROM \(s)._annotations a
                \(conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "))
                ORDER BY a.created DESC, a.id DESC
                \(f.limit.map { "LIMIT \(b.add(Int64(max(0, $0))))" } ?? "")
                """
            return try await self.rows(conn, sql, b).map { r in
                Annotation(
                    id: try r.string(0), table: try r.optionalString(1) ?? "", pk: try r.optionalString(2) ?? "", column: try r.optionalString(3),
                    text: try r.optionalString(4) ?? "", author: try r.optionalString(5) ?? "", status: try r.optionalString(6) ?? "",
                    replyTo: try r.optionalString(7), created: try r.optionalString(8) ?? "",
                    tags: try r.optionalString(9)?.split(separator: "\u{1F}").map(String.init) ?? [], targetExists: try r[10].decode(Bool.self),
                    person: try r.optionalString(11))
            }
        }
    }

    // MARK: Queries

    /// Not yet on this store: its history keeps which commits wrote a row,
    /// not the values (DESIGN §12).
    public func query(_ sql: String, asOf point: HistoryPoint, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        throw StoreError(.badInput, "as-of queries are not available on the PostgreSQL store yet; run them on an SQLite replica")
    }

    public func diff(from: HistoryPoint, to: HistoryPoint?, table: String?, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        throw StoreError(.badInput, "diff is not available on the PostgreSQL store yet; run it on an SQLite replica")
    }

    public func checkpointDigest(at vector: VersionVector) async throws -> (digest: [UInt8], rows: Int) {
        throw StoreError(.badInput, "checkpoints are not available on the PostgreSQL store yet; sign them on an SQLite replica")
    }

    public func sign(checkpointAt vector: VersionVector, digest: [UInt8], rows: Int) async throws {
        throw StoreError(.badInput, "checkpoints are not available on the PostgreSQL store yet; sign them on an SQLite replica")
    }

    public func compact(to c: Checkpoint, keepHistory: UInt64, vacuum: Bool) async throws -> CompactionReport {
        throw StoreError(.badInput, "compaction is not available on the PostgreSQL store yet")
    }

    /// Never compacted (the store cannot compact yet).
    public func compactedVector() async throws -> VersionVector? { nil }

    /// Runs one read-only statement on the dataset's schema (its tables
    /// need no schema name), in PostgreSQL's dialect, stopped after
    /// `queryTimeLimit`. Anything that would write is refused.
    public func query(_ sql: String, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        let ms = Int64(max(1, queryTimeLimit * 1000))
        try await read(limit: nil) { conn in
            var b = Binds()
            try await conn.run(
                "SELECT set_config('search_path', \(b.add(self.dataset)) || ', pg_catalog', true), set_config('statement_timeout', \(b.add(String(ms))), true)",
                b.bindings, logger: self.logger)
            var sent = false
            let rows = try await conn.query(PostgresQuery(unsafeSQL: sql), logger: self.logger)
            for try await row in rows {
                if !sent {
                    try each(.columns(row.map(\.columnName)))
                    sent = true
                }
                try each(.row(try row.map { try PGValue.decodeAny($0) }))
            }
            if !sent { try each(.columns(rows.columns.map(\.name))) }
        }
    }

    /// SQL edits are captured and turned into commits on SQLite stores;
    /// a PostgreSQL store takes edits as rows (`write`, `importCSV`).
    public func exec(_ sql: String) async throws -> WriteReport {
        throw StoreError.badInput(
            "exec runs on SQLite stores; a node on PostgreSQL (a relay, a server replica) takes rows by import or from its peers")
    }

    public func exec(file path: String) async throws -> WriteReport { try await exec("") }

    // MARK: Local edits

    public func alter(_ defs: [TableDef]) async throws -> SchemaChange {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may change the schema")
        }
        return try await write { tx in
            let plan = try DatasetRules.planAlter(existing: tx.state.schemas, declared: defs)
            if !plan.defs.isEmpty {
                var edits = PGLocalEdits(tx)
                edits.define(plan.defs)
                try await edits.finish()
            }
            return plan.change
        }
    }

    public func annotate(_ note: NewAnnotation) async throws -> String {
        let tags = try AnnotationRows.check(note, by: local)
        return try await write { tx in
            guard let table = tx.state.schemas[note.table] else {
                throw DatasetRules.noTable(note.table, in: self.dataset, tables: Array(tx.state.schemas.keys))
            }
            var edits = PGLocalEdits(tx)
            let rowPresent = Merge.isPresent(try await edits.length(note.table, note.pk))
            var replyPresent = true
            if let reply = note.replyTo { replyPresent = Merge.isPresent(try await edits.length(AnnotationRows.notes, reply)) }
            try AnnotationRows.checkTarget(note, table: table, rowPresent: rowPresent, replyPresent: replyPresent)
            let id = AnnotationRows.id(hlc: edits.hlc, site: self.local.site)
            for row in AnnotationRows.rows(note, id: id, author: self.local.name, hlc: edits.hlc, tags: tags) {
                try await edits.apply(row, onlyChanges: false)
            }
            try await edits.finish()
            return id
        }
    }

    public func setAnnotationStatus(_ id: String, status: String) async throws -> Bool {
        let change = try AnnotationRows.statusEdit(id, status: status, by: local)
        return try await write { tx in
            var edits = PGLocalEdits(tx)
            guard Merge.isPresent(try await edits.length(AnnotationRows.notes, id)) else {
                throw StoreError.notFound("no annotation \(id) in dataset \(self.dataset)")
            }
            let changed = try await edits.apply(change, onlyChanges: true)
            try await edits.finish()
            return changed
        }
    }

    public func write(_ edits: [RowEdit]) async throws -> WriteReport {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may change rows")
        }
        for case .put(let table, _, _, _) in edits where Identifier.isReserved(table) { throw StoreError.managedTable(table) }
        return try await write(limit: nil) { tx in
            var batch = PGLocalEdits(tx)
            for e in edits { try await batch.apply(e, onlyChanges: false) }
            try await batch.finish()
            return WriteReport(rowsChanged: batch.changed, commits: batch.commits)
        }
    }

    public func importCSV(table: String, path: String, progress: (@Sendable (ImportProgress) -> Void)?) async throws -> ImportReport {
        try CSVImport.check(table: table, by: local)
        return try await write(limit: nil) { tx in
            guard let schema = tx.state.schemas[table] else {
                throw DatasetRules.noTable(table, in: self.dataset, tables: Array(tx.state.schemas.keys))
            }
            let records = try CSVImport.Records(path: path, table: schema, progress: progress)
            var batch = PGLocalEdits(tx)
            while let pk = try records.next() {
                try await batch.apply(.put(table: table, pk: pk, columns: records.plan.columns, values: records.values), onlyChanges: true)
            }
            try await batch.finish()
            return ImportReport(rowsRead: records.count, rowsChanged: batch.changed, commits: batch.commits)
        }
    }

    public func close() throws {}
}

/// The PostgreSQL store's metrics: write transactions by outcome, and
/// their latency (the commit's fsync included).
enum PGMetrics {
    static func transaction(_ started: ContinuousClock.Instant, _ outcome: String) {
        Timer(label: "lode_postgres_transaction_seconds", preferredDisplayUnit: .seconds).recordNanoseconds(
            (ContinuousClock.now - started).nanoseconds)
        Counter(label: "lode_postgres_transactions_total", dimensions: [("outcome", outcome)]).increment()
    }
}
