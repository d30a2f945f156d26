import Foundation
import LodeCore
import Testing

@testable import LodeProtocol
@testable import LodeSync

/// The frame layer: every message round-trips, however the byte stream is
/// cut; bad frames are refused with the right rule; and the frame vectors
/// in `Protocol/vectors/frames/` replay.
@Suite struct FrameTests {
    static let site = FeedWriter(key: key(1)).site
    static let other = FeedWriter(key: key(2)).site
    static let vector = VersionVector([site: 3, other: 1])

    static let samples: [(String, SyncMessageV1)] = [
        (
            "hello",
            .hello(
                protocolVersion: 1, cluster: testCluster, site: site,
                datasets: [DatasetVector(dataset: "rare-earths", vector: vector), DatasetVector(dataset: "empty", vector: VersionVector())])
        ),
        ("certificates", .certificates([[0x30, 0x82, 0x01], [0x30]])),
        ("commits", .commits(dataset: "rare-earths", commits: [[1, 2, 3], [4]])),
        (
            "commits-deflated",
            .commits(dataset: "rare-earths", commits: [[UInt8](repeating: 7, count: 3000), Array("site-00000001,site-00000002".utf8)])
        ),
        ("ack", .ack(dataset: "rare-earths", vector: vector)),
        ("vector", .vector(dataset: "rare-earths", vector: VersionVector())),
        ("ping", .ping(42)),
        ("pong", .pong(UInt64.max)),
        ("commit-rejected", .commitRejected(dataset: "d", site: other, seq: 5, code: .badSignature, message: "signature does not verify")),
        ("reject", .reject(code: .differentCluster, message: "another cluster")),
        // Opaque to the frame layer: a notice's shape is the node's to check.
        ("revocation", .revocation(Array("LRN1".utf8) + [0x02, 0x7B, 0x7D])),
        ("snapshot-offer", .snapshotOffer(dataset: "rare-earths", vector: vector, bytes: 166_526_976)),
        ("snapshot-answer", .snapshotAnswer(dataset: "rare-earths", accept: false, message: "this node holds dataset rare-earths already")),
        ("snapshot-chunk", .snapshotChunk(dataset: "rare-earths", offset: 1 << 20, total: (1 << 20) + 16, bytes: Array("SQLite format 3\u{0}".utf8))),
        ("snapshot-ack", .snapshotAck(dataset: "rare-earths", received: (1 << 20) + 16)),
        (
            "snapshot-chunk-deflated",
            .snapshotChunk(
                dataset: "rare-earths", offset: 0, total: 4096, bytes: Array("SQLite format 3\u{0}".utf8) + [UInt8](repeating: 0, count: 4080))
        ),
    ]

    @Test func everyMessageRoundTripsWhateverTheSplit() throws {
        var stream: [UInt8] = []
        for (_, m) in Self.samples { stream += SyncFrame.encode(.v1(m)) }
        let expected = Self.samples.map { SyncMessage.v1($0.1) }
        // Whole, byte by byte, and in random cuts.
        let whole = SyncFrameSplitter()
        #expect(try whole.feed(stream) == expected)
        let one = SyncFrameSplitter()
        var got: [SyncMessage] = []
        for b in stream { got += try one.feed([b]) }
        #expect(got == expected)
        var rng = SeededGenerator(seed: 3)
        for _ in 0..<50 {
            let d = SyncFrameSplitter()
            var out: [SyncMessage] = []
            var i = 0
            while i < stream.count {
                let n = Int.random(in: 1...40, using: &rng)
                out += try d.feed(stream[i..<min(i + n, stream.count)])
                i += n
            }
            #expect(out == expected)
            #expect(d.pendingBytes == 0)
        }
    }

    /// A reason longer than a receiver reads is cut to fit, on a character
    /// boundary: sent whole, it made the peer refuse the frame and close
    /// the session.
    @Test func aLongReasonIsCutToFit() throws {
        let long = String(repeating: "é", count: 3000) + "the end"
        for m: SyncMessageV1 in [
            .reject(code: .malformed, message: long), .commitRejected(dataset: "d", site: Self.site, seq: 1, code: .invalidCommit, message: long),
            .snapshotAnswer(dataset: "d", accept: false, message: long),
        ] {
            let decoded = try SyncFrameSplitter().feed(SyncFrame.encode(.v1(m)))
            guard case .v1(let back)? = decoded.first else {
                Issue.record("\(m) did not decode")
                continue
            }
            let text: String
            switch back {
            case .reject(_, let t), .commitRejected(_, _, _, _, let t), .snapshotAnswer(_, _, let t): text = t
            default: text = ""
            }
            #expect(text.utf8.count <= SyncFrame.maxMessageBytes && text.hasPrefix("éé") && text.hasSuffix("…"))
        }
    }

    @Test func anOversizedFrameIsRefusedFromItsHeaderAlone() {
        let d = SyncFrameSplitter(maxFrameBytes: 1024)
        #expect(throws: SyncFrameDecoder.Failure.frameTooLarge(0x7FFF_FFFF)) { try d.feed([0x7F, 0xFF, 0xFF, 0xFF]) }
    }

    static func readHex(_ path: String) throws -> [UInt8] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return [UInt8](hex: text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined().filter { !$0.isWhitespace })!
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Protocol/vectors/frames").path

