import Crypto
import Foundation
import LodeCore
import LodeStore
import X509

/// A CA's statement that a site may no longer take part (DESIGN §9):
/// written by `lode ca revoke` with the CA key, handed to a node with
/// `lode revoke FILE`. It names the site and covers every certificate
/// issued to that name before the revocation, so a site re-keyed after a
/// theft (a new certificate, issued later) is not covered.
///
/// ```swift
/// let r = try Revocation.issue(site: "laptop-7", reason: "stolen", by: ca)
/// try r.verify(ca: node.identity.ca)
/// ```
public struct Revocation: Codable, Sendable, Hashable {
    /// The format name and version.
    public static let currentFormat = "lode-revocation-1"
    public var format: String
    /// The cluster: SHA-256 of the CA certificate (DER), in hex.
    public var cluster: String
    /// The revoked site's name.
    public var site: String
    /// Why, for people.
    public var reason: String
    /// When, in milliseconds since 1970: certificates issued to the site
    /// before then are revoked.
    public var revoked: UInt64
    /// The CA's Ed25519 signature over `signedBytes`, in base64.
    public var signature: String

    /// What the CA signs: every field but the signature, one per line.
    var signedBytes: [UInt8] { Array("\(format)\n\(cluster)\n\(site)\n\(revoked)\n\(reason)".utf8) }

    /// The cluster id of a CA certificate.
    static func cluster(of ca: Certificate) -> String {
        SHA256.hash(data: Identity.der(ca)).map { String(format: "%02x", $0) }.joined()
    }

    /// Writes a revocation of `site`, signed by the CA.
    public static func issue(site: String, reason: String, by ca: CertificateAuthority, at now: Date = Date()) throws -> Revocation {
        try Identity.checkName(site, "site")
        var r = Revocation(
            format: currentFormat, cluster: cluster(of: ca.certificate), site: site, reason: String(reason.prefix(1000)),
            revoked: UInt64(now.timeIntervalSince1970 * 1000), signature: "")
        r.signature = try ca.key.signature(for: r.signedBytes).base64EncodedString()
        return r
    }

    /// Checks that this CA signed the revocation, for this cluster.
    public func verify(ca: Certificate) throws {
        guard format == Revocation.currentFormat else {
            throw NodeError(.badInput, "this is not a Lodestone revocation this node reads (format \(format.prefix(40)))")
        }
        guard cluster == Revocation.cluster(of: ca) else {
            throw NodeError(.badInput, "the revocation is for another cluster (another CA)")
        }
        guard reason.count <= 1000, let sig = Data(base64Encoded: signature), let key = Curve25519.Signing.PublicKey(ca.publicKey),
            key.isValidSignature(sig, for: signedBytes)
        else {
            throw NodeError(.badInput, "the revocation's signature is not the cluster CA's: refused")
        }
    }

    /// Whether it revokes `certificate`: the same site name, issued before.
    public func covers(_ certificate: SiteCertificate) -> Bool {
        certificate.name == site && UInt64(max(0, certificate.certificate.notValidBefore.timeIntervalSince1970 * 1000)) <= revoked
    }

    /// Reads a revocation file's JSON.
    public static func decode(_ data: Data) throws -> Revocation {
        guard data.count <= 16 << 10, let r = try? JSONDecoder().decode(Revocation.self, from: data) else {
            throw NodeError(.badInput, "not a revocation file (JSON written by `lode ca revoke`)")
        }
        return r
    }

    /// The file's JSON.
    public var encoded: Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return (try? e.encode(self)) ?? Data()
    }
}

/// A node's signed word on a revocation (DESIGN §9): the CA's record, and
/// the cut-offs the node fixed, for each dataset the last seq of each of
/// the revoked site's feeds it held. It spreads by sync like a commit:
/// every node checks the CA's signature on the record and the signer's on
/// the whole, and merges the cut-offs, the smaller seq per feed winning.
/// The signer is a site the CA certified as an editor or a relay, not
/// itself revoked; a receiver counts only cut-offs of feeds whose key the
/// record covers (a certificate issued to the revoked site's name before
/// the revocation).
///
/// On the wire (`Protocol/sync-protocol.md` §4.9):
/// `"LRN1" | record (length-prefixed JSON) | signer certificate (length-prefixed DER)
/// | count varint | count × (dataset string | author 32 B | seq varint) | Ed25519 signature (64 B)`,
/// the signature over everything before it.
public struct RevocationNotice: Sendable, Hashable {
    /// One cut-off: `author`'s feed in `dataset` counts up to `seq`.
    public struct Cutoff: Sendable, Hashable {
        public var dataset: String
        public var author: SiteID
        public var seq: UInt64
        public init(dataset: String, author: SiteID, seq: UInt64) {
            self.dataset = dataset
            self.author = author
            self.seq = seq
        }
    }

