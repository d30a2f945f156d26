import Foundation
import Hummingbird
import LodeCore
import LodeProtocol
import LodeStore
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle

/// How `lode serve` runs a node.
public struct ServeOptions: Sendable {
    /// The data directory.
    public var dataDir: String
    /// Where peers connect (`HOST:PORT`).
    public var listen: String
    /// Peers to dial, beside those stored.
    public var peers: [String]
    public init(dataDir: String, listen: String = "127.0.0.1:7443", peers: [String] = []) {
        self.dataDir = dataDir
        self.listen = listen
        self.peers = peers
    }
}

/// Runs a node until SIGINT or SIGTERM: the client API on the Unix socket,
/// as services of one ServiceGroup that shuts down gracefully.
public enum NodeServer {
    /// The Prometheus registry every node metric goes to.
    public static let metrics = PrometheusCollectorRegistry()

    private static let bootstrapMetricsOnce: Void = {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics))
    }()

    /// Runs the node in `options.dataDir`, which must hold one. `ready` is
    /// called once the socket accepts connections.
    public static func run(_ options: ServeOptions, logger: Logger, ready: @escaping @Sendable (Node) -> Void = { _ in }) async throws {
        _ = bootstrapMetricsOnce
        let lock = try DataDirLock(NodePaths(options.dataDir).lock)
        defer { lock.release() }
        let node = try Node.open(dataDir: options.dataDir)
        defer { node.close() }
        for p in options.peers { try node.addPeer(p) }
        try PeerAddress.check(options.listen, allowZero: true)
        try node.setSetting("listen", options.listen)
        let socket = node.paths.socket
        if FileManager.default.fileExists(atPath: socket) { try FileManager.default.removeItem(atPath: socket) }
        defer { try? FileManager.default.removeItem(atPath: socket) }

        let api = ClientAPI(node: node, listen: options.listen)
        let router = api.router()
        router.get("metrics") { _, _ in
            text(metrics.emitToString(), contentType: "text/plain; version=0.0.4")
        }
        let app = Application(
            router: router,
            configuration: .init(address: .unixDomainSocket(path: socket), serverName: "lode"),
            onServerRunning: { _ in
                chmod(socket, 0o600)
                ready(node)
            },
            logger: logger)
        let group = ServiceGroup(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}

/// An exclusive lock on a file, held while a node runs in a directory.
final class DataDirLock: Sendable {
    let fd: Int32
    init(_ path: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw NodeError(.storage, "cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw NodeError(.alreadyExists, "another `lode serve` is running with data directory \((path as NSString).deletingLastPathComponent)")
        }
    }
    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
