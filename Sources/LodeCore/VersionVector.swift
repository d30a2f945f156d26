/// For each site, the highest seq of its feed held without a gap.
///
/// ```swift
/// var v = VersionVector()
/// v[site] = 3
/// v.covers(Dependency(site: site, seq: 2)) // true
/// ```
public struct VersionVector: Hashable, Sendable, CustomStringConvertible {
    /// The entries in ascending site order, none of them 0: the vector's
    /// one form, so that equal vectors are equal arrays. A sorted array,
    /// not a dictionary: a relay holds a vector of every site per peer and
    /// compares, merges, encodes and decodes them whole on every message,
    /// which a walk in order does without hashing a site id.
    public private(set) var sorted: [Entry]

    /// The empty vector.
    public init() { sorted = [] }

    /// Creates a vector from entries (entries of 0 are left out).
    public init(_ entries: [SiteID: UInt64]) {
        sorted = entries.filter { $0.value > 0 }.map { Entry(site: $0.key, seq: $0.value) }.sorted { $0.site < $1.site }
    }

    /// The highest seq of each site among `pairs`, in any order and with
    /// repeats. Use this, not a write per pair, for many sites from outside
    /// (the authors of a peer's batch): writing a site that is not in the
    /// vector yet moves the entries after it, so pairs of n new sites in
    /// random order would take n² moves.
    public init(highest pairs: some Sequence<(SiteID, UInt64)>) {
        var top: [SiteID: UInt64] = [:]
        for (site, seq) in pairs where seq > top[site, default: 0] { top[site] = seq }
        self.init(top)
    }

    /// One entry: a site and the highest seq of its feed held.
    public struct Entry: Hashable, Sendable {
        public var site: SiteID
        public var seq: UInt64
    }

    /// True when no site has an entry.
    public var isEmpty: Bool { sorted.isEmpty }

    /// The number of sites with an entry.
    public var count: Int { sorted.count }

    /// Where `site` is, or would go, in `sorted`.
    @inline(__always)
    private func position(of site: SiteID) -> (index: Int, found: Bool) {
        var low = 0, high = sorted.count
        while low < high {
            let mid = (low + high) >> 1
            let s = sorted[mid].site
            if s == site { return (mid, true) }
            if s < site { low = mid + 1 } else { high = mid }
        }
        return (low, false)
    }

    /// The seq held for `site`, 0 when none.
    public subscript(site: SiteID) -> UInt64 {
        get {
            let p = position(of: site)
            return p.found ? sorted[p.index].seq : 0
        }
        set {
            let p = position(of: site)
            switch (p.found, newValue) {
            case (true, 0): sorted.remove(at: p.index)
            case (true, _): sorted[p.index].seq = newValue
            case (false, 0): break
            case (false, _): sorted.insert(Entry(site: site, seq: newValue), at: p.index)
            }
        }
    }

    /// True when every dependency is held.
    public func covers(_ dep: Dependency) -> Bool { self[dep.site] >= dep.seq }

    /// True when this vector is at least `other` in every entry.
    public func dominates(_ other: VersionVector) -> Bool {
        guard other.sorted.count <= sorted.count else { return false }
        var i = 0
        for e in other.sorted {
            while i < sorted.count && sorted[i].site < e.site { i += 1 }
            guard i < sorted.count, sorted[i].site == e.site, sorted[i].seq >= e.seq else { return false }
            i += 1
        }
        return true
    }

    /// The entry-wise maximum.
    public func merged(with other: VersionVector) -> VersionVector {
        if other.sorted.isEmpty { return self }
        if sorted.isEmpty { return other }
        var out: [Entry] = []
        out.reserveCapacity(max(sorted.count, other.sorted.count))
        var i = 0, j = 0
        while i < sorted.count && j < other.sorted.count {
            let a = sorted[i], b = other.sorted[j]
            if a.site == b.site {
                out.append(a.seq >= b.seq ? a : b)
                i += 1
                j += 1
            } else if a.site < b.site {
                out.append(a)
                i += 1
            } else {
                out.append(b)
                j += 1
            }
        }
        out += sorted[i...]
        out += other.sorted[j...]
        var v = VersionVector()
        v.sorted = out
        return v
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
        w.writeVarint(UInt64(sorted.count))
        for e in sorted {
            e.site.encode(into: &w)
            w.writeVarint(e.seq)
        }
    }

    /// The canonical encoding on its own.
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 1 + 36 * sorted.count)
        encode(into: &w)
        return w.bytes
    }

    /// Reads one canonically encoded vector, refusing entries of 0 and
    /// entries out of ascending site order (either would give one vector
    /// two encodings).
    public static func decode(from r: inout ByteReader) throws(BinaryDecodingError) -> VersionVector {
        let n = try r.readCount(limit: r.remaining / 33, "vector entries")
        var entries: [Entry] = []
        entries.reserveCapacity(n)
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
            entries.append(Entry(site: site, seq: seq))
        }
        var v = VersionVector()
        v.sorted = entries
        return v
    }

    /// Decodes a vector that is the whole of `bytes`.
    public init(decoding bytes: [UInt8]) throws(BinaryDecodingError) {
        self = try ByteReader.decodeAll(bytes, "vector") { r throws(BinaryDecodingError) in try VersionVector.decode(from: &r) }
    }
}
