import LodeCore

/// How a row's history reads, the same in every store: every write of the
/// commits that touched the row, oldest first, each marked `won` when it is
/// what the row shows now.
public enum HistoryRules {
    /// The entries for row `pk` of `table`, from the commits that touched it
    /// (in the order the replica applied them). `length` is the row's causal
    /// length now, `stamp` gives the stamp of each column's current write,
    /// and `name` a site's display name.
    public static func entries(
        table: String, pk: String, commits: [Commit], length: UInt64, stamp: (String) -> CellStamp?, name: (SiteID) -> String
    ) -> [HistoryEntry] {
        var out: [HistoryEntry] = []
        // Which write each entry is: a cell written twice in one commit
        // shows only the last write.
        var writes: [String] = []
        for c in commits {
            let site = name(c.author)
            let person = c.person.isEmpty ? nil : c.person
            for op in c.ops {
                switch op {
                case .put(let p) where p.table == table:
                    for i in 0..<p.rowCount where p.keys[i] == pk {
                        let written = CellStamp(length: p.lengths[i], hlc: c.hlc, site: c.author, seq: c.seq)
                        for (j, v) in p.row(i).enumerated() {
                            let won = p.lengths[i] == length && stamp(p.columns[j]) == written
                            out.append(
                                HistoryEntry(
                                    time: c.hlc.iso8601, siteName: site, person: person, seq: c.seq, column: p.columns[j], value: v, won: won))
                            writes.append("\(c.author.hex)/\(c.seq)/\(p.columns[j])")
                        }
                    }
                case .delete(let d) where d.table == table:
                    for i in 0..<d.keys.count where d.keys[i] == pk {
                        out.append(
                            HistoryEntry(
                                time: c.hlc.iso8601, siteName: site, person: person, seq: c.seq, column: nil, value: nil, won: d.lengths[i] == length)
                        )
                        writes.append("\(c.author.hex)/\(c.seq)/")
                    }
                default: break
                }
            }
        }
        var seen = Set<String>()
        for i in out.indices.reversed() where out[i].won {
            if !seen.insert(writes[i]).inserted { out[i].won = false }
        }
        return out
    }

    /// The entries for one write of row `pk` kept in the history alone (its
    /// commit compacted away): its cells with the values the row showed,
    /// or a delete. `columns` names the table's slots.
    public static func entries(
        table: String, pk: String, write w: RowWrite, person: String?, length: UInt64, columns: [Int: String],
        stamp: (String) -> CellStamp?, name: (SiteID) -> String
    ) -> [HistoryEntry] {
        let site = name(w.site)
        if w.cells.isEmpty && !Merge.isPresent(w.length) {
            return [HistoryEntry(time: w.hlc.iso8601, siteName: site, person: person, seq: w.seq, column: nil, value: nil, won: w.length == length)]
        }
        return w.cells.compactMap { cell in
            guard let column = columns[cell.slot] else { return nil }
            let won = cell.length == length && stamp(column) == w.stamp(cell)
            return HistoryEntry(time: w.hlc.iso8601, siteName: site, person: person, seq: w.seq, column: column, value: cell.value, won: won)
        }
    }
}
