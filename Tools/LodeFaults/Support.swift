import Foundation
import LodeCore
import LodeProtocol
import Synchronization

/// What a finished command printed and returned.
struct Outcome: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    /// The command was killed because it ran past its timeout.
    var timedOut: Bool
    var ok: Bool { status == 0 && !timedOut }
    var description: String {
        timedOut ? "timed out" : "exit \(status): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
    }
}

/// Starts a program with the given file descriptors as its stdin, stdout
/// and stderr (posix_spawn; Foundation's Process can miss a child's exit when
/// that child leaves background processes behind, as the cluster script does).
func spawn(_ executable: String, _ arguments: [String], stdin: Int32, stdout: Int32, stderr: Int32) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, stdin, 0)
    posix_spawn_file_actions_adddup2(&actions, stdout, 1)
    posix_spawn_file_actions_adddup2(&actions, stderr, 2)
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let env = ProcessInfo.processInfo.environment.filter { $0.key != "LODE_DATA_DIR" }.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for p in argv { free(p) }
        for p in env { free(p) }
    }
    // The signals this process ignores (it handles them on a dispatch
    // source, `stopChildrenOnSignal`) are the children's to take as usual:
    // an ignored signal would stay ignored across exec.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for sig in stopSignals { sigaddset(&defaults, sig) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let rc = spawnLock.withLock { posix_spawn(&pid, executable, &actions, &attributes, argv, env) }
    guard rc == 0 else { throw Failure("cannot run \(executable): \(String(cString: strerror(rc)))") }
    children.withLock { _ = $0.insert(pid) }
    return pid
}

/// The children started and not yet reaped.
let children = Mutex<Set<pid_t>>([])

/// Makes SIGINT, SIGTERM and SIGHUP stop what this process started before
/// it exits: its children get SIGTERM (then SIGKILL after 10 s), and the
/// PostgreSQL servers it started are stopped at exit. Without it, a run
/// stopped by `kill` left its nodes, relays and database running.
func stopChildrenOnSignal() {
    for sig in stopSignals {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler {
            let started = children.withLock { $0 }
            for pid in started { kill(pid, SIGTERM) }
            let deadline = Date().addingTimeInterval(10)
            var left = started
            while !left.isEmpty && Date() < deadline {
                left = left.filter { !exited($0) }
                if !left.isEmpty { usleep(50_000) }
            }
            for pid in left { kill(pid, SIGKILL) }
            exit(128 + sig)
        }
        source.resume()
        signalSources.append(source)
    }
}

/// Kept for the life of the process (set up once, from `main`).
nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []
private let stopSignals = [SIGINT, SIGTERM, SIGHUP]

/// Serialises making pipes and spawning across threads.
let spawnLock = NSRecursiveLock()

/// Waits for a child and returns its exit status (128+signal if killed).
@discardableResult
func reap(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    children.withLock { _ = $0.remove(pid) }
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
}

/// True when the child has exited (and is now reaped, here or by another
/// thread); does not wait.
func exited(_ pid: pid_t) -> Bool {
    var status: Int32 = 0
    let r = waitpid(pid, &status, WNOHANG)
    guard r == pid || (r < 0 && errno == ECHILD) else { return false }
    children.withLock { _ = $0.remove(pid) }
    return true
}

/// Runs a program and waits for it, killing it (SIGKILL) if it runs longer
/// than `timeout` seconds. Both pipes are read at once so neither fills.
func run(_ executable: String, _ arguments: [String], timeout: Double = 120) -> Outcome {
    var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
    let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
    let started: Result<pid_t, Error> = spawnLock.withLock {
        // Made and marked close-on-exec under the lock, so that no other
        // thread's child inherits these pipes and holds them open.
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else {
            return .failure(Failure("pipe: \(String(cString: strerror(errno)))"))
        }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return Result { try spawn(executable, arguments, stdin: devnull, stdout: outPipe[1], stderr: errPipe[1]) }
    }
    close(outPipe[1])
    close(errPipe[1])
    close(devnull)
    guard case .success(let pid) = started else {
        close(outPipe[0])
        close(errPipe[0])
        if case .failure(let error) = started { return Outcome(status: -1, stdout: "", stderr: "\(error)", timedOut: false) }
        return Outcome(status: -1, stdout: "", stderr: "", timedOut: false)
    }
    var out: [UInt8] = [], err: [UInt8] = []
    var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0), pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0)]
    let deadline = Date().addingTimeInterval(timeout)
    var timedOut = false
    var buffer = [UInt8](repeating: 0, count: 65536)
    while fds.contains(where: { $0.fd >= 0 }) {
        let left = deadline.timeIntervalSinceNow
        if left <= 0 && !timedOut {
            timedOut = true
            kill(pid, SIGKILL)
        }
        if poll(&fds, nfds_t(fds.count), Int32(max(10, min(left, 1) * 1000))) < 0 && errno != EINTR { break }
        for i in fds.indices where fds[i].fd >= 0 && fds[i].revents != 0 {
            let n = read(fds[i].fd, &buffer, buffer.count)
            if n > 0 {
                if i == 0 { out += buffer[0..<n] } else { err += buffer[0..<n] }
            } else if n == 0 || errno != EINTR {
                close(fds[i].fd)
                fds[i].fd = -1
            }
        }
        // Background processes the child left holding the pipes do not keep us.
        if timedOut && deadline.timeIntervalSinceNow < -5 { break }
    }
    for f in fds where f.fd >= 0 { close(f.fd) }
    let status = reap(pid)
    return Outcome(
        status: status, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self), timedOut: timedOut)
}

