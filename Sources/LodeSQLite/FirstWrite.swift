import GRDB
import LodeCore
import LodeStore

/// The history keeps what each commit wrote to a row (`RowWrite`), but not
/// for a row whose table row and clocks already say all of it: a row
/// written only once (an import or a first sync adds nothing to the
/// history), or a row whose history compaction folded away (`compact`)
/// because every cell it shows is its current write. Such a row's writes
/// are read from its table row and clocks: one per stamp its cells carry.
/// They are read back into the history when the row is written again
/// (`RowMerger`), and read from the table by readers of the history until
/// then (`HistoryReader`).
enum FirstWrite {
    /// The writes of a row whose history is its table row (`meta.kept`
    /// false). A row written once gives one: `author` names its site and
    /// seq when the caller knows them (a commit writing the row twice, not
    /// yet in the log); otherwise the row's clocks do, or for a row whose
    /// only write was a delete, the log. A compacted row gives one per
    /// stamp group of its clocks.
    static func read(
        _ db: Database, _ t: TableState, pk: String, meta: RowMeta, sites: SiteRegistry, author: (site: SiteNumber, seq: UInt64)? = nil
    ) throws -> [RowWrite] {
        let groups = meta.clocks.groups
        var values: [Int: Value] = [:]
        if Merge.isPresent(meta.length) {
            let slots = t.physicalSlots.filter { meta.clocks.stamp($0) != nil }
            if !slots.isEmpty {
                let s = try t.select(db, slots: slots)
                defer { s.reset() }
                s.bind(1, pk)
                guard try s.step(db) else { throw StoreError(.storage, "row \(pk) of table \(t.name) is missing from the table") }
                for (i, slot) in slots.enumerated() { values[slot] = s.value(Int32(i)) }
            }
        }
        func cells(group: Int?) -> [HistoryCell] {
            values.keys.sorted().compactMap { slot in
                guard group == nil || meta.clocks.groupIndex(slot) == group, let stamp = meta.clocks.stamp(slot) else { return nil }
                return HistoryCell(slot: slot, length: stamp.length, value: values[slot]!)
            }
        }
        func key(_ number: SiteNumber) throws -> SiteID {
            guard let key = sites.key(number) else {
                throw StoreError(.storage, "row \(pk) of table \(t.name) names a write by site number \(number), which the file does not know")
            }
            return key
        }
        if author == nil && !groups.isEmpty {
            // Each stamp its own write (a row written once has one).
            return try groups.enumerated().map { i, g in
                RowWrite(hlc: HLC(rawValue: g.hlc), site: try key(g.site), seq: g.seq, length: g.length, cells: cells(group: i))
            }
        }
        var origin = author ?? groups.first.map { ($0.site, $0.seq) }
        if origin == nil,
            let row = try Row.fetchOne(db, sql: "SELECT site, seq FROM _lode_log WHERE id = ?", arguments: [meta.firstLog])
        {
            origin = (row["site"], UInt64(row["seq"] as Int64))
        }
        guard let (number, seq) = origin else {
            throw StoreError(.storage, "row \(pk) of table \(t.name) names a first write the file does not hold")
        }
        return [RowWrite(hlc: HLC(rawValue: meta.last), site: try key(number), seq: seq, length: meta.length, cells: cells(group: nil))]
    }
}
