/// A column of a replicated table.
public struct ColumnDef: Hashable, Sendable {
    /// The column name: lowercase ASCII letters, digits and `_`.
    public var name: String
    /// The declared type.
    public var type: ColumnType
    /// True when the column refuses NULL; such a column always has a default.
    public var notNull: Bool
    /// The value a cell takes when no write has set it.
    public var defaultValue: Value

    /// Creates a column definition.
    public init(name: String, type: ColumnType, notNull: Bool = false, defaultValue: Value = .null) {
        self.name = name
        self.type = type
        self.notNull = notNull
        self.defaultValue = defaultValue
    }

    /// The value a cell of this column shows for a write of `value`: a NULL
    /// written to a NOT NULL column shows the default, on every replica alike.
    /// (It does not depend on the column's type: a concurrent definition
    /// may change the type, and replicas that learn of it at different
    /// times must still agree. How a store with typed columns holds a
    /// value is the store's affair: `SQLiteAffinity`.)
    @inlinable public func materialized(_ value: Value) -> Value {
        value.isNull && notNull ? defaultValue : value
    }
}

/// A table definition: the primary key column's name and some columns.
/// Definitions are add-only: a later definition of the same table adds the
/// columns it names, and concurrent definitions merge to their union.
public struct TableDef: Hashable, Sendable {
    /// The table name.
    public var name: String
    /// The name of the text primary-key column.
    public var primaryKey: String
    /// The other columns.
    public var columns: [ColumnDef]

    /// Creates a table definition.
    public init(name: String, primaryKey: String, columns: [ColumnDef]) {
        self.name = name
        self.primaryKey = primaryKey
        self.columns = columns
    }
}

/// Rows written with the same set of columns: the bulk form of "set cells".
/// `values` is row-major: row `i`, column `j` is `values[i * columns.count + j]`.
public struct PutRows: Hashable, Sendable {
    /// The table written.
    public var table: String
    /// The columns written in every row (never the primary key).
    public var columns: [String]
    /// The primary key of each row.
    public var keys: [String]
    /// The causal length of each row after the write (odd: present).
    public var lengths: [UInt64]
    /// The written values, row-major.
    public var values: [Value]

    /// Creates an empty put for `columns` of `table`.
    public init(table: String, columns: [String]) {
        self.table = table
        self.columns = columns
        keys = []
        lengths = []
        values = []
    }

    /// The number of rows.
    public var rowCount: Int { keys.count }

    /// Appends one row; `rowValues` holds one value per column.
    @inlinable
    public mutating func append(key: String, length: UInt64, values rowValues: [Value]) {
        precondition(rowValues.count == columns.count, "one value per column")
        keys.append(key)
        lengths.append(length)
        values.append(contentsOf: rowValues)
    }

    /// The values of row `i`.
    public func row(_ i: Int) -> ArraySlice<Value> {
        values[(i * columns.count)..<((i + 1) * columns.count)]
    }
}

/// Row deletions: each row's causal length after the delete (even: absent).
public struct DeleteRows: Hashable, Sendable {
    /// The table written.
    public var table: String
    /// The primary key of each row.
    public var keys: [String]
    /// The causal length of each row after the delete.
    public var lengths: [UInt64]

    /// Creates an empty delete for `table`.
    public init(table: String) {
        self.table = table
        keys = []
        lengths = []
    }

    /// Appends one deleted row.
    public mutating func append(key: String, length: UInt64) {
        keys.append(key)
        lengths.append(length)
    }
}

/// One change in a commit.
public enum Op: Hashable, Sendable {
    /// Define a table or add columns to it.
    case defineTable(TableDef)
    /// Set cells of rows, inserting rows that are absent.
    case put(PutRows)
    /// Delete rows.
    case delete(DeleteRows)

    /// The table the op touches.
    public var table: String {
        switch self {
        case .defineTable(let t): t.name
        case .put(let p): p.table
        case .delete(let d): d.table
        }
    }

