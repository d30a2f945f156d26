import Hummingbird
import HummingbirdTLS
import LodeProtocol
import LodeSync
import Logging
import NIOCore
import ServiceLifecycle

/// The client API for remote clients (`lode --node HOST:PORT --cert --key
/// --ca`): the same routes over mutual TLS, each client limited by its
/// certificate's role (`RemoteClientMiddleware`). A connection that sends
/// no request for `idleTimeout` (one that never finishes its TLS handshake
/// too: nothing reaches the HTTP layer) is closed.
enum RemoteAPI {
    static func application(api: ClientAPI, tls: SyncTLS, address: PeerAddress, idleTimeout: Duration, logger: Logger) throws -> any Service {
        let (seconds, attoseconds) = idleTimeout.components
        let idle = TimeAmount.nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        return Application(
            router: api.router(remote: true),
            server: try .tls(.http1(configuration: .init(idleTimeout: idle)), tlsConfiguration: tls.serverConfiguration),
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: "lode"),
            logger: logger)
    }
}
