/// Appends Lodestone's canonical binary encodings to a byte buffer.
///
/// Every multi-byte integer is either a fixed-width big-endian field or an
/// unsigned LEB128 varint in its shortest form, so one value has exactly one
/// encoding and a signature covers one exact byte string.
///
/// ```swift
/// var w = ByteWriter()
/// w.writeVarint(300)
/// w.writeString("Nd")
/// ```
public struct ByteWriter: Sendable {
    @usableFromInline var storage: [UInt8]

    /// The bytes written so far.
    public var bytes: [UInt8] { storage }

    /// Creates an empty writer, reserving `capacity` bytes.
    public init(capacity: Int = 256) {
        storage = []
        storage.reserveCapacity(capacity)
    }

    /// The number of bytes written so far.
    public var count: Int { storage.count }

    /// Appends one byte.
    @inlinable public mutating func writeByte(_ b: UInt8) { storage.append(b) }

    /// Appends raw bytes as they are.
    @inlinable public mutating func writeBytes<C: Collection>(_ b: C) where C.Element == UInt8 {
        storage.append(contentsOf: b)
    }

    /// Appends a shortest-form unsigned LEB128 varint.
    @inlinable public mutating func writeVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            storage.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        storage.append(UInt8(v))
    }

    /// Appends a signed integer as a zigzag varint.
    @inlinable public mutating func writeSignedVarint(_ value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    /// Appends a fixed 8-byte big-endian integer.
    @inlinable public mutating func writeUInt64(_ value: UInt64) {
        var v = value.bigEndian
        withUnsafeBytes(of: &v) { storage.append(contentsOf: $0) }
    }

    /// Appends a length-prefixed UTF-8 string.
    @inlinable public mutating func writeString(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            writeVarint(UInt64(utf8.count))
            storage.append(contentsOf: utf8)
        }
    }

    /// Appends length-prefixed bytes.
    @inlinable public mutating func writeLengthPrefixed<C: Collection>(_ b: C) where C.Element == UInt8 {
        writeVarint(UInt64(b.count))
        storage.append(contentsOf: b)
    }

    /// Removes every byte, keeping the capacity.
    public mutating func removeAll() { storage.removeAll(keepingCapacity: true) }
}

/// Why a byte string could not be decoded.
public struct BinaryDecodingError: Error, Equatable, CustomStringConvertible, Sendable {
    /// Which rule the input broke; stable names used by the test vectors.
    public enum Rule: String, Sendable, CaseIterable {
        case truncated
        case nonMinimalVarint = "non-minimal-varint"
        case varintOverflow = "varint-overflow"
        case invalidUTF8 = "invalid-utf8"
        case unknownVersion = "unknown-version"
        case unknownTag = "unknown-tag"
        case trailingBytes = "trailing-bytes"
        case tooLarge = "too-large"
        case invalidValue = "invalid-value"
        case notCanonical = "not-canonical"
    }

    /// The rule that was broken.
    public let rule: Rule
    /// The byte offset at which decoding failed.
    public let offset: Int
    /// A human-readable explanation.
    public let detail: String

    /// Creates a decoding error.
    public init(_ rule: Rule, at offset: Int, _ detail: String) {
        self.rule = rule
        self.offset = offset
        self.detail = detail
    }

    public var description: String { "\(rule.rawValue) at byte \(offset): \(detail)" }
}

/// Reads Lodestone's canonical binary encodings, refusing anything that is
/// not in canonical form. Every read checks the bytes that remain before it
/// allocates, so a hostile length can never make the reader allocate more
/// than the input's own size.
public struct ByteReader {
    @usableFromInline let base: UnsafeRawBufferPointer
    @usableFromInline var position: Int

    /// The current offset from the start of the input.
    public var offset: Int { position }

    /// Creates a reader over `buffer`, which must outlive the reader.
    public init(_ buffer: UnsafeRawBufferPointer) {
        base = buffer
        position = 0
    }

