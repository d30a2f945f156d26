import Foundation
import LodeCore
import LodeStore
import NIOCore
import PostgresNIO
import Synchronization

/// What a PostgreSQL replica keeps in memory of its dataset: the sites by
/// number, the feed heads and vector, the merged schemas with each
/// column's slot, the cut-offs, the clock, and the next log id. It is read
/// from the database when the replica opens and again whenever another
/// process wrote the dataset since (`generation` in `_lode_meta`).
struct PGState: Sendable {
    var generation: Int64 = 0
    /// Bumped (`_lode_meta` key `catalog`) by a write that changed more
    /// than the log and feeds: the sites, schemas, cut-offs or misfit
    /// tables. While it stands, a re-read after another process's write
    /// reads only the feeds. Nil: not recorded (a database from before it
    /// was), so every re-read is whole.
    var catalog: Int64?
    var numbers: [SiteID: SiteNumber] = [:]
    var keys: [SiteNumber: SiteID] = [:]
    var records: [SiteID: SiteRecord] = [:]
    var heads: [SiteID: FeedHead] = [:]
    var vector = VersionVector()
    var schemas: [String: TableSchema] = [:]
    /// Table → column → slot (the column's index in a row's clocks).
    var slots: [String: [String: Int]] = [:]
    var cutoffs = FeedCutoffs()
    var clock = HybridLogicalClock()
    var nextLog: Int64 = 1
    /// Tables with cells kept in `_lode_misfits`.
    var misfitTables: Set<String> = []

    func head(of site: SiteID) -> FeedHead { heads[site] ?? .empty }

    /// The user tables, sorted by name.
    var userTables: [TableSchema] {
        schemas.values.filter { !Identifier.isReserved($0.name) }.sorted { $0.name < $1.name }
    }

    /// True when `other` has the same sites, schemas, cut-offs and misfit
    /// tables (what `catalog` stands for).
    func sameCatalog(as other: PGState) -> Bool {
        numbers == other.numbers && records == other.records && schemas == other.schemas && slots == other.slots
            && cutoffs == other.cutoffs && misfitTables == other.misfitTables
    }

