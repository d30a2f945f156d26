import Foundation
import LodeCore
import LodeNode
import LodeStore
import LodeSync
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// Seconds since `start`.
func seconds(since start: ContinuousClock.Instant) -> Double { (ContinuousClock.now - start).seconds }

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Peak resident memory of this process since the last `resetPeakMemory`, in MB.
func peakMemoryMB(pid: Int32? = nil) -> Double {
    let path = pid.map { "/proc/\($0)/status" } ?? "/proc/self/status"
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
        let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return .nan }
    return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
}

/// Starts peak-memory accounting afresh for this process (Linux: clear_refs 5),
/// after handing memory freed by earlier phases back to the system, so the
/// peak is the workload's own and not what the set-up left in malloc's arenas.
func resetPeakMemory() {
    #if canImport(Glibc)
        // glibc's malloc_trim, which the Glibc module does not export.
        if let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") {
            _ = unsafeBitCast(sym, to: (@convention(c) (Int) -> Int32).self)(0)
        }
    #endif
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
}

/// The protocol bytes a site has sent (from the node metrics).
func bytesSent(by site: SiteID) -> Double {
    let text = NodeServer.metrics.emitToString()
    var total = 0.0
    for line in text.split(separator: "\n") where line.hasPrefix("lode_sync_bytes_sent_total") && line.contains("site=\"\(site.short)\"") {
        total += Double(line.split(separator: " ").last ?? "0") ?? 0
    }
    return total
}

/// A directory for the benchmark's files, removed at the end.
final class Workspace: @unchecked Sendable {
    let root: String
    var logger: Logger
    private var counter = 0

    init() throws {
        root = NSTemporaryDirectory() + "lode-bench-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        logger = Logger(label: "bench")
        logger.logLevel = .critical
        try Identity.createCA(dir: root + "/ca", cluster: "bench")
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }

    /// A fresh path under the workspace.
    func path(_ name: String) -> String {
        counter += 1
        return root + "/\(counter)-\(name)"
    }

    /// Creates a node (site key and certificate) without starting it.
    func makeNode(_ name: String, role: Role = .editor) throws -> String {
        let dir = path(name)
        try Node.initialize(dataDir: dir, site: name, role: role, caDir: root + "/ca")
        return dir
    }

    /// Starts a node in this process.
    func launch(_ dir: String, tuning: @escaping @Sendable (inout SyncStateMachine.Config) -> Void = { _ in }) async throws -> LaunchedNode {
        var options = ServeOptions(dataDir: dir, listen: "127.0.0.1:0")
        options.handleSignals = false
        options.web = "127.0.0.1:0"
        options.syncTuning = tuning
        return try await NodeServer.launch(options, logger: logger)
    }
}

/// Waits until every node holds the same vector for `dataset` (or the timeout).
func waitUntilEqual(_ nodes: [RunningNode], dataset: String, timeout: Double = 600) async throws {
    let deadline = ContinuousClock.now + .seconds(timeout)
    while ContinuousClock.now < deadline {
        let vectors = nodes.map { (try? $0.node.replica(dataset).vector) ?? VersionVector() }
        if Set(vectors).count == 1 && !vectors[0].isEmpty { return }
        try await Task.sleep(for: .milliseconds(2))
    }
    throw BenchError("nodes did not converge on \(dataset) within \(timeout) s")
}

/// One workload's result.
struct Result: Codable {
    var workload: String
    var what: String
    var value: Double
    var unit: String
    var baseline: Double?
    var baselineUnit: String?
    /// value / baseline, or what the target compares.
    var ratio: Double?
    var target: String
    var met: Bool?
    var peakMemoryMB: Double
    var runs: Int
    var notes: String
}

/// A process held to a share of the CPU by its own control group, so that
/// one machine can stand in for several: each relay of W11a gets the CPU
/// it would have on a machine of its own, and adding a relay adds CPU, as
/// adding a server does. Linux only; cgroup v1's `cpu` controller or
/// cgroup v2 with `cpu` enabled at the root, and the right to write there
/// (root in most containers).
struct CPUBudget {
    let group: String

    /// cgroup v1's `cpu` controller, where it is mounted and writable.
    private static let v1 = "/sys/fs/cgroup/cpu"
    private static var hasV1: Bool { FileManager.default.isWritableFile(atPath: v1) }

    /// What stops budgets here, or nil when they work.
    static var unavailable: String? {
        if hasV1 { return nil }
        let controllers = (try? String(contentsOfFile: "/sys/fs/cgroup/cgroup.controllers", encoding: .utf8)) ?? ""
        if controllers.split(whereSeparator: \.isWhitespace).contains("cpu"), FileManager.default.isWritableFile(atPath: "/sys/fs/cgroup") {
            return nil
        }
        return "no writable cgroup cpu controller (/sys/fs/cgroup/cpu, or cgroup v2 with cpu enabled): run as root on Linux"
    }

    /// Moves `pid` (all its threads) into a new group allowed `cores` of CPU time.
    init(pid: Int32, cores: Double) throws {
        let period = 100_000
        let quota = Int((cores * Double(period)).rounded())
        let name = "lode-bench-\(getpid())-\(pid)"
        func write(_ value: String, _ file: String) throws {
            do {
                try value.write(toFile: file, atomically: false, encoding: .utf8)
            } catch {
                throw BenchError("could not write \(value) to \(file): \(error)")
            }
        }
        if !Self.hasV1 { try? write("+cpu", "/sys/fs/cgroup/cgroup.subtree_control") }
        group = (Self.hasV1 ? Self.v1 : "/sys/fs/cgroup") + "/" + name
        try FileManager.default.createDirectory(atPath: group, withIntermediateDirectories: false)
        do {
            if Self.hasV1 {
                try write("\(period)", group + "/cpu.cfs_period_us")
                try write("\(quota)", group + "/cpu.cfs_quota_us")
            } else {
                try write("\(quota) \(period)", group + "/cpu.max")
            }
            try write("\(pid)", group + "/cgroup.procs")
        } catch {
            rmdir(group)
            throw error
        }
    }

    /// Removes the group once its process has exited.
    func remove() { rmdir(group) }
}
