import Foundation
import LodeCore
import Synchronization

/// A replica kept in memory by the rules alone: LodeCore's `ReferenceReplica`
/// merges rows and finds conflicts, and everything else is the code every
/// store shares (`CommitVerifier`, `LocalCommitBuilder`, `AnnotationRows`,
/// `DatasetRules`, `CSVImport`, `HistoryRules`). It is the yardstick the
/// conformance suite holds every store to, and a store for tests that need
/// no files. It runs no SQL.
///
/// ```swift
/// let r = ReferenceStore(dataset: "d", local: site)
/// _ = try await r.alter(defs)
/// _ = try await r.write([.put(table: "elements", pk: "Nd", columns: ["name"], values: [.text("Neodymium")])])
/// ```
public final class ReferenceStore: ReplicaStore {
    public let dataset: String
    public let local: LocalSite
    private let wallClock: @Sendable () -> UInt64
    private let maxClockDrift: UInt64
    private let state: Mutex<State>
    private let observers = Mutex<[UUID: @Sendable (VersionVector) -> Void]>([:])

    struct State: Sendable {
        var replica: ReferenceReplica
        /// Every commit held, in the order applied.
        var log: [Commit] = []
        var sites: [SiteID: SiteRecord] = [:]
        /// Refused commits, newest last, each once.
        var rejected: [RejectionRecord] = []
        var rejectedHashes = Set<[UInt8]>()
        var refusalsOtherThanForks = 0
        var cutoffs = FeedCutoffs()
    }

