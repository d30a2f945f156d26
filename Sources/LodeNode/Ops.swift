import Foundation
import Hummingbird
import LodeCore
import LodeProtocol
import LodeStore
import LodeSync
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization

/// What operators watch, on `lode serve --ops-listen HOST:PORT` (plain
/// HTTP, for Prometheus and Kubernetes probes): `/metrics`, `/healthz`
/// (the process answers) and `/readyz` (it can serve: see `readiness`).
/// The node's counters and histograms are recorded where things happen;
/// the gauges below are refreshed every two seconds by `OpsMonitor`.
struct OpsService: Service {
    let monitor: OpsMonitor
    let host: String
    let port: Int
    let logger: Logger

    func run() async throws {
        let router = Router()
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: NodeServer.metrics.emitToString())))
        }
        router.get("healthz") { _, _ in "ok\n" }
        router.get("readyz") { _, _ in
            let reasons = await monitor.readiness()
            return Response(
                status: reasons.isEmpty ? .ok : .serviceUnavailable, headers: [.contentType: "text/plain; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: reasons.isEmpty ? "ready\n" : "not ready: " + reasons.joined(separator: "; ") + "\n")))
        }
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "lode"), logger: logger)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await app.run() }
                group.addTask { await monitor.run() }
                try await group.next()
                group.cancelAll()
            }
        } catch let e as IOError where e.errnoCode == EADDRINUSE || e.errnoCode == EADDRNOTAVAIL || e.errnoCode == EACCES {
            throw NodeError(.unavailable, "--ops-listen cannot listen on \(host):\(port): \(String(cString: strerror(e.errnoCode)))")
        }
    }
}

/// Keeps the node's gauges current: each peer's state and lag (in
/// commits, and in seconds since it was last in sync), sessions open, each
/// dataset's log, size and refusals, and whether the store answers.
final class OpsMonitor: Sendable {
    let node: Node
    let engine: SyncEngine
    /// This node is not ready while it lacks more than this many commits
    /// a connected peer holds (a first sync still running).
    let readyLag: UInt64
    private let lastInSync = Mutex<[String: ContinuousClock.Instant]>([:])
    private let reachable = Mutex(true)

    init(node: Node, engine: SyncEngine, readyLag: UInt64 = 10_000) {
        self.node = node
        self.engine = engine
        self.readyLag = readyLag
    }

    func run() async {
        while !Task.isCancelled {
            await update()
            try? await Task.sleep(for: .seconds(2))
        }
    }

    /// Whether the store answers (PostgreSQL within two seconds; SQLite
    /// files always do).
    func storeReachable() async -> Bool {
        guard let pg = node.postgres else { return true }
        let up = await pg.isReachable()
        reachable.withLock { $0 = up }
        return up
    }

    /// Why the node cannot serve now; empty when it can: the store answers,
    /// sync listens, and it is not still catching up with a connected peer.
    func readiness() async -> [String] {
        var reasons: [String] = []
        if !(await storeReachable()) { reasons.append("the store (PostgreSQL) does not answer") }
        if engine.port == nil { reasons.append("sync is not listening yet") }
        for p in await engine.status() where p.state == .connected || p.state == .accepted {
            let behind = p.lag.values.reduce(UInt64(0)) { $0 + $1.behind }
            if behind > readyLag { reasons.append("catching up with \(p.siteName ?? p.address): \(behind) commits to go") }
        }
        return reasons
    }

    func update() async {
        let now = ContinuousClock.now
        let peers = await engine.status()
        var open = 0
        for p in peers {
            let name = p.siteName ?? p.address
            let up = p.state == .connected || p.state == .accepted
            if up { open += 1 }
            Gauge(label: "lode_peer_connected", dimensions: [("peer", name)]).record(up ? 1 : 0)
            for (dataset, lag) in p.lag {
                Gauge(label: "lode_peer_lag_commits", dimensions: [("peer", name), ("dataset", dataset), ("side", "peer_lacks")]).record(
                    Int(lag.ahead))
                Gauge(label: "lode_peer_lag_commits", dimensions: [("peer", name), ("dataset", dataset), ("side", "node_lacks")]).record(
                    Int(lag.behind))
            }
            let since = lastInSync.withLock { seen -> ContinuousClock.Instant in
                if p.inSync || seen[name] == nil { seen[name] = now }
                return seen[name]!
            }
            Gauge(label: "lode_peer_lag_seconds", dimensions: [("peer", name)]).record((now - since).seconds)
        }
        Gauge(label: "lode_sessions_open").record(open)
        for state in PeerState.allCases {
            Gauge(label: "lode_peers", dimensions: [("state", state.rawValue)]).record(peers.filter { $0.state == state }.count)
        }
        for name in node.datasetNames() {
            guard let r = try? node.replica(name) else { continue }
            if let n = try? await r.commitCount() { Gauge(label: "lode_dataset_commits", dimensions: [("dataset", name)]).record(n) }
            if let n = try? await r.rejectionCount() { Gauge(label: "lode_dataset_refusals_kept", dimensions: [("dataset", name)]).record(n) }
            Gauge(label: "lode_dataset_bytes", dimensions: [("dataset", name)]).record(Int(clamping: r.bytesOnDisk))
        }
        Gauge(label: "lode_store_reachable").record(await storeReachable() ? 1 : 0)
    }
}

/// Log lines as JSON objects, one per line, for log shippers
/// (`lode serve --log-format json`): time, level, label, message, the
/// metadata as fields, and where in the source.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let write: @Sendable (String) -> Void

    public init(label: String, write: @escaping @Sendable (String) -> Void = { line in FileHandle.standardError.write(Data(line.utf8)) }) {
        self.label = label
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        log(
            level: event.level, message: event.message, metadata: event.metadata, source: event.source, file: event.file,
            function: event.function, line: event.line)
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String, file: String, function: String, line: UInt
    ) {
        var fields: [String: String] = [:]
        for (k, v) in metadata { fields[k] = "\(v)" }
        for (k, v) in extra ?? [:] { fields[k] = "\(v)" }
        var object: [String: String] = [
            "time": ISO8601DateFormatter.string(from: Date(), timeZone: .gmt, formatOptions: [.withInternetDateTime, .withFractionalSeconds]),
            "level": level.rawValue, "label": label, "message": "\(message)", "source": source,
        ]
        for (k, v) in fields where object[k] == nil { object[k] = v }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        write(String(decoding: data, as: UTF8.self) + "\n")
    }
}
