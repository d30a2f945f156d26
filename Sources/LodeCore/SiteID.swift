/// A site's identity: its 32-byte Ed25519 public key.
///
/// Site ids are totally ordered by their bytes; that order breaks ties
/// between writes carrying the same hybrid logical clock value.
///
/// ```swift
/// let site = try SiteID(bytes: key.publicKey.rawRepresentation)
/// print(site.short) // "3f9a1c0b"
/// ```
public struct SiteID: Hashable, Comparable, Sendable, CustomStringConvertible {
    // Four big-endian words: comparing them in order is comparing the bytes.
    @usableFromInline let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// The number of bytes in a site id.
    public static let byteCount = 32

    /// Creates a site id from exactly 32 bytes.
    public init<C: Collection>(bytes: C) throws(BinaryDecodingError) where C.Element == UInt8 {
        guard bytes.count == 32 else {
            throw BinaryDecodingError(.invalidValue, at: 0, "a site id is 32 bytes, not \(bytes.count)")
        }
        // Word by word, without an array: ids are decoded by the hundred
        // in every vector a peer sends.
        var it = bytes.makeIterator()
        func word() -> UInt64 {
            var w: UInt64 = 0
            for _ in 0..<8 { w = w << 8 | UInt64(it.next()!) }
            return w
        }
        w0 = word(); w1 = word(); w2 = word(); w3 = word()
    }

    /// Reads 32 raw bytes from `reader`.
    public init(from reader: inout ByteReader) throws(BinaryDecodingError) {
        let raw = try reader.readRaw(32)
        try self.init(bytes: raw)
    }

    /// The 32 bytes of the key.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(shift))) }
        }
        return out
    }

    /// Appends the 32 raw bytes.
    public func encode(into w: inout ByteWriter) {
        w.writeUInt64(w0)
        w.writeUInt64(w1)
        w.writeUInt64(w2)
        w.writeUInt64(w3)
    }

    public static func < (a: SiteID, b: SiteID) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }

    /// The key as 64 lowercase hex digits.
    public var hex: String { bytes.hexString }

    /// The first 8 hex digits: enough to tell sites apart in a listing.
    public var short: String { String(hex.prefix(8)) }

    public var description: String { short }
}

extension Sequence where Element == UInt8 {
    /// The bytes as lowercase hex digits.
    public var hexString: String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in self {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    /// Parses lowercase or uppercase hex digits; nil if any is not hex.
    public init?(hex: String) {
        var out = [UInt8]()
        out.reserveCapacity(hex.utf8.count / 2)
        var high: UInt8? = nil
        for c in hex.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let h = high {
                out.append(h << 4 | v)
                high = nil
            } else {
                high = v
            }
        }
        guard high == nil else { return nil }
        self = out
    }
}
