import Crypto
import Foundation

/// A causal dependency of a commit: the author had applied `site`'s feed up
/// to `seq` when it wrote the commit.
public struct Dependency: Hashable, Sendable {
    /// The site whose feed is depended on.
    public var site: SiteID
    /// The highest seq of that feed the author held.
    public var seq: UInt64

    /// Creates a dependency.
    public init(site: SiteID, seq: UInt64) {
        self.site = site
        self.seq = seq
    }
}

/// A signed batch of ops by one site in one dataset: the unit of the log.
///
/// The encoding is canonical (see `Protocol/commit-format.md`): decoding
/// refuses any byte string that `encode` would not have produced, so the
/// bytes, the signature and the hash are one-to-one with the commit.
///
/// ```swift
/// let c = try Commit.sign(CommitContent(dataset: "rare-earths", author: site, seq: 1,
///                                      hlc: stamp, prev: Commit.zeroHash, deps: [], ops: ops),
///                         with: key)
/// let again = try Commit(decoding: c.bytes)
/// again.hasValidSignature // true
/// ```
public struct Commit: Sendable, Hashable {
    /// The encoding of a commit that names no person (the site's own).
    public static let version: UInt8 = 1
    /// The encoding of a commit that names the person who wrote it: version
    /// 1 with the person after the author (`Protocol/commit-format.md`).
    public static let personVersion: UInt8 = 2
    /// The previous-hash field of a feed's first commit.
    public static let zeroHash = [UInt8](repeating: 0, count: 32)
    /// What the signature covers is this prefix followed by the SHA-256 of
    /// the encoding up to the signature: the prefix keeps a site key's
    /// signature over a commit from being mistaken for one over anything
    /// else, and the digest makes signing and verifying cost the same for a
    /// commit of 1 MiB as for one of 100 bytes.
    public static let signingContext = Array("lodestone commit v1\n".utf8)

    /// The message an Ed25519 signature of a commit covers.
    public static func signedMessage<Body: DataProtocol>(_ body: Body) -> [UInt8] {
        signingContext + Array(SHA256.hash(data: body))
    }

    /// The fields of the commit.
    public let content: CommitContent
    /// The Ed25519 signature over `signingContext` + SHA-256(the encoding before it).
    public let signature: [UInt8]
    /// The whole encoding, signature included.
    public let bytes: [UInt8]
    /// SHA-256 of `bytes`.
    public let hash: [UInt8]
    /// The signature's verdict, once `checkingSignatures` has found it.
    private var checkedSignature: Bool?

    /// The dataset the commit belongs to.
    public var dataset: String { content.dataset }
    /// The site that wrote it.
    public var author: SiteID { content.author }
    /// The person of that site who wrote it ("" when the commit names none).
    public var person: String { content.person }
    /// Its position in the author's feed, from 1.
    public var seq: UInt64 { content.seq }
    /// Its hybrid logical clock stamp.
    public var hlc: HLC { content.hlc }
    /// The hash of the author's previous commit in this dataset.
    public var prev: [UInt8] { content.prev }
    /// The feeds that advanced since the author's previous commit.
    public var deps: [Dependency] { content.deps }
    /// The changes.
    public var ops: [Op] { content.ops }

    /// Decodes and structurally checks a commit. The signature is not checked
    /// here: call `hasValidSignature`, which costs far more.
    public init(decoding bytes: [UInt8]) throws(BinaryDecodingError) {
        guard bytes.count <= Limits.maxCommitBytes else {
            throw BinaryDecodingError(.tooLarge, at: 0, "commit of \(bytes.count) bytes exceeds \(Limits.maxCommitBytes)")
        }
        let (content, signature) = try ByteReader.decodeAll(bytes, "signature") { r throws(BinaryDecodingError) in
            (try CommitContent.decode(from: &r), try r.readBytes(64))
        }
        self.content = content
        self.signature = signature
        self.bytes = bytes
        hash = Array(SHA256.hash(data: bytes))
    }

    private init(content: CommitContent, signature: [UInt8], bytes: [UInt8]) {
        self.content = content
        self.signature = signature
        self.bytes = bytes
        hash = Array(SHA256.hash(data: bytes))
    }

    /// Encodes `content` and signs it with the author's key. The key's public
    /// half must be `content.author`.
    public static func sign(_ content: CommitContent, with key: Curve25519.Signing.PrivateKey) throws -> Commit {
        precondition(key.publicKey.rawRepresentation.elementsEqual(content.author.bytes), "the key must be the author's")
        var w = ByteWriter(capacity: 1024)
        content.encode(into: &w)
        var body = w.bytes
        let sig = try key.signature(for: signedMessage(body))
        body.append(contentsOf: sig)
        return Commit(content: content, signature: Array(sig), bytes: body)
    }

