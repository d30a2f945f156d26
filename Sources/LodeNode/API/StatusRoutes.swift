import Hummingbird
import LodeProtocol
import LodeSync

/// `GET /v1/status`: who this node is, its datasets and its peers.
struct StatusRoutes: Sendable {
    let api: ClientAPI

    func add(to group: RouterGroup<APIRequestContext>) {
        group.on(.get, "status", needs: .read) { _, _ in try json(try await status()) }
    }

    func status() async throws -> API.Status {
        let id = api.node.identity.certificate
        return API.Status(
            site: id.name, siteKey: id.site.hex, role: id.role.rawValue, cluster: id.cluster,
            listen: "\(api.listenHost):\(api.sync.port ?? 0)", dataDir: api.node.paths.dataDir, version: Node.version,
            datasets: try await DatasetRoutes(node: api.node).infos(), peers: await peers())
    }

    func peers() async -> [API.PeerInfo] {
        await api.sync.status().map(API.PeerInfo.init)
    }
}

extension API.PeerInfo {
    /// A peer as the sync engine reports it.
    init(_ p: PeerStatus) {
        self.init(address: p.address, state: p.state, site: p.siteName, datasets: p.lag.isEmpty ? nil : p.lag, lastError: p.lastError)
    }
}
