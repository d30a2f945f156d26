import LodeCore

/// Where a local commit starts: its stamp and its seq in the site's feed.
public struct CommitStart: Sendable, Hashable {
    /// The commit's clock.
    public var hlc: HLC
    /// Its seq in the site's feed.
    public var seq: UInt64

    /// Creates a start.
    public init(hlc: HLC, seq: UInt64) {
        self.hlc = hlc
        self.seq = seq
    }
}

/// A row named by its key alone (an import whose header is only the key,
/// a put listing no column). A put must name at least one column (peers
/// refuse one that names none), so an absent or deleted row is written as
/// an INSERT of the key is, with every column's default, and a row that is
/// there is left as it is. The same in every store.
public enum KeyOnlyRow {
    /// The columns and values to write for `table`'s row, or nil when the
    /// row is present and nothing is to be written.
    public static func write(_ table: TableSchema, present: Bool) throws -> (columns: [String], values: [Value])? {
        if present { return nil }
        let all = table.orderedColumns
        guard !all.isEmpty else {
            throw StoreError.badInput("table \(table.name) has only its key \(table.primaryKey): a row needs at least one other column")
        }
        return (all.map(\.name), all.map(\.defaultValue))
    }
}

/// Who a local write is for: the person of this site (`lode user`) on
/// whose behalf the node writes, named in every commit the write makes
/// (commit version 2); "" for the site itself. The node sets it around
/// each request (the signed-in person in the workspace, the CLI's person
/// on the socket); a store reads it when a write begins, in the caller's
/// task.
///
/// ```swift
/// try await Attribution.$person.withValue("ana") { try await replica.exec("UPDATE …") }
/// ```
public enum Attribution {
    @TaskLocal public static var person = ""
}

/// A local commit, signed and ready to store.
public struct LocalCommit: Sendable {
    /// The signed encoding and its fields.
    public var signed: SignedCommit
    /// Its full causal past: the site's vector at its previous commit,
    /// raised by the dependencies, with its own seq.
    public var past: VersionVector
}

/// Builds this site's commits from local edits. The store applies each row
/// edit to its tables and hands it here, where it is encoded at once (rows
/// of one table and column list share an op); `isFull` says when the
/// commit has reached `budget` bytes, and `sign` checks the site's role and
/// signs it. An import of a million rows thus becomes a few signed commits
/// of about a megabyte each, never held as values.
///
/// ```swift
/// var builder = LocalCommitBuilder(local: site, dataset: "d", start: CommitStart(hlc: clock.tick(…), seq: head.seq + 1))
/// try builder.put(table: "elements", columns: ["name"], pk: "Nd", length: 1, values: [.text("Neodymium")])
/// if let commit = try builder.sign(head: head, held: vector) { store(commit) }
/// ```
public struct LocalCommitBuilder {
    /// The largest local commit, in encoded bytes.
    public static let budget = 1 << 20

    /// The site writing.
    public let local: LocalSite
    /// The dataset written.
    public let dataset: String
    /// The person named in every commit built ("" for none).
    public let person: String
    /// The stamp and seq of the commit being built.
    public private(set) var start: CommitStart
    private var ops = OpsEncoder()
    /// Rows added to every commit so far.
    public private(set) var rowCount = 0

    /// Starts the first commit.
    public init(local: LocalSite, dataset: String, person: String = "", start: CommitStart) {
        precondition(person.isEmpty || Identifier.isValidPerson(person), "a person's name is checked where it is given")
        self.local = local
        self.dataset = dataset
        self.person = person
        self.start = start
    }

    /// True once the commit has reached the budget: sign it and start the next.
    public var isFull: Bool { ops.byteCount >= LocalCommitBuilder.budget }

    /// True when the commit being built has no op.
    public var isEmpty: Bool { ops.isEmpty }

