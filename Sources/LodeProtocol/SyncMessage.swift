import LodeCore

/// Why a session or a commit was refused. Typed so that a peer can act on it.
public enum RejectCode: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// The peer belongs to another cluster (another CA).
    case differentCluster = 1
    /// The peer speaks a protocol version this node does not.
    case protocolVersion = 2
    /// The peer's certificate or role does not allow what it attempted.
    case notAuthorized = 3
    /// A commit's signature does not verify.
    case badSignature = 4
    /// A commit forks its feed: its previous hash names another head, or its
    /// author signed another commit with the same seq. (A commit after a gap
    /// is never refused: it waits for what it follows.)
    case forkedFeed = 5
    /// A frame is larger than the limit.
    case frameTooLarge = 6
    /// A frame or message could not be decoded.
    case malformed = 7
    /// The Hello names a site other than the peer's certificate.
    case siteMismatch = 8
    /// A commit breaks the dataset's schema or another rule.
    case invalidCommit = 9
    /// The peer went silent.
    case timeout = 10
    /// A commit is stamped further ahead of the receiver's wall clock than
    /// its drift allows: held back, not refused; offer it again later.
    case clockAhead = 11

    public var description: String {
        switch self {
        case .differentCluster: "different cluster"
        case .protocolVersion: "protocol version"
        case .notAuthorized: "not authorized"
        case .badSignature: "bad signature"
        case .forkedFeed: "forked feed"
        case .frameTooLarge: "frame too large"
        case .malformed: "malformed"
        case .siteMismatch: "site mismatch"
        case .invalidCommit: "invalid commit"
        case .timeout: "timeout"
        case .clockAhead: "clock ahead"
        }
    }
}

/// One dataset in a Hello: its name and what the sender holds.
public struct DatasetVector: Hashable, Sendable {
    public var dataset: String
    public var vector: VersionVector
    public init(dataset: String, vector: VersionVector) {
        self.dataset = dataset
        self.vector = vector
    }
}

/// The messages of the sync protocol, version 1 (`Protocol/sync-protocol.md`).
public enum SyncMessageV1: Hashable, Sendable {
    /// First message each way: protocol version, cluster, site, and for every
    /// dataset the sender holds, its version vector.
    case hello(protocolVersion: UInt8, cluster: [UInt8], site: SiteID, datasets: [DatasetVector])
    /// Site certificates (DER) the receiver needs to check commit authors.
    case certificates([[UInt8]])
    /// Commits of one dataset, in a causal order, each its original bytes.
    case commits(dataset: String, commits: [[UInt8]])
    /// The receiver's vector after applying a `commits` batch.
    case ack(dataset: String, vector: VersionVector)
    /// The sender's vector now (on change, and periodically to repair).
    case vector(dataset: String, vector: VersionVector)
    /// Keepalive.
    case ping(UInt64)
    /// Keepalive answer.
    case pong(UInt64)
    /// One commit was refused and not applied; the session goes on.
    case commitRejected(dataset: String, site: SiteID, seq: UInt64, code: RejectCode, message: String)
    /// The session is refused; the sender closes it.
    case reject(code: RejectCode, message: String)
    /// A revocation notice (DESIGN §9): a CA's revocation record and the
    /// cut-offs a node fixed for it, signed by that node; opaque here, read
    /// by the node (`RevocationNotice`). Passed on by every node it is new to.
    case revocation([UInt8])
    /// A node offers a peer that holds nothing of `dataset` a snapshot of it
    /// (DESIGN §12), because it compacted away commits the peer would need:
    /// a compacted backup (`lode backup`) of `bytes` bytes whose rows are at
    /// least at `vector`.
    case snapshotOffer(dataset: String, vector: VersionVector, bytes: UInt64)
    /// The answer to an offer: send it, or not and why. Also sent, not
    /// accepted, when a snapshot received could not be installed.
    case snapshotAnswer(dataset: String, accept: Bool, message: String)
    /// The bytes of a snapshot from `offset`, of `total`, in order. A
    /// `total` of 0 withdraws the offer (the sender could not make it).
    case snapshotChunk(dataset: String, offset: UInt64, total: UInt64, bytes: [UInt8])
    /// The receiver has stored the first `received` bytes of the snapshot.
    case snapshotAck(dataset: String, received: UInt64)
}