    /// The number of bytes not yet read.
    @inlinable public var remaining: Int { base.count - offset }

    /// True when every byte has been read.
    public var isAtEnd: Bool { offset == base.count }

    /// Reads one byte.
    @inlinable public mutating func readByte() throws(BinaryDecodingError) -> UInt8 {
        guard offset < base.count else { throw BinaryDecodingError(.truncated, at: offset, "expected 1 more byte") }
        let b = base[offset]
        position += 1
        return b
    }

    /// Reads exactly `n` bytes.
    public mutating func readBytes(_ n: Int) throws(BinaryDecodingError) -> [UInt8] {
        guard n >= 0, n <= remaining else {
            throw BinaryDecodingError(.truncated, at: offset, "expected \(n) bytes, \(remaining) left")
        }
        let out = [UInt8](UnsafeRawBufferPointer(rebasing: base[offset..<offset + n]))
        position += n
        return out
    }

    /// Reads `n` bytes without copying; the result is valid while the input is.
    public mutating func readRaw(_ n: Int) throws(BinaryDecodingError) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else {
            throw BinaryDecodingError(.truncated, at: offset, "expected \(n) bytes, \(remaining) left")
        }
        let out = UnsafeRawBufferPointer(rebasing: base[offset..<offset + n])
        position += n
        return out
    }

    /// Reads a shortest-form unsigned LEB128 varint of at most 64 bits.
    @inlinable public mutating func readVarint() throws(BinaryDecodingError) -> UInt64 {
        let start = offset
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < base.count else { throw BinaryDecodingError(.truncated, at: offset, "varint runs past the end") }
            let b = base[offset]
            position += 1
            if shift == 63 && b > 1 {
                throw BinaryDecodingError(.varintOverflow, at: start, "varint does not fit in 64 bits")
            }
            result |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    throw BinaryDecodingError(.nonMinimalVarint, at: start, "varint has a redundant trailing zero byte")
                }
                return result
            }
            shift += 7
            if shift > 63 { throw BinaryDecodingError(.varintOverflow, at: start, "varint longer than 10 bytes") }
        }
    }

    /// Reads a varint that must fit in an `Int` no larger than `limit`.
    public mutating func readCount(limit: Int, _ what: String) throws(BinaryDecodingError) -> Int {
        let at = offset
        let v = try readVarint()
        guard v <= UInt64(limit) else {
            throw BinaryDecodingError(.tooLarge, at: at, "\(what) \(v) exceeds the limit of \(limit)")
        }
        return Int(v)
    }

    /// Reads a zigzag-encoded signed varint.
    public mutating func readSignedVarint() throws(BinaryDecodingError) -> Int64 {
        let u = try readVarint()
        return Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }

    /// Reads a fixed 8-byte big-endian integer.
    public mutating func readUInt64() throws(BinaryDecodingError) -> UInt64 {
        guard remaining >= 8 else { throw BinaryDecodingError(.truncated, at: offset, "expected 8 bytes, \(remaining) left") }
        var v: UInt64 = 0
        for i in 0..<8 { v = (v << 8) | UInt64(base[offset + i]) }
        position += 8
        return v
    }

    /// Reads a length-prefixed UTF-8 string, refusing invalid UTF-8.
    public mutating func readString(limit: Int = Limits.maxText) throws(BinaryDecodingError) -> String {
        let at = offset
        let n = try readCount(limit: limit, "string length")
        let raw = try readRaw(n)
        guard let s = String(validatingUTF8Bytes: raw) else {
            throw BinaryDecodingError(.invalidUTF8, at: at, "string is not valid UTF-8")
        }
        return s
    }

    /// Reads length-prefixed bytes.
    public mutating func readLengthPrefixed(limit: Int) throws(BinaryDecodingError) -> [UInt8] {
        let n = try readCount(limit: limit, "byte string length")
        return try readBytes(n)
    }
}

