/// The ops of a commit being written, in their canonical encoding. Rows
/// are encoded as they are added, and consecutive rows of one table (and,
/// for puts, one column list) share one op, so a commit of a million rows
/// is never held as values.
///
/// ```swift
/// var ops = OpsEncoder()
/// ops.put(table: "elements", columns: ["name"], pk: "Nd", length: 1, values: [.text("Neodymium")])
/// ops.delete(table: "elements", pk: "Pm", length: 2)
/// let encoded = ops.finish()  // 2 ops, ready for `Commit.sign(header:ops:with:)`
/// ```
public struct OpsEncoder: Sendable {
    /// Complete ops written so far.
    public private(set) var opCount = 0
    /// True when an op defines a table or columns.
    public private(set) var definesSchema = false
    /// The tables whose rows an op writes.
    public private(set) var tables = Set<String>()

    private var done = ByteWriter(capacity: 1 << 16)
    private enum Open: Sendable {
        case none
        case put(table: String, columns: [String])
        case delete(table: String)
    }
    /// The op being built, and its rows so far.
    private var open = Open.none
    private var rows = ByteWriter(capacity: 1 << 16)
    private var rowCount = 0

    /// Creates an encoder with no op.
    public init() {}

    /// The encoded size so far (the open op's header aside).
    public var byteCount: Int { done.count + rows.count }

    /// True when nothing has been added.
    public var isEmpty: Bool { opCount == 0 && rowCount == 0 }

    /// Adds a table definition.
    public mutating func define(_ def: TableDef) {
        close()
        Op.defineTable(def).encode(into: &done)
        opCount += 1
        definesSchema = true
    }

    /// Adds one row of a put: `values` holds one value per column. Returns
    /// the encoded size of the row.
    @discardableResult
    public mutating func put(table: String, columns: [String], pk: String, length: UInt64, values: [Value]) -> Int {
        if case .put(let t, let c) = open, t == table, c == columns {
        } else {
            close()
            open = .put(table: table, columns: columns)
        }
        let start = rows.count
        Op.encodePutRow(pk: pk, length: length, values: values, into: &rows)
        rowCount += 1
        return rows.count - start
    }

    /// Adds one row of a delete.
    public mutating func delete(table: String, pk: String, length: UInt64) {
        if case .delete(let t) = open, t == table {
        } else {
            close()
            open = .delete(table: table)
        }
        Op.encodeDeleteRow(pk: pk, length: length, into: &rows)
        rowCount += 1
    }

    /// Closes the op being built.
    private mutating func close() {
        switch open {
        case .none: return
        case .put(let table, let columns):
            Op.encodePutHeader(table: table, columns: columns, rowCount: rowCount, into: &done)
            tables.insert(table)
        case .delete(let table):
            Op.encodeDeleteHeader(table: table, rowCount: rowCount, into: &done)
            tables.insert(table)
        }
        done.writeBytes(rows.bytes)
        opCount += 1
        open = .none
        rows.removeAll()
        rowCount = 0
    }

    /// The ops written, leaving the encoder empty.
    public mutating func finish() -> EncodedOps {
        close()
        let out = EncodedOps(count: opCount, bytes: done.bytes, definesSchema: definesSchema, tables: tables)
        self = OpsEncoder()
        return out
    }
}

/// Ops in their canonical encoding, without the leading count.
public struct EncodedOps: Sendable {
    /// How many ops.
    public var count: Int
    /// The ops, one after another.
    public var bytes: [UInt8]
    /// True when an op defines a table or columns.
    public var definesSchema: Bool
    /// The tables whose rows the ops write.
    public var tables: Set<String>
}