/// A message on the wire: versioned from the first frame.
public enum SyncMessage: Hashable, Sendable {
    case v1(SyncMessageV1)
}

/// The frame layer: `length u32 BE | version u8 | type u8 | payload`, where
/// length counts everything after itself.
public enum SyncFrame {
    /// The protocol version this node speaks.
    public static let version: UInt8 = 1
    /// The largest frame accepted (32 MiB).
    public static let maxFrameBytes = 32 << 20
    /// The size a sender aims for when batching commits.
    public static let targetBatchBytes = 1 << 20

    enum Tag: UInt8 {
        case hello = 1, certificates, commits, ack, vector, ping, pong, commitRejected, reject
        /// `commits` with its commit list deflated (RFC 1950 zlib).
        case commitsDeflated
        case revocation
        case snapshotOffer, snapshotAnswer, snapshotChunk, snapshotAck
        /// `snapshotChunk` with its bytes deflated (RFC 1950 zlib).
        case snapshotChunkDeflated
    }

    /// The most bytes of a snapshot one `snapshotChunk` carries.
    public static let maxSnapshotChunkBytes = 1 << 20
    /// The largest snapshot a frame may announce (a receiver sets its own, lower, bound).
    public static let maxSnapshotBytes: UInt64 = 1 << 50

    /// The largest revocation notice a frame carries.
    public static let maxRevocationBytes = 1 << 20

    /// A `commits` frame is sent deflated when that saves at least this share.
    static let deflateWorthIt = 0.9

