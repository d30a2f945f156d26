import GRDB
import LodeCore

/// Builds local commits inside one write transaction: each row change is
/// applied to the replica at once and added to the commit being built;
/// consecutive rows with the same table and columns share one op; when a
/// commit reaches the size budget it is signed and stored, and the next one
/// begins. The whole batch commits or rolls back as one transaction.
final class LocalBatch {
    let replica: Replica
    let db: Database
    let state: WriterState
    private var pending: PendingCommit
    /// The op being built: rows of one table (and one column list, for a
    /// put), encoded as they are added.
    private enum Current { case none, put(table: String, columns: [String]), delete(table: String) }
    private var current = Current.none
    private var rows = ByteWriter(capacity: 1 << 16)
    private var rowCount = 0
    /// Commits signed and stored so far (only counted: an import's commits
    /// are not kept in memory).
    private(set) var commitCount = 0
    /// Rows written (inserted, updated or deleted).
    private(set) var changedRows = 0

    init(_ replica: Replica, _ db: Database, _ state: WriterState) throws {
        self.replica = replica
        self.db = db
        self.state = state
        pending = try replica.beginLocal(db, state)
    }

    var context: CommitContext { pending.context }

    /// Looks a table up, or throws a not-found error naming the tables there are.
    func table(_ name: String) throws -> TableState {
        if let t = state.tables[name] { return t }
        let names = state.tables.keys.filter { !Identifier.isReserved($0) }.sorted()
        throw StoreError.notFound(
            "no table \(name) in dataset \(replica.dataset)" + (names.isEmpty ? "" : " (tables: \(names.joined(separator: ", ")))"))
    }

    /// Inserts or updates one row. `values` holds one value per column. With
    /// `onlyChanges`, cells equal to what the row holds are left alone and
    /// an unchanged row writes nothing. Returns true when something was written.
    @discardableResult
    func put(_ t: TableState, key: String, columns: [String], slots: [Int], values: [Value], onlyChanges: Bool) throws -> Bool {
        if try state.insertIfAbsent(db, t, key: key, length: 1, slots: slots, values: values[...], pending.context) {
            try add(t, key: key, length: 1, columns: columns, slots: slots, values: values)
            return true
        }
        let meta = try state.readRow(db, t, key)
        var columns = columns
        var slots = slots
        var values = values
        if onlyChanges && Merge.isPresent(meta.length) {
            let s = try t.select(db, slots: slots)
            defer { s.reset() }
            s.bind(1, key)
            if try s.step(db) {
                var keep: [Int] = []
                for j in 0..<slots.count {
                    let def = t.bySlot[slots[j]]!
                    let target = values[j].isNull && def.notNull ? def.defaultValue : values[j]
                    if s.value(Int32(j)) != target { keep.append(j) }
                }
                if keep.isEmpty { return false }
                if keep.count < slots.count {
                    columns = keep.map { columns[$0] }
                    slots = keep.map { slots[$0] }
                    values = keep.map { values[$0] }
                }
            }
        }
        let length = Merge.lengthForLocalWrite(meta.length)
        try state.put(db, t, key: key, length: length, slots: slots, values: values[...], meta: meta, pending.context)
        try add(t, key: key, length: length, columns: columns, slots: slots, values: values)
        return true
    }

    /// Adds an applied row to the commit being built, cutting the commit
    /// when it reaches the budget.
    private func add(_ t: TableState, key: String, length: UInt64, columns: [String], slots: [Int], values: [Value]) throws {
        if case .put(let table, let cols) = current, table == t.name, cols == columns {
        } else {
            flush()
            current = .put(table: t.name, columns: columns)
        }
        let start = rows.count
        rows.writeString(key)
        rows.writeVarint(length)
        for v in values { v.encode(into: &rows) }
        if rows.count - start > Limits.maxText { try checkSize(t, key: key, columns: columns, values: values, bytes: rows.count - start) }
        rowCount += 1
        changedRows += 1
        if pending.size + rows.count >= Replica.commitBudget { try rollOver() }
    }

    /// Refuses a value or a row too large for every peer to accept (checked
    /// only for rows over 16 MiB, so ordinary rows pay nothing).
    private func checkSize(_ t: TableState, key: String, columns: [String], values: [Value], bytes: Int) throws {
        for (c, v) in zip(columns, values) {
            let size: Int
            switch v {
            case .text(let s): size = s.utf8.count
            case .blob(let b): size = b.count
            default: size = 0
            }
            if size > Limits.maxText {
                throw StoreError.badInput(
                    "\(t.name).\(c) of row \(key) is \(size >> 20) MiB; a text or blob value may be at most \(Limits.maxText >> 20) MiB")
            }
        }
        if bytes > Limits.maxRowBytes {
            throw StoreError.badInput("row \(key) of \(t.name) is \(bytes >> 20) MiB; a row may be at most \(Limits.maxRowBytes >> 20) MiB")
        }
    }

    /// Deletes one row if present. Returns true when it was.
    @discardableResult
    func delete(_ t: TableState, key: String) throws -> Bool {
        let meta = try state.readRow(db, t, key)
        guard let length = Merge.lengthForLocalDelete(meta.length) else { return false }
        try state.delete(db, t, key: key, length: length, meta: meta, pending.context)
        if case .delete(let table) = current, table == t.name {
        } else {
            flush()
            current = .delete(table: t.name)
        }
        rows.writeString(key)
        rows.writeVarint(length)
        rowCount += 1
        changedRows += 1
        if pending.size + rows.count >= Replica.commitBudget { try rollOver() }
        return true
    }

    /// Defines tables or adds columns.
    func define(_ defs: [TableDef]) throws {
        flush()
        try replica.defineLocal(db, state, pending, defs)
    }

    private func flush() {
        switch current {
        case .none: break
        case .put(let table, let columns): pending.addPut(table: table, columns: columns, count: rowCount, rows: rows)
        case .delete(let table): pending.addDelete(table: table, count: rowCount, rows: rows)
        }
        current = .none
        rows.removeAll()
        rowCount = 0
    }

    private func rollOver() throws {
        flush()
        if try replica.finishLocal(db, state, pending) { commitCount += 1 }
        pending = try replica.beginLocal(db, state)
    }

    /// Signs and stores the last commit. Returns how many commits the batch wrote.
    @discardableResult
    func finish() throws -> Int {
        flush()
        if try replica.finishLocal(db, state, pending) { commitCount += 1 }
        return commitCount
    }
}