    /// Signs a commit whose ops are already encoded, for writers that
    /// encode rows as they go rather than holding them as values.
    /// `header.ops` is ignored.
    public static func sign(header: CommitContent, ops: EncodedOps, with key: Curve25519.Signing.PrivateKey) throws -> SignedCommit {
        var w = ByteWriter(capacity: ops.bytes.count + 256)
        header.encodeHeader(into: &w)
        w.writeVarint(UInt64(ops.count))
        w.writeBytes(ops.bytes)
        var body = w.bytes
        let sig = try key.signature(for: signedMessage(body))
        body.append(contentsOf: sig)
        var fields = header
        fields.ops = []
        return SignedCommit(header: fields, bytes: body, hash: Array(SHA256.hash(data: body)))
    }

    /// True when the signature verifies under the author's key.
    public var hasValidSignature: Bool { checkedSignature ?? verifiesSignature() }

    private func verifiesSignature() -> Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: content.author.bytes) else { return false }
        return key.isValidSignature(signature, for: Commit.signedMessage(bytes[0..<(bytes.count - 64)]))
    }

    /// `commits`, each with its signature checked, on every core: the
    /// verdicts are kept, and `hasValidSignature` answers from them. (One
    /// check costs about 180 µs on one core; a batch of a thousand small
    /// commits would otherwise take 0.2 s on one core while the others
    /// wait.) A single commit, or a machine with one core, is checked here.
    /// A commit whose seq `held` already covers is left unchecked: it is a
    /// copy of one held (a site hearing every commit from two relays gets
    /// each twice), known by its hash before any signature matters, and
    /// `hasValidSignature` checks it if it ever does.
    public static func checkingSignatures(_ commits: [Commit], except held: VersionVector = VersionVector()) async -> [Commit] {
        let open = commits.indices.filter { commits[$0].seq > held[commits[$0].author] }
        var out = commits
        let lanes = min(ProcessInfo.processInfo.activeProcessorCount, open.count / 4)
        guard lanes > 1 else {
            for i in open { out[i].checkedSignature = commits[i].verifiesSignature() }
            return out
        }
        let per = (open.count + lanes - 1) / lanes
        await withTaskGroup(of: (Int, [Bool]).self) { group in
            for start in stride(from: 0, to: open.count, by: per) {
                let chunk = open[start..<min(start + per, open.count)].map { commits[$0] }
                group.addTask { (start, chunk.map { $0.verifiesSignature() }) }
            }
            for await (start, checked) in group {
                for (k, ok) in checked.enumerated() { out[open[start + k]].checkedSignature = ok }
            }
        }
        return out
    }

    public static func == (a: Commit, b: Commit) -> Bool { a.bytes == b.bytes }
    public func hash(into h: inout Hasher) { h.combine(bytes) }
}

/// A commit as a store holds it: author, seq and its original bytes.
public struct StoredCommit: Sendable, Hashable {
    /// The author.
    public var site: SiteID
    /// Its position in the author's feed.
    public var seq: UInt64
    /// The signed encoding, exactly as the author made it.
    public var bytes: [UInt8]

    /// Creates a stored commit.
    public init(site: SiteID, seq: UInt64, bytes: [UInt8]) {
        self.site = site
        self.seq = seq
        self.bytes = bytes
    }
}

/// A commit signed from encoded ops: its header fields, bytes and hash,
/// without decoding the ops back into values.
public struct SignedCommit: Sendable {
    /// Every field but the ops (`header.ops` is empty).
    public let header: CommitContent
    /// The whole encoding, signature included.
    public let bytes: [UInt8]
    /// SHA-256 of `bytes`.
    public let hash: [UInt8]
}

/// Everything in a commit but its signature.
public struct CommitContent: Sendable, Hashable {
    /// The dataset name.
    public var dataset: String
    /// The writing site.
    public var author: SiteID
    /// The person at that site who made the change, as the site names its
    /// people (`Identifier.isValidPerson`), or "" for the site itself (a
    /// relay, a commit from before people were named). The site's
    /// signature vouches for it (DESIGN §9).
    public var person: String
    /// The position in the author's feed, from 1.
    public var seq: UInt64
    /// The stamp.
    public var hlc: HLC
    /// The previous commit's hash, or 32 zero bytes for seq 1.
    public var prev: [UInt8]
    /// Feeds (other than the author's) that advanced since its previous commit, sorted by site.
    public var deps: [Dependency]
    /// The changes, applied in order.
    public var ops: [Op]

