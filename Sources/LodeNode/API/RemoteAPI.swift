import Crypto
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import LodeCore
import LodeProtocol
import LodeSync
import Logging
import NIOCore
import NIOHTTPTypes
import NIOSSL
import NIOTLS
import ServiceLifecycle
import Synchronization

/// The client API for remote clients (`lode --node HOST:PORT --cert --key
/// --ca`): the same routes over mutual TLS, each client limited by its
/// certificate's role (`RemoteClientMiddleware`). A connection that sends
/// no request for `idleTimeout` (one that never finishes its TLS handshake
/// too: nothing reaches the HTTP layer) is closed.
///
/// Each connection is also watched by a `ClientConnectionGuard`: one client
/// certificate holds at most `RemoteAPI.connectionsPerCertificate`
/// connections at once, and a request head must arrive whole within the
/// idle timeout of the connection opening or of the last response (a client
/// dripping a header a byte at a time resets the idle timer, not this one).
enum RemoteAPI {
    /// The most connections one client certificate holds at once (DESIGN §9).
    static let connectionsPerCertificate = 16

    static func application(api: ClientAPI, tls: SyncTLS, address: PeerAddress, idleTimeout: Duration, logger: Logger) throws -> any Service {
        let idle = TimeAmount.nanoseconds(idleTimeout.nanoseconds)
        let counts = CertificateConnections(limit: connectionsPerCertificate)
        let http = HTTPServerBuilder.http1(
            configuration: .init(
                additionalChannelHandlers: [ClientConnectionGuard(counts: counts, headTimeout: idle, logger: logger)], idleTimeout: idle))
        return Application(
            router: api.router(remote: true),
            server: try .tls(http, tlsConfiguration: tls.serverConfiguration),
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: "lode"),
            logger: logger)
    }
}

/// How many connections each client certificate holds.
final class CertificateConnections: Sendable {
    let limit: Int
    private let counts = Mutex<[[UInt8]: Int]>([:])
    init(limit: Int) { self.limit = limit }

    /// Counts one more connection of `key`, unless it holds `limit` already.
    func admit(_ key: [UInt8]) -> Bool {
        counts.withLock { c in
            guard c[key, default: 0] < limit else { return false }
            c[key, default: 0] += 1
            return true
        }
    }

    func release(_ key: [UInt8]) {
        counts.withLock { c in
            c[key, default: 1] -= 1
            if c[key] == 0 { c[key] = nil }
        }
    }
}

/// Closes a remote API connection whose certificate holds too many
/// connections already, or whose request head does not arrive whole in
/// time. A connection counts until the node sees it end: one a client
/// dropped without the node noticing holds its slot until the idle timeout
/// closes it. Sits after the HTTP decoder; sees the TLS handshake's end as an
/// event passed down the pipeline.
final class ClientConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let counts: CertificateConnections
    let headTimeout: TimeAmount
    let logger: Logger
    private var key: [UInt8]?
    private var deadline: Scheduled<Void>?

    init(counts: CertificateConnections, headTimeout: TimeAmount, logger: Logger) {
        self.counts = counts
        self.headTimeout = headTimeout
        self.logger = logger
    }

    private func arm(_ context: ChannelHandlerContext) {
        deadline?.cancel()
        let channel = context.channel
        let logger = logger
        deadline = context.eventLoop.scheduleTask(in: headTimeout) {
            logger.notice(
                "closed a remote API connection: no whole request head in time", metadata: ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"]
            )
            channel.close(promise: nil)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) { arm(context) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            deadline?.cancel()
            deadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // The next request's head is due within the timeout of this response's end.
        if case .end = unwrapOutboundIn(data) { arm(context) }
        context.write(data, promise: promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e,
            let cert = try? context.pipeline.syncOperations.nioSSL_peerCertificate(), let der = try? cert.toDERBytes()
        {
            let key = Array(SHA256.hash(data: der))
            if counts.admit(key) {
                self.key = key
            } else {
                logger.notice(
                    "refused a remote API connection: its certificate holds the most connections allowed",
                    metadata: ["limit": "\(counts.limit)"])
                context.close(promise: nil)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        if let key {
            counts.release(key)
            self.key = nil
        }
        context.fireChannelInactive()
    }
}
