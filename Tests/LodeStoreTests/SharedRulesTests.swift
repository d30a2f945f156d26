import Foundation
import LodeCore
import LodeStore
import LodeTestSupport
import Testing

/// The rules every store calls: datasets and schema changes, annotations,
/// imports, history, and the causal buffer.
@Suite struct SharedRulesTests {
    let dir = TempDir("lode-rules")

    @Test func aNewDatasetNeedsAValidNameAnEditorAndUserTables() throws {
        let editor = site(1, "alpha")
        try DatasetRules.checkNew("rare-earths.v2", tables: [], by: editor)
        for bad in ["", "Rare", "-x", "a b", "x/y", String(repeating: "a", count: 65)] {
            #expect(throws: StoreError.self, "\(bad)") { try DatasetRules.checkNew(bad, tables: [], by: editor) }
        }
        #expect(throws: StoreError.self) { try DatasetRules.checkNew("d", tables: [], by: site(2, "r", role: .reader)) }
        let reserved = TableDef(name: "_secret", primaryKey: "id", columns: [])
        #expect(throws: StoreError.self) { try DatasetRules.checkNew("d", tables: [reserved], by: editor) }
        // A table of keys alone could never replicate a row (peers refuse a write naming no column).
        let keysOnly = TableDef(name: "tags", primaryKey: "id", columns: [])
        let refusal = #expect(throws: StoreError.self) { try DatasetRules.checkNew("d", tables: [keysOnly], by: editor) }
        #expect(refusal?.code == .badInput && refusal?.message.contains("table tags has only its key id") == true)
    }

    @Test func alterPlansOnlyAdditions() throws {
        let stamp = SchemaStamp(hlc: HLC(rawValue: 1), site: site(1, "a").site)
        let mines = TableDef(name: "mines", primaryKey: "id", columns: [ColumnDef(name: "name", type: .text)])
        let existing = ["mines": TableSchema(mines, stamp: stamp)]
        let grown = TableDef(name: "mines", primaryKey: "id", columns: mines.columns + [ColumnDef(name: "output", type: .integer)])
        let trade = TableDef(name: "trade", primaryKey: "id", columns: [ColumnDef(name: "tonnes", type: .real)])
        let plan = try DatasetRules.planAlter(existing: existing, declared: [grown, trade])
        #expect(plan.change == SchemaChange(tables: ["trade"], columns: ["mines.output"]))
        #expect(plan.defs == [TableDef(name: "mines", primaryKey: "id", columns: [ColumnDef(name: "output", type: .integer)]), trade])
        #expect(try DatasetRules.planAlter(existing: existing, declared: [mines]).defs.isEmpty)
        for (bad, fragment) in [
            (TableDef(name: "mines", primaryKey: "code", columns: mines.columns), "primary key"),
            (TableDef(name: "mines", primaryKey: "id", columns: []), "name is missing"),
            (TableDef(name: "mines", primaryKey: "id", columns: [ColumnDef(name: "name", type: .blob)]), "cannot become BLOB"),
            (TableDef(name: "_x", primaryKey: "id", columns: []), "reserved"),
            (TableDef(name: "tags", primaryKey: "id", columns: []), "has only its key id"),
        ] {
            do {
                _ = try DatasetRules.planAlter(existing: existing, declared: [bad])
                Issue.record("planned \(bad)")
            } catch let e as StoreError {
                #expect(e.message.contains(fragment), "\(e.message)")
            }
        }
    }

