import Foundation
import LodeCore

/// One dataset's replica, as a store keeps it: the seam between storage and
/// the rest of a node (sync, the client API). `SQLiteReplica` (module
/// LodeSQLite) is the embedded store; `ReferenceStore` keeps a replica in
/// memory by the rules alone. Every store passes the same conformance suite
/// (`Tests/LodeStoreTests/ConformanceTests.swift`).
///
/// What every store shares lives beside this protocol and is called, not
/// restated: `CommitVerifier` judges commits from elsewhere, `LocalCommitBuilder`
/// builds this site's commits, `CausalBuffer` holds commits that must wait,
/// `AnnotationRows`, `DatasetRules`, `CSVImport` and `HistoryRules` hold the
/// rules of annotations, schemas, imports and history, and LodeCore's `Merge`
/// and `FeedRules` the CRDT's.
///
/// ```swift
/// let outcome = try await replica.apply(commits)          // from a peer
/// let missing = try await replica.missingCommits(after: peerVector, maxBytes: 1 << 20, maxCount: .max)
/// let id = try await replica.annotate(NewAnnotation(table: "facilities", pk: "mountain-pass", text: "check"))
/// ```
public protocol ReplicaStore: AnyObject, Sendable {
    /// The dataset's name.
    var dataset: String { get }
    /// The site that writes local edits.
    var local: LocalSite { get }
    /// What this replica holds: for each site, the highest seq held.
    var vector: VersionVector { get }

    /// Registers a callback run after each write that adds commits (local or
    /// from elsewhere), with the new vector. Returns a token for `removeObserver`.
    @discardableResult func addObserver(_ f: @escaping @Sendable (VersionVector) -> Void) -> UUID
    /// Removes an observer.
    func removeObserver(_ id: UUID)

    // MARK: Commits

    /// Verifies and applies commits from elsewhere, in order, in one
    /// transaction (`CommitVerifier` says what to do with each). A refused
    /// commit changes nothing and is kept aside; the others still apply.
    func apply(_ commits: [Commit]) async throws -> ApplyOutcome
    /// The commits a replica holding `vector` lacks, in local apply order (a
    /// causal order), stopping once about `maxBytes` or `maxCount` are
    /// gathered (at least one if any is missing).
    func missingCommits(after vector: VersionVector, maxBytes: Int, maxCount: Int) async throws -> [StoredCommit]
    /// How many commits the log holds.
    func commitCount() async throws -> Int
    /// Records what a verified certificate says about a site.
    func registerSite(_ record: SiteRecord) async throws
    /// True when a certificate for `site` has been registered.
    func knowsSite(_ site: SiteID) async throws -> Bool
    /// Every site this replica knows of.
    func sites() async throws -> [SiteRecord]
    /// Commits refused, newest first.
    func rejections(limit: Int, kind: RejectionKind?) async throws -> [RejectionRecord]
    /// How many commits were refused.
    func rejectionCount() async throws -> Int
    /// The feeds cut off here (DESIGN §9).
    var cutoffs: FeedCutoffs { get }
    /// Cuts feeds off (`FeedCutoffs`): merges `cutoffs` in (the smaller seq
    /// stays; kept across restarts), then drops every commit held past
    /// them, also applied ones: the tables, history and conflicts are
    /// recomputed from the remaining commits, as if only they had arrived,
    /// in the order they did, all in one transaction. A remaining commit
    /// that no longer applies (it wrote to a column only a dropped commit
    /// defined) is refused, as a replica that never held the dropped ones
    /// refuses it, and its feed's later commits are dropped with it.
    /// Returns how many commits were dropped.
    func cut(_ cutoffs: [SiteID: UInt64]) async throws -> Int

    // MARK: Reading

