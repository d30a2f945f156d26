import Crypto
import Foundation
import LodeCore
import LodeStore
import SwiftASN1
import X509

/// A cluster CA: its certificate and its signing key.
public struct CertificateAuthority: Sendable {
    public let certificate: Certificate
    public let key: Curve25519.Signing.PrivateKey
}

/// What a site certificate says: the site key, its name, role and cluster.
public struct SiteCertificate: Sendable {
    /// The certificate.
    public let certificate: Certificate
    /// The site id: the certificate's Ed25519 public key.
    public let site: SiteID
    /// The site name (subject CN).
    public let name: String
    /// The role (subject OU).
    public let role: Role
    /// The cluster name (subject O).
    public let cluster: String

    /// Reads a site certificate, refusing one that does not carry an
    /// Ed25519 key, a name and a known role.
    public init(_ certificate: Certificate) throws {
        self.certificate = certificate
        guard let key = Curve25519.Signing.PublicKey(certificate.publicKey) else {
            throw NodeError(.badInput, "the certificate's key is not Ed25519")
        }
        site = try SiteID(bytes: key.rawRepresentation)
        var cn: String?, ou: String?, o: String?
        for rdn in certificate.subject {
            for attr in rdn {
                switch attr.type {
                case .RDNAttributeType.commonName: cn = String(attr.value)
                case .RDNAttributeType.organizationalUnitName: ou = String(attr.value)
                case .RDNAttributeType.organizationName: o = String(attr.value)
                default: break
                }
            }
        }
        guard let cn else { throw NodeError(.badInput, "the certificate names no site (no CN)") }
        guard let ou, let role = Role(rawValue: ou) else {
            throw NodeError(.badInput, "the certificate of \(cn) grants no known role (OU must be editor, annotator, reader or relay)")
        }
        name = cn
        self.role = role
        cluster = o ?? ""
    }

    /// Reads DER bytes.
    public init(der: [UInt8]) throws { try self.init(Certificate(derEncoded: der)) }

    /// The DER encoding.
    public var der: [UInt8] { Identity.der(certificate) }
}

/// Creating and loading the cluster CA and site identities.
public enum Identity {
    /// The name rule for sites and clusters (the dataset name rule).
    public static func checkName(_ name: String, _ what: String) throws {
        guard Identifier.isValidDataset(name) else {
            throw NodeError(
                .badInput, "\"\(name)\" is not a valid \(what) name: use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit"
            )
        }
    }

    /// Creates a cluster CA in `dir`: `ca.pem` and `ca.key` (mode 0600).
    /// Refuses to overwrite either.
    @discardableResult
    public static func createCA(dir: String, cluster: String) throws -> Certificate {
        try checkName(cluster, "cluster")
        let certPath = dir + "/ca.pem", keyPath = dir + "/ca.key"
        for p in [certPath, keyPath] where FileManager.default.fileExists(atPath: p) {
            throw NodeError(.alreadyExists, "\(p) already exists; refusing to overwrite a CA")
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let key = Curve25519.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName(cluster)
            CommonName("\(cluster) Lodestone CA")
        }
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(20 * 365 * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ed25519,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(key.publicKey))
            },
            issuerPrivateKey: .init(key))
        try writeSecret(Certificate.PrivateKey(key).serializeAsPEM().pemString, to: keyPath)
        try writeFile(cert.serializeAsPEM().pemString, to: certPath)
        return cert
    }

    /// A certificate's DER encoding.
    static func der(_ c: Certificate) -> [UInt8] {
        var s = DER.Serializer()
        try! s.serialize(c)
        return s.serializedBytes
    }

    /// Loads the CA certificate and key from `dir`.
    public static func loadCA(dir: String) throws -> CertificateAuthority {
        let cert = try loadCertificate(dir + "/ca.pem")
        let keyPath = dir + "/ca.key"
        guard let pem = try? String(contentsOfFile: keyPath, encoding: .utf8) else {
            throw NodeError(.notFound, "no CA key at \(keyPath): create a CA with `lode ca init --dir \(dir)`")
        }
        let key = try Curve25519.Signing.PrivateKey(pemRepresentation: pem)
        guard key.publicKey.rawRepresentation == Curve25519.Signing.PublicKey(cert.publicKey)?.rawRepresentation else {
            throw NodeError(.badInput, "\(keyPath) does not match \(dir)/ca.pem")
        }
        return CertificateAuthority(certificate: cert, key: key)
    }

    /// Issues a certificate for a site key, naming the site, its role and
    /// the cluster, valid for both TLS ends and for signing commits.
    /// Valid from an hour ago for five years unless `validity` says otherwise.
    public static func issueSite(
        name: String, role: Role, key: Curve25519.Signing.PublicKey,
        ca: Certificate, caKey: Curve25519.Signing.PrivateKey, validity: ClosedRange<Date>? = nil
    ) throws -> Certificate {
        try checkName(name, "site")
        let cluster = ca.subject.flatMap { $0 }.first { $0.type == .RDNAttributeType.organizationName }.flatMap { String($0.value) } ?? "lodestone"
        let now = Date()
        var sans: [GeneralName] = [.dnsName("localhost")]
        if name.contains(where: { $0.isLetter }) { sans.insert(.dnsName(name), at: 0) }
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key),
            notValidBefore: validity?.lowerBound ?? now.addingTimeInterval(-3600),
            notValidAfter: validity?.upperBound ?? now.addingTimeInterval(5 * 365 * 86400),
            issuer: ca.subject,
            subject: try DistinguishedName {
                OrganizationName(cluster)
                OrganizationalUnitName(role.rawValue)
                CommonName(name)
            },
            signatureAlgorithm: .ed25519,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(sans)
                SubjectKeyIdentifier(hash: .init(key))
                AuthorityKeyIdentifier(keyIdentifier: try ca.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: .init(caKey))
    }

    /// Reads a PEM certificate file.
    public static func loadCertificate(_ path: String) throws -> Certificate {
        guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw NodeError(.notFound, "no certificate at \(path)")
        }
        do {
            return try Certificate(pemEncoded: pem)
        } catch {
            throw NodeError(.badInput, "\(path) is not a PEM certificate: \(error)")
        }
    }

    /// Writes a file readable and writable by its owner only (0600),
    /// created exclusively so that an existing file is never overwritten.
    public static func writeSecret(_ text: String, to path: String) throws {
        try writeNew(text, to: path, mode: 0o600)
    }

    /// Writes a file that must not exist yet (0644).
    public static func writeFile(_ text: String, to path: String) throws {
        try writeNew(text, to: path, mode: 0o644)
    }

    private static func writeNew(_ text: String, to path: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw NodeError(errno == EEXIST ? .alreadyExists : .storage, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            throw NodeError(.storage, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// True when `certificate` was signed by `ca` and is valid now.
    public static func isIssued(_ certificate: Certificate, by ca: Certificate, at now: Date = Date()) -> Bool {
        certificate.issuer == ca.subject
            && ca.publicKey.isValidSignature(certificate.signature, for: certificate)
            && certificate.notValidBefore <= now && now <= certificate.notValidAfter
    }
}
