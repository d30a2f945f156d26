/// The stamp of one cell write: the row's causal length it was written in,
/// then the commit's clock, then the author. Larger wins.
public struct CellStamp: Hashable, Sendable {
    /// The causal length of the row when the cell was written (odd).
    public var length: UInt64
    /// The commit's hybrid logical clock.
    public var hlc: HLC
    /// The author.
    public var site: SiteID
    /// The commit's seq in the author's feed (for conflict detection, not ordering).
    public var seq: UInt64

    /// Creates a stamp.
    public init(length: UInt64, hlc: HLC, site: SiteID, seq: UInt64) {
        self.length = length
        self.hlc = hlc
        self.site = site
        self.seq = seq
    }
}

/// The merge rules of the CRDT, one small pure function each.
public enum Merge {
    /// A row's causal length after merging two: the larger.
    @inlinable public static func rowLength(_ a: UInt64, _ b: UInt64) -> UInt64 { max(a, b) }

    /// True when a row of this causal length exists (odd).
    @inlinable public static func isPresent(_ length: UInt64) -> Bool { length & 1 == 1 }

    /// A cell is visible only in the life of the row it was written in, so a
    /// concurrent update never revives a delete and a re-insert starts clean.
    @inlinable public static func isVisible(cell: UInt64, row: UInt64) -> Bool { cell == row }

    /// Orders two stamps by (length, hlc, site). Returns true when `incoming`
    /// replaces `existing`. Equal stamps come from one commit writing a cell
    /// twice; the later op replaces the earlier, on every replica alike.
    @inlinable public static func replaces(_ incoming: CellStamp, _ existing: CellStamp?) -> Bool {
        guard let e = existing else { return true }
        if incoming.length != e.length { return incoming.length > e.length }
        if incoming.hlc != e.hlc { return incoming.hlc > e.hlc }
        return incoming.site >= e.site
    }

    /// The causal length a local write gives a row currently at `length`:
    /// unchanged when present, one more when absent or deleted.
    @inlinable public static func lengthForLocalWrite(_ length: UInt64) -> UInt64 {
        isPresent(length) ? length : length + 1
    }

    /// The causal length a local delete gives a present row; nil when the row
    /// is already absent (nothing to delete).
    @inlinable public static func lengthForLocalDelete(_ length: UInt64) -> UInt64? {
        isPresent(length) ? length + 1 : nil
    }

    /// Two writes to one cell are concurrent when neither commit had seen
    /// the other: `incomingPast` is the incoming commit's causal past.
    @inlinable public static func isConcurrent(existing: CellStamp, incomingPast: VersionVector, incomingSite: SiteID) -> Bool {
        existing.site != incomingSite && incomingPast[existing.site] < existing.seq
    }

    /// Merges one incoming write into a cell: whether it replaces the cell's
    /// current write, and whether the two are a conflict (concurrent writes
    /// in the row's current life, so that the loser must be recorded).
    ///
    /// `rowLength` is the row's causal length after merging the incoming
    /// write's; `incomingPast` is the incoming commit's causal past, nil for
    /// a local write (which has seen everything the replica holds, so it is
    /// never concurrent with what the replica holds).
    ///
    /// ```swift
    /// let m = Merge.cell(incoming: stamp, past: past, existing: cell?.stamp, rowLength: length)
    /// if m.replaces { cell = incoming }
    /// if m.isConflict { record(winner: m.replaces ? incoming : existing, loser: …) }
    /// ```
    @inlinable public static func cell(
        incoming: CellStamp, past incomingPast: VersionVector?, existing: CellStamp?, rowLength: UInt64
    ) -> CellMerge {
        let wins = replaces(incoming, existing)
        guard let existing, let incomingPast, incoming.length == rowLength, existing.length == incoming.length else {
            return CellMerge(replaces: wins, isConflict: false)
        }
        return CellMerge(replaces: wins, isConflict: isConcurrent(existing: existing, incomingPast: incomingPast, incomingSite: incoming.site))
    }

    /// True when a write whose causal past is `past` has seen both sides of
    /// a conflict (each side named by its author and seq), and so resolves
    /// it. A local write (`past` nil) has seen everything the replica holds.
    @inlinable public static func resolves(
        past: VersionVector?, winnerSite: SiteID, winnerSeq: UInt64, loserSite: SiteID, loserSeq: UInt64
    ) -> Bool {
        guard let past else { return true }
        return past[winnerSite] >= winnerSeq && past[loserSite] >= loserSeq
    }
}

/// What merging one incoming write into a cell does (`Merge.cell`).
public struct CellMerge: Equatable, Sendable {
    /// True when the incoming write becomes the cell's value.
    public var replaces: Bool
    /// True when the incoming write and the cell's current one are
    /// concurrent in the row's current life: the loser is kept as a conflict.
    public var isConflict: Bool

    /// Creates an outcome.
    @inlinable public init(replaces: Bool, isConflict: Bool) {
        self.replaces = replaces
        self.isConflict = isConflict
    }
}
