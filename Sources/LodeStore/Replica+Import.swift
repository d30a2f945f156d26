import Foundation
import GRDB
import LodeCore

/// What an import did.
public struct ImportReport: Sendable, Codable {
    /// Data rows read from the file.
    public var rowsRead: Int
    /// Rows inserted or changed (rows equal to what is stored write nothing).
    public var rowsChanged: Int
    /// Commits written.
    public var commits: Int
}

/// Progress of a long operation.
public struct Progress: Sendable, Codable {
    /// Rows processed so far.
    public var rows: Int
    /// Bytes of input consumed so far.
    public var bytes: UInt64
    /// Total bytes of input, when known.
    public var totalBytes: UInt64?
}

extension Replica {
    /// Inserts or updates rows of `table` from a CSV file whose header names
    /// the columns (one must be the primary key). All or nothing: a bad
    /// line anywhere leaves the dataset exactly as it was. Memory stays
    /// constant however large the file: rows are applied as they are read
    /// and commits are cut at `commitBudget` bytes.
    ///
    /// ```swift
    /// let report = try await replica.importCSV(table: "facilities", path: "facilities.csv")
    /// ```
    public func importCSV(
        table: String, path: String,
        progress: (@Sendable (Progress) -> Void)? = nil
    ) async throws -> ImportReport {
        guard local.role.canEdit else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only an editor may import rows")
        }
        let total = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? nil
        return try await write { [self] db, state in
            let batch = try LocalBatch(self, db, state)
            let t = try batch.table(table)
            guard !Identifier.isReserved(table) else {
                throw StoreError(.forbidden, "table \(table) is managed by Lodestone; use lode annotate")
            }
            let csv = try CSVReader(path: path)
            let plan: ImportPlan
            do {
                guard let header = try csv.next() else { throw StoreError.badInput("the file is empty: expected a header row naming the columns") }
                plan = try ImportPlan(table: t, header: header)
            } catch let e as CSVError {
                throw StoreError.badInput("malformed CSV: \(e)")
            }
            var rows = 0
            var lastReport = Date()
            // One fields array and one values array serve every row.
            var fields: [String] = []
            var values: [Value] = []
            while true {
                do {
                    guard try csv.next(into: &fields) else { break }
                } catch let e as CSVError {
                    throw StoreError.badInput("malformed CSV: \(e)")
                }
                rows += 1
                let key = try plan.row(fields, line: csv.line, into: &values)
                try batch.put(t, key: key, columns: plan.columns, slots: plan.slots, values: values, onlyChanges: true)
                if let progress, rows % 4096 == 0, Date().timeIntervalSince(lastReport) > 0.2 {
                    lastReport = Date()
                    progress(Progress(rows: rows, bytes: csv.bytesRead, totalBytes: total))
                }
            }
            let commits = try batch.finish()
            progress?(Progress(rows: rows, bytes: csv.bytesRead, totalBytes: total))
            return ImportReport(rowsRead: rows, rowsChanged: batch.changedRows, commits: commits)
        }
    }
}

/// How the columns of a CSV header map onto a table, and how each field is
/// converted to its column's type.
struct ImportPlan {
    let table: String
    let keyIndex: Int
    /// Column names and slots, in header order, without the key.
    let columns: [String]
    let slots: [Int]
    let types: [ColumnType]
    let fieldIndexes: [Int]
    let width: Int

    init(table t: TableState, header: [String]) throws {
        table = t.name
        width = header.count
        var key: Int?
        var columns: [String] = []
        var slots: [Int] = []
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
            guard let slot = t.slots[name], let def = t.bySlot[slot] else {
                let known = ([t.primaryKey] + t.physical.map(\.name)).joined(separator: ", ")
                throw StoreError.notFound("unknown column \(name) in the header: table \(t.name) has \(known)")
            }
            columns.append(name)
            slots.append(slot)
            types.append(def.type)
            indexes.append(i)
        }
        guard let key else {
            throw StoreError.badInput("the header has no \(t.primaryKey) column: it is the primary key of \(t.name), and every row needs one")
        }
        keyIndex = key
        self.columns = columns
        self.slots = slots
        self.types = types
        fieldIndexes = indexes
    }

    /// Converts one record: returns its key and fills `values` (reusing its storage).
    func row(_ fields: [String], line: Int, into values: inout [Value]) throws -> String {
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
