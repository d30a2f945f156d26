import AsyncHTTPClient
import Foundation
import LodeCore
import LodeStore
import LodeSync
import LodeTestSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import LodeNode

/// A free TCP port on loopback, never handed to another test of this process.
func freePort() throws -> Int { TestPorts.fresh() }

/// One node of an in-process cluster: a real `NodeServer` with its own
/// data directory, peer port (real TLS on loopback) and Unix socket.
final class TestNode: @unchecked Sendable {
    let name: String
    let dir: String
    let port: Int
    private var launched: LaunchedNode?
    var running: RunningNode? { launched?.running }
    /// A session closes after this long without hearing anything.
    var silenceTimeout: Duration = .seconds(45)
    /// How far ahead of the wall clock (ms) a commit may be stamped.
    var maxClockDrift = CommitVerifier.defaultMaxClockDrift

    init(name: String, role: Role, caDir: String, root: String) throws {
        self.name = name
        dir = root + "/" + name
        port = try freePort()
        try Node.initialize(dataDir: dir, site: name, role: role, caDir: caDir)
    }

    var address: String { "127.0.0.1:\(port)" }
    var node: Node { running!.node }
    var sync: SyncEngine { running!.sync }

    /// Starts the node (again); waits until it serves.
    func start() async throws {
        var options = ServeOptions(dataDir: dir, listen: address)
        // No workspace: these nodes are driven through their API, and the
        // default port 7480 is contended by the CLI tests' nodes.
        options.web = "off"
        options.handleSignals = false
        options.maxClockDrift = maxClockDrift
        let silence = silenceTimeout
        options.syncTuning = { c in
            c.vectorInterval = .seconds(3)
            c.silenceTimeout = silence
        }
        var logger = Logger(label: name)
        logger.logLevel = ProcessInfo.processInfo.environment["LODE_TEST_LOG"] == "1" ? .debug : .critical
        launched = try await NodeServer.launch(options, logger: logger)
    }

    /// Stops the node (as SIGTERM would) and waits until it has.
    func stop() async {
        await launched?.stop()
        launched = nil
    }

    /// Dials `other`.
    func connect(to other: TestNode) throws {
        try node.addPeer(other.address)
        sync.peersChanged()
    }

    func replica(_ ds: String) throws -> any SQLReplicaStore { try node.replica(ds) }

    /// Every user table of a dataset, schema included, as text.
    func dump(_ ds: String) async throws -> [String] {
        let r = try replica(ds)
        var out = [try await r.schemaSQL()]
        for t in try await r.schema() {
            let rows = Lines()
            try await r.query("SELECT * FROM \(t.name) ORDER BY 1") { e in rows.add("\(e)") }
            out += rows.all
        }
        let notes = Lines()
        try await r.query("SELECT id, target_table, target_pk, body, author FROM _annotations ORDER BY id") { e in notes.add("\(e)") }
        return out + notes.all
    }
}

final class Lines: @unchecked Sendable {
    private var items: [String] = []
    private let lock = NSLock()
    func add(_ s: String) { lock.withLock { items.append(s) } }
    var all: [String] { lock.withLock { items } }
}

/// Waits until the cluster has converged: every node holds the same
/// datasets with the same vectors, and every node's `sync --wait` succeeds.
/// Returns what is still apart at the timeout. With `vectorsOnly`, only
/// the vectors count (a node whose other peers are down never says it is
/// in sync).
func waitForSync(_ nodes: [TestNode], timeout: Duration = .seconds(30), vectorsOnly: Bool = false) async -> [String] {
    let deadline = ContinuousClock.now + timeout
    var apart: [String] = []
    for n in nodes { n.sync.syncNow() }  // as `lode sync --wait` does
    while ContinuousClock.now < deadline {
        apart = []
        for n in nodes where !vectorsOnly {
            let r = await n.sync.waitUntilInSync(timeout: .milliseconds(200))
            apart += r.apart.map { "\(n.name): \($0)" }
        }
        let vectors = nodes.map { n in
            Dictionary(uniqueKeysWithValues: n.node.datasetNames().map { ($0, (try? n.node.replica($0).vector) ?? VersionVector()) })
        }
        if vectors.dropFirst().contains(where: { $0 != vectors[0] }) { apart.append("vectors differ: \(vectors)") }
        if apart.isEmpty { return [] }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return apart
}

/// One request to a node's client API over its Unix socket: status and body.
func apiRequest(_ socket: String, _ path: String, method: HTTPMethod = .GET, body: String? = nil) async throws -> (UInt, String) {
    var req = HTTPClientRequest(url: URL(httpURLWithSocketPath: socket, uri: path)!.absoluteString)
    req.method = method
    if let body {
        req.body = .bytes(ByteBuffer(string: body))
        req.headers.add(name: "Content-Type", value: path.hasSuffix("/import") ? "text/csv" : "application/json")
    }
    let res = try await HTTPClient.shared.execute(req, timeout: .seconds(30))
    let bytes = try await res.body.collect(upTo: 16 << 20)
    return (res.status.code, String(buffer: bytes))
}