    @Test func annotationsAreCheckedAndWrittenAsRows() throws {
        let note = NewAnnotation(table: "mines", pk: "mp", column: "output", text: "Check this", tags: [" b", "a", "b", ""], replyTo: "r1")
        #expect(try AnnotationRows.check(note, by: site(1, "alpha", role: .annotator)) == ["a", "b"])
        #expect(throws: StoreError.self) { try AnnotationRows.check(note, by: site(1, "alpha", role: .reader)) }
        var empty = note
        empty.text = " \n\t"
        #expect(throws: StoreError.self) { try AnnotationRows.check(empty, by: site(1, "alpha")) }
        var system = note
        system.table = "_annotations"
        #expect(throws: StoreError.self) { try AnnotationRows.check(system, by: site(1, "alpha")) }
        let hlc = HLC(millis: 1_780_000_000_000, counter: 3)
        let id = AnnotationRows.id(hlc: hlc, site: site(1, "alpha").site)
        #expect(id == String(hlc.rawValue, radix: 16) + "-" + site(1, "alpha").site.hex.prefix(16))
        #expect(AnnotationRows.isOwned(id[...], by: site(1, "alpha").site) && !AnnotationRows.isOwned(id[...], by: site(2, "beta").site))
        let rows = AnnotationRows.rows(note, id: id, author: "alpha", hlc: hlc, tags: ["a", "b"])
        #expect(rows.count == 3)
        guard case .put(let table, let pk, let columns, let values) = rows[0] else { Issue.record("not a put"); return }
        #expect(table == "_annotations" && pk == id)
        let fields = Dictionary(uniqueKeysWithValues: zip(columns, values))
        #expect(fields["target_pk"] == .text("mp") && fields["target_column"] == .text("output") && fields["reply_to"] == .text("r1"))
        #expect(fields["author"] == .text("alpha") && fields["status"] == .text("open") && fields["created"] == .text(hlc.iso8601))
        #expect(rows[2] == .put(table: "_annotation_tags", pk: "\(id):b", columns: ["annotation_id", "tag"], values: [.text(id), .text("b")]))
        let mines = TableSchema(
            TableDef(name: "mines", primaryKey: "id", columns: [ColumnDef(name: "output", type: .integer)]),
            stamp: SchemaStamp(hlc: .zero, site: AnnotationRows.genesisSite))
        try AnnotationRows.checkTarget(note, table: mines, rowPresent: true, replyPresent: true)
        #expect(throws: StoreError.self) { try AnnotationRows.checkTarget(note, table: mines, rowPresent: false, replyPresent: true) }
        #expect(throws: StoreError.self) { try AnnotationRows.checkTarget(note, table: mines, rowPresent: true, replyPresent: false) }
        var onKey = note
        onKey.column = "id"
        try AnnotationRows.checkTarget(onKey, table: mines, rowPresent: true, replyPresent: true)
        onKey.column = "colour"
        #expect(throws: StoreError.self) { try AnnotationRows.checkTarget(onKey, table: mines, rowPresent: true, replyPresent: true) }
    }

    @Test func anImportPlanMapsTheHeaderAndTypesEachField() throws {
        let t = TableSchema(
            TableDef(
                name: "m", primaryKey: "id",
                columns: [
                    ColumnDef(name: "n", type: .integer), ColumnDef(name: "x", type: .real), ColumnDef(name: "s", type: .text),
                    ColumnDef(name: "b", type: .blob),
                ]), stamp: SchemaStamp(hlc: .zero, site: AnnotationRows.genesisSite))
        let plan = try ImportPlan(table: t, header: [" X", "ID", "b", "s", "n "])
        #expect(plan.columns == ["x", "b", "s", "n"])
        var values: [Value] = []
        #expect(try plan.row(["2.5", "k1", "AQID", "", " 7 "], line: 2, into: &values) == "k1")
        #expect(values == [.real(2.5), .blob([1, 2, 3]), .null, .integer(7)])
        for (fields, fragment) in [
            (["x", "k", "", "", ""], "not a REAL"), (["1", "k", "", "", "seven"], "not an INTEGER"), (["1", "k", "%%", "", ""], "base64"),
            (["1", "", "", "", ""], "primary key"), (["1", "k"], "2 fields"), (["inf", "k", "", "", ""], "not a REAL"),
        ] {
            do {
                _ = try plan.row(fields, line: 9, into: &values)
                Issue.record("\(fields) converted")
            } catch let e as StoreError {
                #expect(e.message.contains(fragment), "\(e.message)")
            }
        }
        for (header, fragment) in [(["id", "n", "n"], "twice"), (["id", "colour"], "unknown column colour"), (["n"], "no id column")] {
            do {
                _ = try ImportPlan(table: t, header: header)
                Issue.record("\(header) planned")
            } catch let e as StoreError {
                #expect(e.message.contains(fragment), "\(e.message)")
            }
        }
    }

    @Test func historyMarksTheWritesARowShows() throws {
        let alpha = site(1, "alpha")
        let hlc = HLC(millis: 1_780_000_000_000, counter: 0)
        var p = PutRows(table: "t", columns: ["a"])
        p.append(key: "k", length: 1, values: [.integer(1)])
        p.append(key: "k", length: 1, values: [.integer(2)])  // the same cell twice in one commit
        p.append(key: "other", length: 1, values: [.integer(9)])
        let c1 = try alpha.writer.commit(dataset: "d", ops: [.put(p)], hlc: hlc, head: .empty, held: VersionVector())
        var d = DeleteRows(table: "t")
        d.append(key: "k", length: 2)
        let c2 = try alpha.writer.commit(
            dataset: "d", ops: [.delete(d)], hlc: HLC(rawValue: hlc.rawValue + 1), head: FeedHead(seq: 1, hash: c1.hash, vector: VersionVector()),
            held: VersionVector([alpha.site: 1]))
        let stamp = CellStamp(length: 1, hlc: hlc, site: alpha.site, seq: 1)
        let shown = HistoryRules.entries(table: "t", pk: "k", commits: [c1], length: 1, stamp: { _ in stamp }, name: { _ in "alpha" })
        #expect(shown.map(\.value) == [.integer(1), .integer(2)])
        #expect(shown.map(\.won) == [false, true])
        let deleted = HistoryRules.entries(table: "t", pk: "k", commits: [c1, c2], length: 2, stamp: { _ in stamp }, name: { _ in "alpha" })
        #expect(deleted.map(\.won) == [false, false, true])
        #expect(deleted.last?.column == nil && deleted.last?.seq == 2 && deleted.last?.siteName == "alpha")
    }