/// A value shared between threads behind a lock.
final class Box<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
    func update<R>(_ f: (inout T) -> R) -> R { lock.withLock { f(&stored) } }
}

/// A boolean set once, read from any thread.
final class Flag: @unchecked Sendable {
    private let box = Box(false)
    func set() { box.value = true }
    var isSet: Bool { box.value }
}

/// The `lode` binary and how to call it against a node's data directory.
struct Lode: Sendable {
    let binary: String

    /// `lode ARGS --data-dir DIR`.
    func at(_ dataDir: String, _ args: [String], timeout: Double = 120) -> Outcome {
        run(binary, args + ["--data-dir", dataDir], timeout: timeout)
    }

    /// Like `at`, but a failure ends the run with the command and its error.
    @discardableResult
    func must(_ dataDir: String, _ args: [String], timeout: Double = 120) throws -> String {
        let r = at(dataDir, args, timeout: timeout)
        guard r.ok else { throw Failure("lode \(args.joined(separator: " ")) --data-dir \(dataDir): \(r)") }
        return r.stdout
    }

    /// The single value a one-cell query prints (CSV: a header line, then the value).
    func scalar(_ dataDir: String, _ dataset: String, _ sql: String) throws -> String {
        let out = try must(dataDir, ["query", dataset, sql, "--format", "csv"])
        let lines = out.split(whereSeparator: \.isNewline).map(String.init)
        guard lines.count >= 2 else { throw Failure("query \(sql) printed \(out)") }
        return lines[1]
    }

    /// The version vector of a dataset at a node, as "site:seq ..." (empty when
    /// the node does not answer or does not hold the dataset yet).
    func vector(_ dataDir: String, _ dataset: String, timeout: Double = 10) -> String? {
        let r = at(dataDir, ["status", "--format", "json"], timeout: timeout)
        guard r.ok, let status = try? JSONDecoder().decode(StatusJSON.self, from: Data(r.stdout.utf8)) else { return nil }
        guard let d = status.datasets.first(where: { $0.name == dataset }) else { return nil }
        return d.vector.map { "\($0.key.prefix(12)):\($0.seq)" }.sorted().joined(separator: " ")
    }

    /// The highest seq of `site`'s feed a node holds in a dataset (0 for none).
    func seq(_ dataDir: String, _ dataset: String, site: String) -> UInt64? {
        let r = at(dataDir, ["status", "--format", "json"], timeout: 10)
        guard r.ok, let status = try? JSONDecoder().decode(StatusJSON.self, from: Data(r.stdout.utf8)) else { return nil }
        return status.datasets.first(where: { $0.name == dataset })?.vector.first(where: { $0.site == site })?.seq ?? 0
    }

    /// Commits a node refused, for a dataset.
    func rejected(_ dataDir: String, _ dataset: String) -> Int? {
        let r = at(dataDir, ["status", "--format", "json"], timeout: 10)
        guard r.ok, let status = try? JSONDecoder().decode(StatusJSON.self, from: Data(r.stdout.utf8)) else { return nil }
        return status.datasets.first(where: { $0.name == dataset })?.rejected
    }

    /// Every table of a dataset as CSV, ordered by primary key: a node's
    /// replica as a user sees it, to compare byte for byte.
    func dump(_ dataDir: String, _ dataset: String, tables: [String]) throws -> String {
        var all = ""
        for t in tables {
            all += "-- \(t)\n"
            all += try must(dataDir, ["export", dataset, t, "--format", "csv"])
        }
        return all
    }

    struct StatusJSON: Decodable {
        struct Dataset: Decodable {
            struct Entry: Decodable {
                var key: String
                var seq: UInt64
                var site: String?
            }
            var name: String
            var rejected: Int
            var vector: [Entry]
        }
        var datasets: [Dataset]
        var listen: String?
    }
}