extension ByteReader {
    /// Reads a dataset name (a string of at most 64 bytes) and refuses one
    /// that is not valid (`invalid-value`).
    public mutating func readDatasetName() throws(BinaryDecodingError) -> String {
        let at = offset
        let name = try readString(limit: 64)
        guard Identifier.isValidDataset(name) else { throw BinaryDecodingError(.invalidValue, at: at, "\"\(name)\" is not a valid dataset name") }
        return name
    }

    /// Runs `body` with a reader over `bytes` and returns what it read;
    /// bytes it leaves unread are an error (`trailing-bytes`), naming `what`.
    ///
    /// ```swift
    /// let v = try ByteReader.decodeAll(bytes, "vector") { r throws(BinaryDecodingError) in try VersionVector.decode(from: &r) }
    /// ```
    public static func decodeAll<T>(
        _ bytes: [UInt8], _ what: String, _ body: (inout ByteReader) throws(BinaryDecodingError) -> T
    ) throws(BinaryDecodingError) -> T {
        // `withUnsafeBytes` rethrows untyped errors: carry the typed one out.
        let result: Result<T, BinaryDecodingError> = bytes.withUnsafeBytes { raw in
            do throws(BinaryDecodingError) {
                return .success(try decodeAll(raw, what, body))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// The same, over raw bytes.
    public static func decodeAll<T>(
        _ bytes: UnsafeRawBufferPointer, _ what: String, _ body: (inout ByteReader) throws(BinaryDecodingError) -> T
    ) throws(BinaryDecodingError) -> T {
        var r = ByteReader(bytes)
        let value = try body(&r)
        guard r.isAtEnd else { throw BinaryDecodingError(.trailingBytes, at: r.offset, "\(r.remaining) bytes after the \(what)") }
        return value
    }
}

extension String {
    /// Decodes UTF-8 bytes, returning nil unless they are valid UTF-8.
    /// ASCII, the common case, is checked eight bytes at a time and then
    /// decoded as is; anything else goes through the standard validator.
    public init?(validatingUTF8Bytes raw: UnsafeRawBufferPointer) {
        let bytes = raw.assumingMemoryBound(to: UInt8.self)
        if String.isASCII(raw) {
            self = String(decoding: bytes, as: UTF8.self)
            return
        }
        guard let s = String(validating: bytes, as: UTF8.self) else { return nil }
        self = s
    }

    private static func isASCII(_ raw: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let n = raw.count
        while i + 8 <= n {
            if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return false }
            i += 8
        }
        while i < n {
            if raw[i] & 0x80 != 0 { return false }
            i += 1
        }
        return true
    }
}

/// Size limits that every decoder enforces.
public enum Limits {
    /// The largest encoded commit a node accepts (64 MiB).
    public static let maxCommitBytes = 64 << 20
    /// The largest text or blob value (16 MiB).
    public static let maxText = 16 << 20
    /// The largest row a site may write, encoded (17 MiB): with the 1 MiB
    /// commit budget, a commit then always fits one sync frame (32 MiB).
    public static let maxRowBytes = 17 << 20
    /// The longest identifier (table, column, dataset name) in bytes.
    public static let maxIdentifier = 255
    /// The most columns a table may have.
    public static let maxColumns = 2000
    /// The largest causal length (odd: a row's last life). Every decoder
    /// refuses more, so that a row's length plus one always fits in 64 bits
    /// signed, however a peer picks it (DESIGN §9). A row reaches it only by
    /// 2^61 deletes and re-inserts; after that it can no longer be deleted.
    public static let maxCausalLength: UInt64 = (1 << 62) - 1
    /// The largest seq of a feed, in a commit, a dependency or a version
    /// vector: 2^62, far beyond what a site can write, and with room for
    /// arithmetic on it in 64 bits signed.
    public static let maxSeq: UInt64 = 1 << 62
}
