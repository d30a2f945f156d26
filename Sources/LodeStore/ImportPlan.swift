import Foundation
import LodeCore

/// How the columns of a CSV header map onto a table, and how each field is
/// converted to its column's type.
public struct ImportPlan: Sendable {
    /// The table imported into.
    public let table: String
    let keyIndex: Int
    /// The columns, in header order, without the key.
    public let columns: [String]
    let types: [ColumnType]
    let fieldIndexes: [Int]
    let width: Int

    /// Maps `header` onto the columns of `t`.
    public init(table t: TableSchema, header: [String]) throws {
        table = t.name
        width = header.count
        var key: Int?
        var columns: [String] = []
        var types: [ColumnType] = []
        var indexes: [Int] = []
        var seen = Set<String>()
        for (i, raw) in header.enumerated() {
            let name = raw.trimmingCharacters(in: .whitespaces).lowercased()
            guard seen.insert(name).inserted else { throw StoreError.badInput("column \(name) appears twice in the header") }
            if name == t.primaryKey {
                key = i
                continue
            }
            guard let def = t.columns[name]?.def else {
                let known = ([t.primaryKey] + t.orderedColumns.map(\.name)).joined(separator: ", ")
                throw StoreError.notFound("unknown column \(name) in the header: table \(t.name) has \(known)")
            }
            columns.append(name)
            types.append(def.type)
            indexes.append(i)
        }
        guard let key else {
            throw StoreError.badInput("the header has no \(t.primaryKey) column: it is the primary key of \(t.name), and every row needs one")
        }
        keyIndex = key
        self.columns = columns
        self.types = types
        fieldIndexes = indexes
    }

    /// Converts one record: returns its key and fills `values` (reusing its storage).
    public func row(_ fields: [String], line: Int, into values: inout [Value]) throws -> String {
        guard fields.count == width else {
            throw StoreError.badInput("malformed CSV: line \(line): \(fields.count) fields, but the header has \(width)")
        }
        let key = fields[keyIndex]
        guard !key.isEmpty else { throw StoreError.badInput("line \(line): the primary key \(table) is empty") }
        guard key.utf8.count <= Op.maxKeyBytes else {
            throw StoreError.badInput("line \(line): the primary key is longer than \(Op.maxKeyBytes) bytes")
        }
        values.removeAll(keepingCapacity: true)
        for j in 0..<columns.count {
            let text = fields[fieldIndexes[j]]
            values.append(try ImportPlan.convert(text, to: types[j], line: line, column: columns[j]))
        }
        return key
    }

    /// Converts one CSV field to a column's type. An empty field is NULL.
    static func convert(_ text: String, to type: ColumnType, line: Int, column: String) throws -> Value {
        if text.isEmpty { return .null }
        guard text.utf8.count <= Limits.maxText else {
            throw StoreError.badInput("line \(line), column \(column): the value is longer than \(Limits.maxText >> 20) MiB")
        }
        switch type {
        case .text: return .text(text)
        case .integer:
            if let i = Int64(trimmed(text)) { return .integer(i) }
            throw StoreError.badInput("line \(line), column \(column): \(shown(text)) is not an INTEGER")
        case .real:
            if let d = Double(trimmed(text)), d.isFinite { return .real(d) }
            throw StoreError.badInput("line \(line), column \(column): \(shown(text)) is not a REAL number")
        case .blob:
            if let d = Data(base64Encoded: text) { return .blob([UInt8](d)) }
            throw StoreError.badInput("line \(line), column \(column): a BLOB field must be base64")
        }
    }

    /// The text without leading and trailing spaces and tabs; the same
    /// string, uncopied, in the usual case of none.
    @inline(__always) static func trimmed(_ s: String) -> Substring {
        let u = s.utf8
        guard let f = u.first, let l = u.last else { return s[...] }
        if f != 0x20 && f != 0x09 && l != 0x20 && l != 0x09 { return s[...] }
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let start = s.firstIndex(where: { !blank($0) }), let end = s.lastIndex(where: { !blank($0) }) else { return "" }
        return s[start...end]
    }

    static func shown(_ s: String) -> String {
        s.count > 40 ? "\"\(s.prefix(40))…\"" : "\"\(s)\""
    }
}

/// Reads a CSV file for an import, the same way for every store: the
/// header names the columns (one of them the primary key), each record
/// becomes a row of typed values, and nothing of a bad file is kept (the
/// store applies the rows in one transaction).
public enum CSVImport {
    /// The checks before reading: an editor, a user table.
    public static func check(table: String, by local: LocalSite) throws {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may import rows")
        }
        guard !Identifier.isReserved(table) else {
            throw StoreError.managedTable(table)
        }
    }

    /// Checks that the header of the file at `path` fits `table` (names its
    /// primary key and only its columns, each once), so that a file that
    /// cannot be imported is refused before an import begins.
    public static func checkHeader(path: String, table: TableSchema) throws {
        _ = try header(try CSVReader(path: path), table: table)
    }

    /// Reads the header row and maps it onto `table`.
    private static func header(_ csv: CSVReader, table: TableSchema) throws -> ImportPlan {
        do {
            guard let header = try csv.next() else { throw StoreError.badInput("the file is empty: expected a header row naming the columns") }
            return try ImportPlan(table: table, header: header)
        } catch let e as CSVError {
            throw StoreError.badInput("malformed CSV: \(e)")
        }
    }

    /// Reads the file at `path` into rows of `table`, calling `row` with
    /// each record's primary key and values (one per `plan.columns`; the
    /// array is reused between calls). Reports progress now and then.
    /// Returns the number of records read.
    public static func read(
        path: String, table: TableSchema, progress: (@Sendable (ImportProgress) -> Void)?,
        _ row: (_ plan: ImportPlan, _ pk: String, _ values: [Value]) throws -> Void
    ) throws -> Int {
        let records = try Records(path: path, table: table, progress: progress)
        while let pk = try records.next() { try row(records.plan, pk, records.values) }
        return records.count
    }

    /// The records of a CSV file as rows of a table, one at a time (for a
    /// store that writes them with `await` between rows): `next()` returns
    /// a record's primary key and leaves its values in `values`.
    public final class Records {
        /// How the header maps onto the table.
        public let plan: ImportPlan
        /// The values of the last record read, one per `plan.columns`.
        public private(set) var values: [Value] = []
        /// Records read so far.
        public private(set) var count = 0
        private let csv: CSVReader
        private let total: UInt64?
        private let progress: (@Sendable (ImportProgress) -> Void)?
        private var lastReport = ContinuousClock.now
        private var fields: [String] = []
        private var done = false

        public init(path: String, table: TableSchema, progress: (@Sendable (ImportProgress) -> Void)?) throws {
            total = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? nil
            csv = try CSVReader(path: path)
            plan = try header(csv, table: table)
            self.progress = progress
        }

        /// The next record's primary key, or nil at the end of the file.
        public func next() throws -> String? {
            guard !done else { return nil }
            do {
                guard try csv.next(into: &fields) else {
                    done = true
                    progress?(ImportProgress(rows: count, bytes: csv.bytesRead, totalBytes: total))
                    return nil
                }
            } catch let e as CSVError {
                throw StoreError.badInput("malformed CSV: \(e)")
            }
            count += 1
            let pk = try plan.row(fields, line: csv.line, into: &values)
            if let progress, count % 4096 == 0, ContinuousClock.now - lastReport > .milliseconds(200) {
                lastReport = .now
                progress(ImportProgress(rows: count, bytes: csv.bytesRead, totalBytes: total))
            }
            return pk
        }
    }
}
