/// For each site, the highest seq of its feed held without a gap.
///
/// ```swift
/// var v = VersionVector()
/// v[site] = 3
/// v.covers(Dependency(site: site, seq: 2)) // true
/// ```
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    /// The entries; a missing site counts as 0.
    public private(set) var entries: [SiteID: UInt64]

    /// Creates a vector from entries.
    public init(_ entries: [SiteID: UInt64] = [:]) {
        self.entries = entries.filter { $0.value > 0 }
    }

    /// The seq held for `site`, 0 when none.
    public subscript(site: SiteID) -> UInt64 {
        get { entries[site] ?? 0 }
        set { entries[site] = newValue == 0 ? nil : newValue }
    }

    /// True when every dependency is held.
    public func covers(_ dep: Dependency) -> Bool { self[dep.site] >= dep.seq }

    /// True when this vector is at least `other` in every entry.
    public func dominates(_ other: VersionVector) -> Bool {
        other.entries.allSatisfy { self[$0.key] >= $0.value }
    }

    /// The entry-wise maximum.
    public func merged(with other: VersionVector) -> VersionVector {
        var out = self
        for (s, q) in other.entries where q > out[s] { out[s] = q }
        return out
    }

    /// One entry: a site and the highest seq of its feed held.
    public struct Entry: Hashable, Sendable {
        public var site: SiteID
        public var seq: UInt64
    }

    /// Entries in site order.
    public var sorted: [Entry] {
        entries.sorted { $0.key < $1.key }.map { Entry(site: $0.key, seq: $0.value) }
    }

    /// The dependencies a new commit must carry: the entries (other than the
    /// author's own) that advanced since `previous`, the author's vector at
    /// its previous commit.
    public func dependencies(since previous: VersionVector, author: SiteID) -> [Dependency] {
        sorted.filter { $0.site != author && $0.seq > previous[$0.site] }.map { Dependency(site: $0.site, seq: $0.seq) }
    }

    public var description: String {
        "{" + sorted.map { "\($0.site.short):\($0.seq)" }.joined(separator: ", ") + "}"
    }
}

// MARK: - The canonical encoding

extension VersionVector {
    /// Appends the canonical encoding: the number of entries, then each
    /// entry as the site's 32 bytes and its seq (a varint), in ascending
    /// site order, with no entry of 0. Sync frames and stores use this one
    /// encoding (`Protocol/sync-protocol.md`, "Version vector").
    ///
    /// ```swift
    /// var w = ByteWriter()
    /// vector.encode(into: &w)
    /// ```
    public func encode(into w: inout ByteWriter) {
        let entries = sorted
        w.writeVarint(UInt64(entries.count))
        for e in entries {
            e.site.encode(into: &w)
            w.writeVarint(e.seq)
        }
    }

    /// The canonical encoding on its own.
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 1 + 36 * entries.count)
        encode(into: &w)
        return w.bytes
    }

    /// Reads one canonically encoded vector, refusing entries of 0 and
    /// entries out of ascending site order (either would give one vector
    /// two encodings).
    public static func decode(from r: inout ByteReader) throws(BinaryDecodingError) -> VersionVector {
        let n = try r.readCount(limit: r.remaining / 33, "vector entries")
        var v = VersionVector()
        var last: SiteID?
        for _ in 0..<n {
            let at = r.offset
            let site = try SiteID(from: &r)
            let seq = try r.readVarint()
            guard seq > 0 else { throw BinaryDecodingError(.invalidValue, at: at, "a vector entry of 0 is left out, not sent") }
            guard seq <= Limits.maxSeq else {
                throw BinaryDecodingError(.tooLarge, at: at, "a vector entry of \(seq) exceeds the limit of \(Limits.maxSeq)")
            }
            if let last, !(last < site) {
                throw BinaryDecodingError(.notCanonical, at: at, "vector entries are not in ascending site order")
            }
            last = site
            v[site] = seq
        }
        return v
    }

    /// Decodes a vector that is the whole of `bytes`.
    public init(decoding bytes: [UInt8]) throws(BinaryDecodingError) {
        self = try ByteReader.decodeAll(bytes, "vector") { r throws(BinaryDecodingError) in try VersionVector.decode(from: &r) }
    }
}
