import Hummingbird
import HummingbirdTLS
import LodeProtocol
import LodeSync
import Logging
import ServiceLifecycle

/// The client API for remote clients (`lode --node HOST:PORT --cert --key
/// --ca`): the same routes over mutual TLS, each client limited by its
/// certificate's role (`RemoteClientMiddleware`).
enum RemoteAPI {
    static func application(api: ClientAPI, tls: SyncTLS, address: PeerAddress, logger: Logger) throws -> any Service {
        Application(
            router: api.router(remote: true),
            server: try .tls(.http1(), tlsConfiguration: tls.serverConfiguration),
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: "lode"),
            logger: logger)
    }
}
