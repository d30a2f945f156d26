import LodeCore

/// How rows are written: `csv` (RFC 4180 with a header row), `json` (an
/// array of objects keyed by column name with JSON-typed values) or
/// `ndjson` (a `{"columns": […]}` line, then one JSON array per row).
public enum ResultFormat: String, Sendable, CaseIterable, Codable {
    case csv, json, ndjson

    /// The HTTP content type.
    public var contentType: String {
        switch self {
        case .csv: "text/csv; charset=utf-8"
        case .json: "application/json"
        case .ndjson: "application/x-ndjson"
        }
    }
}

/// Encodes a stream of rows in a result format, handing out chunks of
/// about `chunkSize` bytes so that a large result never sits in memory.
///
/// ```swift
/// var enc = ResultEncoder(.csv)
/// enc.columns(["symbol", "name"])
/// enc.row([.text("Nd"), .text("Neodymium")])
/// let bytes = enc.finish()
/// ```
public struct ResultEncoder: Sendable {
    public let format: ResultFormat
    private var columnNames: [String] = []
    private var buffer: [UInt8] = []
    private var rows = 0
    /// Flush threshold.
    public var chunkSize = 64 << 10

    public init(_ format: ResultFormat) { self.format = format }

    /// Starts the result; returns the bytes to send now.
    public mutating func columns(_ names: [String]) -> [UInt8] {
        columnNames = names
        switch format {
        case .csv:
            buffer += Array(names.map(ResultEncoder.csvField).joined(separator: ",").utf8) + [0x0D, 0x0A]
        case .json:
            buffer += Array("[".utf8)
        case .ndjson:
            buffer += Array("{\"columns\":[".utf8)
            buffer += Array(names.map(ResultEncoder.jsonString).joined(separator: ",").utf8)
            buffer += Array("]}\n".utf8)
        }
        return take()
    }

    /// Adds a row; returns a chunk when the buffer is full, else nil.
    public mutating func row(_ values: [Value]) -> [UInt8]? {
        switch format {
        case .csv:
            for (i, v) in values.enumerated() {
                if i > 0 { buffer.append(UInt8(ascii: ",")) }
                buffer += Array(ResultEncoder.csvValue(v).utf8)
            }
            buffer += [0x0D, 0x0A]
        case .json:
            buffer += Array((rows == 0 ? "\n{" : ",\n{").utf8)
            for (i, v) in values.enumerated() {
                if i > 0 { buffer.append(UInt8(ascii: ",")) }
                let name = i < columnNames.count ? columnNames[i] : "column\(i + 1)"
                buffer += Array(ResultEncoder.jsonString(name).utf8)
                buffer.append(UInt8(ascii: ":"))
                buffer += Array(ResultEncoder.jsonValue(v).utf8)
            }
            buffer.append(UInt8(ascii: "}"))
        case .ndjson:
            buffer.append(UInt8(ascii: "["))
            buffer += Array(values.map(ResultEncoder.jsonValue).joined(separator: ",").utf8)
            buffer += Array("]\n".utf8)
        }
        rows += 1
        return buffer.count >= chunkSize ? take() : nil
    }

    /// Ends the result; returns the last bytes.
    public mutating func finish() -> [UInt8] {
        if format == .json { buffer += Array((rows == 0 ? "]\n" : "\n]\n").utf8) }
        return take()
    }

    private mutating func take() -> [UInt8] {
        defer { buffer.removeAll(keepingCapacity: true) }
        return buffer
    }

    /// A CSV field, quoted when it must be.
    public static func csvField(_ s: String) -> String {
        if s.utf8.contains(where: { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0A || $0 == 0x0D }) {
            return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
        return s
    }

    /// A value as a CSV field: NULL is empty, a blob is base64.
    public static func csvValue(_ v: Value) -> String {
        switch v {
        case .null: ""
        case .integer(let i): String(i)
        case .real(let d): realText(d)
        case .text(let s): csvField(s)
        case .blob(let b): base64(b)
        }
    }

    /// A value as JSON: null, number, string, or `{"base64": …}` for a blob.
    public static func jsonValue(_ v: Value) -> String {
        switch v {
        case .null: "null"
        case .integer(let i): String(i)
        case .real(let d): d.isFinite ? realText(d) : "null"
        case .text(let s): jsonString(s)
        case .blob(let b): "{\"base64\":\"\(base64(b))\"}"
        }
    }

    /// The shortest text that reads back as the same double; always with a
    /// decimal point or exponent, so that it stays a REAL.
    public static func realText(_ d: Double) -> String {
        let s = "\(d)"
        return s.contains(".") || s.contains("e") || s.contains("n") || s.contains("i") ? s : s + ".0"
    }

    /// A JSON string literal.
    public static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// Standard base64 with padding.
    public static func base64(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [table[Int(n >> 18)], table[Int(n >> 12 & 63)], table[Int(n >> 6 & 63)], table[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [table[Int(n >> 18)], table[Int(n >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "=")]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [table[Int(n >> 18)], table[Int(n >> 12 & 63)], table[Int(n >> 6 & 63)], UInt8(ascii: "=")]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
