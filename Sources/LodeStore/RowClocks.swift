import LodeCore

/// A site as a store numbers it locally (a row of its sites table).
public typealias SiteNumber = Int64

/// A cell stamp as a store keeps it: the writer is named by its site
/// number there (`CellStamp` names it by key).
public struct LocalStamp: Equatable, Sendable {
    public var length: UInt64
    public var hlc: UInt64
    public var site: SiteNumber
    public var seq: UInt64

    public init(length: UInt64, hlc: UInt64, site: SiteNumber, seq: UInt64) {
        self.length = length
        self.hlc = hlc
        self.site = site
        self.seq = seq
    }
}

/// The per-cell stamps of one row, stored compactly (`_lode_rows.clocks` in
/// both stores):
/// the distinct stamps once, then per column slot a reference to one of them
/// (or none) and a bit saying the cell has an open conflict. A row written
/// by one op costs one stamp however many columns it has.
///
/// Encoding: `ngroups`, then per group `length hlc site seq` (varints), then
/// `nslots`, then per slot `((group + 1) << 1) | conflict` (0 = never written).
public struct RowClocks: Equatable, Sendable {
    public var groups: [LocalStamp] = []
    public var slots: [UInt32] = []

    public init() {}

    public init(decoding bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            let ng = try r.readCount(limit: 1 << 16, "stamp groups")
            groups.reserveCapacity(ng)
            for _ in 0..<ng {
                let (length, hlc, site, seq) = (try r.readVarint(), try r.readVarint(), try r.readVarint(), try r.readVarint())
                // Read from files a node may not have written (a backup
                // restored as a snapshot): out-of-range numbers are refused, not trapped on.
                guard site <= UInt64(Int64.max) else { throw BinaryDecodingError(.invalidValue, at: r.offset, "site number \(site) out of range") }
                groups.append(LocalStamp(length: length, hlc: hlc, site: Int64(site), seq: seq))
            }
            let ns = try r.readCount(limit: Limits.maxColumns, "slots")
            slots.reserveCapacity(ns)
            for _ in 0..<ns {
                let s = try r.readVarint()
                guard s >> 1 <= UInt64(ng) else {
                    throw BinaryDecodingError(.invalidValue, at: r.offset, "a slot names stamp group \(s >> 1) of \(ng)")
                }
                slots.append(UInt32(s))
            }
        }
    }

    public func encode(into w: inout ByteWriter) {
        // Drop groups no slot refers to any more, renumbering the rest.
        var used = [Bool](repeating: false, count: groups.count)
        for s in slots where s >> 1 > 0 { used[Int(s >> 1) - 1] = true }
        var renumber = [UInt32](repeating: 0, count: groups.count)
        var n: UInt32 = 0
        for (i, u) in used.enumerated() where u {
            n += 1
            renumber[i] = n
        }
        w.writeVarint(UInt64(n))
        for (i, g) in groups.enumerated() where used[i] {
            w.writeVarint(g.length)
            w.writeVarint(g.hlc)
            w.writeVarint(UInt64(g.site))
            w.writeVarint(g.seq)
        }
        w.writeVarint(UInt64(slots.count))
        for s in slots {
            let g = s >> 1
            w.writeVarint(UInt64(g == 0 ? s & 1 : (renumber[Int(g) - 1] << 1) | (s & 1)))
        }
    }

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 32)
        encode(into: &w)
        return w.bytes
    }

    public func stamp(_ slot: Int) -> LocalStamp? { groupIndex(slot).map { groups[$0] } }

    /// The index among `groups` of the stamp of `slot`; nil if never written.
    public func groupIndex(_ slot: Int) -> Int? {
        guard slot < slots.count else { return nil }
        let g = slots[slot] >> 1
        return g == 0 ? nil : Int(g) - 1
    }

    public func hasConflict(_ slot: Int) -> Bool { slot < slots.count && slots[slot] & 1 == 1 }

    public mutating func setConflict(_ slot: Int, _ on: Bool) {
        grow(slot)
        slots[slot] = on ? slots[slot] | 1 : slots[slot] & ~1
    }

    /// Sets the stamp of a slot; `group` is the index from `group(for:)`.
    public mutating func set(_ slot: Int, group: Int) {
        grow(slot)
        slots[slot] = (UInt32(group + 1) << 1) | (slots[slot] & 1)
    }

    /// The index of `stamp` among the groups, adding it if new.
    public mutating func group(for stamp: LocalStamp) -> Int {
        if let i = groups.lastIndex(of: stamp) { return i }
        groups.append(stamp)
        return groups.count - 1
    }

    private mutating func grow(_ slot: Int) {
        if slot >= slots.count { slots.append(contentsOf: repeatElement(0, count: slot + 1 - slots.count)) }
    }
}
