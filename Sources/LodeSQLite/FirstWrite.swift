import GRDB
import LodeCore
import LodeStore

/// The history keeps what each commit wrote to a row (`RowWrite`), but not
/// for a row written only once: such a row is its first write, whole. Its
/// table row holds the values, its clocks the cells written and their
/// stamp, and `_lode_rows.last` the time. So an import or a first sync adds
/// nothing to the history; the first write is read back into it when the
/// row is written a second time (`RowMerger`), and read from the table by
/// readers of the history until then (`HistoryReader`).
enum FirstWrite {
    /// The only write of a row written once (`meta.kept` false). `author`
    /// names the write's site and seq when the caller knows them (a commit
    /// writing the row twice, not yet in the log); otherwise the row's
    /// clocks do, or for a row whose only write was a delete, the log.
    static func read(
        _ db: Database, _ t: TableState, pk: String, meta: RowMeta, sites: SiteRegistry, author: (site: SiteNumber, seq: UInt64)? = nil
    ) throws -> RowWrite {
        var origin = author ?? meta.clocks.groups.first.map { ($0.site, $0.seq) }
        if origin == nil,
            let row = try Row.fetchOne(db, sql: "SELECT site, seq FROM _lode_log WHERE id = ?", arguments: [meta.firstLog])
        {
            origin = (row["site"], UInt64(row["seq"] as Int64))
        }
        guard let (number, seq) = origin, let key = sites.key(number) else {
            throw StoreError(.storage, "row \(pk) of table \(t.name) names a first write the file does not hold")
        }
        var cells: [HistoryCell] = []
        if Merge.isPresent(meta.length) {
            let slots = t.physicalSlots.filter { meta.clocks.stamp($0) != nil }
            if !slots.isEmpty {
                let s = try t.select(db, slots: slots)
                defer { s.reset() }
                s.bind(1, pk)
                guard try s.step(db) else { throw StoreError(.storage, "row \(pk) of table \(t.name) is missing from the table") }
                for (i, slot) in slots.enumerated() {
                    cells.append(HistoryCell(slot: slot, length: meta.clocks.stamp(slot)!.length, value: s.value(Int32(i))))
                }
            }
        }
        return RowWrite(hlc: HLC(rawValue: meta.last), site: key, seq: seq, length: meta.length, cells: cells)
    }
}
