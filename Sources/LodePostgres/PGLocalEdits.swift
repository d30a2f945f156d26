import Foundation
import LodeCore
import LodeStore

/// This site's edits inside a write transaction: each row edit is encoded
/// by a `LocalCommitBuilder` at the causal length the rules give it; a full
/// commit is signed and applied as this site's own (no conflicts: it has
/// seen everything held here). The same steps as the reference store's
/// `LocalEdits`, with the row states read from the database.
struct PGLocalEdits {
    let tx: PGTx
    var builder: LocalCommitBuilder
    /// Rows edited in the commit being built: their causal length and the
    /// values written, which the tables do not show yet.
    var pending: [String: (length: UInt64, values: [String: Value])] = [:]
    /// Commits applied so far.
    var commits = 0
    /// Rows that changed.
    var changed = 0

    init(_ tx: PGTx) {
        self.tx = tx
        builder = LocalCommitBuilder(
            local: tx.replica.local, dataset: tx.replica.dataset, person: Attribution.person, start: PGLocalEdits.start(tx))
    }

    static func start(_ tx: PGTx) -> CommitStart {
        CommitStart(hlc: tx.state.clock.tick(wallMillis: tx.replica.wallClock()), seq: tx.state.head(of: tx.replica.local.site).seq + 1)
    }

    var hlc: HLC { builder.start.hlc }

    mutating func define(_ defs: [TableDef]) { builder.define(defs) }

    private func noTable(_ table: String) -> StoreError {
        DatasetRules.noTable(table, in: tx.replica.dataset, tables: Array(tx.state.schemas.keys))
    }

    /// The causal length of a row, pending edits included.
    func length(_ table: String, _ pk: String) async throws -> UInt64 {
        if let p = pending[table + "\u{1F}" + pk] { return p.length }
        return try await tx.meta(table, pk).length
    }

    /// Applies a row edit; returns true when it wrote something.
    @discardableResult
    mutating func apply(_ edit: RowEdit, onlyChanges: Bool) async throws -> Bool {
        switch edit {
        case .put(let table, let pk, var columns, var values):
            guard let schema = tx.state.schemas[table] else { throw noTable(table) }
            for c in columns where schema.columns[c] == nil { throw StoreError.notFound("no column \(c) in table \(table)") }
            let key = table + "\u{1F}" + pk
            let length = try await length(table, pk)
            if columns.isEmpty {
                guard let row = try KeyOnlyRow.write(schema, present: Merge.isPresent(length)) else { return false }
                (columns, values) = row
            }
            if onlyChanges && Merge.isPresent(length) {
                var shown = try await tx.shown(table, pk) ?? [:]
                if let p = pending[key] { shown.merge(p.values) { _, new in new } }
                let keep = columns.indices.filter { j in shown[columns[j]] != schema.columns[columns[j]]!.def.materialized(values[j]) }
                if keep.isEmpty { return false }
                columns = keep.map { columns[$0] }
                values = keep.map { values[$0] }
            }
            let written = Merge.lengthForLocalWrite(length)
            try builder.put(table: table, columns: columns, pk: pk, length: written, values: values)
            var entry = pending[key] ?? (written, [:])
            if written != entry.length { entry.values = [:] }
            entry.length = written
            for (c, v) in zip(columns, values) { entry.values[c] = schema.columns[c]!.def.materialized(v) }
            pending[key] = entry
        case .delete(let table, let pk):
            guard tx.state.schemas[table] != nil else { throw noTable(table) }
            let key = table + "\u{1F}" + pk
            guard let deleted = Merge.lengthForLocalDelete(try await length(table, pk)) else { return false }
            try builder.delete(table: table, pk: pk, length: deleted)
            pending[key] = (deleted, [:])
        }
        changed += 1
        if builder.isFull { try await commit(startNext: true) }
        return true
    }

    /// Signs the commit built and applies it as this site's own.
    private mutating func commit(startNext: Bool) async throws {
        let local = tx.replica.local.site
        if let c = try builder.sign(head: tx.state.head(of: local), held: tx.state.vector) {
            let commit = try Commit(decoding: c.signed.bytes)
            let past = try FeedRules.check(commit, head: tx.state.head(of: local), held: tx.state.vector)
            try await tx.store(commit, past: past, local: true)
            commits += 1
            pending = [:]
        }
        if startNext { builder.restart(at: PGLocalEdits.start(tx)) }
    }

    /// Signs and applies the last commit.
    mutating func finish() async throws {
        try await commit(startNext: false)
    }
}