    /// True for a table definition.
    public var isDefinition: Bool { if case .defineTable = self { true } else { false } }

    /// The encoding's op tags.
    public enum Tag: UInt8 {
        case defineTable = 1, put = 2, delete = 3
    }

    /// The longest primary key, in bytes.
    public static let maxKeyBytes = 4096

    /// Appends the canonical encoding of the op.
    public func encode(into w: inout ByteWriter) {
        switch self {
        case .defineTable(let t):
            w.writeByte(Tag.defineTable.rawValue)
            w.writeString(t.name)
            w.writeString(t.primaryKey)
            w.writeVarint(UInt64(t.columns.count))
            for c in t.columns {
                w.writeString(c.name)
                w.writeByte(c.type.rawValue)
                w.writeByte(c.notNull ? 1 : 0)
                c.defaultValue.encode(into: &w)
            }
        case .put(let p):
            Op.encodePutHeader(table: p.table, columns: p.columns, rowCount: p.rowCount, into: &w)
            for i in 0..<p.rowCount { Op.encodePutRow(pk: p.keys[i], length: p.lengths[i], values: p.row(i), into: &w) }
        case .delete(let d):
            Op.encodeDeleteHeader(table: d.table, rowCount: d.keys.count, into: &w)
            for i in 0..<d.keys.count { Op.encodeDeleteRow(pk: d.keys[i], length: d.lengths[i], into: &w) }
        }
    }

    // The layout of put and delete ops, written once here for `encode` and
    // for writers that encode rows as they go (`OpsEncoder`): a header
    // naming the table (and for a put, the columns) and the row count, then
    // the rows.

    /// Appends the header of a put op: tag, table, columns, row count.
    public static func encodePutHeader(table: String, columns: [String], rowCount: Int, into w: inout ByteWriter) {
        w.writeByte(Tag.put.rawValue)
        w.writeString(table)
        w.writeVarint(UInt64(columns.count))
        for c in columns { w.writeString(c) }
        w.writeVarint(UInt64(rowCount))
    }

    /// Appends one row of a put op: its primary key, causal length, and
    /// one value per column of the header.
    @inlinable
    public static func encodePutRow<Values: Collection<Value>>(pk: String, length: UInt64, values: Values, into w: inout ByteWriter) {
        w.writeString(pk)
        w.writeVarint(length)
        for v in values { v.encode(into: &w) }
    }

    /// Appends the header of a delete op: tag, table, row count.
    public static func encodeDeleteHeader(table: String, rowCount: Int, into w: inout ByteWriter) {
        w.writeByte(Tag.delete.rawValue)
        w.writeString(table)
        w.writeVarint(UInt64(rowCount))
    }

    /// Appends one row of a delete op: its primary key and causal length.
    public static func encodeDeleteRow(pk: String, length: UInt64, into w: inout ByteWriter) {
        w.writeString(pk)
        w.writeVarint(length)
    }

