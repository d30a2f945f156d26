import Crypto
import Foundation
import LodeCore
import LodeSQLite
import LodeStore
import Synchronization

/// A fresh temporary directory, removed when the value is dropped. Its
/// path is short, so that Unix sockets inside it stay under the length limit.
public final class TempDir: @unchecked Sendable {
    public let path: String
    public init(_ prefix: String = "lode-test") {
        path = NSTemporaryDirectory() + prefix + "-" + UUID().uuidString.prefix(8)
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    public func file(_ name: String) -> String { path + "/" + name }
    @discardableResult public func write(_ name: String, _ text: String) -> String {
        let p = file(name)
        try! text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
}

/// A site whose key is 32 bytes of `n`: the same in every run.
public func site(_ n: UInt8, _ name: String, role: Role = .editor) -> LocalSite {
    let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: n, count: 32))
    return LocalSite(writer: FeedWriter(key: key), name: name, role: role, certificate: [])
}

/// Tells every replica about every site (what certificates do in a node).
public func introduce(_ replicas: [any ReplicaStore]) async throws {
    for r in replicas {
        for other in replicas {
            try await r.registerSite(SiteRecord(site: other.local.site, name: other.local.name, role: other.local.role, certificate: nil))
        }
    }
}

/// Creates dataset `name` for `local` in a directory of its own under `dir`.
public func createReplica(in dir: TempDir, _ name: String = "d", site local: LocalSite, tables: [TableDef]) async throws -> SQLiteReplica {
    try await SQLiteCatalog(directory: dir.file(local.name), local: local).create(name, tables: tables)
}

/// A schema with a NOT NULL column with a default, every type, and two tables.
public let elementsSchema = """
    CREATE TABLE elements (
        symbol TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        atomic_number INTEGER,
        mass REAL,
        notes TEXT
    );
    CREATE TABLE facilities (id TEXT PRIMARY KEY, name TEXT, capacity INTEGER);
    """

/// Every row of a query as text, for comparing replicas.
public func dump(_ r: any SQLReplicaStore, _ sql: String) async throws -> [String] {
    let rows = Rows()
    try await r.query(sql) { e in rows.add("\(e)") }
    return rows.all
}

/// Every event of an export as text.
public func exported(_ r: any ReplicaStore, _ table: String) async throws -> [String] {
    let rows = Rows()
    try await r.export(table: table) { e in rows.add("\(e)") }
    return rows.all
}

/// Collects strings from `@Sendable` callbacks.
public final class Rows: @unchecked Sendable {
    private var items: [String] = []
    private let lock = NSLock()
    public init() {}
    public func add(_ s: String) { lock.withLock { items.append(s) } }
    public var all: [String] { lock.withLock { items } }
}

/// The whole state a user can see: the schema and every user table, in
/// primary-key order.
public func fullDump(_ r: any ReplicaStore) async throws -> [String] {
    var out = [try await r.schemaSQL()]
    for t in try await r.schema() { out += try await exported(r, t.name) }
    return out
}

/// Free TCP ports on loopback for the tests of this process, each handed
/// out once, and taken from below the kernel's ephemeral range, so that no
/// outgoing connection's local port (always from that range) can hold a
/// port a test node listens on, or listens on again after a restart.
public enum TestPorts {
    private static let given = Mutex<Set<Int>>([])

    /// The first port of the ephemeral range (32768 if it cannot be read).
    static let ephemeralStart: Int = {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) } ?? 32768
    }()

    public static func fresh() -> Int {
        let high = max(ephemeralStart, 12_000)
        let low = max(1024, high - 12_000)
        while true {
            let port = Int.random(in: low..<high)
            guard given.withLock({ !$0.contains(port) }) else { continue }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(fd)
            if bound == 0 && given.withLock({ $0.insert(port).inserted }) { return port }
        }
    }
}
