import Foundation

/// A cell value: the five storage classes SQLite has.
///
/// ```swift
/// let v: Value = .integer(2024)
/// v.typeName // "INTEGER"
/// ```
public enum Value: Hashable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    /// The SQLite storage class name of the value.
    public var typeName: String {
        switch self {
        case .null: "NULL"
        case .integer: "INTEGER"
        case .real: "REAL"
        case .text: "TEXT"
        case .blob: "BLOB"
        }
    }

    /// True for `.null`.
    public var isNull: Bool { if case .null = self { true } else { false } }

    /// Encoding tags of the canonical format.
    enum Tag: UInt8 {
        case null = 0, integer = 1, real = 2, text = 3, blob = 4
    }

    /// Appends the canonical encoding of the value.
    public func encode(into w: inout ByteWriter) {
        switch self {
        case .null: w.writeByte(Tag.null.rawValue)
        case .integer(let i):
            w.writeByte(Tag.integer.rawValue)
            w.writeSignedVarint(i)
        case .real(let d):
            w.writeByte(Tag.real.rawValue)
            w.writeUInt64(d.bitPattern)
        case .text(let s):
            w.writeByte(Tag.text.rawValue)
            w.writeString(s)
        case .blob(let b):
            w.writeByte(Tag.blob.rawValue)
            w.writeLengthPrefixed(b)
        }
    }

    /// Reads one canonically encoded value. NaN is refused: SQLite cannot
    /// store it, so it has no place in a replicated cell.
    public static func decode(from r: inout ByteReader) throws(BinaryDecodingError) -> Value {
        let at = r.offset
        let tagByte = try r.readByte()
        guard let tag = Tag(rawValue: tagByte) else {
            throw BinaryDecodingError(.unknownTag, at: at, "unknown value tag \(tagByte)")
        }
        switch tag {
        case .null: return .null
        case .integer: return .integer(try r.readSignedVarint())
        case .real:
            let d = Double(bitPattern: try r.readUInt64())
            if d.isNaN { throw BinaryDecodingError(.invalidValue, at: at, "NaN is not a storable value") }
            return .real(d)
        case .text: return .text(try r.readString())
        case .blob: return .blob(try r.readLengthPrefixed(limit: Limits.maxText))
        }
    }
}

extension Value {
    /// The value as an SQL literal, for DEFAULT clauses.
    public var sqlLiteral: String {
        switch self {
        case .null: "NULL"
        case .integer(let i): String(i)
        case .real(let d): d.isFinite ? "\(d)" : (d > 0 ? "9e999" : "-9e999")
        // SQL text ends at NUL, so such text is written as its UTF-8 bytes.
        case .text(let s):
            s.utf8.contains(0)
                ? "(CAST(X'" + Array(s.utf8).hexString + "' AS TEXT))" : "'" + s.replacingOccurrences(of: "'", with: "''") + "'"
        case .blob(let b): "X'" + b.hexString + "'"
        }
    }

    /// Encodes to bytes with the canonical value encoding.
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 16)
        encode(into: &w)
        return w.bytes
    }

    /// Decodes bytes written by `encoded`.
    public static func decoded(_ bytes: [UInt8]) throws(BinaryDecodingError) -> Value {
        try ByteReader.decodeAll(bytes, "value") { r throws(BinaryDecodingError) in try Value.decode(from: &r) }
    }
}

/// The declared type of a column.
public enum ColumnType: UInt8, Sendable, CaseIterable, Codable {
    case integer = 1, real = 2, text = 3, blob = 4

    /// The SQL name used in `CREATE TABLE`.
    public var sqlName: String {
        switch self {
        case .integer: "INTEGER"
        case .real: "REAL"
        case .text: "TEXT"
        case .blob: "BLOB"
        }
    }

    /// Maps a declared SQL type to a column type, following SQLite's affinity
    /// rules for the common spellings (`INT`, `VARCHAR(40)`, `DOUBLE`…).
    /// Returns nil for a type Lodestone does not accept (`NUMERIC`, none).
    public init?(declared: String) {
        let t = declared.uppercased()
        if t.contains("INT") {
            self = .integer
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            self = .text
        } else if t.contains("BLOB") {
            self = .blob
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            self = .real
        } else {
            return nil
        }
    }
}

extension Value: Codable {
    /// JSON: null, number, string; a blob is `{"base64": "…"}`.
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let i = try? c.decode(Int64.self) {
            self = .integer(i)
        } else if let d = try? c.decode(Double.self) {
            self = .real(d)
        } else if let s = try? c.decode(String.self) {
            self = .text(s)
        } else {
            let b = try c.decode([String: String].self)
            guard let s = b["base64"], let d = Data(base64Encoded: s) else {
                throw Swift.DecodingError.dataCorruptedError(in: c, debugDescription: "not a value")
            }
            self = .blob([UInt8](d))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .integer(let i): try c.encode(i)
        case .real(let d): try c.encode(d)
        case .text(let s): try c.encode(s)
        case .blob(let b): try c.encode(["base64": Data(b).base64EncodedString()])
        }
    }
}