    /// Reads the dataset's state. With `cached` (what this process held
    /// before another wrote), only the feeds, clock and log position are
    /// read again when the catalog is unchanged since.
    static func load(_ conn: PostgresConnection, schema s: String, logger: Logger, reusing cached: PGState? = nil) async throws -> PGState {
        var state = PGState()
        let meta = "SELECT (SELECT value FROM \(s)._lode_meta WHERE key = 'generation'), (SELECT value FROM \(s)._lode_meta WHERE key = 'catalog')"
        for r in try await conn.rows(meta, logger: logger) {
            state.generation = Int64(try r.optionalString(0) ?? "") ?? 0
            state.catalog = try r.optionalString(1).flatMap { Int64($0) }
        }
        if let cached, let catalog = state.catalog, cached.catalog == catalog {
            var next = cached
            next.generation = state.generation
            next.heads = [:]
            next.vector = VersionVector()
            try await loadFeeds(conn, schema: s, logger: logger, into: &next)
            return next
        }
        for r in try await conn.rows("SELECT id, key, name, role, cert, valid_from, valid_until FROM \(s)._lode_sites", logger: logger) {
            let n = try r.int64(0)
            let key = try SiteID(bytes: try r.bytes(1))
            state.numbers[key] = n
            state.keys[n] = key
            state.records[key] = SiteRecord(
                site: key, name: try r.optionalString(2), role: try r.optionalString(3).flatMap(Role.init(rawValue:)),
                certificate: try r.optionalBytes(4), validFrom: try r.optionalInt64(5).map { UInt64(max(0, $0)) },
                validUntil: try r.optionalInt64(6).map { UInt64(max(0, $0)) })
        }
        var tables: [String: TableSchema] = [:]
        for r in try await conn.rows("SELECT name, pk, hlc, site FROM \(s)._lode_tables", logger: logger) {
            let name = try r.string(0)
            let stamp = SchemaStamp(hlc: HLC(rawValue: PGValue.uint64(try r.int64(2))), site: try SiteID(bytes: try r.bytes(3)))
            tables[name] = TableSchema(TableDef(name: name, primaryKey: try r.string(1), columns: []), stamp: stamp)
            state.slots[name] = [:]
        }
        let columns = try await conn.rows(
            "SELECT tbl, slot, name, type, not_null, dflt, hlc, site, first_hlc, first_site, first_ordinal FROM \(s)._lode_columns", logger: logger)
        for r in columns {
            let table = try r.string(0)
            guard tables[table] != nil else { continue }
            guard let type = ColumnType(rawValue: UInt8(clamping: try r[3].decode(Int16.self))) else {
                throw StoreError(.storage, "table \(table): a column of unknown type")
            }
            let def = ColumnDef(
                name: try r.string(2), type: type, notNull: try r[4].decode(Bool.self), defaultValue: try Value.decoded(try r.bytes(5)))
            tables[table]!.columns[def.name] = TableSchema.Column(
                def: def, stamp: SchemaStamp(hlc: HLC(rawValue: PGValue.uint64(try r.int64(6))), site: try SiteID(bytes: try r.bytes(7))),
                firstStamp: SchemaStamp(hlc: HLC(rawValue: PGValue.uint64(try r.int64(8))), site: try SiteID(bytes: try r.bytes(9))),
                ordinal: Int(try r[10].decode(Int32.self)))
            state.slots[table]![def.name] = Int(try r[1].decode(Int32.self))
        }
        state.schemas = tables
        for r in try await conn.rows("SELECT site, seq FROM \(s)._lode_cutoffs", logger: logger) {
            _ = state.cutoffs.merge([try SiteID(bytes: try r.bytes(0)): PGValue.uint64(try r.int64(1))])
        }
        for r in try await conn.rows("SELECT DISTINCT tbl FROM \(s)._lode_misfits", logger: logger) {
            state.misfitTables.insert(try r.string(0))
        }
        try await loadFeeds(conn, schema: s, logger: logger, into: &state)
        return state
    }

    /// The feeds' heads and the vector, the log's next id, and the clock
    /// past every head's stamp.
    private static func loadFeeds(_ conn: PostgresConnection, schema s: String, logger: Logger, into state: inout PGState) async throws {
        for r in try await conn.rows("SELECT site, seq, hash, vector FROM \(s)._lode_feeds", logger: logger) {
            guard let key = state.keys[try r.int64(0)] else { continue }
            let head = FeedHead(seq: PGValue.uint64(try r.int64(1)), hash: try r.bytes(2), vector: try VersionVector(decoding: try r.bytes(3)))
            state.heads[key] = head
            state.vector[key] = head.seq
        }
        // Both by index: the log's last id, and the newest stamp among the
        // feeds' heads (each site's clock only moves forward, so a head is
        // its feed's newest). `max(hlc)` over the log read all of it, and
        // this runs whenever another process wrote.
        let heads = """
            SELECT (SELECT coalesce(max(id), 0) FROM \(s)._lode_log),
                   (SELECT coalesce(max(l.hlc), 0) FROM \(s)._lode_feeds f JOIN \(s)._lode_log l ON l.site = f.site AND l.seq = f.seq)
            """
        for r in try await conn.rows(heads, logger: logger) {
            state.nextLog = try r.int64(0) + 1
            state.clock.observe(HLC(rawValue: PGValue.uint64(try r.int64(1))))
        }
    }
}

/// Lets one task at a time through, in the order they came (a writer's
/// turn: PostgreSQL serialises writers of a dataset across processes with
/// an advisory lock; this keeps one process's writers from queueing on it
/// with a connection each).
final class AsyncGate: Sendable {
    private let state = Mutex<(busy: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func run<T>(_ body: () async throws -> T) async throws -> T {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if !s.busy {
                    s.busy = true
                    return true
                }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
        defer {
            let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
                if s.waiters.isEmpty {
                    s.busy = false
                    return nil
                }
                return s.waiters.removeFirst()
            }
            next?.resume()
        }
        return try await body()
    }
}