    /// The merged schemas of the user tables, by name.
    func schema() async throws -> [TableSchema]
    /// Row counts of the user tables.
    func rowCounts() async throws -> [TableRowCount]
    /// Streams every row of a user table in primary-key order: the column
    /// names (the key first, then the columns in canonical order), then rows.
    func export(table: String, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws
    /// Every write to one row, oldest first, and which of them it shows.
    func history(table: String, pk: String) async throws -> [HistoryEntry]
    /// Concurrent writes to one cell seen here, newest first.
    func conflicts(includeResolved: Bool) async throws -> [ConflictRecord]
    /// Annotations, newest first.
    func annotations(_ filter: AnnotationFilter) async throws -> [Annotation]
    /// The bytes the replica takes in its store.
    var bytesOnDisk: UInt64 { get }

    // MARK: Local edits

    /// Adds the tables and columns `defs` declare and the dataset lacks
    /// (`DatasetRules.planAlter` says what may change).
    func alter(_ defs: [TableDef]) async throws -> SchemaChange
    /// Writes an annotation; returns its id.
    func annotate(_ note: NewAnnotation) async throws -> String
    /// Resolves or reopens annotation `id` (`status` open or resolved);
    /// false when it already had that status.
    func setAnnotationStatus(_ id: String, status: String) async throws -> Bool
    /// Applies row edits as local commits, all or none.
    func write(_ edits: [RowEdit]) async throws -> WriteReport
    /// Inserts or updates rows from a CSV file, all or none.
    func importCSV(table: String, path: String, progress: (@Sendable (ImportProgress) -> Void)?) async throws -> ImportReport

    /// Closes the replica; it must not be used afterwards.
    func close() throws
}

/// A replica whose store runs SQL: queries (read-only) and edits made as
/// SQL statements, in the store's own dialect.
public protocol SQLReplicaStore: ReplicaStore {
    /// Runs one read-only statement, calling `each` with the column names
    /// and then each row. Anything that would write is refused.
    func query(_ sql: String, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws
    /// Runs one read-only statement on the dataset as it stood at `point`
    /// (the commits stamped at or before it), read from the history.
    func query(_ sql: String, asOf point: HistoryPoint, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws
    /// What changed between two points (`to` nil: now), in `table` or in
    /// every table: one row per changed cell with its old and new value and
    /// the write that made it.
    func diff(from: HistoryPoint, to: HistoryPoint?, table: String?, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws
    /// Runs `INSERT`, `UPDATE` and `DELETE` statements as local edits.
    func exec(_ sql: String) async throws -> WriteReport
    /// Runs the statements of a file as `exec` does, in one transaction,
    /// reading the file a piece at a time.
    func exec(file path: String) async throws -> WriteReport
    /// The canonical digest of the dataset at `vector`, which the replica
    /// holds, and the rows it covers (`CheckpointDigest`, DESIGN §12).
    func checkpointDigest(at vector: VersionVector) async throws -> (digest: [UInt8], rows: Int)
    /// Writes this site's signature of the checkpoint (V, D), as a local
    /// commit (`CheckpointRows`).
    func sign(checkpointAt vector: VersionVector, digest: [UInt8], rows: Int) async throws
    /// Compacts the dataset to checkpoint `c`, which the caller found
    /// complete, keeping `keepHistory` milliseconds of history (DESIGN §12).
    func compact(to c: Checkpoint, keepHistory: UInt64, vacuum: Bool) async throws -> CompactionReport
    /// The vector the log was compacted to (its commits' bytes are gone, so
    /// they cannot be sent), or nil if it never was.
    func compactedVector() async throws -> VersionVector?
}

extension ReplicaStore {
    /// The commits a replica holding `vector` lacks, decoded, in local apply
    /// order, at most `limit` of them.
    public func commits(missingFrom vector: VersionVector, limit: Int = 1000) async throws -> [Commit] {
        try await missingCommits(after: vector, maxBytes: .max, maxCount: limit).map { try Commit(decoding: $0.bytes) }
    }

    /// The commits a replica holding `vector` lacks, up to about `maxBytes`.
    public func missingCommits(after vector: VersionVector, maxBytes: Int) async throws -> [StoredCommit] {
        try await missingCommits(after: vector, maxBytes: maxBytes, maxCount: .max)
    }

    /// Commits refused, newest first (at most 100).
    public func rejections() async throws -> [RejectionRecord] { try await rejections(limit: 100, kind: nil) }

    /// The newest `limit` refusals.
    public func rejections(limit: Int) async throws -> [RejectionRecord] { try await rejections(limit: limit, kind: nil) }

    /// Concurrent writes to one cell seen here that no later write resolved.
    public func conflicts() async throws -> [ConflictRecord] { try await conflicts(includeResolved: false) }

    /// Every annotation, newest first.
    public func annotations() async throws -> [Annotation] { try await annotations(AnnotationFilter()) }

    /// Imports without progress reports.
    public func importCSV(table: String, path: String) async throws -> ImportReport {
        try await importCSV(table: table, path: path, progress: nil)
    }

    /// The user tables as `CREATE TABLE` statements.
    public func schemaSQL() async throws -> String {
        SchemaSQL.render(try await schema())
    }
}

/// A replica a catalog opened, and whether opening created it.
public struct Opened<Replica: Sendable>: Sendable {
    /// The replica.
    public let replica: Replica
    /// True when the dataset was new here and has been created empty.
    public let created: Bool

    public init(replica: Replica, created: Bool) {
        self.replica = replica
        self.created = created
    }
}

/// The datasets a node holds, in one store: each dataset's replica opened
/// at most once. `SQLiteCatalog` keeps them as files in a directory,
/// `PostgresCatalog` (module LodePostgres) as schemas in a database.
public protocol DatasetCatalog: AnyObject, Sendable {
    /// The datasets held, by name.
    func names() -> [String]
    /// The replica of dataset `name`, opened on first use; nil when the
    /// catalog holds no such dataset.
    func store(_ name: String) throws -> (any SQLReplicaStore)?
    /// Opens dataset `name`, creating it empty (no tables) when it is new
    /// here: how a dataset a peer's commit brings into being begins (the
    /// caller checks `DatasetRules.refusalToCreate` first).
    func openOrCreateStore(_ name: String) async throws -> Opened<any SQLReplicaStore>
    /// Creates dataset `name` with `tables`, committed by the local site
    /// (`DatasetRules.checkNew` says what is refused); leaves nothing behind
    /// if that fails.
    func createStore(_ name: String, tables: [TableDef]) async throws -> any SQLReplicaStore
    /// Closes every replica.
    func close()
}
