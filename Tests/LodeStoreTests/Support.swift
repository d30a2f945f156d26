import Crypto
import Foundation
import LodeCore

@testable import LodeStore

/// A fresh temporary directory, removed when the value is dropped.
final class TempDir: @unchecked Sendable {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "lode-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
    func write(_ name: String, _ text: String) -> String {
        let p = file(name)
        try! text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
}

func site(_ n: UInt8, _ name: String, role: Role = .editor) -> LocalSite {
    let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: n, count: 32))
    return LocalSite(writer: FeedWriter(key: key), name: name, role: role, certificate: [])
}

/// Tells every replica about every site (what certificates do in a node).
func introduce(_ replicas: [Replica]) async throws {
    for r in replicas {
        for other in replicas {
            try await r.registerSite(SiteRecord(site: other.local.site, name: other.local.name, role: other.local.role, certificate: nil))
        }
    }
}

let elementsSchema = """
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
func dump(_ r: Replica, _ sql: String) async throws -> [String] {
    let rows = Rows()
    try await r.query(sql) { e in rows.add("\(e)") }
    return rows.all
}

final class Rows: @unchecked Sendable {
    private var items: [String] = []
    private let lock = NSLock()
    func add(_ s: String) { lock.withLock { items.append(s) } }
    var all: [String] { lock.withLock { items } }
}

/// The whole state a user can see: every user table, schema included.
func fullDump(_ r: Replica) async throws -> [String] {
    var out = [try await r.schemaSQL()]
    for t in try await r.schema() {
        out += try await dump(r, "SELECT * FROM \(t.name) ORDER BY 1")
    }
    return out
}