    /// Adds a row written with `values` (one per column). Refuses a key, a
    /// value or a row too large for every peer to accept; the builder is
    /// then spoilt, like the transaction it belongs to, and must be dropped.
    public mutating func put(table: String, columns: [String], pk: String, length: UInt64, values: [Value]) throws {
        // Import and exec refuse an empty key before they get here; a write
        // by key (a conflict kept through the API) would otherwise make a
        // row no command can name.
        guard !pk.isEmpty else { throw StoreError.badInput("table \(table): the primary key may not be empty") }
        guard pk.utf8.count <= Op.maxKeyBytes else {
            // Peers refuse such a commit as malformed, on every reconnect.
            throw StoreError.badInput(
                "a primary key of \(table) is \(pk.utf8.count) bytes long; a key may be at most \(Op.maxKeyBytes) bytes (it begins \(pk.prefix(40).debugDescription))"
            )
        }
        let bytes = ops.put(table: table, columns: columns, pk: pk, length: length, values: values)
        // Checked only for rows over 16 MiB, so ordinary rows pay nothing.
        if bytes > Limits.maxText { try LocalCommitBuilder.checkSize(table: table, pk: pk, columns: columns, values: values, bytes: bytes) }
        rowCount += 1
    }

    /// Adds a deleted row. Refuses a delete past the last life a row may
    /// have (`Limits.maxCausalLength`), which no peer would accept.
    public mutating func delete(table: String, pk: String, length: UInt64) throws {
        guard length <= Limits.maxCausalLength else {
            throw StoreError.badInput(
                "row \(pk) of \(table) has been deleted and inserted again as often as a row may be (\(Limits.maxCausalLength) lives); it cannot be deleted again"
            )
        }
        ops.delete(table: table, pk: pk, length: length)
        rowCount += 1
    }

    /// Adds table definitions.
    public mutating func define(_ defs: [TableDef]) {
        for d in defs { ops.define(d) }
    }

    /// Signs the commit built, following `head` (the site's own feed) with
    /// `held` (everything the replica holds), and empties the builder.
    /// Returns nil, signing nothing, when the commit has no op. Refuses a
    /// commit the site's role does not allow.
    public mutating func sign(head: FeedHead, held: VersionVector) throws -> LocalCommit? {
        precondition(start.seq == head.seq + 1, "a local commit follows its site's head")
        let encoded = ops.finish()
        guard encoded.count > 0 else { return nil }
        guard local.role.permits(defines: encoded.definesSchema, tables: encoded.tables) else {
            let what = encoded.definesSchema ? "change the schema" : "write table \(encoded.tables.sorted().joined(separator: ", "))"
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue) and may not \(what)")
        }
        let signed = try local.writer.commit(dataset: dataset, person: person, ops: encoded, hlc: start.hlc, head: head, held: held)
        let past = FeedRules.causalPast(author: local.site, seq: signed.header.seq, deps: signed.header.deps, previous: head.vector)
        return LocalCommit(signed: signed, past: past)
    }

    /// Starts the next commit (after the last one was stored).
    public mutating func restart(at next: CommitStart) {
        precondition(ops.isEmpty, "the commit being built was signed first")
        start = next
    }

    /// Refuses a value over `Limits.maxText` or a row over `Limits.maxRowBytes`
    /// (`bytes`, its encoded size), naming them.
    public static func checkSize(table: String, pk: String, columns: [String], values: [Value], bytes: Int) throws {
        for (c, v) in zip(columns, values) {
            let size: Int
            switch v {
            case .text(let s): size = s.utf8.count
            case .blob(let b): size = b.count
            default: size = 0
            }
            if size > Limits.maxText {
                throw StoreError.badInput(
                    "\(table).\(c) of row \(pk) is \(size >> 20) MiB; a text or blob value may be at most \(Limits.maxText >> 20) MiB")
            }
        }
        if bytes > Limits.maxRowBytes {
            throw StoreError.badInput("row \(pk) of \(table) is \(bytes >> 20) MiB; a row may be at most \(Limits.maxRowBytes >> 20) MiB")
        }
    }
}