/// A check that did not hold, or a step that could not be done.
struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A `lode serve` process on loopback, started and killed directly.
final class LocalNode: @unchecked Sendable {
    let lode: Lode
    let dataDir: String
    let peers: [String]
    /// More `serve` options (`--store`, `--web`).
    let extra: [String]
    private(set) var pid: pid_t?
    private(set) var address = ""

    init(lode: Lode, dataDir: String, peers: [String] = [], extra: [String] = []) {
        self.lode = lode
        self.dataDir = dataDir
        self.peers = peers
        self.extra = extra
    }

    /// Starts the node and waits until it answers on its socket.
    func start(listen: String? = nil) throws {
        try launch(listen: listen)
        try waitUntilReady()
    }

    /// Starts the node without waiting for it.
    func launch(listen: String? = nil) throws {
        var args = ["serve", "--data-dir", dataDir, "--listen", listen ?? (address.isEmpty ? "127.0.0.1:0" : address)]
        for peer in peers { args += ["--peer", peer] }
        args += extra
        let log = open(dataDir + ".log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        let devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer {
            close(log)
            close(devnull)
        }
        pid = try spawn(lode.binary, args, stdin: devnull, stdout: log, stderr: log)
    }

    /// Waits until the launched node answers on its socket (10 s at most).
    func waitUntilReady() throws {
        guard let child = pid else { throw Failure("node \(dataDir) is not running") }
        for _ in 0..<400 {
            let r = run(lode.binary, ["status", "--format", "json", "--data-dir", dataDir], timeout: 5)
            if r.ok, let s = try? JSONDecoder().decode(Lode.StatusJSON.self, from: Data(r.stdout.utf8)) {
                address = s.listen ?? ""
                return
            }
            if exited(child) {
                pid = nil
                let tail = ((try? String(contentsOfFile: dataDir + ".log", encoding: .utf8)) ?? "").split(separator: "\n").suffix(3)
                throw Failure("node \(dataDir) exited at start: \(tail.joined(separator: " | "))")
            }
            usleep(25_000)
        }
        throw Failure("node \(dataDir) did not start within 10 s; see \(dataDir).log")
    }

    /// kill -9, and reap it.
    func kill9() {
        guard let pid else { return }
        kill(pid, SIGKILL)
        reap(pid)
        self.pid = nil
    }

    /// SIGTERM, and wait for a clean stop.
    func stop() {
        guard let pid else { return }
        kill(pid, SIGTERM)
        reap(pid)
        self.pid = nil
    }

    /// Every thread's backtrace and CPU time, into `<dataDir>.stacks`, for
    /// the diagnosis of a node that stopped answering (needs gdb; without
    /// it, the file says so).
    func dumpStacks() {
        guard let pid else { return }
        let path = dataDir + ".stacks"
        var text = "pid \(pid)\n"
        // utime and stime (fields 14 and 15, in clock ticks) of each thread.
        if let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
            for t in tasks.sorted() {
                guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/stat", encoding: .utf8),
                    let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")"), open < close
                else { continue }
                let name = stat[stat.index(after: open)..<close]
                let f = stat[stat.index(after: close)...].split(separator: " ")
                guard f.count > 12 else { continue }
                text += "thread \(t) \(name) state \(f[0]) utime \(f[11]) stime \(f[12])\n"
            }
        }
        let r = run("/usr/bin/gdb", ["-p", "\(pid)", "-batch", "-ex", "thread apply all bt"], timeout: 120)
        text += r.ok ? r.stdout : "gdb: \(r)\n"
        try? text.write(toFile: path, atomically: true, encoding: .utf8)
        log("\((dataDir as NSString).lastPathComponent): stacks in \(path)")
    }

    /// Resident memory now and at its peak, in KiB, from /proc.
    func memory() -> (rss: Int, peak: Int)? {
        guard let pid, let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func field(_ name: String) -> Int {
            for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
                return Int(line.split(whereSeparator: \.isWhitespace).dropFirst().first ?? "") ?? 0
            }
            return 0
        }
        return (field("VmRSS"), field("VmHWM"))
    }
}

/// Creates a cluster CA and sites in `dir`: the same files `lode ca init`
/// and `lode init` make for users.
func makeSites(_ lode: Lode, dir: String, sites: [(name: String, role: String)]) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let r = run(lode.binary, ["ca", "init", "--dir", dir + "/ca", "--cluster", "faults"])
    guard r.ok else { throw Failure("ca init: \(r)") }
    for s in sites {
        let r = run(lode.binary, ["init", "--site", s.name, "--ca", dir + "/ca", "--role", s.role, "--data-dir", dir + "/" + s.name])
        guard r.ok else { throw Failure("init \(s.name): \(r)") }
    }
}

