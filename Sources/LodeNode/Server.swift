import Foundation
import Hummingbird
import LodeCore
import LodeProtocol
import LodeStore
import LodeSync
import Logging
import Metrics
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization

/// How `lode serve` runs a node.
public struct ServeOptions: Sendable {
    /// The data directory.
    public var dataDir: String
    /// Where peers connect (`HOST:PORT`; port 0 picks a free port).
    public var listen: String
    /// Peers to dial, beside those stored.
    public var peers: [String]
    /// Where remote clients reach the client API over mutual TLS, if anywhere.
    public var apiListen: String?
    /// Where the workspace listens: nil for the default (127.0.0.1:7480, or
    /// a free port if that one is taken), "off" for none; an address given
    /// must bind.
    public var web: String?
    /// The workspace's address when `web` is nil.
    public var defaultWeb = "127.0.0.1:7480"
    /// Probe the default workspace port before binding it (tests turn this
    /// off to exercise the fall-back when the bind itself finds it taken).
    var probeWebPort = true
    /// Stop on SIGINT and SIGTERM (off for nodes run inside tests).
    public var handleSignals = true
    /// How far ahead of this node's wall clock (milliseconds) a commit from
    /// elsewhere may be stamped and still apply at once (DESIGN §9).
    public var maxClockDrift = CommitVerifier.defaultMaxClockDrift
    /// How long a remote client's connection (`apiListen`) may go without
    /// a request, its TLS handshake included, before it is closed.
    public var apiIdleTimeout: Duration = .seconds(30)
    /// Where operators' plain HTTP listens (`/metrics`, `/healthz`,
    /// `/readyz`), if anywhere.
    public var opsListen: String?
    /// The PostgreSQL database to keep the datasets in
    /// (`postgresql://USER@HOST:PORT/DB`), or nil for SQLite files in the
    /// data directory.
    public var store: String?
    /// Signatures a checkpoint needs to be complete here (nil: as stored,
    /// default 2).
    public var checkpointQuorum: Int?
    /// How often the node looks for checkpoints to co-sign.
    public var checkpointInterval: Duration = .seconds(2)
    /// Adjusts the sync sessions' timing (tests shorten it).
    public var syncTuning: @Sendable (inout SyncStateMachine.Config) -> Void = { _ in }

    public init(dataDir: String, listen: String = "127.0.0.1:7443", peers: [String] = [], apiListen: String? = nil) {
        self.dataDir = dataDir
        self.listen = listen
        self.peers = peers
        self.apiListen = apiListen
    }
}

/// A node while it runs: for callers that need its parts (tests, the demo).
public struct RunningNode: Sendable {
    public let node: Node
    public let sync: SyncEngine
}

/// Runs a node until SIGINT or SIGTERM (or cancellation): peer sync on the
/// listen address and the client API on the Unix socket (and, if asked,
/// over mutual TLS), as services of one ServiceGroup that shuts down
/// gracefully.
public enum NodeServer {
    /// The Prometheus registry every node metric goes to.
    public static let metrics = PrometheusCollectorRegistry()

    private static let bootstrapMetricsOnce: Void = {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics))
    }()

    /// Runs the node in `options.dataDir`, which must hold one. `ready` is
    /// called once the socket accepts connections and sync is listening.
    public static func run(_ options: ServeOptions, logger: Logger, ready: @escaping @Sendable (RunningNode) -> Void = { _ in }) async throws {
        _ = bootstrapMetricsOnce
        let lock = try DataDirLock(NodePaths(options.dataDir).lock)
        defer { lock.release() }
        let node: Node
        if let store = options.store {
            node = try await Node.open(dataDir: options.dataDir, maxClockDrift: options.maxClockDrift, store: store)
        } else {
            node = try Node.open(dataDir: options.dataDir, maxClockDrift: options.maxClockDrift)
        }
        defer { node.close() }

        for p in options.peers { try node.addPeer(p) }
        do {
            // A crash between keeping a cut-off and cutting a replica is finished here.
            try await node.cutReplicas()
        } catch {
            // Commits past a cut-off are still refused; what was applied stays until the next start.
            logger.error("could not drop what lies past the cut-offs", metadata: ["error": "\(error)"])
        }
        if let q = options.checkpointQuorum { try node.setSetting(Node.checkpointQuorumSetting, String(q)) }
        let listen = try address(options.listen)
        let apiAddress = try options.apiListen.map { try address($0) }
        do {
            try node.setSetting("listen", options.listen)
        } catch {
            // Informational only: a node must come up on a full disk to serve reads.
            logger.warning("could not record the listen address", metadata: ["error": "\(error)"])
        }
        let socket = node.paths.socket
        if FileManager.default.fileExists(atPath: socket) { try FileManager.default.removeItem(atPath: socket) }
        defer { try? FileManager.default.removeItem(atPath: socket) }

        let tls = try node.tls()
        let engine = SyncEngine(
            host: NodeSyncHost(node: node, logger: logger), tls: tls, listen: listen,
            peers: { (try? node.peers()) ?? [] }, logger: logger, tuning: options.syncTuning)
        node.onChange { engine.localChanged() }
        // Other processes' commits in a shared database reach this one's
        // peers, and so do their authors' certificates.
        let follower = node.postgres.map { pg in
            Task {
                await pg.follow(beforeRefresh: {
                    if let adopted = try? await node.adoptStoreCertificates() { engine.share(certificates: adopted) }
                })
            }
        }
        defer { follower?.cancel() }
        let running = RunningNode(node: node, sync: engine)
        let api = ClientAPI(node: node, listenHost: listen.host, sync: engine)
        let router = api.router()
        let app = Application(
            router: router,
            configuration: .init(address: .unixDomainSocket(path: socket), serverName: "lode"),
            onServerRunning: { _ in
                chmod(socket, 0o600)
                // Report ready once sync has its port too, and the workspace its own.
                while (engine.port == nil || (options.web != "off" && node.webAddress.withLock({ $0 }) == nil)) && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(10))
                }
                // A node that failed to start (a listener that cannot bind) is not ready.
                guard !Task.isCancelled else { return }
                ready(running)
            },
            logger: logger)
        var services: [any Service] = [engine, app, CheckpointService(node: node, interval: options.checkpointInterval, logger: logger)]
        var releaseClaim: Int?
        defer { if let p = releaseClaim { _ = claimedWebPorts.withLock { $0.remove(p) } } }
        if options.web != "off" {
            let asked = try address(options.web ?? options.defaultWeb)
            var port = asked.port
            // The default port is claimed in this process first (nodes started
            // together in one process, as tests do, would otherwise all find
            // it free), then probed for other processes.
            let claimed = options.web == nil && claimedWebPorts.withLock { $0.insert(port).inserted }
            if claimed { releaseClaim = asked.port }
            if options.web == nil && (!claimed || (options.probeWebPort && !portIsFree(asked.host, port))) {
                logger.notice("port \(port) is taken (another node on this machine?): the workspace takes a free one; `lode ui` shows it")
                port = 0
            }
            services.append(
                WorkspaceService(
                    workspace: Workspace(api: api), host: asked.host, port: port, fallBack: options.web == nil, node: node, logger: logger))
        }
        if let ops = options.opsListen {
            let at = try address(ops)
            services.append(OpsService(monitor: OpsMonitor(node: node, engine: engine), host: at.host, port: at.port, logger: logger))
        }
        if let apiAddress {
            services.append(
                try RemoteAPI.application(api: api, tls: tls, address: apiAddress, idleTimeout: options.apiIdleTimeout, logger: logger))
        }
        let group = ServiceGroup(
            services: services, gracefulShutdownSignals: options.handleSignals ? [.sigterm, .sigint] : [], logger: logger)
        try await group.run()
    }
}

