import Crypto
import Foundation
import Testing

@testable import LodeCore

/// The commit encoding's test vectors in `Protocol/vectors/`. Each valid
/// vector must decode, verify and re-encode to the same bytes with the
/// hash given beside it; each invalid vector must be refused for the rule
/// its file name begins with. `scripts/make-vectors.sh` regenerates them
/// (LODE_WRITE_VECTORS=1); the files are committed.
@Suite struct ProtocolVectorTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Protocol/vectors").path

    static func readHex(_ path: String) throws -> [UInt8] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let hex = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined().filter { !$0.isWhitespace }
        guard let bytes = [UInt8](hex: hex) else { throw VectorError(message: "\(path) is not hex") }
        return bytes
    }

    static func files(_ kind: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + kind)) ?? []).filter { $0.hasSuffix(".hex") }.sorted()
    }

    @Test func theVectorsExist() {
        #expect(Self.files("valid").count >= 3)
        #expect(Self.files("invalid").count >= 20)
    }

    @Test(arguments: files("valid"))
    func validVectorDecodesVerifiesAndReencodes(_ name: String) throws {
        let bytes = try Self.readHex(Self.root + "/valid/" + name)
        let c = try Commit(decoding: bytes)
        #expect(c.hasValidSignature)
        var w = ByteWriter()
        c.content.encode(into: &w)
        #expect(w.bytes + c.signature == bytes, "re-encoding differs")
        let expectedHash = try String(contentsOfFile: Self.root + "/valid/" + name.replacingOccurrences(of: ".hex", with: ".sha256"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(c.hash.hexString == expectedHash)
    }

    @Test(arguments: files("invalid"))
    func invalidVectorIsRefusedForItsRule(_ name: String) throws {
        let bytes = try Self.readHex(Self.root + "/invalid/" + name)
        if name.hasPrefix("bad-signature") {
            let c = try Commit(decoding: bytes)
            #expect(!c.hasValidSignature)
            return
        }
        do {
            _ = try Commit(decoding: bytes)
            Issue.record("\(name) decoded")
        } catch {
            #expect(name.hasPrefix(error.rule.rawValue + "-"), "\(name) was refused as \(error.rule.rawValue): \(error.detail)")
        }
    }

    @Test func writeVectorsWhenAsked() throws {
        guard ProcessInfo.processInfo.environment["LODE_WRITE_VECTORS"] == "1" else { return }
        for (name, comment, bytes) in try VectorSet.valid() {
            try write(Self.root + "/valid/\(name).hex", comment, bytes)
            try (Commit(decoding: bytes).hash.hexString + "\n").write(toFile: Self.root + "/valid/\(name).sha256", atomically: true, encoding: .utf8)
        }
        for (name, comment, bytes) in try VectorSet.invalid() {
            try write(Self.root + "/invalid/\(name).hex", comment, bytes)
        }
    }

    func write(_ path: String, _ comment: String, _ bytes: [UInt8]) throws {
        var text = "# \(comment)\n"
        var i = 0
        while i < bytes.count {
            text += bytes[i..<min(i + 32, bytes.count)].hexString + "\n"
            i += 32
        }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }
}

struct VectorError: Error { var message: String }

/// Builds the vectors from fixed keys (Ed25519 signing is deterministic).
enum VectorSet {
    static let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0x11, count: 32))
    static let other = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0x22, count: 32))
    static let third = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0x33, count: 32))
    static var site: SiteID { FeedWriter(key: key).site }
    static let hlc = HLC(millis: 1_764_374_400_000, counter: 1)

    static func define() -> Op {
        .defineTable(
            TableDef(
                name: "elements", primaryKey: "symbol",
                columns: [
                    ColumnDef(name: "name", type: .text, notNull: true, defaultValue: .text("")),
                    ColumnDef(name: "atomic_number", type: .integer),
                ]))
    }

    static func put(_ length: UInt64 = 1) -> Op {
        var p = PutRows(table: "elements", columns: ["name", "atomic_number"])
        p.append(key: "Nd", length: length, values: [.text("Neodymium"), .integer(60)])
        return .put(p)
    }

    /// The fields of a commit as raw bytes, each replaceable.
    struct Raw {
        var version: [UInt8] = [1]
        var dataset: [UInt8] = [11] + Array("rare-earths".utf8)
        var author: [UInt8] = VectorSet.site.bytes
        /// Version 2 only: the person, a string.
        var person: [UInt8] = []
        var seq: [UInt8] = [1]
        var hlc: [UInt8] = {
            var w = ByteWriter(); w.writeUInt64(VectorSet.hlc.rawValue); return w.bytes
        }()
        var prev: [UInt8] = Commit.zeroHash
        var deps: [UInt8] = [0]
        var ops: [UInt8] = VectorSet.encodeOps([VectorSet.define(), VectorSet.put()])

        func signed(with key: Curve25519.Signing.PrivateKey = VectorSet.key) throws -> [UInt8] {
            let body = version + dataset + author + person + seq + hlc + prev + deps + ops
            return body + Array(try key.signature(for: Commit.signedMessage(body)))
        }
    }

    static func encodeOps(_ ops: [Op]) -> [UInt8] {
        var w = ByteWriter()
        w.writeVarint(UInt64(ops.count))
        for op in ops { op.encode(into: &w) }
        return w.bytes
    }

    static func valid() throws -> [(String, String, [UInt8])] {
        let w = FeedWriter(key: key)
        let first = try w.commit(dataset: "rare-earths", ops: [define(), put()], hlc: hlc, head: .empty, held: VersionVector())
        var del = DeleteRows(table: "elements")
        del.append(key: "Pm", length: 2)
        var all = PutRows(table: "elements", columns: ["name"])
        for v: Value in [.text("ü ✓"), .null] { all.append(key: "k\(all.rowCount)", length: 3, values: [v]) }
        let o = FeedWriter(key: other).site, t = FeedWriter(key: third).site
        let second = try w.commit(
            dataset: "rare-earths", ops: [.delete(del), .put(all)], hlc: HLC(rawValue: hlc.rawValue + 7),
            head: FeedHead(seq: 1, hash: first.hash, vector: VersionVector([w.site: 1])),
            held: VersionVector([w.site: 1, o: 4, t: 2]))
        var types = PutRows(table: "samples", columns: ["i", "r", "t", "b", "n"])
        types.append(key: "s1", length: 1, values: [.integer(-1), .real(-0.5), .text(""), .blob([0, 255]), .null])
        types.append(key: "s2", length: 1, values: [.integer(Int64.max), .real(1e300), .text("\"quoted\""), .blob([]), .integer(Int64.min)])
        let third = try FeedWriter(key: other).commit(
            dataset: "d",
            ops: [
                .defineTable(
                    TableDef(
                        name: "samples", primaryKey: "id",
                        columns: [
                            ColumnDef(name: "i", type: .integer, notNull: true, defaultValue: .integer(0)), ColumnDef(name: "r", type: .real),
                            ColumnDef(name: "t", type: .text), ColumnDef(name: "b", type: .blob), ColumnDef(name: "n", type: .integer),
                        ])), .put(types),
            ],
            hlc: HLC(millis: 1, counter: 0xFFFF), head: .empty, held: VersionVector())
        let byPerson = try w.commit(
            dataset: "rare-earths", person: "ana.lima", ops: [put(3)], hlc: HLC(rawValue: hlc.rawValue + 9),
            head: FeedHead(seq: 2, hash: second.hash, vector: VersionVector([w.site: 2, o: 4, t: 2])),
            held: VersionVector([w.site: 2, o: 4, t: 2]))
        return [
            ("first-commit-of-a-feed", "seq 1: define elements, put Nd", first.bytes),
            ("version-2-names-a-person", "version 2: seq 3 written by the person ana.lima of the site", byPerson.bytes),
            ("second-commit-with-deps-delete-and-reinsert", "seq 2 with deps on two feeds; delete at length 2, puts at length 3", second.bytes),
            ("every-value-type", "all five value types, extreme integers and reals", third.bytes),
        ]
    }

    static func invalid() throws -> [(String, String, [UInt8])] {
        var out: [(String, String, [UInt8])] = []
        func add(_ name: String, _ comment: String, _ change: (inout Raw) -> Void) throws {
            var r = Raw()
            change(&r)
            out.append((name, comment, try r.signed()))
        }
        let good = try Raw().signed()
        out.append(("truncated-mid-ops", "cut in the middle of the ops", Array(good.prefix(good.count - 65))))
        out.append(("truncated-no-signature", "the signature is missing", Array(good.prefix(good.count - 64))))
        out.append(("trailing-bytes-after-signature", "one byte after the signature", good + [0]))
        out.append(("truncated-empty", "no bytes at all", []))
        try add("unknown-version-3", "version 3 is not defined") { $0.version = [3] }
        try add("invalid-value-person-empty", "version 2 with an empty person (a commit naming no one is version 1)") {
            $0.version = [2]
            $0.person = [0]
        }
        try add("invalid-value-person-uppercase", "person names are lowercase") {
            $0.version = [2]
            $0.person = [3] + Array("Ana".utf8)
        }
        try add("invalid-utf8-person", "a person name that is not UTF-8") {
            $0.version = [2]
            $0.person = [2, 0xC3, 0x28]
        }
        try add("non-minimal-varint-seq", "seq 1 written as 0x81 0x00") { $0.seq = [0x81, 0x00] }
        try add("varint-overflow-seq", "seq longer than 64 bits") { $0.seq = [UInt8](repeating: 0xFF, count: 10) + [0x01] }
        try add("invalid-utf8-dataset", "dataset name is not UTF-8") { $0.dataset = [2, 0xC3, 0x28] }
        try add("invalid-value-dataset-uppercase", "dataset names are lowercase") { $0.dataset = [2] + Array("RE".utf8) }
        try add("invalid-value-seq-zero", "seq starts at 1") { $0.seq = [0] }
        try add("invalid-value-prev-nonzero-at-seq-1", "the first commit names a previous hash") { $0.prev = [UInt8](repeating: 1, count: 32) }
        try add("invalid-value-prev-zero-after-seq-1", "seq 2 with a zero previous hash") { $0.seq = [2] }
        try add("invalid-value-zero-hlc", "the stamp is zero") { $0.hlc = [0, 0, 0, 0, 0, 0, 0, 0] }
        let o = FeedWriter(key: other).site.bytes, t = FeedWriter(key: third).site.bytes
        let (lo, hi) = o.lexicographicallyPrecedes(t) ? (o, t) : (t, o)
        try add("not-canonical-deps-unsorted", "dependencies out of site order") { $0.deps = [2] + hi + [1] + lo + [1] }
        try add("invalid-value-dep-on-own-feed", "a commit depends on its own feed") { $0.deps = [1] + VectorSet.site.bytes + [1] }
        try add("invalid-value-no-ops", "a commit with no op") { $0.ops = [0] }
        try add("unknown-tag-op-9", "op tag 9 is not defined") { $0.ops = [1, 9] }
        var p = PutRows(table: "elements", columns: ["name"])
        p.append(key: "Nd", length: 1, values: [.text("x")])
        let putBytes = encodeOps([.put(p)])
        try add("unknown-tag-value-7", "value tag 7 is not defined") { $0.ops = Array(putBytes.dropLast(3)) + [7] }
        try add("invalid-value-nan", "NaN cannot be stored") {
            var w = ByteWriter()
            w.writeUInt64(Double.nan.bitPattern)
            $0.ops = Array(putBytes.dropLast(3)) + [2] + w.bytes
        }
        var even = PutRows(table: "elements", columns: ["name"])
        even.append(key: "Nd", length: 2, values: [.text("x")])
        try add("invalid-value-put-even-length", "a put must leave the row present (odd length)") { $0.ops = encodeOps([.put(even)]) }
        var odd = DeleteRows(table: "elements")
        odd.append(key: "Nd", length: 3)
        try add("invalid-value-delete-odd-length", "a delete must leave the row absent (even length)") { $0.ops = encodeOps([.delete(odd)]) }
        try add("invalid-value-put-duplicate-column", "one put writes a column twice") {
            $0.ops =
                [1, 2, 8] + Array("elements".utf8) + [2, 4] + Array("name".utf8) + [4] + Array("name".utf8) + [1, 2] + Array("Nd".utf8) + [1, 0, 0]
        }
        try add("invalid-value-not-null-without-default", "a NOT NULL column with a NULL default") {
            $0.ops = [1, 1, 1] + Array("t".utf8) + [2] + Array("id".utf8) + [1, 1] + Array("c".utf8) + [3, 1, 0]
        }
        try add("invalid-value-column-uppercase", "identifiers are lowercase") {
            $0.ops = [1, 1, 1] + Array("t".utf8) + [2] + Array("id".utf8) + [1, 1] + Array("C".utf8) + [3, 0, 0]
        }
        try add("too-large-column-count", "a column count far beyond the bytes that follow") {
            $0.ops = [1, 1, 1] + Array("t".utf8) + [2] + Array("id".utf8) + [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]
        }
        // Numbers past what a replica can do arithmetic on (DESIGN §9).
        func varint(_ v: UInt64) -> [UInt8] {
            var w = ByteWriter()
            w.writeVarint(v)
            return w.bytes
        }
        var huge = PutRows(table: "elements", columns: ["name"])
        huge.append(key: "Nd", length: Limits.maxCausalLength + 2, values: [.text("x")])
        try add("too-large-put-causal-length", "a put's causal length beyond 2^62 - 1 (here 2^62 + 1)") { $0.ops = encodeOps([.put(huge)]) }
        var hugeDelete = DeleteRows(table: "elements")
        hugeDelete.append(key: "Nd", length: 1 << 63)
        try add("too-large-delete-causal-length", "a delete's causal length beyond 2^62 - 1 (here 2^63)") {
            $0.ops = encodeOps([.delete(hugeDelete)])
        }
        try add("too-large-seq", "seq beyond 2^62 (here 2^64 - 1)") {
            $0.seq = varint(.max)
            $0.prev = [UInt8](repeating: 1, count: 32)
        }
        try add("too-large-dep-seq", "a dependency's seq beyond 2^62 (here 2^62 + 1)") { $0.deps = [1] + o + varint(Limits.maxSeq + 1) }
        var bad = good
        bad[bad.count - 1] ^= 0x01
        out.append(("bad-signature-bit-flipped", "the last bit of the signature flipped", bad))
        out.append(("bad-signature-other-key", "signed by a key other than the author's", try Raw().signed(with: other)))
        return out
    }
}
