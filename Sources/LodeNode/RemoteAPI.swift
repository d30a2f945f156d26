import Hummingbird
import HummingbirdTLS
import LodeCore
import LodeSync
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// The request context of the client API over mutual TLS: it can read the
/// client's certificate, whose role limits what the client may do.
struct RemoteRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The role in the client's certificate (verified against the cluster
    /// CA by the TLS handshake).
    func clientRole() async -> Role? {
        guard let cert = try? await channel.nioSSL_peerCertificate().get(), let der = try? cert.toDERBytes() else { return nil }
        return try? SiteCertificate(der: der).role
    }
}

/// The client API for remote clients (`lode --node HOST:PORT --cert --key --ca`).
enum RemoteAPI {
    static func application(api: ClientAPI, tls: SyncTLS, host: String, port: Int, logger: Logger) throws -> any Service {
        let router = api.router(RemoteRequestContext.self, role: { await $0.clientRole() })
        return Application(
            router: router,
            server: try .tls(.http1(), tlsConfiguration: tls.serverConfiguration),
            configuration: .init(address: .hostname(host, port: port), serverName: "lode"),
            logger: logger)
    }
}