/// The workspace's listener. On the default address, a port another
/// process took between the probe and the bind is no failure: the
/// workspace takes a free port instead (an address given must bind).
struct WorkspaceService: Service {
    let workspace: Workspace
    let host: String
    let port: Int
    let fallBack: Bool
    let node: Node
    let logger: Logger

    func run() async throws {
        do {
            try await application(port: port).run()
        } catch let e as IOError where fallBack && port != 0 && e.errnoCode == EADDRINUSE {
            logger.notice("port \(port) was taken meanwhile (another node on this machine?): the workspace takes a free one; `lode ui` shows it")
            try await application(port: 0).run()
        } catch let e as IOError where e.errnoCode == EADDRINUSE || e.errnoCode == EADDRNOTAVAIL || e.errnoCode == EACCES {
            throw NodeError(
                .unavailable,
                "the workspace cannot listen on \(host):\(port): \(String(cString: strerror(e.errnoCode))); give another --web HOST:PORT, or --web off"
            )
        }
    }

    private func application(port wanted: Int) -> some Service {
        let bound = Mutex<Int?>(nil)
        let host = host, node = node
        return Application(
            router: workspace.router(host: host, port: { bound.withLock { $0 } }),
            configuration: .init(address: .hostname(host, port: wanted), serverName: "lode"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? wanted
                bound.withLock { $0 = port }
                node.webAddress.withLock { $0 = "\(host):\(port)" }
            },
            logger: logger)
    }
}

/// Default workspace ports taken by nodes running in this process.
private let claimedWebPorts = Mutex<Set<Int>>([])

/// True when nothing listens on `host:port` (a bind there succeeds).
private func portIsFree(_ host: String, _ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var on: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = in_port_t(UInt16(port).bigEndian)
    guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &a.sin_addr) == 1 else { return true }
    return withUnsafePointer(to: &a) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// A listen address, where port 0 asks for any free port.
private func address(_ s: String) throws -> PeerAddress {
    do {
        return try PeerAddress(s, allowZero: true)
    } catch {
        throw NodeError(.badInput, error.message)
    }
}

/// A node started inside this process (the demo, benchmarks, tests).
public final class LaunchedNode: Sendable {
    /// The node and its sync engine.
    public let running: RunningNode
    private let task: Task<Void, Error>

    init(running: RunningNode, task: Task<Void, Error>) {
        self.running = running
        self.task = task
    }

    /// Stops the node as SIGTERM would, and waits until it has.
    public func stop() async {
        task.cancel()
        _ = await task.result
    }
}

extension NodeServer {
    /// Starts a node in a task of its own and returns once it serves.
    public static func launch(_ options: ServeOptions, logger: Logger) async throws -> LaunchedNode {
        let (stream, continuation) = AsyncStream.makeStream(of: RunningNode.self)
        let task = Task {
            defer { continuation.finish() }
            try await run(options, logger: logger) { continuation.yield($0) }
        }
        for await running in stream { return LaunchedNode(running: running, task: task) }
        _ = try await task.value
        throw NodeError(.unavailable, "the node in \(options.dataDir) stopped before it served")
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