    /// The CA's record.
    public let record: Revocation
    /// The signer's certificate (DER).
    public let signer: [UInt8]
    /// The cut-offs the signer fixed.
    public let cutoffs: [Cutoff]
    /// The whole encoding, signature included: what travels and is kept.
    public let bytes: [UInt8]

    static let magic = Array("LRN1".utf8)
    /// The most cut-offs one notice carries.
    public static let maxCutoffs = 4096
    /// The largest notice read: record, certificate and cut-offs at their limits.
    public static let maxBytes = 16 << 10 + 64 << 10 + maxCutoffs * 112 + 256

    private init(record: Revocation, signer: [UInt8], cutoffs: [Cutoff], bytes: [UInt8]) {
        self.record = record
        self.signer = signer
        self.cutoffs = cutoffs
        self.bytes = bytes
    }

    /// Signs the cut-offs this node fixed for `record`.
    static func sign(_ record: Revocation, cutoffs: [Cutoff], by identity: NodeIdentity) throws -> RevocationNotice {
        var w = ByteWriter(capacity: 1024 + cutoffs.count * 48)
        w.writeBytes(magic)
        w.writeLengthPrefixed(Array(record.encoded))
        w.writeLengthPrefixed(identity.certificate.der)
        w.writeVarint(UInt64(cutoffs.count))
        for c in cutoffs {
            w.writeString(c.dataset)
            c.author.encode(into: &w)
            w.writeVarint(c.seq)
        }
        let signature = try identity.key.signature(for: w.bytes)
        w.writeBytes(signature)
        return RevocationNotice(record: record, signer: identity.certificate.der, cutoffs: cutoffs, bytes: w.bytes)
    }

    /// Reads a notice; nothing in it is checked but its shape.
    public static func decode(_ bytes: [UInt8]) throws -> RevocationNotice {
        guard bytes.count <= maxBytes, bytes.count > 64 else { throw NodeError(.badInput, "a revocation notice of \(bytes.count) bytes") }
        do {
            let (record, signer, cutoffs) = try ByteReader.decodeAll(Array(bytes.dropLast(64)), "revocation notice") {
                r throws(BinaryDecodingError) in
                let at = r.offset
                guard try r.readBytes(4) == magic else { throw BinaryDecodingError(.invalidValue, at: at, "not a revocation notice") }
                let record = try r.readLengthPrefixed(limit: 16 << 10)
                let signer = try r.readLengthPrefixed(limit: 64 << 10)
                let n = try r.readCount(limit: maxCutoffs, "cut-off count")
                var cutoffs: [Cutoff] = []
                for _ in 0..<n {
                    let dataset = try r.readDatasetName()
                    let author = try SiteID(from: &r)
                    let sat = r.offset
                    let seq = try r.readVarint()
                    guard seq <= Limits.maxSeq else { throw BinaryDecodingError(.tooLarge, at: sat, "seq \(seq)") }
                    cutoffs.append(Cutoff(dataset: dataset, author: author, seq: seq))
                }
                return (record, signer, cutoffs)
            }
            return RevocationNotice(record: try Revocation.decode(Data(record)), signer: signer, cutoffs: cutoffs, bytes: bytes)
        } catch let e as BinaryDecodingError {
            throw NodeError(.badInput, "a malformed revocation notice: \(e)")
        }
    }

    /// Checks the CA's signature on the record and the signer's on the
    /// notice, and that the CA certified the signer as an editor or relay.
    /// Returns the signer.
    public func verify(ca: Certificate) throws -> SiteCertificate {
        try record.verify(ca: ca)
        let cert: SiteCertificate
        do {
            cert = try SiteCertificate(der: signer)
        } catch {
            throw NodeError(.badInput, "the revocation notice's signer certificate does not decode")
        }
        guard Identity.isIssued(cert.certificate, by: ca) else {
            throw NodeError(.rejected, "the revocation notice is signed by \(cert.name), whose certificate this cluster's CA did not issue")
        }
        guard cert.role == .editor || cert.role == .relay else {
            throw NodeError(
                .rejected, "the revocation notice is signed by \(cert.name), a \(cert.role.rawValue): only editors and relays fix cut-offs")
        }
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: cert.site.bytes),
            key.isValidSignature(bytes.suffix(64), for: bytes.dropLast(64))
        else {
            throw NodeError(.rejected, "the revocation notice's signature is not \(cert.name)'s")
        }
        return cert
    }
}
