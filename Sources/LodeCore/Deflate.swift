import CZlib

/// zlib (RFC 1950) at level 1: fast, and enough for keys and words that
/// repeat. Used for commit lists on the wire and for the log on disk.
public enum Deflate {
    /// The input deflated, or nil if zlib fails.
    public static func compress(_ input: [UInt8]) -> [UInt8]? {
        var size = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(size))
        let rc = out.withUnsafeMutableBufferPointer { o in
            input.withUnsafeBufferPointer { i in compress2(o.baseAddress, &size, i.baseAddress, uLong(i.count), 1) }
        }
        guard rc == Z_OK else { return nil }
        out.removeLast(out.count - Int(size))
        return out
    }

    /// Inflates to exactly `length` bytes, or nil: never more than `length`
    /// is allocated, whatever the input claims.
    public static func decompress(_ input: UnsafeRawBufferPointer, exactly length: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: length)
        var size = uLong(length)
        let rc = out.withUnsafeMutableBufferPointer { o in
            uncompress(o.baseAddress, &size, input.assumingMemoryBound(to: UInt8.self).baseAddress, uLong(input.count))
        }
        guard rc == Z_OK, Int(size) == length else { return nil }
        return out
    }
}