    /// Creates commit content.
    public init(
        dataset: String, author: SiteID, person: String = "", seq: UInt64, hlc: HLC, prev: [UInt8], deps: [Dependency], ops: [Op]
    ) {
        self.dataset = dataset
        self.author = author
        self.person = person
        self.seq = seq
        self.hlc = hlc
        self.prev = prev
        self.deps = deps.sorted { $0.site < $1.site }
        self.ops = ops
    }

    /// Appends the canonical encoding, without signature.
    public func encode(into w: inout ByteWriter) {
        encodeHeader(into: &w)
        w.writeVarint(UInt64(ops.count))
        for op in ops { op.encode(into: &w) }
    }

    /// Appends every field before the ops.
    public func encodeHeader(into w: inout ByteWriter) {
        // Version 1 names no person and version 2 one, so each commit has
        // exactly one encoding.
        w.writeByte(person.isEmpty ? Commit.version : Commit.personVersion)
        w.writeString(dataset)
        author.encode(into: &w)
        if !person.isEmpty { w.writeString(person) }
        w.writeVarint(seq)
        w.writeUInt64(hlc.rawValue)
        w.writeBytes(prev)
        w.writeVarint(UInt64(deps.count))
        for d in deps {
            d.site.encode(into: &w)
            w.writeVarint(d.seq)
        }
    }

    /// Reads the fields, enforcing every rule that needs no other commit.
    static func decode(from r: inout ByteReader) throws(BinaryDecodingError) -> CommitContent {
        let vat = r.offset
        let version = try r.readByte()
        guard version == Commit.version || version == Commit.personVersion else {
            throw BinaryDecodingError(
                .unknownVersion, at: vat,
                "commit version \(version) is not supported (this node reads versions \(Commit.version) and \(Commit.personVersion))")
        }
        let dataset = try r.readDatasetName()
        let author = try SiteID(from: &r)
        var person = ""
        if version == Commit.personVersion {
            let at = r.offset
            person = try r.readString(limit: 64)
            guard Identifier.isValidPerson(person) else {
                throw BinaryDecodingError(.invalidValue, at: at, "\(person.debugDescription) is not a valid person name")
            }
        }
        let sat = r.offset
        let seq = try r.readVarint()
        guard seq >= 1 else { throw BinaryDecodingError(.invalidValue, at: sat, "seq starts at 1") }
        guard seq <= Limits.maxSeq else { throw BinaryDecodingError(.tooLarge, at: sat, "seq \(seq) exceeds the limit of \(Limits.maxSeq)") }
        let hat = r.offset
        let hlc = HLC(rawValue: try r.readUInt64())
        guard hlc > .zero else { throw BinaryDecodingError(.invalidValue, at: hat, "the stamp is zero") }
        let pat = r.offset
        let prev = try r.readBytes(32)
        if (seq == 1) != (prev == Commit.zeroHash) {
            throw BinaryDecodingError(
                .invalidValue, at: pat, seq == 1 ? "the first commit of a feed has a previous hash" : "previous hash is zero after seq 1")
        }
        let ndeps = try r.readCount(limit: r.remaining / 33, "dependency count")
        var deps: [Dependency] = []
        deps.reserveCapacity(ndeps)
        for _ in 0..<ndeps {
            let dat = r.offset
            let site = try SiteID(from: &r)
            let dseq = try r.readVarint()
            guard dseq >= 1 else { throw BinaryDecodingError(.invalidValue, at: dat, "a dependency's seq starts at 1") }
            guard dseq <= Limits.maxSeq else {
                throw BinaryDecodingError(.tooLarge, at: dat, "a dependency's seq \(dseq) exceeds the limit of \(Limits.maxSeq)")
            }
            guard site != author else { throw BinaryDecodingError(.invalidValue, at: dat, "a commit depends on its own feed") }
            if let last = deps.last, !(last.site < site) {
                throw BinaryDecodingError(.notCanonical, at: dat, "dependencies are not in strictly ascending site order")
            }
            deps.append(Dependency(site: site, seq: dseq))
        }
        let nops = try r.readCount(limit: r.remaining / 2, "op count")
        guard nops > 0 else { throw BinaryDecodingError(.invalidValue, at: r.offset, "a commit has no op") }
        var ops: [Op] = []
        ops.reserveCapacity(nops)
        for _ in 0..<nops { ops.append(try Op.decode(from: &r)) }
        guard r.remaining >= 64 else { throw BinaryDecodingError(.truncated, at: r.offset, "the signature is missing") }
        var c = CommitContent(dataset: dataset, author: author, person: person, seq: seq, hlc: hlc, prev: prev, deps: [], ops: ops)
        c.deps = deps
        return c
    }
}