    @Test func theCausalBufferHoldsWhatWaitsAndOffersItAgain() async throws {
        let alpha = site(1, "alpha")
        let peer = site(7, "peer").site
        let store = ReferenceStore(dataset: "d", local: site(9, "here"))
        try await store.registerSite(alpha.record)
        let writer = ReferenceStore(dataset: "d", local: alpha)
        _ = try await writer.alter([TableDef(name: "t", primaryKey: "id", columns: [ColumnDef(name: "a", type: .integer)])])
        for i in 0..<4 { _ = try await writer.write([.put(table: "t", pk: "k\(i)", columns: ["a"], values: [.integer(Int64(i))])]) }
        let commits = try await writer.commits(missingFrom: VersionVector())
        let buffer = CausalBuffer(bytesPerPeer: 1 << 20, commitsPerPeer: 2)
        // seq 1 defines the table; 2…5 write rows. The last three first: all
        // wait, and the peer's budget keeps the first two of them.
        var outcome = try await buffer.apply(Array(commits.suffix(3)), from: peer, to: store)
        #expect(outcome.applied.isEmpty && outcome.waiting.count == 3)
        #expect(buffer.count(dataset: "d") == 2)
        #expect(buffer.bytes(from: peer) == commits[2].bytes.count + commits[3].bytes.count)
        // The first arrives (twice): it applies; what was kept still waits.
        outcome = try await buffer.apply([commits[0], commits[0]], from: peer, to: store)
        #expect(outcome.applied.map(\.seq) == [1] && outcome.waiting.map(\.seq) == [3, 4])
        outcome = try await buffer.apply([commits[1]], from: peer, to: store)
        #expect(outcome.applied.map(\.seq) == [2, 3, 4] && buffer.count(dataset: "d") == 0 && buffer.bytes(from: peer) == 0)
        // seq 5 was dropped; when a peer sends it again, it applies.
        outcome = try await buffer.apply([commits[4]], from: peer, to: store)
        #expect(outcome.applied.map(\.seq) == [5])
        #expect(store.vector == writer.vector)
    }

    /// Each peer has its own budget, in bytes and commits, so one peer's
    /// junk cannot push out another's waiting commits; a forgery is never
    /// kept.
    @Test func theCausalBufferBoundsEachPeerAndKeepsNoForgery() async throws {
        let store = ReferenceStore(dataset: "d", local: site(9, "here"))
        let (honest, hostile) = (site(7, "honest").site, site(8, "hostile").site)
        let hlc = HLC(millis: 1_780_000_000_000, counter: 0)
        var put = PutRows(table: "t", columns: ["a"])
        put.append(key: "k", length: 1, values: [.text(String(repeating: "x", count: 10_000))])
        // Commits at seq 2 by authors nobody knows: they wait.
        func waiting(_ n: UInt8) throws -> Commit {
            let author = site(n, "s\(n)")
            let first = try author.writer.commit(dataset: "d", ops: [.put(put)], hlc: hlc, head: .empty, held: VersionVector())
            return try author.writer.commit(
                dataset: "d", ops: [.put(put)], hlc: hlc, head: FeedHead(seq: 1, hash: first.hash, vector: VersionVector()), held: VersionVector())
        }
        let junk = try (10..<40).map { try waiting(UInt8($0)) }
        let buffer = CausalBuffer(bytesPerPeer: 5 * junk[0].bytes.count, commitsPerPeer: 100)
        _ = try await buffer.apply(junk, from: hostile, to: store)
        #expect(buffer.bytes(from: hostile) == 5 * junk[0].bytes.count && buffer.count(dataset: "d") == 5)
        let mine = try waiting(50)
        // Another of its commits with one value byte changed: a new hash, a
        // signature that no longer verifies.
        var forged = try waiting(51).bytes
        forged[forged.count / 2] ^= 1
        let forgery = try Commit(decoding: forged)
        #expect(!forgery.hasValidSignature)
        _ = try await buffer.apply([mine, forgery], from: honest, to: store)
        #expect(buffer.bytes(from: honest) == mine.bytes.count && buffer.count(dataset: "d") == 6)
    }
}

/// What the history keeps of a commit's writes to a row, and the row as
/// of a time merged from it (`RowWrite`, `RowAsOf`).
@Suite struct RowHistoryTests {
    let a = try! SiteID(bytes: [UInt8](repeating: 1, count: 32))
    let b = try! SiteID(bytes: [UInt8](repeating: 2, count: 32))

