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
            w.writeByte(Tag.put.rawValue)
            w.writeString(p.table)
            w.writeVarint(UInt64(p.columns.count))
            for c in p.columns { w.writeString(c) }
            w.writeVarint(UInt64(p.keys.count))
            var v = 0
            for i in 0..<p.keys.count {
                w.writeString(p.keys[i])
                w.writeVarint(p.lengths[i])
                for _ in 0..<p.columns.count {
                    p.values[v].encode(into: &w)
                    v += 1
                }
            }
        case .delete(let d):
            w.writeByte(Tag.delete.rawValue)
            w.writeString(d.table)
            w.writeVarint(UInt64(d.keys.count))
            for i in 0..<d.keys.count {
                w.writeString(d.keys[i])
                w.writeVarint(d.lengths[i])
            }
        }
    }

    /// Reads one op, enforcing every structural rule of the format.
    public static func decode(from r: inout ByteReader) throws(DecodingError) -> Op {
        let at = r.offset
        let tagByte = try r.readByte()
        guard let tag = Tag(rawValue: tagByte) else {
            throw DecodingError(.unknownTag, at: at, "unknown op tag \(tagByte)")
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
                    throw DecodingError(.invalidValue, at: cat, "column \(cname) is defined twice")
                }
                let tat = r.offset
                let tb = try r.readByte()
                guard let type = ColumnType(rawValue: tb) else {
                    throw DecodingError(.unknownTag, at: tat, "unknown column type \(tb)")
                }
                let fat = r.offset
                let flags = try r.readByte()
                guard flags <= 1 else { throw DecodingError(.notCanonical, at: fat, "unknown column flags \(flags)") }
                let dflt = try Value.decode(from: &r)
                if flags == 1 && dflt.isNull {
                    throw DecodingError(.invalidValue, at: fat, "NOT NULL column \(cname) has no default")
                }
                columns.append(ColumnDef(name: cname, type: type, notNull: flags == 1, defaultValue: dflt))
            }
            return .defineTable(TableDef(name: name, primaryKey: pk, columns: columns))
        case .put:
            let table = try readIdentifier(&r, "table name")
            let ncols = try r.readCount(limit: min(Limits.maxColumns, r.remaining / 2), "column count")
            guard ncols > 0 else { throw DecodingError(.invalidValue, at: r.offset, "a put names no column") }
            var columns: [String] = []
            columns.reserveCapacity(ncols)
            var seen = Set<String>()
            for _ in 0..<ncols {
                let cat = r.offset
                let c = try readIdentifier(&r, "column name")
                guard seen.insert(c).inserted else {
                    throw DecodingError(.invalidValue, at: cat, "column \(c) is written twice in one put")
                }
                columns.append(c)
            }
            // Each row takes at least 2 bytes plus 1 per value.
            let nrows = try r.readCount(limit: r.remaining / (2 + ncols), "row count")
            guard nrows > 0 else { throw DecodingError(.invalidValue, at: r.offset, "a put has no row") }
            var put = PutRows(table: table, columns: columns)
            put.keys.reserveCapacity(nrows)
            put.lengths.reserveCapacity(nrows)
            put.values.reserveCapacity(nrows * ncols)
            for _ in 0..<nrows {
                put.keys.append(try r.readString(limit: maxKeyBytes))
                let lat = r.offset
                let cl = try r.readVarint()
                guard cl % 2 == 1 else {
                    throw DecodingError(.invalidValue, at: lat, "a put's causal length must be odd, not \(cl)")
                }
                put.lengths.append(cl)
                for _ in 0..<ncols { put.values.append(try Value.decode(from: &r)) }
            }
            return .put(put)
        case .delete:
            let table = try readIdentifier(&r, "table name")
            let nrows = try r.readCount(limit: r.remaining / 2, "row count")
            guard nrows > 0 else { throw DecodingError(.invalidValue, at: r.offset, "a delete has no row") }
            var del = DeleteRows(table: table)
            for _ in 0..<nrows {
                del.keys.append(try r.readString(limit: maxKeyBytes))
                let lat = r.offset
                let cl = try r.readVarint()
                guard cl >= 2, cl % 2 == 0 else {
                    throw DecodingError(.invalidValue, at: lat, "a delete's causal length must be even and positive, not \(cl)")
                }
                del.lengths.append(cl)
            }
            return .delete(del)
        }
    }

    static func readIdentifier(_ r: inout ByteReader, _ what: String) throws(DecodingError) -> String {
        let at = r.offset
        let s = try r.readString(limit: Limits.maxIdentifier)
        guard Identifier.isValid(s) else {
            throw DecodingError(.invalidValue, at: at, "\(what) \"\(s)\" is not a valid identifier")
        }
        return s
    }
}

/// The rules for table, column and dataset names.
public enum Identifier {
    /// True for a table or column name: 1 to 64 characters, a lowercase ASCII
    /// letter or `_` first, then lowercase letters, digits or `_`. SQLite
    /// compares names without regard to case, so Lodestone keeps one spelling.
    public static func isValid(_ s: String) -> Bool {
        let u = s.utf8
        guard let first = u.first, u.count <= 64 else { return false }
        guard first == UInt8(ascii: "_") || (first >= UInt8(ascii: "a") && first <= UInt8(ascii: "z")) else { return false }
        return u.allSatisfy { c in
            c == UInt8(ascii: "_") || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
        }
    }

    /// True for a dataset name: 1 to 64 characters from lowercase letters,
    /// digits, `-`, `_` and `.`, starting with a letter or digit.
    public static func isValidDataset(_ s: String) -> Bool {
        let u = s.utf8
        guard let first = u.first, u.count <= 64 else { return false }
        func alnum(_ c: UInt8) -> Bool {
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
        }
        guard alnum(first) else { return false }
        return u.allSatisfy { c in alnum(c) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") }
    }

    /// True for names reserved to Lodestone's own tables.
    public static func isReserved(_ s: String) -> Bool {
        s.hasPrefix("_") || s.hasPrefix("sqlite_")
    }
}