    /// Reads one op, enforcing every structural rule of the format.
    public static func decode(from r: inout ByteReader) throws(BinaryDecodingError) -> Op {
        let at = r.offset
        let tagByte = try r.readByte()
        guard let tag = Tag(rawValue: tagByte) else {
            throw BinaryDecodingError(.unknownTag, at: at, "unknown op tag \(tagByte)")
        }
        switch tag {
        case .defineTable:
            let name = try readIdentifier(&r, "table name")
            let pk = try readIdentifier(&r, "primary key name")
            // Each column takes at least 4 bytes.
            let n = try r.readCount(limit: min(Limits.maxColumns, r.remaining / 4), "column count")
            var columns: [ColumnDef] = []
            columns.reserveCapacity(n)
            var seen: Set<String> = [pk]
            for _ in 0..<n {
                let cat = r.offset
                let cname = try readIdentifier(&r, "column name")
                guard seen.insert(cname).inserted else {
                    throw BinaryDecodingError(.invalidValue, at: cat, "column \(cname) is defined twice")
                }
                let tat = r.offset
                let tb = try r.readByte()
                guard let type = ColumnType(rawValue: tb) else {
                    throw BinaryDecodingError(.unknownTag, at: tat, "unknown column type \(tb)")
                }
                let fat = r.offset
                let flags = try r.readByte()
                guard flags <= 1 else { throw BinaryDecodingError(.notCanonical, at: fat, "unknown column flags \(flags)") }
                let dflt = try Value.decode(from: &r)
                if flags == 1 && dflt.isNull {
                    throw BinaryDecodingError(.invalidValue, at: fat, "NOT NULL column \(cname) has no default")
                }
                columns.append(ColumnDef(name: cname, type: type, notNull: flags == 1, defaultValue: dflt))
            }
            return .defineTable(TableDef(name: name, primaryKey: pk, columns: columns))
        case .put:
            let table = try readIdentifier(&r, "table name")
            let ncols = try r.readCount(limit: min(Limits.maxColumns, r.remaining / 2), "column count")
            guard ncols > 0 else { throw BinaryDecodingError(.invalidValue, at: r.offset, "a put names no column") }
            var columns: [String] = []
            columns.reserveCapacity(ncols)
            var seen = Set<String>()
            for _ in 0..<ncols {
                let cat = r.offset
                let c = try readIdentifier(&r, "column name")
                guard seen.insert(c).inserted else {
                    throw BinaryDecodingError(.invalidValue, at: cat, "column \(c) is written twice in one put")
                }
                columns.append(c)
            }
            // Each row takes at least 2 bytes plus 1 per value.
            let nrows = try r.readCount(limit: r.remaining / (2 + ncols), "row count")
            guard nrows > 0 else { throw BinaryDecodingError(.invalidValue, at: r.offset, "a put has no row") }
            var put = PutRows(table: table, columns: columns)
            put.keys.reserveCapacity(nrows)
            put.lengths.reserveCapacity(nrows)
            put.values.reserveCapacity(nrows * ncols)
            for _ in 0..<nrows {
                put.keys.append(try r.readString(limit: maxKeyBytes))
                let lat = r.offset
                let cl = try r.readVarint()
                guard cl % 2 == 1 else {
                    throw BinaryDecodingError(.invalidValue, at: lat, "a put's causal length must be odd, not \(cl)")
                }
                guard cl <= Limits.maxCausalLength else {
                    throw BinaryDecodingError(.tooLarge, at: lat, "causal length \(cl) exceeds the limit of \(Limits.maxCausalLength)")
                }
                put.lengths.append(cl)
                for _ in 0..<ncols { put.values.append(try Value.decode(from: &r)) }
            }
            return .put(put)
        case .delete:
            let table = try readIdentifier(&r, "table name")
            let nrows = try r.readCount(limit: r.remaining / 2, "row count")
            guard nrows > 0 else { throw BinaryDecodingError(.invalidValue, at: r.offset, "a delete has no row") }
            var del = DeleteRows(table: table)
            for _ in 0..<nrows {
                del.keys.append(try r.readString(limit: maxKeyBytes))
                let lat = r.offset
                let cl = try r.readVarint()
                guard cl >= 2, cl % 2 == 0 else {
                    throw BinaryDecodingError(.invalidValue, at: lat, "a delete's causal length must be even and positive, not \(cl)")
                }
                guard cl <= Limits.maxCausalLength else {
                    throw BinaryDecodingError(.tooLarge, at: lat, "causal length \(cl) exceeds the limit of \(Limits.maxCausalLength)")
                }
                del.lengths.append(cl)
            }
            return .delete(del)
        }
    }

    static func readIdentifier(_ r: inout ByteReader, _ what: String) throws(BinaryDecodingError) -> String {
        let at = r.offset
        let s = try r.readString(limit: Limits.maxIdentifier)
        guard Identifier.isValid(s) else {
            throw BinaryDecodingError(.invalidValue, at: at, "\(what) \"\(s)\" is not a valid identifier")
        }
        return s
    }
}