    @Test func cellsRoundTripAndBadBytesAreRefused() throws {
        let cells = [
            HistoryCell(slot: 0, length: 1, value: .text("Nd")), HistoryCell(slot: 7, length: 3, value: .real(-0.5)),
            HistoryCell(slot: 2, length: 1, value: .null), HistoryCell(slot: 3, length: 1, value: .blob([0, 255])),
        ]
        #expect(try RowWrite.decodeCells(RowWrite.encode(cells)) == cells)
        #expect(try RowWrite.decodeCells(RowWrite.encode([])) == [])
        // A slot no table can have: a crafted file (a backup restored as a
        // snapshot) would otherwise make a merge grow a huge array.
        let farSlot = RowWrite.encode([HistoryCell(slot: Limits.maxColumns + 1, length: 1, value: .null)])
        for bad: [UInt8] in [[], [1], [1, 0, 1], [1, 0, 1, 9], RowWrite.encode(cells) + [0], [255, 255, 255, 255, 15], farSlot] {
            #expect(throws: BinaryDecodingError.self) { try RowWrite.decodeCells(bad) }
        }
    }

    @Test func aRowMergesToTheSameStateInAnyOrder() {
        var rng = SeededGenerator(seed: 3)
        for _ in 0..<300 {
            var writes: [RowWrite] = []
            for i in 0..<Int.random(in: 1..<8, using: &rng) {
                let length = UInt64.random(in: 1...4, using: &rng)
                let cells = (0..<3).filter { _ in Bool.random(using: &rng) && length % 2 == 1 }.map {
                    HistoryCell(slot: $0, length: length, value: .integer(Int64(i)))
                }
                writes.append(
                    RowWrite(hlc: HLC(millis: UInt64(i / 2), counter: 0), site: i % 2 == 0 ? a : b, seq: UInt64(i + 1), length: length, cells: cells))
            }
            let one = RowAsOf(writes)
            let other = RowAsOf(writes.shuffled(using: &rng))
            #expect(one.length == other.length && one.lengthWrite == other.lengthWrite)
            for slot in 0..<3 {
                #expect(one.visible(slot)?.value == other.visible(slot)?.value)
                #expect(one.visible(slot)?.stamp == other.visible(slot)?.stamp)
            }
            #expect(one.length == writes.map(\.length).max())
        }
    }

    @Test func aDeleteHidesCellsAndAReinsertStartsClean() {
        let insert = RowWrite(
            hlc: HLC(millis: 1, counter: 0), site: a, seq: 1, length: 1, cells: [HistoryCell(slot: 0, length: 1, value: .text("x"))])
        let delete = RowWrite(hlc: HLC(millis: 2, counter: 0), site: b, seq: 1, length: 2, cells: [])
        // Concurrent with the delete: written in the life the delete ended.
        let update = RowWrite(
            hlc: HLC(millis: 3, counter: 0), site: a, seq: 2, length: 1, cells: [HistoryCell(slot: 1, length: 1, value: .text("y"))])
        let reinsert = RowWrite(
            hlc: HLC(millis: 4, counter: 0), site: a, seq: 3, length: 3, cells: [HistoryCell(slot: 1, length: 3, value: .text("z"))])
        var row = RowAsOf([insert, delete, update])
        #expect(!row.isPresent && row.lengthWrite == delete && row.visible(0) == nil && row.visible(1) == nil)
        row.merge(reinsert)
        #expect(row.isPresent && row.visible(0) == nil && row.visible(1)?.value == .text("z") && row.lengthWrite == reinsert)
    }

    @Test func aSecondWriteInOneCommitFoldsIntoTheFirst() {
        var w = RowWrite(hlc: HLC(millis: 1, counter: 0), site: a, seq: 1, length: 1, cells: [HistoryCell(slot: 0, length: 1, value: .integer(1))])
        w.absorb(length: 1, cells: [HistoryCell(slot: 0, length: 1, value: .integer(2)), HistoryCell(slot: 1, length: 1, value: .integer(3))])
        #expect(w.cells == [HistoryCell(slot: 0, length: 1, value: .integer(2)), HistoryCell(slot: 1, length: 1, value: .integer(3))])
        // A delete and a re-insert in one commit: the new life's cells win.
        w.absorb(length: 2, cells: [])
        w.absorb(length: 3, cells: [HistoryCell(slot: 1, length: 3, value: .integer(4))])
        #expect(w.length == 3 && RowAsOf([w]).visible(1)?.value == .integer(4) && RowAsOf([w]).visible(0) == nil)
        // An earlier life's write after a later one does not replace it.
        w.absorb(length: 1, cells: [HistoryCell(slot: 1, length: 1, value: .integer(5))])
        #expect(RowAsOf([w]).visible(1)?.value == .integer(4))
    }
}
