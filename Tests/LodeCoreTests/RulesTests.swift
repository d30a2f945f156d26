import Testing

@testable import LodeCore

/// The rules with one home in LodeCore: the version-vector codec, the
/// put/delete layout (`OpsEncoder` against `Op.encode`), and the merge of
/// one cell.
@Suite struct RulesTests {
    let a = try! SiteID(bytes: [UInt8](repeating: 1, count: 32))
    let b = try! SiteID(bytes: [UInt8](repeating: 2, count: 32))

    @Test func vectorsRoundTripInOneEncoding() throws {
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<200 {
            var v = VersionVector()
            for _ in 0..<Int.random(in: 0..<6, using: &rng) {
                let site = try SiteID(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
                v[site] = UInt64.random(in: 1...Limits.maxSeq, using: &rng) >> UInt64.random(in: 0..<63, using: &rng)
            }
            let bytes = v.encoded
            #expect(try VersionVector(decoding: bytes) == v)
            #expect(try VersionVector(decoding: bytes).encoded == bytes)
        }
        #expect(VersionVector().encoded == [0])
    }

    /// The vector kept as a sorted array answers as a dictionary of sites
    /// would: reads, writes (0 removes), dominance, merge, equality and
    /// hashing, and a site id read back from its bytes is the same id.
    @Test(arguments: 0..<20)
    func vectorsAnswerAsADictionaryOfSitesWould(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(seed))
        // Few sites, so that vectors share many of them; some differ only
        // in their last byte, some only in their first.
        var sites: [SiteID] = []
        for i in 0..<12 {
            var bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if i % 3 == 1 { bytes[31] = UInt8(i) }
            if i % 3 == 2 { bytes[0] = UInt8(i) }
            let s = try SiteID(bytes: bytes)
            let again = try SiteID(bytes: s.bytes)
            #expect(s.bytes == bytes && again == s)
            sites.append(s)
        }
        func random() -> (VersionVector, [SiteID: UInt64]) {
            var v = VersionVector(), model: [SiteID: UInt64] = [:]
            for _ in 0..<Int.random(in: 0..<30, using: &rng) {
                let s = sites.randomElement(using: &rng)!
                let seq = Int.random(in: 0..<4, using: &rng) == 0 ? 0 : UInt64.random(in: 1...6, using: &rng)
                v[s] = seq
                model[s] = seq == 0 ? nil : seq
                #expect(v[s] == seq)
            }
            return (v, model)
        }
        for _ in 0..<200 {
            let (v, mv) = random(), (w, mw) = random()
            #expect(v == VersionVector(mv) && v.count == mv.count && v.isEmpty == mv.isEmpty)
            #expect(v.sorted.map(\.site) == mv.keys.sorted() && v.sorted.allSatisfy { $0.seq > 0 })
            for s in sites { #expect(v[s] == mv[s] ?? 0) }
            #expect(v.dominates(w) == mw.allSatisfy { (mv[$0.key] ?? 0) >= $0.value })
            let merged = v.merged(with: w)
            #expect(merged == VersionVector(mv.merging(mw, uniquingKeysWith: max)))
            #expect(merged.dominates(v) && merged.dominates(w))
            #expect((v == w) == (mv == mw))
            if v == w { #expect(v.hashValue == w.hashValue) }
            #expect(try VersionVector(decoding: v.encoded) == v)
            // Built at once from pairs in any order, with repeats and zeros.
            let pairs = (0..<Int.random(in: 0..<40, using: &rng)).map { _ in
                (sites.randomElement(using: &rng)!, UInt64.random(in: 0...9, using: &rng))
            }
            var highest: [SiteID: UInt64] = [:]
            for (s, q) in pairs { highest[s] = max(highest[s] ?? 0, q) }
            #expect(VersionVector(highest: pairs) == VersionVector(highest))
        }
    }

    @Test func aVectorWithTwoEncodingsIsRefused() throws {
        func entry(_ s: SiteID, _ seq: UInt8) -> [UInt8] { s.bytes + [seq] }
        let cases: [([UInt8], BinaryDecodingError.Rule)] = [
            ([1] + entry(a, 0), .invalidValue),  // an entry of 0 is left out
            ([2] + entry(b, 1) + entry(a, 1), .notCanonical),  // out of order
            ([2] + entry(a, 1) + entry(a, 2), .notCanonical),  // twice
            ([1] + entry(a, 1) + [0], .trailingBytes),
            ([2] + entry(a, 1), .tooLarge),  // more entries than bytes
            ([1] + a.bytes + [0x80, 0x00], .nonMinimalVarint),
            ([1] + a.bytes + [0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40], .tooLarge),  // seq 2^62 + 1
        ]
        for (bytes, rule) in cases {
            #expect(throws: BinaryDecodingError.self) { try VersionVector(decoding: bytes) }
            do {
                _ = try VersionVector(decoding: bytes)
            } catch {
                #expect(error.rule == rule, "\(error)")
            }
        }
    }

    @Test func opsEncodedAsTheyComeAreTheOpsEncoded() throws {
        var rng = SeededGenerator(seed: 11)
        for _ in 0..<100 {
            var encoder = OpsEncoder()
            var ops: [Op] = []
            for _ in 0..<Int.random(in: 1..<40, using: &rng) {
                let table = ["t", "u"].randomElement(using: &rng)!
                let pk = "k\(Int.random(in: 0..<5, using: &rng))"
                switch Int.random(in: 0..<10, using: &rng) {
                case 0:
                    let def = TableDef(
                        name: table, primaryKey: "id", columns: [ColumnDef(name: "c\(Int.random(in: 0..<3, using: &rng))", type: .text)])
                    encoder.define(def)
                    ops.append(.defineTable(def))
                case 1..<4:
                    encoder.delete(table: table, pk: pk, length: 2)
                    if case .delete(var d)? = ops.last, d.table == table {
                        d.append(key: pk, length: 2)
                        ops[ops.count - 1] = .delete(d)
                    } else {
                        var d = DeleteRows(table: table)
                        d.append(key: pk, length: 2)
                        ops.append(.delete(d))
                    }
                default:
                    let columns = Int.random(in: 0..<2, using: &rng) == 0 ? ["a"] : ["a", "b"]
                    let values = columns.map { _ in Value.integer(Int64.random(in: -9...9, using: &rng)) }
                    encoder.put(table: table, columns: columns, pk: pk, length: 1, values: values)
                    if case .put(var p)? = ops.last, p.table == table, p.columns == columns {
                        p.append(key: pk, length: 1, values: values)
                        ops[ops.count - 1] = .put(p)
                    } else {
                        var p = PutRows(table: table, columns: columns)
                        p.append(key: pk, length: 1, values: values)
                        ops.append(.put(p))
                    }
                }
            }
            let encoded = encoder.finish()
            var expected = ByteWriter()
            for op in ops { op.encode(into: &expected) }
            #expect(encoded.count == ops.count)
            #expect(encoded.bytes == expected.bytes)
            #expect(encoded.definesSchema == ops.contains { $0.isDefinition })
            #expect(encoded.tables == Set(ops.filter { !$0.isDefinition }.map(\.table)))
            #expect(encoder.isEmpty)
        }
    }

    @Test func oneCellMergesByLengthThenClockThenSite() {
        let hlc = HLC(millis: 1000, counter: 0)
        let older = CellStamp(length: 1, hlc: hlc, site: a, seq: 1)
        let newer = CellStamp(length: 1, hlc: HLC(rawValue: hlc.rawValue + 1), site: a, seq: 2)
        let tie = CellStamp(length: 1, hlc: hlc, site: b, seq: 1)
        let nextLife = CellStamp(length: 3, hlc: HLC(rawValue: 1), site: a, seq: 3)
        #expect(Merge.replaces(older, nil))
        #expect(Merge.replaces(newer, older) && !Merge.replaces(older, newer))
        #expect(Merge.replaces(tie, older) && !Merge.replaces(older, tie))  // equal clocks: the larger site key
        #expect(Merge.replaces(nextLife, newer) && !Merge.replaces(newer, nextLife))  // a new life wins whatever the clock
        #expect(Merge.replaces(older, older))  // one commit writing a cell twice: the later op
        // b had not seen a's write: concurrent, whichever wins.
        let past = VersionVector([b: 1])
        #expect(Merge.cell(incoming: tie, past: past, existing: older, rowLength: 1) == CellMerge(replaces: true, isConflict: true))
        #expect(Merge.cell(incoming: older, past: VersionVector([a: 1]), existing: tie, rowLength: 1) == CellMerge(replaces: false, isConflict: true))
        // b had seen it: no conflict.
        #expect(
            Merge.cell(incoming: tie, past: VersionVector([a: 1, b: 1]), existing: older, rowLength: 1)
                == CellMerge(replaces: true, isConflict: false))
        // A local write has seen everything; a write in another life of the row is no conflict.
        #expect(Merge.cell(incoming: tie, past: nil, existing: older, rowLength: 1) == CellMerge(replaces: true, isConflict: false))
        #expect(Merge.cell(incoming: tie, past: past, existing: older, rowLength: 3) == CellMerge(replaces: true, isConflict: false))
        #expect(Merge.cell(incoming: nextLife, past: past, existing: older, rowLength: 3) == CellMerge(replaces: true, isConflict: false))
        // A write that saw both sides resolves their conflict; a local write always does.
        #expect(Merge.resolves(past: VersionVector([a: 1, b: 1]), winnerSite: b, winnerSeq: 1, loserSite: a, loserSeq: 1))
        #expect(!Merge.resolves(past: VersionVector([a: 1]), winnerSite: b, winnerSeq: 1, loserSite: a, loserSeq: 1))
        #expect(Merge.resolves(past: nil, winnerSite: b, winnerSeq: 1, loserSite: a, loserSeq: 1))
    }

    @Test func aNullInANotNullColumnShowsTheDefault() {
        let c = ColumnDef(name: "name", type: .text, notNull: true, defaultValue: .text("-"))
        #expect(c.materialized(.null) == .text("-"))
        #expect(c.materialized(.text("x")) == .text("x"))
        #expect(ColumnDef(name: "n", type: .integer).materialized(.null) == .null)
    }
}
