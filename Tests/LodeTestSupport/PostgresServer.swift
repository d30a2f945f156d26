import Foundation
import Synchronization

/// A PostgreSQL server the tests start for themselves from Debian's
/// binaries (`apt-get install -y postgresql`): `initdb` into a temporary
/// folder, then `postgres` listening on a private Unix socket only, so that
/// `swift test` needs nothing already running. PostgreSQL refuses to run as
/// root; as root, the server runs as the `postgres` user. One server serves
/// the whole test process (each test takes a database of its own) and is
/// stopped when the process exits.
///
/// ```swift
/// let url = try PostgresServer.shared().newDatabase()   // postgresql://lode@localhost:5432/t_…?host=/tmp/…
/// ```
public final class PostgresServer: Sendable {
    /// Why the server could not start, said so a person can fix it.
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    /// The folder holding the data directory and the socket.
    public let root: String
    /// The socket folder (`host=` in a URL).
    public let socketDirectory: String
    /// The port (names the socket file).
    public let port: Int
    private let bin: String
    private let asUser: String?
    /// Whether commits are flushed to disk (off for tests, which need no
    /// durability across a machine crash; on for benchmarks and the fault
    /// runs, which must not flatter PostgreSQL).
    public let durable: Bool

    private static let started = Mutex<Result<PostgresServer, Unavailable>?>(nil)

    /// The server of this test process, started on first use.
    public static func shared() throws -> PostgresServer {
        try started.withLock { s in
            if s == nil { s = Result { try PostgresServer() }.mapError { $0 as? Unavailable ?? Unavailable(description: "\($0)") } }
            return try s!.get()
        }
    }

    /// The folder of the server binaries: `$LODE_PG_BIN`, else the newest
    /// of Debian's `/usr/lib/postgresql/*/bin`.
    public static func binaries() throws -> String {
        if let dir = ProcessInfo.processInfo.environment["LODE_PG_BIN"] { return dir }
        let base = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).compactMap(Int.init).sorted()
        guard let v = versions.last(where: { FileManager.default.isExecutableFile(atPath: "\(base)/\($0)/bin/postgres") }) else {
            throw Unavailable(
                description:
                    "the PostgreSQL tests start their own server and need PostgreSQL's binaries: install them with `apt-get install -y postgresql` (or set LODE_PG_BIN to a folder holding initdb and postgres)"
            )
        }
        return "\(base)/\(v)/bin"
    }

    /// A server of its own (for a test that stops and restarts it, a
    /// benchmark, a fault run), also stopped when the process exits.
    /// `durable` keeps PostgreSQL's defaults: fsync, synchronous commit and
    /// full page writes on.
    public static func standalone(durable: Bool = false) throws -> PostgresServer { try PostgresServer(durable: durable) }

    /// Stops the server (fast shutdown: sessions are closed).
    public func stop() throws {
        try run("pg_ctl", ["-D", root + "/data", "-m", "fast", "-w", "stop"])
    }

    /// Starts the server again after `stop`.
    public func start() throws {
        try run("pg_ctl", ["-D", root + "/data", "-l", root + "/server.log", "-o", options, "-w", "-t", "60", "start"])
    }

    private var options: String {
        "-p \(port) -k \(socketDirectory) -c listen_addresses='' -c max_connections=300"
            + (durable ? "" : " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    }

    private init(durable: Bool = false) throws {
        self.durable = durable
        bin = try Self.binaries()
        asUser = geteuid() == 0 ? "postgres" : nil
        root = NSTemporaryDirectory() + "lode-pg-" + UUID().uuidString.prefix(8)
        socketDirectory = root + "/s"
        port = 5432
        let fm = FileManager.default
        try fm.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root)
        if let user = asUser { try Self.run("/usr/bin/chown", ["-R", user, root]) }
        try run("initdb", ["-D", root + "/data", "-A", "trust", "-U", "lode", "-E", "UTF8", "--locale=C", "--no-sync"])
        try start()
        let stop = "\(bin)/pg_ctl"
        let data = root + "/data"
        let user = asUser
        let dir = root
        Self.atExit.withLock {
            $0.append {
                _ = try? Self.run(
                    user == nil ? stop : "/usr/sbin/runuser", (user.map { ["-u", $0, "--", stop] } ?? []) + ["-D", data, "-m", "immediate", "stop"])
                try? FileManager.default.removeItem(atPath: dir)
            }
        }
        atexit { PostgresServer.atExit.withLock { for f in $0 { f() } } }
    }

    private static let atExit = Mutex<[@Sendable () -> Void]>([])

    /// A new empty database on this server; returns its URL.
    public func newDatabase(_ prefix: String = "t") throws -> String {
        let name = "\(prefix)_\(UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: ""))"
        try Self.run("\(bin)/psql", ["-h", socketDirectory, "-p", "\(port)", "-U", "lode", "-d", "postgres", "-qc", "CREATE DATABASE \(name)"])
        return url(database: name)
    }

    /// The URL of database `name` on this server.
    public func url(database name: String) -> String {
        "postgresql://lode@localhost:\(port)/\(name)?host=\(socketDirectory)"
    }

    /// Runs `psql` on database `name`, returning what it prints (unaligned, tuples only).
    public func psql(_ name: String, _ sql: String) throws -> String {
        try Self.run("\(bin)/psql", ["-h", socketDirectory, "-p", "\(port)", "-U", "lode", "-d", name, "-AtXqc", sql])
    }

    private func run(_ tool: String, _ args: [String]) throws {
        if let user = asUser {
            try Self.run("/usr/sbin/runuser", ["-u", user, "--", "\(bin)/\(tool)"] + args)
        } else {
            try Self.run("\(bin)/\(tool)", args)
        }
    }

    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let closeFrom: CloseFrom? = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np").map {
        unsafeBitCast($0, to: CloseFrom.self)
    }

    /// Runs a program and returns what it printed. It is spawned and
    /// waited for directly (`posix_spawn`, `waitpid`): Foundation's
    /// `Process` waits until every process holding its private descriptor
    /// ends, and the server pg_ctl starts would hold it for ever.
    @discardableResult
    public static func run(_ path: String, _ args: [String]) throws -> String {
        let file = NSTemporaryDirectory() + "lode-pg-out-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: file) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, file, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of this process passes to the child: a server pg_ctl
        // starts would otherwise hold the test nodes' listening sockets
        // open for ever (a node restarted on its port could not bind), or
        // the pipe of a `lode` command another test runs meanwhile (which
        // then never reads the end of its output). glibc's closefrom action
        // closes every descriptor from 3 in the child, whenever it was
        // opened; Swift does not see its declaration, so it is looked up.
        guard let closeFrom = Self.closeFrom else {
            throw Unavailable(description: "this C library lacks posix_spawn_file_actions_addclosefrom_np (glibc 2.34 or later has it)")
        }
        guard closeFrom(&actions, 3) == 0 else { throw Unavailable(description: "cannot ask the child to close its descriptors") }
        let argv = ([path] + args).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else { throw Unavailable(description: "cannot run \(path): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw Unavailable(description: "\(path) \(args.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text
    }
}
