import Foundation
import GRDB
import LodeCore
import LodeStore
import Synchronization

/// Local edits inside one write transaction: each row edit is merged into
/// the file at once (`RowMerger`) and handed to a `LocalCommitBuilder`,
/// which encodes it; whenever the commit being built is full it is signed
/// and stored, and the next begins. The whole batch commits or rolls back
/// as one transaction.
final class LocalBatch {
    let tx: WriteTransaction
    private var builder: LocalCommitBuilder
    private var context: CommitContext
    /// Commits signed and stored so far (only counted: an import's commits
    /// are not kept in memory).
    private(set) var commitCount = 0
    /// Rows written (inserted, updated or deleted).
    private(set) var changedRows = 0
    private var finished = false

    /// `person` is who the commits name (`Attribution.person`, read in the
    /// caller's task: the writer's thread has no task).
    init(_ tx: WriteTransaction, person: String) throws {
        self.tx = tx
        let start = tx.nextLocalStart()
        builder = LocalCommitBuilder(local: tx.replica.local, dataset: tx.replica.dataset, person: person, start: start)
        context = try tx.state.context(tx.db, author: tx.replica.local.site, hlc: start.hlc, seq: start.seq, past: nil)
    }

    var state: WriterState { tx.state }
    var db: Database { tx.db }
    /// The stamp of the commit being built.
    var hlc: HLC { builder.start.hlc }

    /// Looks a table up, or throws a not-found error naming the tables there are.
    func table(_ name: String) throws -> TableState { try state.schema.require(name, dataset: tx.replica.dataset) }

    /// Inserts or updates one row. `values` holds one value per column. With
    /// `onlyChanges`, cells equal to what the row shows are left alone and
    /// an unchanged row writes nothing. Returns true when something was written.
    @discardableResult
    func put(_ t: TableState, pk: String, columns: [String], slots: [Int], values: [Value], onlyChanges: Bool) throws -> Bool {
        if columns.isEmpty {
            let present = Merge.isPresent(try state.rows.readRow(db, t, pk).length)
            guard let row = try KeyOnlyRow.write(t.schema, present: present) else { return false }
            return try put(t, pk: pk, columns: row.columns, slots: row.columns.map { t.slot($0)! }, values: row.values, onlyChanges: false)
        }
        guard let meta = try state.rows.insertOrRead(db, t, pk: pk, length: 1, slots: slots, values: values[...], context) else {
            try builder.put(table: t.name, columns: columns, pk: pk, length: 1, values: values)
            try added()
            return true
        }
        var columns = columns
        var slots = slots
        var values = values
        if onlyChanges && Merge.isPresent(meta.length) {
            let s = try t.select(db, slots: slots)
            defer { s.reset() }
            s.bind(1, pk)
            if try s.step(db) {
                var keep: [Int] = []
                for j in 0..<slots.count where s.value(Int32(j)) != t.bySlot[slots[j]]!.materialized(values[j]) { keep.append(j) }
                if keep.isEmpty { return false }
                if keep.count < slots.count {
                    columns = keep.map { columns[$0] }
                    slots = keep.map { slots[$0] }
                    values = keep.map { values[$0] }
                }
            }
        }
        let length = Merge.lengthForLocalWrite(meta.length)
        try state.rows.put(db, t, pk: pk, length: length, slots: slots, values: values[...], meta: meta, context)
        try builder.put(table: t.name, columns: columns, pk: pk, length: length, values: values)
        try added()
        return true
    }

    /// Deletes one row if present. Returns true when it was.
    @discardableResult
    func delete(_ t: TableState, pk: String) throws -> Bool {
        let meta = try state.rows.readRow(db, t, pk)
        guard let length = Merge.lengthForLocalDelete(meta.length) else { return false }
        try state.rows.delete(db, t, pk: pk, length: length, meta: meta, context)
        try builder.delete(table: t.name, pk: pk, length: length)
        try added()
        return true
    }

    /// Applies a row edit by name; with `onlyChanges`, as `put` says.
    @discardableResult
    func apply(_ edit: RowEdit, onlyChanges: Bool = false) throws -> Bool {
        switch edit {
        case .put(let name, let pk, let columns, let values):
            let t = try table(name)
            let slots = try columns.map { c in
                guard let s = t.slot(c) else { throw StoreError.notFound("no column \(c) in table \(name)") }
                return s
            }
            return try put(t, pk: pk, columns: columns, slots: slots, values: values, onlyChanges: onlyChanges)
        case .delete(let name, let pk):
            return try delete(try table(name), pk: pk)
        }
    }

    /// Defines tables or adds columns.
    func define(_ defs: [TableDef]) throws {
        let stamp = SchemaStamp(hlc: builder.start.hlc, site: tx.replica.local.site)
        for def in defs { try state.schema.define(db, def, stamp: stamp) }
        builder.define(defs)
    }

    private func added() throws {
        precondition(!finished, "a finished batch takes no more edits")
        changedRows += 1
        if builder.isFull { try storeCommit(startNext: true) }
    }

    /// Signs the commit built and stores it; then starts the next one. Its
    /// bytes are deflated for the log on another core while the next commit
    /// is built (`Deflating`), and stored when that one is, or at `finish`.
    private func storeCommit(startNext: Bool) throws {
        let head = state.feeds.head(tx.replica.local.site)
        guard let commit = try builder.sign(head: head, held: state.feeds.vector) else { return }
        let h = commit.signed.header
        try storePendingLog()
        let row = try state.feeds.advance(
            db, author: h.author, number: context.author, seq: h.seq, hlc: h.hlc, hash: commit.signed.hash, person: h.person,
            past: commit.past)
        pendingLog = (row, Deflating(commit.signed.bytes))
        tx.noteStored(StoredCommit(site: h.author, seq: h.seq, bytes: commit.signed.bytes))
        commitCount += 1
        if startNext {
            let start = tx.nextLocalStart()
            builder.restart(at: start)
            context = try state.context(db, author: tx.replica.local.site, hlc: start.hlc, seq: start.seq, past: nil)
        }
    }

    /// Signs and stores the last commit; nothing more may be added. Returns
    /// how many commits the batch wrote. Calling it again does nothing.
    @discardableResult
    func finish() throws -> Int {
        if !finished {
            finished = true
            try storeCommit(startNext: false)
            try storePendingLog()
        }
        return commitCount
    }

    /// The last commit signed, whose log row waits for its deflated bytes.
    private var pendingLog: (row: FeedLog.PendingRow, bytes: Deflating)?

    private func storePendingLog() throws {
        guard let (row, bytes) = pendingLog else { return }
        pendingLog = nil
        try state.feeds.store(db, row, bytes.result())
    }
}

/// A commit's bytes being deflated for the log (`LogBytes.stored`) on
/// another thread; `result()` waits for them. A small commit (a one-row
/// edit) is deflated at once, sparing it the hop; and if no thread has
/// taken the work by the time the writer asks, the writer does it itself,
/// so it never waits on a busy pool.
final class Deflating: @unchecked Sendable {
    private let bytes: [UInt8]
    private let claimed = Atomic(false)
    private let done = DispatchSemaphore(value: 0)
    private var stored = Data()

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        if bytes.count < 64 << 10 {
            run()
            return
        }
        DispatchQueue.global(qos: .userInitiated).async { [self] in run() }
    }

    /// Deflates, unless another thread already does.
    private func run() {
        guard claimed.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else { return }
        stored = LogBytes.stored(bytes)
        done.signal()
    }

    func result() -> Data {
        run()
        done.wait()
        done.signal()
        return stored
    }
}
