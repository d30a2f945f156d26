import Crypto
import LodeCore
import LodeProtocol
import NIOCore
import NIOSSL
import NIOTLS

/// Completes a promise with the peer's certificate once the TLS handshake
/// is done, or fails it if the connection ends or errs first.
final class HandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    let promise: EventLoopPromise<NIOSSLCertificate>

    init(promise: EventLoopPromise<NIOSSLCertificate>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            do {
                if let cert = try context.pipeline.syncOperations.nioSSL_peerCertificate() {
                    promise.succeed(cert)
                } else {
                    promise.fail(SyncError.noPeerCertificate)
                }
            } catch {
                promise.fail(error)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(SyncError.closedDuringHandshake)
        context.fireChannelInactive()
    }

    /// A channel that never became active (a refused connect) is torn down
    /// without channelInactive; the promise must still be completed.
    func handlerRemoved(context: ChannelHandlerContext) {
        promise.fail(SyncError.closedDuringHandshake)
    }
}

/// Failures of the sync transport.
public enum SyncError: Error, CustomStringConvertible, Sendable {
    case noPeerCertificate
    case closedDuringHandshake
    case handshakeTimeout

    public var description: String {
        switch self {
        case .noPeerCertificate: "the peer presented no certificate"
        case .closedDuringHandshake: "the connection closed during the TLS handshake"
        case .handshakeTimeout: "the TLS handshake did not finish in time"
        }
    }
}

/// Mutual TLS 1.3 for the peer port: both ends present an Ed25519
/// certificate from the cluster CA; anything else fails the handshake.
public struct SyncTLS: Sendable {
    let certificate: NIOSSLCertificate
    let key: NIOSSLPrivateKey
    let ca: NIOSSLCertificate
    /// The cluster id: SHA-256 of the CA certificate (DER).
    public let cluster: [UInt8]

    /// Loads PEM text of the site certificate, its key and the CA.
    public init(certificatePEM: String, keyPEM: String, caPEM: String) throws {
        certificate = try NIOSSLCertificate(bytes: Array(certificatePEM.utf8), format: .pem)
        key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        ca = try NIOSSLCertificate(bytes: Array(caPEM.utf8), format: .pem)
        cluster = Array(SHA256.hash(data: try ca.toDERBytes()))
    }

    func configure(_ c: inout TLSConfiguration) {
        c.trustRoots = .certificates([ca])
        c.certificateVerification = .noHostnameVerification
        c.minimumTLSVersion = .tlsv13
        c.verifySignatureAlgorithms = [.ed25519]
        c.signingSignatureAlgorithms = [.ed25519]
    }

    /// The server side: requires and verifies a client certificate.
    public var serverConfiguration: TLSConfiguration {
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(key))
        configure(&c)
        return c
    }

    /// The server side as a context.
    public func serverContext() throws -> NIOSSLContext { try NIOSSLContext(configuration: serverConfiguration) }

    /// The client side: presents our certificate, verifies the server's.
    public var clientConfiguration: TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        c.certificateChain = [.certificate(certificate)]
        c.privateKey = .privateKey(key)
        configure(&c)
        return c
    }

    /// The client side as a context.
    public func clientContext() throws -> NIOSSLContext { try NIOSSLContext(configuration: clientConfiguration) }
}