    static func files(_ kind: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + kind)) ?? []).filter { $0.hasSuffix(".hex") }.sorted()
    }

    @Test(arguments: files("valid"))
    func validFrameVectorDecodesAndReencodes(_ name: String) throws {
        let bytes = try Self.readHex(Self.root + "/valid/" + name)
        let d = SyncFrameSplitter()
        let ms = try d.feed(bytes)
        #expect(ms.count == 1)
        #expect(SyncFrame.encode(ms[0]) == bytes)
    }

    @Test(arguments: files("invalid"))
    func invalidFrameVectorIsRefusedForItsRule(_ name: String) throws {
        let bytes = try Self.readHex(Self.root + "/invalid/" + name)
        let d = SyncFrameSplitter(maxFrameBytes: 1 << 20)
        do {
            let ms = try d.feed(bytes)
            Issue.record("\(name) decoded to \(ms)")
        } catch .frameTooLarge {
            #expect(name.hasPrefix("frame-too-large"))
        } catch .malformed(let e) {
            #expect(name.hasPrefix(e.rule.rawValue + "-"), "\(name) refused as \(e.rule.rawValue): \(e.detail)")
        }
    }

    @Test func theFrameVectorsExist() {
        #expect(Self.files("valid").count == Self.samples.count)
        #expect(Self.files("invalid").count >= 6)
    }

    @Test func writeFrameVectorsWhenAsked() throws {
        guard ProcessInfo.processInfo.environment["LODE_WRITE_VECTORS"] == "1" else { return }
        func write(_ path: String, _ comment: String, _ bytes: [UInt8]) throws {
            var text = "# \(comment)\n"
            var i = 0
            while i < bytes.count {
                text += bytes[i..<min(i + 32, bytes.count)].hexString + "\n"
                i += 32
            }
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        for (name, m) in Self.samples {
            try write(Self.root + "/valid/\(name).hex", "a valid \(name) frame", SyncFrame.encode(.v1(m)))
        }
        let ping = SyncFrame.encode(.v1(.ping(1)))
        func framed(_ body: [UInt8]) -> [UInt8] {
            let n = UInt32(body.count)
            return [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)] + body
        }
        var unsorted = ByteWriter()
        unsorted.writeByte(1)
        unsorted.writeByte(5)  // vector
        unsorted.writeString("d")
        unsorted.writeVarint(2)
        let (hi, lo) = Self.site < Self.other ? (Self.other, Self.site) : (Self.site, Self.other)
        hi.encode(into: &unsorted)
        unsorted.writeVarint(1)
        lo.encode(into: &unsorted)
        unsorted.writeVarint(1)
        let invalid: [(String, String, [UInt8])] = [
            ("frame-too-large-header", "a length of 2 GiB", [0x7F, 0xFF, 0xFF, 0xFF, 1, 6]),
            ("unknown-version-frame-2", "frame version 2", framed([2, 6] + Array(ping.suffix(8)))),
            ("unknown-tag-message-99", "message type 99", framed([1, 99])),
            ("trailing-bytes-after-ping", "a ping with a byte too many", framed(Array(ping.dropFirst(4)) + [0])),
            ("truncated-ping", "a ping with 4 of its 8 bytes", framed([1, 6, 0, 0, 0, 0])),
            ("not-canonical-vector-unsorted", "vector entries out of site order", framed(unsorted.bytes)),
            ("invalid-value-dataset-name", "a dataset name with a space", framed([1, 5, 3] + Array("a b".utf8) + [0])),
            ("unknown-tag-reject-code-200", "rejection code 200", framed([1, 9, 200, 0])),
            ("invalid-value-snapshot-answer-2", "a snapshot answer of 2", framed([1, 13, 1, 0x64, 2, 0])),
            (
                "invalid-value-snapshot-chunk-past-total", "a snapshot chunk of 4 bytes at 8 of a 10-byte snapshot",
                framed([1, 14, 1, 0x64, 8, 10, 4, 1, 2, 3, 4])
            ),
            ("invalid-value-snapshot-chunk-empty", "an empty snapshot chunk that does not withdraw (total 10)", framed([1, 14, 1, 0x64, 0, 10, 0])),
            (
                "invalid-value-snapshot-chunk-deflated-length", "a deflated snapshot chunk announcing 10 bytes more than it inflates to",
                {
                    var w = ByteWriter()
                    w.writeBytes([1, 16, 1, 0x64, 0, 100])  // snapshot-chunk, deflated, of d, at 0 of 100
                    let raw = [UInt8](repeating: 5, count: 50)
                    w.writeVarint(UInt64(raw.count + 10))
                    w.writeBytes(Deflate.compress(raw)!)
                    return framed(w.bytes)
                }()
            ),
            (
                "too-large-snapshot-size", "a snapshot offer of 2^62 bytes",
                {
                    var w = ByteWriter()
                    w.writeBytes([1, 12, 1, 0x64, 0])  // snapshot-offer of d, empty vector
                    w.writeVarint(1 << 62)
                    return framed(w.bytes)
                }()
            ),
            (
                "invalid-value-deflated-length", "deflated commits announcing 10 bytes more than they inflate to",
                {
                    var body: [UInt8] = [1, 10, 1, 0x64]  // commits-deflated, dataset "d"
                    let list: [UInt8] = [1, 3, 9, 9, 9]
                    let packed = Deflate.compress(list)!
                    var w = ByteWriter()
                    w.writeVarint(UInt64(list.count + 10))
                    body += w.bytes + packed
                    return framed(body)
                }()
            ),
        ]
        for (name, comment, bytes) in invalid { try write(Self.root + "/invalid/\(name).hex", comment, bytes) }
    }
}