/// Waits until every node holds the same commits of `dataset`; returns the
/// seconds it took, or throws with each node's vector.
func waitForConvergence(_ lode: Lode, dirs: [String], dataset: String, timeout: Double) throws -> Double {
    let start = Date()
    var last: [String?] = []
    var stableSince: Date?
    while Date().timeIntervalSince(start) < timeout {
        last = dirs.map { lode.vector($0, dataset) }
        if let first = last.first, first != nil, last.allSatisfy({ $0 == first }) {
            // Equal twice in a row, half a second apart: nothing was in flight.
            if let since = stableSince, Date().timeIntervalSince(since) >= 0.5 { return Date().timeIntervalSince(start) }
            if stableSince == nil { stableSince = Date() }
        } else {
            stableSince = nil
        }
        usleep(200_000)
    }
    let shown = zip(dirs, last).map { "  \(($0 as NSString).lastPathComponent): \($1 ?? "no answer")" }.joined(separator: "\n")
    // What each node says of its peers, for the diagnosis.
    let peers = dirs.map { dir in
        let r = lode.at(dir, ["status"], timeout: 30)
        return "  \((dir as NSString).lastPathComponent) status: " + (r.ok ? r.stdout : "\(r)").replacingOccurrences(of: "\n", with: "\n    ")
    }.joined(separator: "\n")
    throw Failure("replicas did not converge within \(Int(timeout)) s:\n\(shown)\n\(peers)")
}

/// Waits until every node holds the same commits, then checks that their
/// tables export byte for byte the same.
@discardableResult
func convergeIdentical(_ lode: Lode, dirs: [String], dataset: String, tables: [String], timeout: Double = 120) throws -> Double {
    let seconds = try waitForConvergence(lode, dirs: dirs, dataset: dataset, timeout: timeout)
    let dumps = try dirs.map { try lode.dump($0, dataset, tables: tables) }
    for (dir, d) in zip(dirs, dumps) where d != dumps[0] {
        throw Failure("\(dir) and \(dirs[0]) hold the same commits of \(dataset) but different rows")
    }
    return seconds
}

/// Starts node a, then node b dialling it; both editors already made.
func startPair(_ lode: Lode, a aDir: String, b bDir: String) throws -> (LocalNode, LocalNode) {
    let a = LocalNode(lode: lode, dataDir: aDir)
    try a.start()
    let b = LocalNode(lode: lode, dataDir: bDir, peers: [a.address])
    do { try b.start() } catch {
        a.stop()
        throw error
    }
    return (a, b)
}

/// The median of some figures.
func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Wall-clock seconds since the process started, for log lines.
let startTime = Date()
func log(_ s: String) {
    let t = String(format: "%7.1f", Date().timeIntervalSince(startTime))
    FileHandle.standardError.write(Data("[\(t)s] \(s)\n".utf8))
}

/// `POST /v1/datasets/DATASET/exec` on a node's Unix socket, one connection
/// per request, as a client of the API rather than of the CLI (no process
/// per write). The answer is an `Outcome` like the CLI's: status 0 for HTTP
/// 200, the node's error message otherwise, `timedOut` when no answer came
/// within `timeout` seconds.
func apiExec(socket path: String, dataset: String, sql: String, timeout: Double) -> Outcome {
    func failed(_ message: String, timedOut: Bool = false) -> Outcome {
        Outcome(status: 1, stdout: "", stderr: message, timedOut: timedOut)
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return failed("socket: errno \(errno)") }
    defer { close(fd) }
    var limit = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return failed("socket path too long: \(path)") }
    withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes + [0]) }
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else { return failed("cannot reach the node at \(path): errno \(errno)") }
    guard let body = try? JSONEncoder().encode(API.SQLRequest(sql: sql)) else { return failed("cannot encode the request") }
    let request =
        Array(
            "POST /v1/datasets/\(dataset)/exec HTTP/1.1\r\nHost: lode\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
                .utf8)
        + Array(body)
    var sent = 0
    while sent < request.count {
        let n = request[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return failed("write: errno \(errno)", timedOut: errno == EAGAIN) }
        sent += n
    }
    // With Connection: close the node ends the stream after the response.
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n == 0 { break }
        if n < 0 { return failed("read: errno \(errno)", timedOut: errno == EAGAIN) }
        response += buffer[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let statusLine = text.split(separator: "\r\n", maxSplits: 1).first,
        let code = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }),
        let split = text.range(of: "\r\n\r\n")
    else { return failed("not an HTTP response: \(text.prefix(80))") }
    let payload = String(text[split.upperBound...])
    return code == 200
        ? Outcome(status: 0, stdout: payload, stderr: "", timedOut: false)
        : failed("HTTP \(code): \(payload.prefix(120))")
}
