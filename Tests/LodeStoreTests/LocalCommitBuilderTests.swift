import LodeCore
import LodeStore
import LodeTestSupport
import Testing

/// `LocalCommitBuilder`: rows in, signed commits of about a megabyte out,
/// refusing what the site's role does not allow and rows no peer accepts.
@Suite struct LocalCommitBuilderTests {
    let hlc = HLC(millis: 1_780_000_000_000, counter: 0)

    @Test func rowsBecomeOpsGroupedByTableAndColumns() throws {
        let alpha = site(1, "alpha")
        var b = LocalCommitBuilder(local: alpha, dataset: "d", start: CommitStart(hlc: hlc, seq: 1))
        #expect(b.isEmpty)
        try b.put(table: "t", columns: ["a"], pk: "k1", length: 1, values: [.integer(1)])
        try b.put(table: "t", columns: ["a"], pk: "k2", length: 3, values: [.null])
        try b.put(table: "t", columns: ["a", "b"], pk: "k1", length: 1, values: [.integer(2), .text("x")])
        try b.delete(table: "t", pk: "k2", length: 4)
        try b.delete(table: "u", pk: "k", length: 2)
        let signed = try #require(try b.sign(head: .empty, held: VersionVector()))
        let c = try Commit(decoding: signed.signed.bytes)
        #expect(c.hasValidSignature && c.hash == signed.signed.hash && c.seq == 1 && c.hlc == hlc)
        var p1 = PutRows(table: "t", columns: ["a"])
        p1.append(key: "k1", length: 1, values: [.integer(1)])
        p1.append(key: "k2", length: 3, values: [.null])
        var p2 = PutRows(table: "t", columns: ["a", "b"])
        p2.append(key: "k1", length: 1, values: [.integer(2), .text("x")])
        var d1 = DeleteRows(table: "t")
        d1.append(key: "k2", length: 4)
        var d2 = DeleteRows(table: "u")
        d2.append(key: "k", length: 2)
        #expect(c.ops == [.put(p1), .put(p2), .delete(d1), .delete(d2)])
        #expect(signed.past == VersionVector([alpha.site: 1]))
        #expect(b.rowCount == 5 && b.isEmpty)
        // Nothing more: nothing to sign.
        b.restart(at: CommitStart(hlc: hlc, seq: 2))
        #expect(try b.sign(head: FeedHead(seq: 1, hash: c.hash, vector: signed.past), held: signed.past) == nil)
    }

    @Test func aCommitIsFullAtTheBudget() throws {
        var b = LocalCommitBuilder(local: site(1, "alpha"), dataset: "d", start: CommitStart(hlc: hlc, seq: 1))
        var rows = 0
        while !b.isFull {
            try b.put(table: "t", columns: ["a"], pk: "k\(rows)", length: 1, values: [.text(String(repeating: "x", count: 1000))])
            rows += 1
        }
        #expect(rows > 1000 && rows < 1100)
        let c = try #require(try b.sign(head: .empty, held: VersionVector()))
        #expect(c.signed.bytes.count >= LocalCommitBuilder.budget && c.signed.bytes.count < LocalCommitBuilder.budget + 2000)
    }

    @Test func aRoleSignsOnlyWhatItMay() throws {
        let def = TableDef(name: "t", primaryKey: "id", columns: [])
        for (role, allowed, add) in [
            (
                Role.annotator, true,
                { (b: inout LocalCommitBuilder) in try b.put(table: "_annotations", columns: ["body"], pk: "n", length: 1, values: [.text("x")]) }
            ),
            (
                .annotator, false,
                { (b: inout LocalCommitBuilder) in try b.put(table: "t", columns: ["a"], pk: "k", length: 1, values: [.integer(1)]) }
            ),
            (.annotator, false, { (b: inout LocalCommitBuilder) in b.define([def]) }),
            (.reader, false, { (b: inout LocalCommitBuilder) in try b.delete(table: "_annotation_tags", pk: "x", length: 2) }),
            (.editor, true, { (b: inout LocalCommitBuilder) in b.define([def]) }),
        ] {
            var b = LocalCommitBuilder(local: site(3, "s", role: role), dataset: "d", start: CommitStart(hlc: hlc, seq: 1))
            try add(&b)
            if allowed {
                #expect(try b.sign(head: .empty, held: VersionVector()) != nil)
            } else {
                #expect(throws: StoreError.self, "\(role)") { try b.sign(head: .empty, held: VersionVector()) }
            }
        }
    }

    @Test func valuesAndRowsTooLargeForAPeerAreRefused() throws {
        var b = LocalCommitBuilder(local: site(1, "alpha"), dataset: "d", start: CommitStart(hlc: hlc, seq: 1))
        let big = Value.blob([UInt8](repeating: 1, count: Limits.maxText + 1))
        #expect(throws: StoreError.self) { try b.put(table: "t", columns: ["a"], pk: "k", length: 1, values: [big]) }
        let half = Value.blob([UInt8](repeating: 1, count: Limits.maxRowBytes / 2 + 1))
        #expect(throws: StoreError.self) { try b.put(table: "t", columns: ["a", "b"], pk: "k", length: 1, values: [half, half]) }
        let fine = Value.blob([UInt8](repeating: 1, count: Limits.maxText))
        try b.put(table: "t", columns: ["a"], pk: "k", length: 1, values: [fine])
        // A row at its last life cannot be deleted: no peer would take the length.
        #expect(throws: StoreError.self) { try b.delete(table: "t", pk: "k", length: Limits.maxCausalLength + 1) }
    }
}
