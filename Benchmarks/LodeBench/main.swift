import Foundation
import LodeCore
import LodeNode
import LodeStore
import LodeSync
import Logging
import Prometheus

/// Sync benchmarks with real nodes in one process, over mutual TLS on
/// loopback (release build: `swift run -c release lode-bench`).
///
///   lode-bench sync [ROWS]          initial sync of ROWS rows from one node to a new one
///   lode-bench propagation [EDITS]  single-cell edits at A observed at C through relay B
@main
enum LodeBench {
    static func main() async throws {
        let args = Array(CommandLine.arguments.dropFirst())
        let root = NSTemporaryDirectory() + "lode-bench-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let bench = Bench(root: root)
        switch args.first {
        case "sync": try await bench.initialSync(rows: args.count > 1 ? Int(args[1])! : 100_000)
        case "propagation": try await bench.propagation(edits: args.count > 1 ? Int(args[1])! : 1000)
        default:
            print("usage: lode-bench sync [ROWS] | propagation [EDITS]")
        }
    }
}

struct Bench {
    let root: String
    var logger: Logger {
        var l = Logger(label: "bench")
        l.logLevel = .critical
        return l
    }

    func start(_ name: String, role: Role) async throws -> LaunchedNode {
        let caDir = root + "/ca"
        if !FileManager.default.fileExists(atPath: caDir + "/ca.pem") { try Identity.createCA(dir: caDir, cluster: "bench") }
        let dir = root + "/" + name
        try Node.initialize(dataDir: dir, site: name, role: role, caDir: caDir)
        var options = ServeOptions(dataDir: dir, listen: "127.0.0.1:0")
        options.handleSignals = false
        return try await NodeServer.launch(options, logger: logger)
    }

    /// The protocol bytes counted by the node's metrics (both directions).
    func wireBytes() -> Double {
        let text = NodeServer.metrics.emitToString()
        var total = 0.0
        for line in text.split(separator: "\n") where line.hasPrefix("lode_sync_bytes_sent_total") {
            total += Double(line.split(separator: " ").last ?? "0") ?? 0
        }
        return total
    }

    func rows(_ n: Int) throws -> String {
        let path = root + "/rows.csv"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [
            "python3", URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path + "/gen-rows.py", "\(n)", "42",
        ]
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: path)
        try p.run()
        p.waitUntilExit()
        return path
    }

    static let schema = "CREATE TABLE sites (id TEXT PRIMARY KEY, name TEXT, country TEXT, year INTEGER, tonnes INTEGER, grade REAL, note TEXT);"

    func initialSync(rows n: Int) async throws {
        let la = try await start("a", role: .editor)
        let a = la.running
        try await a.node.createDataset("bench", schema: Bench.schema)
        let csv = try rows(n)
        let size = (try FileManager.default.attributesOfItem(atPath: csv)[.size] as? Int) ?? 0
        let imported = try await a.node.replica("bench").importCSV(table: "sites", path: csv)
        let logBytes = try await a.node.replica("bench").missingCommits(after: VersionVector(), maxBytes: .max).reduce(0) { $0 + $1.bytes.count }
        let lb = try await start("b", role: .reader)
        let b = lb.running
        let before = wireBytes()
        let started = ContinuousClock.now
        try b.node.addPeer("127.0.0.1:\(a.sync.port!)")
        b.sync.peersChanged()
        let target = try a.node.replica("bench").vector
        while (try? b.node.replica("bench").vector) != target {
            try await Task.sleep(for: .milliseconds(5))
        }
        let elapsed = ContinuousClock.now - started
        let bytes = wireBytes() - before
        await lb.stop()
        await la.stop()
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(
            String(
                format:
                    "initial sync of %d rows (%d commits, %.1f MB CSV, %.1f MB of commits): %.2f s, %.0f rows/s, %.1f MB of frames on the wire (%.2f× the commits)",
                imported.rowsRead, imported.commits, Double(size) / 1e6, Double(logBytes) / 1e6, seconds, Double(n) / seconds, bytes / 1e6,
                bytes / Double(logBytes)))
    }

    func propagation(edits: Int) async throws {
        let nodes = [try await start("a", role: .editor), try await start("relay", role: .relay), try await start("c", role: .editor)]
        let (a, relay, c) = (nodes[0].running, nodes[1].running, nodes[2].running)
        for n in [a, c] {
            try n.node.addPeer("127.0.0.1:\(relay.sync.port!)")
            n.sync.peersChanged()
        }
        try await a.node.createDataset("bench", schema: "CREATE TABLE cells (id TEXT PRIMARY KEY, v INTEGER);")
        _ = try await a.node.replica("bench").exec("INSERT INTO cells(id, v) VALUES ('x', 0)")
        while (try? c.node.replica("bench").vector) != (try a.node.replica("bench").vector) { try await Task.sleep(for: .milliseconds(5)) }
        let arrived = AsyncStream.makeStream(of: VersionVector.self)
        try c.node.replica("bench").addObserver { arrived.continuation.yield($0) }
        var iterator = arrived.stream.makeAsyncIterator()
        var samples: [Double] = []
        for i in 1...edits {
            let start = ContinuousClock.now
            _ = try await a.node.replica("bench").exec("UPDATE cells SET v = \(i) WHERE id = 'x'")
            let target = try a.node.replica("bench").vector
            while let v = await iterator.next(), v != target {}
            let d = ContinuousClock.now - start
            samples.append(Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1000)
        }
        for n in nodes { await n.stop() }
        samples.sort()
        func pct(_ p: Double) -> Double { samples[min(samples.count - 1, Int(Double(samples.count) * p))] }
        print(
            String(
                format:
                    "propagation A → relay → C over %d single-cell edits: p50 %.2f ms, p99 %.2f ms, max %.2f ms (from the start of `exec` at A to the commit applied at C)",
                edits, pct(0.5), pct(0.99), samples.last!))
    }
}
