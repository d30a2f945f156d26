import LodeCore

/// One cell as one commit left it in a row's history: the table slot, the
/// causal length of the row it was written in, and the value the table
/// showed for the write (`ColumnDef.materialized`).
public struct HistoryCell: Hashable, Sendable {
    public var slot: Int
    public var length: UInt64
    public var value: Value

    public init(slot: Int, length: UInt64, value: Value) {
        self.slot = slot
        self.length = length
        self.value = value
    }
}

/// What one commit did to one row, as the history keeps it (DESIGN §12):
/// the causal length it gave the row (the largest of its writes) and the
/// cells it wrote. A delete writes no cell. Every store keeps one per
/// (row, commit), so the row as of any time is merged from its history
/// alone, never by replaying the log.
public struct RowWrite: Hashable, Sendable {
    public var hlc: HLC
    public var site: SiteID
    public var seq: UInt64
    public var length: UInt64
    public var cells: [HistoryCell]

    public init(hlc: HLC, site: SiteID, seq: UInt64, length: UInt64, cells: [HistoryCell]) {
        self.hlc = hlc
        self.site = site
        self.seq = seq
        self.length = length
        self.cells = cells
    }

    /// The stamp the write gives `cell`, as the merge rules compare it.
    public func stamp(_ cell: HistoryCell) -> CellStamp { CellStamp(length: cell.length, hlc: hlc, site: site, seq: seq) }

    /// Folds a later write of the same commit to the same row into this one:
    /// the larger causal length, and per cell the later write unless it was
    /// made in an earlier life of the row (`Merge.replaces` on equal stamps).
    public mutating func absorb(length other: UInt64, cells later: [HistoryCell]) {
        length = Merge.rowLength(length, other)
        for c in later {
            if let i = cells.firstIndex(where: { $0.slot == c.slot }) {
                if c.length >= cells[i].length { cells[i] = c }
            } else {
                cells.append(c)
            }
        }
    }

    /// The cells in the history's encoding: a count, then for each cell its
    /// slot, causal length and canonically encoded value.
    public static func encode(_ cells: [HistoryCell]) -> [UInt8] {
        var w = ByteWriter(capacity: 8 + cells.count * 12)
        w.writeVarint(UInt64(cells.count))
        for c in cells {
            w.writeVarint(UInt64(c.slot))
            w.writeVarint(c.length)
            c.value.encode(into: &w)
        }
        return w.bytes
    }

    /// Reads cells written by `encode`.
    public static func decodeCells(_ bytes: [UInt8]) throws(BinaryDecodingError) -> [HistoryCell] {
        try ByteReader.decodeAll(bytes, "history cells") { r throws(BinaryDecodingError) in try readCells(&r) }
    }

    /// The same, from bytes in place (a column SQLite holds). (Not through
    /// the generic `ByteReader.decodeAll`: as-of scans decode hundreds of
    /// thousands of these.)
    public static func decodeCells(_ bytes: UnsafeRawBufferPointer) throws(BinaryDecodingError) -> [HistoryCell] {
        var r = ByteReader(bytes)
        let out = try readCells(&r)
        guard r.isAtEnd else { throw BinaryDecodingError(.trailingBytes, at: r.offset, "\(r.remaining) bytes after the history cells") }
        return out
    }

    private static func readCells(_ r: inout ByteReader) throws(BinaryDecodingError) -> [HistoryCell] {
        let n = try r.readCount(limit: Limits.maxColumns + 1, "history cells")
        var out: [HistoryCell] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let slot = try r.readVarint()
            // No table has more columns than a commit may define.
            guard slot <= UInt64(Limits.maxColumns) else { throw BinaryDecodingError(.invalidValue, at: r.offset, "slot \(slot) out of range") }
            out.append(HistoryCell(slot: Int(slot), length: try r.readVarint(), value: try Value.decode(from: &r)))
        }
        return out
    }
}

/// A row as the writes of its history up to some time left it: by the
/// CRDT's rules (`Merge`), its causal length is the largest any write gave
/// it, each cell holds the write with the largest stamp, and a cell shows
/// only when it was written in the row's current life.
public struct RowAsOf: Sendable {
    /// The row's causal length (0: never written).
    public private(set) var length: UInt64 = 0
    /// A cell's winning write.
    public struct Cell: Sendable {
        public var stamp: CellStamp
        public var value: Value
    }

    /// For each slot written (by slot), the winning write. (Concrete types
    /// throughout: as-of scans merge hundreds of thousands of rows.)
    private var cells: [Cell?] = []
    /// The write that gave the row its causal length first (the insert of
    /// its current life, or the delete that ended it).
    public private(set) var lengthWrite: RowWrite?

    public init() {}

    /// Merges the given writes (in any order: the result is the same).
    public init(_ writes: [RowWrite]) {
        for w in writes { merge(w) }
    }

    public mutating func merge(_ w: RowWrite) {
        if w.length > length || (w.length == length && lengthWrite.map { earlier(w, than: $0) } ?? true) {
            length = w.length
            lengthWrite = w
        }
        for c in w.cells {
            let s = w.stamp(c)
            while c.slot >= cells.count { cells.append(nil) }
            if let e = cells[c.slot], !Merge.replaces(s, e.stamp) { continue }
            cells[c.slot] = Cell(stamp: s, value: c.value)
        }
    }

    private func earlier(_ a: RowWrite, than b: RowWrite) -> Bool { a.hlc != b.hlc ? a.hlc < b.hlc : a.site < b.site }

    /// True when the row exists (odd causal length).
    public var isPresent: Bool { Merge.isPresent(length) }

    /// What the row shows in `slot`: the winning write's value when it was
    /// made in the current life, else nil (the column's default shows).
    public func visible(_ slot: Int) -> Cell? {
        guard slot >= 0, slot < cells.count, let c = cells[slot], Merge.isVisible(cell: c.stamp.length, row: length) else { return nil }
        return c
    }
}