    /// Encodes a message as one frame (length prefix included).
    public static func encode(_ message: SyncMessage) -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.writeBytes([0, 0, 0, 0])  // the length, filled in below
        w.writeByte(version)
        guard case .v1(let m) = message else { fatalError("unreachable") }
        switch m {
        case .hello(let pv, let cluster, let site, let datasets):
            w.writeByte(Tag.hello.rawValue)
            w.writeByte(pv)
            w.writeBytes(cluster)
            site.encode(into: &w)
            w.writeVarint(UInt64(datasets.count))
            for d in datasets {
                w.writeString(d.dataset)
                d.vector.encode(into: &w)
            }
        case .certificates(let certs):
            w.writeByte(Tag.certificates.rawValue)
            w.writeVarint(UInt64(certs.count))
            for c in certs { w.writeLengthPrefixed(c) }
        case .commits(let dataset, let commits):
            var list = ByteWriter(capacity: commits.reduce(8) { $0 + $1.count + 5 })
            list.writeVarint(UInt64(commits.count))
            for c in commits { list.writeLengthPrefixed(c) }
            if let packed = Deflate.compress(list.bytes), Double(packed.count) < Double(list.count) * deflateWorthIt {
                w.writeByte(Tag.commitsDeflated.rawValue)
                w.writeString(dataset)
                w.writeVarint(UInt64(list.count))
                w.writeBytes(packed)
            } else {
                w.writeByte(Tag.commits.rawValue)
                w.writeString(dataset)
                w.writeBytes(list.bytes)
            }
        case .ack(let dataset, let v):
            w.writeByte(Tag.ack.rawValue)
            w.writeString(dataset)
            v.encode(into: &w)
        case .vector(let dataset, let v):
            w.writeByte(Tag.vector.rawValue)
            w.writeString(dataset)
            v.encode(into: &w)
        case .ping(let n):
            w.writeByte(Tag.ping.rawValue)
            w.writeUInt64(n)
        case .pong(let n):
            w.writeByte(Tag.pong.rawValue)
            w.writeUInt64(n)
        case .commitRejected(let dataset, let site, let seq, let code, let message):
            w.writeByte(Tag.commitRejected.rawValue)
            w.writeString(dataset)
            site.encode(into: &w)
            w.writeVarint(seq)
            w.writeByte(code.rawValue)
            w.writeString(Self.fitting(message))
        case .reject(let code, let message):
            w.writeByte(Tag.reject.rawValue)
            w.writeByte(code.rawValue)
            w.writeString(Self.fitting(message))
        case .revocation(let notice):
            w.writeByte(Tag.revocation.rawValue)
            w.writeLengthPrefixed(notice)
        case .snapshotOffer(let dataset, let v, let size):
            w.writeByte(Tag.snapshotOffer.rawValue)
            w.writeString(dataset)
            v.encode(into: &w)
            w.writeVarint(size)
        case .snapshotAnswer(let dataset, let accept, let message):
            w.writeByte(Tag.snapshotAnswer.rawValue)
            w.writeString(dataset)
            w.writeByte(accept ? 1 : 0)
            w.writeString(Self.fitting(message))
        case .snapshotChunk(let dataset, let offset, let total, let bytes):
            // A dataset file deflates to a third or so: sent so when that saves.
            let packed = bytes.count >= 256 ? Deflate.compress(bytes) : nil
            let deflate = packed.map { Double($0.count) < Double(bytes.count) * deflateWorthIt } ?? false
            w.writeByte(deflate ? Tag.snapshotChunkDeflated.rawValue : Tag.snapshotChunk.rawValue)
            w.writeString(dataset)
            w.writeVarint(offset)
            w.writeVarint(total)
            if deflate, let packed {
                w.writeVarint(UInt64(bytes.count))
                w.writeBytes(packed)
            } else {
                w.writeLengthPrefixed(bytes)
            }
        case .snapshotAck(let dataset, let received):
            w.writeByte(Tag.snapshotAck.rawValue)
            w.writeString(dataset)
            w.writeVarint(received)
        }
        var bytes = w.bytes
        let length = UInt32(bytes.count - 4)
        bytes[0] = UInt8(length >> 24)
        bytes[1] = UInt8(truncatingIfNeeded: length >> 16)
        bytes[2] = UInt8(truncatingIfNeeded: length >> 8)
        bytes[3] = UInt8(truncatingIfNeeded: length)
        return bytes
    }

    /// Decodes the body of one frame (everything after the length prefix).
    public static func decode(body: UnsafeRawBufferPointer) throws(BinaryDecodingError) -> SyncMessage {
        var r = ByteReader(body)
        let vat = r.offset
        let v = try r.readByte()
        guard v == version else {
            throw BinaryDecodingError(.unknownVersion, at: vat, "frame version \(v); this node speaks version \(version)")
        }
        let tat = r.offset
        let tb = try r.readByte()
        guard let tag = Tag(rawValue: tb) else { throw BinaryDecodingError(.unknownTag, at: tat, "unknown message type \(tb)") }
        let m: SyncMessageV1
        switch tag {
        case .hello:
            let pv = try r.readByte()
            let cluster = try r.readBytes(32)
            let site = try SiteID(from: &r)
            let n = try r.readCount(limit: r.remaining / 2, "dataset count")
            var ds: [DatasetVector] = []
            for _ in 0..<n {
                ds.append(DatasetVector(dataset: try r.readDatasetName(), vector: try VersionVector.decode(from: &r)))
            }
            m = .hello(protocolVersion: pv, cluster: cluster, site: site, datasets: ds)
        case .certificates:
            let n = try r.readCount(limit: r.remaining / 2, "certificate count")
            var certs: [[UInt8]] = []
            for _ in 0..<n { certs.append(try r.readLengthPrefixed(limit: 64 << 10)) }
            m = .certificates(certs)
        case .commits:
            let dataset = try r.readDatasetName()
            m = .commits(dataset: dataset, commits: try readCommitList(&r))
        case .commitsDeflated:
            let dataset = try r.readDatasetName()
            let at = r.offset
            let rawLength = try r.readCount(limit: maxFrameBytes, "inflated length")
            let packed = try r.readRaw(r.remaining)
            guard let list = Deflate.decompress(packed, exactly: rawLength) else {
                throw BinaryDecodingError(.invalidValue, at: at, "deflated commits do not inflate to the \(rawLength) bytes announced")
            }
            let commits = try ByteReader.decodeAll(list, "inflated commit list") { lr throws(BinaryDecodingError) in try readCommitList(&lr) }
            m = .commits(dataset: dataset, commits: commits)
        case .ack:
            let dataset = try r.readDatasetName()
            m = .ack(dataset: dataset, vector: try VersionVector.decode(from: &r))
        case .vector:
            let dataset = try r.readDatasetName()
            m = .vector(dataset: dataset, vector: try VersionVector.decode(from: &r))
        case .ping: m = .ping(try r.readUInt64())
        case .pong: m = .pong(try r.readUInt64())
        case .commitRejected:
            let dataset = try r.readDatasetName()
            let site = try SiteID(from: &r)
            let seq = try r.readVarint()
            let code = try readCode(&r)
            m = .commitRejected(dataset: dataset, site: site, seq: seq, code: code, message: try r.readString(limit: maxMessageBytes))
        case .reject:
            let code = try readCode(&r)
            m = .reject(code: code, message: try r.readString(limit: maxMessageBytes))
        case .revocation:
            m = .revocation(try r.readLengthPrefixed(limit: maxRevocationBytes))
        case .snapshotOffer:
            let dataset = try r.readDatasetName()
            let v = try VersionVector.decode(from: &r)
            m = .snapshotOffer(dataset: dataset, vector: v, bytes: try readSnapshotSize(&r, "snapshot size"))
        case .snapshotAnswer:
            let dataset = try r.readDatasetName()
            let at = r.offset
            let flag = try r.readByte()
            guard flag <= 1 else { throw BinaryDecodingError(.invalidValue, at: at, "a snapshot answer of \(flag), not 0 or 1") }
            m = .snapshotAnswer(dataset: dataset, accept: flag == 1, message: try r.readString(limit: maxMessageBytes))
        case .snapshotChunk, .snapshotChunkDeflated:
            let dataset = try r.readDatasetName()
            let offset = try readSnapshotSize(&r, "snapshot offset")
            let total = try readSnapshotSize(&r, "snapshot size")
            let at = r.offset
            let bytes: [UInt8]
            if tag == .snapshotChunkDeflated {
                let rawLength = try r.readCount(limit: maxSnapshotChunkBytes, "inflated length")
                let packed = try r.readRaw(r.remaining)
                guard let raw = Deflate.decompress(packed, exactly: rawLength) else {
                    throw BinaryDecodingError(.invalidValue, at: at, "a deflated snapshot chunk does not inflate to the \(rawLength) bytes announced")
                }
                bytes = raw
            } else {
                bytes = try r.readLengthPrefixed(limit: maxSnapshotChunkBytes)
            }
            guard total == 0 ? offset == 0 && bytes.isEmpty : !bytes.isEmpty && offset + UInt64(bytes.count) <= total else {
                throw BinaryDecodingError(
                    .invalidValue, at: at, "a snapshot chunk of \(bytes.count) bytes at \(offset) does not lie within its \(total)")
            }
            m = .snapshotChunk(dataset: dataset, offset: offset, total: total, bytes: bytes)
        case .snapshotAck:
            let dataset = try r.readDatasetName()
            m = .snapshotAck(dataset: dataset, received: try readSnapshotSize(&r, "snapshot bytes received"))
        }
        guard r.isAtEnd else { throw BinaryDecodingError(.trailingBytes, at: r.offset, "\(r.remaining) bytes after the message") }
        return .v1(m)
    }

    static func readCommitList(_ r: inout ByteReader) throws(BinaryDecodingError) -> [[UInt8]] {
        let n = try r.readCount(limit: r.remaining / 2, "commit count")
        var commits: [[UInt8]] = []
        commits.reserveCapacity(n)
        for _ in 0..<n { commits.append(try r.readLengthPrefixed(limit: Limits.maxCommitBytes)) }
        return commits
    }

    /// The most bytes of a message's text (a reason) a receiver reads.
    public static let maxMessageBytes = 4096

    /// `text` cut to `maxMessageBytes` on a character boundary: a longer
    /// reason would make the receiver refuse the whole frame.
    static func fitting(_ text: String) -> String {
        guard text.utf8.count > maxMessageBytes else { return text }
        var out = ""
        var bytes = 0
        for c in text {
            let n = c.utf8.count
            guard bytes + n <= maxMessageBytes - 3 else { break }
            out.append(c)
            bytes += n
        }
        return out + "…"
    }

    static func readSnapshotSize(_ r: inout ByteReader, _ what: String) throws(BinaryDecodingError) -> UInt64 {
        let at = r.offset
        let n = try r.readVarint()
        guard n <= maxSnapshotBytes else { throw BinaryDecodingError(.tooLarge, at: at, "\(what) \(n) is over \(maxSnapshotBytes)") }
        return n
    }

    static func readCode(_ r: inout ByteReader) throws(BinaryDecodingError) -> RejectCode {
        let at = r.offset
        let b = try r.readByte()
        guard let c = RejectCode(rawValue: b) else { throw BinaryDecodingError(.unknownTag, at: at, "unknown rejection code \(b)") }
        return c
    }
}
