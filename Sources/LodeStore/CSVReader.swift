import Foundation

/// A malformed CSV input: the line it starts on and what is wrong.
public struct CSVError: Error, CustomStringConvertible, Sendable {
    /// The 1-based line on which the bad record starts.
    public let line: Int
    /// What is wrong.
    public let message: String
    public var description: String { "line \(line): \(message)" }
}

/// Reads RFC 4180 CSV from a file with constant memory: a read buffer that
/// holds at least one whole record (bounded by `maxRecordBytes`).
///
/// Accepts CRLF or LF line ends, a UTF-8 byte-order mark, quoted fields with
/// embedded commas, quotes ("") and newlines. Refuses, naming the line: an
/// unterminated quote, text after a closing quote, a quote inside an
/// unquoted field, invalid UTF-8, and records larger than the limit.
///
/// A record is first found whole in the buffer (one scan for its end, minding
/// quotes), then split into fields straight from the buffer, so that a field
/// costs one string and no byte-by-byte copying.
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
        buffer = [UInt8](repeating: 0, count: max(chunkSize, 4))
        self.maxRecordBytes = maxRecordBytes
    }

    deinit { Glibc.close(fd) }

    /// Reads more bytes, keeping the unconsumed part at the front. Returns
    /// false at end of file.
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
        var fields: [String] = []
        return try next(into: &fields) ? fields : nil
    }

    /// Reads the next record into `fields` (reusing its storage). Returns
    /// false at the end. Blank lines are skipped.
    public func next(into fields: inout [String]) throws -> Bool {
        while true {
            guard try nextRecord(into: &fields) else { return false }
            if fields.count == 1 && fields[0].isEmpty { continue }
            return true
        }
    }

    private func nextRecord(into fields: inout [String]) throws -> Bool {
        if atFileStart {
            while try end - start < 3 && fill() {}
            if end - start >= 3 && buffer[start] == 0xEF && buffer[start + 1] == 0xBB && buffer[start + 2] == 0xBF {
                start += 3
                bytesRead += 3
            }
            atFileStart = false
        }
        if try start == end && !fill() { return false }
        // 1. Find where the record ends (a line end outside quotes).
        let recordLine = linesConsumed + 1
        var offset = 0  // from `start`, which `fill` may move
        var inQuotes = false
        var fieldStart = true
        var newlines = 0
        var recordEnd = -1
        while recordEnd < 0 {
            if start + offset == end {
                if try !fill() {
                    if inQuotes { throw CSVError(line: recordLine, message: "unterminated quoted field") }
                    recordEnd = offset
                    break
                }
                continue
            }
            let c = buffer[start + offset]
            if inQuotes {
                if c == UInt8(ascii: "\"") {
                    // A doubled quote is a quote; a single one closes the field.
                    if start + offset + 1 == end { _ = try fill() }
                    if start + offset + 1 < end && buffer[start + offset + 1] == UInt8(ascii: "\"") {
                        offset += 1
                    } else {
                        inQuotes = false
                    }
                } else if c == 0x0A {
                    newlines += 1
                }
            } else if c == UInt8(ascii: "\"") && fieldStart {
                inQuotes = true
            } else if c == UInt8(ascii: ",") {
                fieldStart = true
                offset += 1
                continue
            } else if c == 0x0A || c == 0x0D {
                recordEnd = offset
                break
            }
            fieldStart = false
            offset += 1
            if offset > maxRecordBytes {
                throw CSVError(line: recordLine, message: "a record is longer than \(maxRecordBytes >> 20) MiB (an unterminated quote?)")
            }
        }
        // 2. Split it into fields, straight from the buffer.
        try buffer.withUnsafeBufferPointer { b in
            try split(UnsafeBufferPointer(rebasing: b[start..<(start + recordEnd)]), line: recordLine, into: &fields)
        }
        // 3. Consume the line end (CRLF, LF or CR).
        var consumed = recordEnd
        if start + consumed == end { _ = try fill() }
        if start + consumed < end {
            let c = buffer[start + consumed]
            consumed += 1
            if c == 0x0D {
                if start + consumed == end { _ = try fill() }
                if start + consumed < end && buffer[start + consumed] == 0x0A { consumed += 1 }
            }
            newlines += 1
        }
        bytesRead += UInt64(consumed)
        start += consumed
        linesConsumed += newlines
        line = recordLine
        return true
    }

    /// Splits one complete record (without its line end) into `fields`.
    private func split(_ r: UnsafeBufferPointer<UInt8>, line: Int, into fields: inout [String]) throws {
        fields.removeAll(keepingCapacity: true)
        var i = 0
        let n = r.count
        while true {
            let number = fields.count + 1
            if i < n && r[i] == UInt8(ascii: "\"") {
                // Quoted: runs to the closing quote; "" stands for one quote.
                var bytes: [UInt8] = []
                i += 1
                var segment = i
                while true {
                    guard i < n else { throw CSVError(line: line, message: "unterminated quoted field") }
                    if r[i] == UInt8(ascii: "\"") {
                        bytes.append(contentsOf: UnsafeBufferPointer(rebasing: r[segment..<i]))
                        if i + 1 < n && r[i + 1] == UInt8(ascii: "\"") {
                            bytes.append(UInt8(ascii: "\""))
                            i += 2
                            segment = i
                            continue
                        }
                        i += 1
                        break
                    }
                    i += 1
                }
                fields.append(try bytes.withUnsafeBufferPointer { try text($0, line: line, field: number) })
                if i == n { return }
                guard r[i] == UInt8(ascii: ",") else {
                    throw CSVError(line: line, message: "field \(number) has text after its closing quote")
                }
                i += 1
            } else {
                let s = i
                while i < n && r[i] != UInt8(ascii: ",") {
                    if r[i] == UInt8(ascii: "\"") {
                        throw CSVError(
                            line: line, message: "field \(number) has a quote inside an unquoted field (quote the whole field and double the quote)")
                    }
                    i += 1
                }
                fields.append(try text(UnsafeBufferPointer(rebasing: r[s..<i]), line: line, field: number))
                if i == n { return }
                i += 1
            }
            if i == n {
                fields.append("")
                return
            }
        }
    }

    /// Decodes UTF-8, refusing invalid bytes; ASCII takes the fast path.
    @inline(__always) private func text(_ b: UnsafeBufferPointer<UInt8>, line: Int, field: Int) throws -> String {
        var ascii = true
        for byte in b where byte >= 0x80 {
            ascii = false
            break
        }
        if ascii { return String(decoding: b, as: UTF8.self) }
        guard let s = String(validating: b, as: UTF8.self) else {
            throw CSVError(line: line, message: "field \(field) is not valid UTF-8")
        }
        return s
    }
}
