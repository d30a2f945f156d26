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
