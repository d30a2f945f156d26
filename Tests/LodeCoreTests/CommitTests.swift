import Crypto
import Testing

@testable import LodeCore

/// A deterministic site key from a small number.
func testKey(_ n: UInt8) -> Curve25519.Signing.PrivateKey {
    try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: n, count: 32))
}

func sampleOps() -> [Op] {
    var put = PutRows(table: "elements", columns: ["name", "atomic_number", "mass", "raw"])
    put.append(key: "Nd", length: 1, values: [.text("Neodymium"), .integer(60), .real(144.242), .blob([1, 2, 3])])
    put.append(key: "Dy", length: 3, values: [.text("Dysprosium"), .integer(66), .null, .blob([])])
    var del = DeleteRows(table: "elements")
    del.append(key: "Pm", length: 2)
    let def = TableDef(
        name: "elements", primaryKey: "symbol",
        columns: [
            ColumnDef(name: "name", type: .text, notNull: true, defaultValue: .text("")),
            ColumnDef(name: "atomic_number", type: .integer),
            ColumnDef(name: "mass", type: .real),
            ColumnDef(name: "raw", type: .blob),
        ])
    return [.defineTable(def), .put(put), .delete(del)]
}

@Suite struct CommitTests {
    let writer = FeedWriter(key: testKey(1))

    func sample(seq: UInt64 = 1, deps: [Dependency] = []) throws -> Commit {
        let prev = seq == 1 ? Commit.zeroHash : [UInt8](repeating: 9, count: 32)
        return try Commit.sign(
            CommitContent(
                dataset: "rare-earths", author: writer.site, seq: seq, hlc: HLC(millis: 1_700_000_000_000, counter: 3),
                prev: prev, deps: deps, ops: sampleOps()),
            with: writer.key)
    }

    @Test func roundTripsAndVerifies() throws {
        let c = try sample()
        let back = try Commit(decoding: c.bytes)
        #expect(back == c)
        #expect(back.content == c.content)
        #expect(back.hash == c.hash)
        #expect(back.hasValidSignature)
    }

    @Test func anySingleBitFlipIsRejected() throws {
        let c = try sample(seq: 2, deps: [Dependency(site: FeedWriter(key: testKey(2)).site, seq: 4)])
        for i in 0..<(c.bytes.count * 8) {
            var b = c.bytes
            b[i / 8] ^= 1 << UInt8(i % 8)
            if let decoded = try? Commit(decoding: b) {
                #expect(!decoded.hasValidSignature, "bit \(i) flipped and the commit still verifies")
            }
        }
    }

    @Test func signatureFromAnotherKeyIsRejected() throws {
        let c = try sample()
        var b = c.bytes
        let other = try testKey(3).signature(for: Commit.signedMessage(b[0..<(b.count - 64)]))
        b.replaceSubrange((b.count - 64)..., with: other)
        let forged = try Commit(decoding: b)
        #expect(!forged.hasValidSignature)
    }

    /// Checking a batch's signatures on every core gives each commit the
    /// verdict checking it alone gives, in order, for batches of any size
    /// with forgeries anywhere in them.
    @Test(arguments: [0, 1, 3, 4, 9, 64, 257])
    func signaturesCheckedOnEveryCoreAgreeWithOneByOne(count: Int) async throws {
        // Every third commit has a byte of its signature changed.
        let batch = try (0..<count).map { i in
            let c = try sample(seq: UInt64(i + 1))
            guard i % 3 == 1 else { return c }
            var b = c.bytes
            b[b.count - 1 - i % 64] ^= 0x10
            return try Commit(decoding: b)
        }
        let checked = await Commit.checkingSignatures(batch)
        #expect(checked == batch)
        #expect(checked.map(\.hasValidSignature) == (0..<count).map { $0 % 3 != 1 })
        #expect(batch.map(\.hasValidSignature) == (0..<count).map { $0 % 3 != 1 })
        // Commits a replica already holds the seqs of are left to be checked
        // when asked: the verdicts are the same.
        let held = VersionVector(batch.first.map { [$0.author: UInt64(count / 2)] } ?? [:])
        let partly = await Commit.checkingSignatures(batch, except: held)
        #expect(partly == batch && partly.map(\.hasValidSignature) == (0..<count).map { $0 % 3 != 1 })
    }

    @Test func truncationAndTrailingBytesAreRejected() throws {
        let c = try sample()
        for n in [0, 1, 10, c.bytes.count - 65, c.bytes.count - 1] {
            #expect(throws: BinaryDecodingError.self) { try Commit(decoding: Array(c.bytes[0..<n])) }
        }
        #expect(throws: BinaryDecodingError.self) { try Commit(decoding: c.bytes + [0]) }
    }

    @Test func depsMustBeSortedAndNotSelf() throws {
        let a = FeedWriter(key: testKey(2)).site
        let b = FeedWriter(key: testKey(3)).site
        // CommitContent sorts deps, so build an unsorted encoding by hand.
        var content = CommitContent(
            dataset: "d", author: writer.site, seq: 2, hlc: HLC(rawValue: 5),
            prev: [UInt8](repeating: 1, count: 32), deps: [], ops: sampleOps())
        content.deps = [Dependency(site: max(a, b), seq: 1), Dependency(site: min(a, b), seq: 1)]
        let unsorted = try Commit.sign(content, with: writer.key)
        #expect(throws: BinaryDecodingError.self) { try Commit(decoding: unsorted.bytes) }
        content.deps = [Dependency(site: writer.site, seq: 1)]
        let selfDep = try Commit.sign(content, with: writer.key)
        #expect(throws: BinaryDecodingError.self) { try Commit(decoding: selfDep.bytes) }
    }

    @Test func dependenciesAreTheFeedsThatAdvanced() {
        let a = FeedWriter(key: testKey(2)).site
        let b = FeedWriter(key: testKey(3)).site
        let me = writer.site
        let previous = VersionVector([a: 2, b: 5, me: 1])
        let now = VersionVector([a: 4, b: 5, me: 1])
        #expect(now.dependencies(since: previous, author: me) == [Dependency(site: a, seq: 4)])
    }

    @Test func feedRulesRefuseReplayGapAndWrongPrevious() throws {
        let c1 = try writer.commit(dataset: "d", ops: sampleOps(), hlc: HLC(rawValue: 10), head: .empty, held: VersionVector())
        let past = try FeedRules.check(c1, head: .empty, held: VersionVector())
        let head = FeedHead(seq: 1, hash: c1.hash, vector: past)
        #expect(throws: FeedViolation.alreadyHeld(seq: 1, held: 1)) { try FeedRules.check(c1, head: head, held: past) }
        let c2 = try writer.commit(dataset: "d", ops: sampleOps(), hlc: HLC(rawValue: 11), head: head, held: past)
        let c3 = try writer.commit(
            dataset: "d", ops: sampleOps(), hlc: HLC(rawValue: 12),
            head: FeedHead(seq: 2, hash: c2.hash, vector: past), held: past)
        #expect(throws: FeedViolation.gap(seq: 3, held: 1)) { try FeedRules.check(c3, head: head, held: past) }
        let wrong = FeedHead(seq: 1, hash: [UInt8](repeating: 7, count: 32), vector: past)
        #expect(throws: FeedViolation.wrongPrevious) { try FeedRules.check(c2, head: wrong, held: past) }
    }
}
