import Foundation

/// A malformed CSV input: the line it starts on and what is wrong.
public struct CSVError: Error, CustomStringConvertible, Sendable {
    /// The 1-based line on which the bad record starts.
    public let line: Int
    /// What is wrong.
    public let message: String
    public var description: String { "line \(line): \(message)" }
}

/// Reads RFC 4180 CSV from a file with constant memory: a fixed-size read
/// buffer plus the current record (bounded by `maxRecordBytes`).
///
/// Accepts CRLF or LF line ends, a UTF-8 byte-order mark, quoted fields with
/// embedded commas, quotes ("") and newlines. Refuses, naming the line: an
/// unterminated quote, text after a closing quote, a quote inside an
/// unquoted field, invalid UTF-8, and records larger than the limit.
///
/// ```swift
/// let csv = try CSVReader(path: "mines.csv")
/// while let fields = try csv.next() { print(csv.line, fields) }
/// ```
public final class CSVReader {
    private let fd: Int32
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    private var eof = false
    private var atFileStart = true
    /// Physical lines consumed so far.
    private var linesConsumed = 0
    /// The line on which the last record returned starts (1-based).
    public private(set) var line = 0
    /// Bytes consumed so far.
    public private(set) var bytesRead: UInt64 = 0
    /// The largest record accepted.
    public let maxRecordBytes: Int

    /// Opens a file for reading.
    public init(path: String, chunkSize: Int = 1 << 16, maxRecordBytes: Int = 64 << 20) throws {
        fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw StoreError(.notFound, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        buffer = [UInt8](repeating: 0, count: chunkSize)
        self.maxRecordBytes = maxRecordBytes
    }

    deinit { Glibc.close(fd) }

    /// Reads more bytes, keeping the unconsumed part. Returns false at EOF.
    private func fill() throws -> Bool {
        if eof { return false }
        if start > 0 {
            buffer.withUnsafeMutableBytes { b in
                _ = memmove(b.baseAddress!, b.baseAddress! + start, end - start)
            }
            end -= start
            start = 0
        }
        if end == buffer.count {
            guard buffer.count < maxRecordBytes + 4 else {
                throw CSVError(line: linesConsumed + 1, message: "a record is longer than \(maxRecordBytes >> 20) MiB (an unterminated quote?)")
            }
            buffer.append(contentsOf: repeatElement(0, count: buffer.count))
        }
        let n = buffer.withUnsafeMutableBytes { b in Glibc.read(fd, b.baseAddress! + end, b.count - end) }
        if n < 0 { throw StoreError(.storage, "read failed: \(String(cString: strerror(errno)))") }
        if n == 0 {
            eof = true
            return false
        }
        end += n
        return true
    }

    /// The next record's fields, or nil at the end. Blank lines are skipped.
    public func next() throws -> [String]? {
        while true {
            guard let r = try parseRecord() else { return nil }
            if r.count == 1 && r[0].isEmpty { continue }
            return r
        }
    }

    private func parseRecord() throws -> [String]? {
        if atFileStart {
            while try end - start < 3 && fill() {}
            if end - start >= 3 && buffer[start] == 0xEF && buffer[start + 1] == 0xBB && buffer[start + 2] == 0xBF {
                start += 3
                bytesRead += 3
            }
            atFileStart = false
        }
        if try start == end && !fill() { return nil }
        let recordLine = linesConsumed + 1
        var fields: [String] = []
        var field: [UInt8] = []
        var i = start
        var quoted = false
        var inQuotes = false
        var afterQuote = false
        var newlines = 0
        func finishField() throws {
            // ASCII (the usual case) is valid UTF-8 and takes the fast path.
            let s: String
            if field.allSatisfy({ $0 < 0x80 }) {
                s = String(decoding: field, as: UTF8.self)
            } else {
                guard let v = String(validating: field, as: UTF8.self) else {
                    throw CSVError(line: recordLine, message: "field \(fields.count + 1) is not valid UTF-8")
                }
                s = v
            }
            fields.append(s)
            field.removeAll(keepingCapacity: true)
            quoted = false
            afterQuote = false
        }
        while true {
            if i == end {
                let consumed = i - start
                if !(try fill()) {
                    // End of file ends the record.
                    if inQuotes { throw CSVError(line: recordLine, message: "unterminated quoted field") }
                    try finishField()
                    bytesRead += UInt64(end - start)
                    start = end
                    linesConsumed += newlines
                    line = recordLine
                    return fields
                }
                i = start + consumed
                continue
            }
            let c = buffer[i]
            if inQuotes {
                if c == UInt8(ascii: "\"") {
                    if i + 1 == end {
                        let consumed = i - start
                        if try fill() {
                            i = start + consumed
                            continue
                        }
                        inQuotes = false
                        afterQuote = true
                        i += 1
                        continue
                    }
                    if buffer[i + 1] == UInt8(ascii: "\"") {
                        field.append(c)
                        i += 2
                    } else {
                        inQuotes = false
                        afterQuote = true
                        i += 1
                    }
                } else {
                    if c == 0x0A { newlines += 1 }
                    field.append(c)
                    i += 1
                }
                if field.count > maxRecordBytes {
                    throw CSVError(line: recordLine, message: "a field is longer than \(maxRecordBytes >> 20) MiB (an unterminated quote?)")
                }
                continue
            }
            switch c {
            case UInt8(ascii: ","):
                try finishField()
                i += 1
            case 0x0A, 0x0D:
                try finishField()
                i += 1
                if c == 0x0D {
                    if i == end {
                        let consumed = i - start
                        if try fill() { i = start + consumed }
                    }
                    if i < end && buffer[i] == 0x0A { i += 1 }
                }
                newlines += 1
                bytesRead += UInt64(i - start)
                start = i
                linesConsumed += newlines
                line = recordLine
                return fields
            case UInt8(ascii: "\""):
                if field.isEmpty && !quoted && !afterQuote {
                    quoted = true
                    inQuotes = true
                    i += 1
                } else {
                    throw CSVError(
                        line: recordLine,
                        message: "field \(fields.count + 1) has a quote inside an unquoted field (quote the whole field and double the quote)")
                }
            default:
                if afterQuote {
                    throw CSVError(line: recordLine, message: "field \(fields.count + 1) has text after its closing quote")
                }
                field.append(c)
                i += 1
                if field.count > maxRecordBytes {
                    throw CSVError(line: recordLine, message: "a field is longer than \(maxRecordBytes >> 20) MiB")
                }
            }
        }
    }
}
