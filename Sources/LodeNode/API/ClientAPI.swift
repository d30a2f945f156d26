import Hummingbird
import LodeProtocol
import LodeSync

/// The node's HTTP/JSON API (documented in `Protocol/client-api.yaml`),
/// organised by resource: status, datasets, tables (rows), annotations,
/// conflicts, and peers with sync. Every route says what permission it
/// needs; the dataset routes resolve their dataset once, for the group.
/// `lode` is a thin client of it; `curl --unix-socket` works as well.
public struct ClientAPI: Sendable {
    let node: Node
    /// The host the peer port listens on, for status.
    let listenHost: String
    /// The node's sync engine.
    let sync: SyncEngine

    /// Creates the API of `node`.
    public init(node: Node, listenHost: String, sync: SyncEngine) {
        self.node = node
        self.listenHost = listenHost
        self.sync = sync
    }

    /// The router for the node's Unix socket: the node's own user.
    func router() -> Router<APIRequestContext> { router(remote: false) }

    /// The router; with `remote`, each client is limited by its certificate's role.
    func router(remote: Bool) -> Router<APIRequestContext> {
        let inner = Router(context: APIRequestContext.self, options: .autoGenerateHeadEndpoints)
        let router = MethodRouter(inner)
        inner.add(middleware: MetricsMiddleware())
        inner.add(middleware: ErrorMiddleware())
        inner.add(middleware: MethodNotAllowedMiddleware(routes: router.methods))
        if remote { inner.add(middleware: RemoteClientMiddleware(node: node)) } else { inner.add(middleware: LocalPersonMiddleware(node: node)) }
        addRoutes(to: router)
        return inner
    }

    /// Adds `/metrics` and the `/v1` routes, each with the permission it needs.
    func addRoutes(to router: MethodRouter<APIRequestContext>) {
        router.on(.get, "metrics", needs: .read) { _, _ in text(NodeServer.metrics.emitToString(), contentType: "text/plain; version=0.0.4") }
        let v1 = router.group("v1")
        StatusRoutes(api: self).add(to: v1)
        PeerRoutes(node: node, sync: sync, status: StatusRoutes(api: self)).add(to: v1)
        DatasetRoutes(node: node).add(to: v1)
        PeopleRoutes(node: node).add(to: v1)
        let dataset = v1.group("datasets/:ds").add(middleware: DatasetMiddleware(node: node)).group(context: DatasetRequestContext.self)
        DatasetRoutes(node: node).add(toDataset: dataset)
        TableRoutes(node: node).add(to: dataset)
        AnnotationRoutes().add(to: dataset)
        ConflictRoutes().add(to: dataset)
    }
}