    /// An empty replica of `dataset` (its system tables only).
    public init(
        dataset: String, local: LocalSite, wallClock: @escaping @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1000) },
        maxClockDrift: UInt64 = CommitVerifier.defaultMaxClockDrift
    ) {
        self.dataset = dataset
        self.maxClockDrift = maxClockDrift
        self.local = local
        self.wallClock = wallClock
        var s = State(replica: Self.emptyReplica(dataset))
        s.sites[local.site] = local.record
        state = Mutex(s)
    }

    /// A replica holding only the system tables.
    private static func emptyReplica(_ dataset: String) -> ReferenceReplica {
        var replica = ReferenceReplica(dataset: dataset)
        for def in AnnotationRows.systemTables { replica.define(def, stamp: SchemaStamp(hlc: .zero, site: AnnotationRows.genesisSite)) }
        return replica
    }

    public var vector: VersionVector { state.withLock { $0.replica.vector } }

    @discardableResult
    public func addObserver(_ f: @escaping @Sendable (VersionVector) -> Void) -> UUID {
        let id = UUID()
        observers.withLock { $0[id] = f }
        return id
    }

    public func removeObserver(_ id: UUID) { _ = observers.withLock { $0.removeValue(forKey: id) } }

    /// Runs `body` on a copy of the state and keeps the copy only if it
    /// succeeds (one transaction), then tells observers of commits added.
    private func transaction<T>(_ body: (inout State) throws -> T) throws -> T {
        let (result, added, vector) = try state.withLock { s -> (T, Bool, VersionVector) in
            var copy = s
            let r = try body(&copy)
            let added = copy.log.count != s.log.count || copy.replica.vector != s.replica.vector
            s = copy
            return (r, added, copy.replica.vector)
        }
        if added { for o in observers.withLock({ Array($0.values) }) { o(vector) } }
        return result
    }

    private func read<T>(_ body: (State) throws -> T) rethrows -> T { try state.withLock { try body($0) } }

    // MARK: Commits

    public func apply(_ commits: [Commit]) async throws -> ApplyOutcome {
        try transaction { s in ApplyOutcome.collecting(commits) { applyOne(&s, $0) } }
    }

    private func applyOne(_ s: inout State, _ commit: Commit) -> CommitVerifier.Verdict {
        let log = s.log
        let verdict = CommitVerifier.verify(
            commit, dataset: dataset, head: s.replica.head(of: commit.author), held: s.replica.vector, author: s.sites[commit.author],
            now: wallClock(), maxDrift: maxClockDrift, cutoffs: s.cutoffs,
            heldHash: { seq in log.first { $0.author == commit.author && $0.seq == seq }?.hash })
        switch verdict {
        case .duplicate, .wait, .clockAhead:
            return verdict
        case .reject(let kind, let reason):
            reject(&s, commit, kind, reason)
            return verdict
        case .apply:
            do {
                try s.replica.apply(commit, dependenciesHeld: s.cutoffs.isEmpty ? nil : s.cutoffs.satisfying(s.replica.vector))
                s.log.append(commit)
                return verdict
            } catch {
                let reason = (error as? SchemaViolation)?.message ?? "\(error)"
                reject(&s, commit, .invalid, reason)
                return .reject(.invalid, reason)
            }
        }
    }

    public var cutoffs: FeedCutoffs { read { $0.cutoffs } }

    public func cut(_ cutoffs: [SiteID: UInt64]) async throws -> Int {
        try transaction { s in
            s.cutoffs.merge(cutoffs)
            guard !s.cutoffs.excess(in: s.replica.vector).isEmpty else { return 0 }
            let log = s.log
            s.log = []
            s.replica = Self.emptyReplica(dataset)
            var dropped = 0
            for commit in log {
                guard !s.cutoffs.refuses(commit) else {
                    dropped += 1
                    reject(&s, commit, .notAuthorized, s.cutoffs.reason(commit))
                    continue
                }
                if case .apply = applyOne(&s, commit) { continue }
                dropped += 1
            }
            return dropped
        }
    }

    private func reject(_ s: inout State, _ commit: Commit, _ kind: RejectionKind, _ reason: String) {
        guard s.rejectedHashes.insert(commit.hash).inserted else { return }
        s.rejected.append(
            RejectionRecord(site: commit.author, seq: commit.seq, kind: kind, reason: RejectionLog.reason(reason), received: wallClock()))
        // As the SQLite store: the newest `maxKept` refusals other than forks,
        // pruned every 256.
        guard kind != .forkedFeed else { return }
        s.refusalsOtherThanForks += 1
        if s.refusalsOtherThanForks > RejectionLog.maxKept + 255 {
            var excess = s.refusalsOtherThanForks - RejectionLog.maxKept
            s.rejected.removeAll { r in
                guard excess > 0, r.kind != .forkedFeed else { return false }
                excess -= 1
                return true
            }
            s.refusalsOtherThanForks = RejectionLog.maxKept
        }
    }

    public func missingCommits(after vector: VersionVector, maxBytes: Int, maxCount: Int) async throws -> [StoredCommit] {
        read { s in
            var out: [StoredCommit] = []
            var total = 0
            for c in s.log where c.seq > vector[c.author] {
                out.append(StoredCommit(site: c.author, seq: c.seq, bytes: c.bytes))
                total += c.bytes.count
                if total >= maxBytes || out.count >= maxCount { break }
            }
            return out
        }
    }

    public func commitCount() async throws -> Int { read { $0.log.count } }

    public func registerSite(_ record: SiteRecord) async throws {
        try transaction { s in s.sites[record.site] = record }
    }

    public func knowsSite(_ site: SiteID) async throws -> Bool { read { $0.sites[site]?.role != nil } }

    public func sites() async throws -> [SiteRecord] { read { Array($0.sites.values) } }

    public func rejections(limit: Int, kind: RejectionKind?) async throws -> [RejectionRecord] {
        read { Array($0.rejected.reversed().filter { kind == nil || $0.kind == kind }.prefix(limit)) }
    }

    public func rejectionCount() async throws -> Int { read { $0.rejected.count } }

    // MARK: Reading

    public func schema() async throws -> [TableSchema] {
        read { s in s.replica.schemas.values.filter { !Identifier.isReserved($0.name) }.sorted { $0.name < $1.name } }
    }

    public func rowCounts() async throws -> [TableRowCount] {
        try await schema().map { t in TableRowCount(table: t.name, rows: read { $0.replica.rows(of: t.name).count }) }
    }

    public func export(table: String, _ each: @escaping @Sendable (QueryEvent) throws -> Void) async throws {
        let tables = try await schema()
        guard let t = tables.first(where: { $0.name == table }) else {
            throw DatasetRules.noTable(table, in: dataset, tables: tables.map(\.name))
        }
        let columns = t.orderedColumns.map(\.name)
        let rows = read { $0.replica.rows(of: table) }
        try each(.columns([t.primaryKey] + columns))
        // In the order SQLite sorts text: by its UTF-8 bytes.
        for pk in rows.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            try each(.row([.text(pk)] + columns.map { rows[pk]![$0] ?? .null }))
        }
    }

    public func history(table: String, pk: String) async throws -> [HistoryEntry] {
        try read { s in
            guard s.replica.schemas[table] != nil, !Identifier.isReserved(table) || Role.annotationTables.contains(table) else {
                throw StoreError.notFound("no table \(table) in dataset \(dataset)")
            }
            guard let row = s.replica.row(table, pk) else {
                throw StoreError.notFound("no row \(pk) in table \(table): nothing was ever written to it")
            }
            let touching = s.log.filter { c in
                c.ops.contains { op in
                    switch op {
                    case .put(let p): p.table == table && p.keys.contains(pk)
                    case .delete(let d): d.table == table && d.keys.contains(pk)
                    case .defineTable: false
                    }
                }
            }
            return HistoryRules.entries(
                table: table, pk: pk, commits: touching, length: row.length, stamp: { row.cells[$0]?.stamp },
                name: { s.sites[$0]?.displayName ?? $0.short })
        }
    }

    public func conflicts(includeResolved: Bool) async throws -> [ConflictRecord] {
        read { s in
            func name(_ site: SiteID) -> String { (s.sites[site]?.name ?? site.short).lowercased() }
            func person(_ stamp: CellStamp) -> String? {
                s.log.first { $0.author == stamp.site && $0.seq == stamp.seq }.flatMap { $0.person.isEmpty ? nil : $0.person }
            }
            return s.replica.conflicts.reversed().filter { includeResolved || $0.resolvedBy == nil }.map { c in
                ConflictRecord(
                    table: c.table, pk: c.pk, column: c.column, winnerValue: c.winner.value, winnerSiteName: name(c.winner.stamp.site),
                    winnerTime: c.winner.stamp.hlc.iso8601, loserValue: c.loser.value, loserSiteName: name(c.loser.stamp.site),
                    loserTime: c.loser.stamp.hlc.iso8601, resolved: c.resolvedBy != nil, winnerPerson: person(c.winner.stamp),
                    loserPerson: person(c.loser.stamp))
            }
        }
    }

    public func annotations(_ f: AnnotationFilter) async throws -> [Annotation] {
        read { s in
            let notes = s.replica.rows(of: AnnotationRows.notes)
            var tags: [String: [String]] = [:]
            for (_, row) in s.replica.rows(of: AnnotationRows.tags) {
                if case .text(let id)? = row["annotation_id"], case .text(let tag)? = row["tag"] { tags[id, default: []].append(tag) }
            }
            func text(_ v: Value?) -> String? { if case .text(let t)? = v { t } else { nil } }
            let words = f.search.map(AnnotationRows.words) ?? []
            var out: [Annotation] = []
            for (id, row) in notes {
                let a = Annotation(
                    id: id, table: text(row["target_table"]) ?? "", pk: text(row["target_pk"]) ?? "", column: text(row["target_column"]),
                    text: text(row["body"]) ?? "", author: text(row["author"]) ?? "", status: text(row["status"]) ?? "",
                    replyTo: text(row["reply_to"]), created: text(row["created"]) ?? "", tags: (tags[id] ?? []).sorted(),
                    targetExists: s.replica.row(text(row["target_table"]) ?? "", text(row["target_pk"]) ?? "").map { Merge.isPresent($0.length) }
                        ?? false,
                    person: s.log.first { c in
                        c.ops.contains { if case .put(let p) = $0 { p.table == AnnotationRows.notes && p.keys.contains(id) } else { false } }
                    }.flatMap { $0.person.isEmpty ? nil : $0.person })
                if let t = f.table, a.table != t { continue }
                if let pk = f.pk, a.pk != pk { continue }
                if let tag = f.tag, !a.tags.contains(tag) { continue }
                if !words.isEmpty && !Set(words).isSubset(of: Set(AnnotationRows.words(a.text))) { continue }
                out.append(a)
            }
            out.sort { ($0.created, $0.id) > ($1.created, $1.id) }
            return f.limit.map { Array(out.prefix(max(0, $0))) } ?? out
        }
    }

    public var bytesOnDisk: UInt64 { read { s in UInt64(s.log.reduce(0) { $0 + $1.bytes.count }) } }

    // MARK: Local edits

    public func alter(_ defs: [TableDef]) async throws -> SchemaChange {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may change the schema")
        }
        return try transaction { s in
            let plan = try DatasetRules.planAlter(existing: s.replica.schemas, declared: defs)
            if !plan.defs.isEmpty {
                var edits = LocalEdits(store: self, state: s)
                edits.define(plan.defs)
                s = try edits.finish()
            }
            return plan.change
        }
    }

    public func annotate(_ note: NewAnnotation) async throws -> String {
        let tags = try AnnotationRows.check(note, by: local)
        return try transaction { s in
            guard let table = s.replica.schemas[note.table] else {
                throw DatasetRules.noTable(note.table, in: dataset, tables: Array(s.replica.schemas.keys))
            }
            let rowPresent = s.replica.row(note.table, note.pk).map { Merge.isPresent($0.length) } ?? false
            let replyPresent = note.replyTo.map { s.replica.row(AnnotationRows.notes, $0).map { Merge.isPresent($0.length) } ?? false } ?? true
            try AnnotationRows.checkTarget(note, table: table, rowPresent: rowPresent, replyPresent: replyPresent)
            var edits = LocalEdits(store: self, state: s)
            let id = AnnotationRows.id(hlc: edits.builder.start.hlc, site: local.site)
            for row in AnnotationRows.rows(note, id: id, author: local.name, hlc: edits.builder.start.hlc, tags: tags) {
                _ = try edits.apply(row, onlyChanges: false)
            }
            s = try edits.finish()
            return id
        }
    }

    public func setAnnotationStatus(_ id: String, status: String) async throws -> Bool {
        let edit = try AnnotationRows.statusEdit(id, status: status, by: local)
        return try transaction { s in
            guard s.replica.row(AnnotationRows.notes, id).map({ Merge.isPresent($0.length) }) ?? false else {
                throw StoreError.notFound("no annotation \(id) in dataset \(dataset)")
            }
            var edits = LocalEdits(store: self, state: s)
            let changed = try edits.apply(edit, onlyChanges: true)
            s = try edits.finish()
            return changed
        }
    }

    public func write(_ edits: [RowEdit]) async throws -> WriteReport {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may change rows")
        }
        for case .put(let table, _, _, _) in edits where Identifier.isReserved(table) {
            throw StoreError.managedTable(table)
        }
        return try transaction { s in
            var batch = LocalEdits(store: self, state: s)
            var changed = 0
            for e in edits where try batch.apply(e, onlyChanges: false) { changed += 1 }
            s = try batch.finish()
            return WriteReport(rowsChanged: changed, commits: batch.commits)
        }
    }

    public func importCSV(table: String, path: String, progress: (@Sendable (ImportProgress) -> Void)?) async throws -> ImportReport {
        try CSVImport.check(table: table, by: local)
        return try transaction { s in
            guard let schema = s.replica.schemas[table] else {
                throw DatasetRules.noTable(table, in: dataset, tables: Array(s.replica.schemas.keys))
            }
            var batch = LocalEdits(store: self, state: s)
            var changed = 0
            let rows = try CSVImport.read(path: path, table: schema, progress: progress) { plan, pk, values in
                if try batch.apply(.put(table: table, pk: pk, columns: plan.columns, values: values), onlyChanges: true) { changed += 1 }
            }
            let before = s.log.count
            s = try batch.finish()
            return ImportReport(rowsRead: rows, rowsChanged: changed, commits: s.log.count - before)
        }
    }

    public func close() throws {}

    /// Local edits on a copy of the state: each row edit is encoded by a
    /// `LocalCommitBuilder` at the length the rules give it; a full commit is
    /// signed and applied to the replica as this site's own (`local: true`),
    /// the same effect SQLite's row-by-row application has.
    struct LocalEdits {
        let store: ReferenceStore
        var state: State
        var builder: LocalCommitBuilder
        /// Rows edited in the commit being built: their causal length and
        /// the values written, which the replica does not show yet.
        var pending: [String: (length: UInt64, values: [String: Value])] = [:]
        /// Commits applied so far.
        var commits = 0

        init(store: ReferenceStore, state: State) {
            var state = state
            let start = LocalEdits.start(store, &state)
            self.store = store
            self.state = state
            builder = LocalCommitBuilder(local: store.local, dataset: store.dataset, person: Attribution.person, start: start)
        }

        static func start(_ store: ReferenceStore, _ state: inout State) -> CommitStart {
            CommitStart(hlc: state.replica.clock.tick(wallMillis: store.wallClock()), seq: state.replica.head(of: store.local.site).seq + 1)
        }

        mutating func define(_ defs: [TableDef]) { builder.define(defs) }

        /// Applies a row edit; returns true when it wrote something.
        mutating func apply(_ edit: RowEdit, onlyChanges: Bool) throws -> Bool {
            switch edit {
            case .put(let table, let pk, var columns, var values):
                guard let schema = state.replica.schemas[table] else {
                    throw DatasetRules.noTable(table, in: store.dataset, tables: Array(state.replica.schemas.keys))
                }
                for c in columns where schema.columns[c] == nil { throw StoreError.notFound("no column \(c) in table \(table)") }
                let key = table + "\u{1F}" + pk
                let length = pending[key]?.length ?? state.replica.row(table, pk)?.length ?? 0
                if columns.isEmpty {
                    guard let row = try KeyOnlyRow.write(schema, present: Merge.isPresent(length)) else { return false }
                    (columns, values) = row
                }
                if onlyChanges && Merge.isPresent(length) {
                    let shown = state.replica.rows(of: table)[pk] ?? [:]
                    let keep = columns.indices.filter { j in
                        (pending[key]?.values[columns[j]] ?? shown[columns[j]]) != schema.columns[columns[j]]!.def.materialized(values[j])
                    }
                    if keep.isEmpty { return false }
                    columns = keep.map { columns[$0] }
                    values = keep.map { values[$0] }
                }
                let written = Merge.lengthForLocalWrite(length)
                try builder.put(table: table, columns: columns, pk: pk, length: written, values: values)
                var entry = pending[key] ?? (written, [:])
                entry.length = written
                if written != length { entry.values = [:] }
                for (c, v) in zip(columns, values) { entry.values[c] = schema.columns[c]!.def.materialized(v) }
                pending[key] = entry
            case .delete(let table, let pk):
                guard state.replica.schemas[table] != nil else {
                    throw DatasetRules.noTable(table, in: store.dataset, tables: Array(state.replica.schemas.keys))
                }
                let key = table + "\u{1F}" + pk
                let length = pending[key]?.length ?? state.replica.row(table, pk)?.length ?? 0
                guard let deleted = Merge.lengthForLocalDelete(length) else { return false }
                try builder.delete(table: table, pk: pk, length: deleted)
                pending[key] = (deleted, [:])
            }
            if builder.isFull { try commit(startNext: true) }
            return true
        }

        /// Signs the commit built and applies it as this site's own.
        private mutating func commit(startNext: Bool) throws {
            let head = state.replica.head(of: store.local.site)
            if let c = try builder.sign(head: head, held: state.replica.vector) {
                let commit = try Commit(decoding: c.signed.bytes)
                try state.replica.apply(commit, local: true)
                state.log.append(commit)
                commits += 1
                pending = [:]
            }
            if startNext { builder.restart(at: LocalEdits.start(store, &state)) }
        }

        /// Signs and applies the last commit; returns the state to keep.
        mutating func finish() throws -> State {
            try commit(startNext: false)
            return state
        }
    }
}
