import Foundation

/// The node config file: the subset of TOML that `deploy/lode.example.toml`
/// uses — `key = "string"`, `key = ["a", "b"]`, comments and blank lines.
/// Unknown keys are errors, so that a typo is never silently ignored.
public struct ConfigFile: Sendable, Equatable {
    public var dataDir: String?
    public var listen: String?
    public var peers: [String] = []
    public var logLevel: String?
    public var apiListen: String?
    /// Seconds.
    public var maxClockDrift: UInt64?
    /// A PostgreSQL URL (`serve --store`).
    public var store: String?
    /// Where operators' plain HTTP listens (`serve --ops-listen`).
    public var opsListen: String?
    /// `text` or `json` (`serve --log-format`).
    public var logFormat: String?
    /// Signatures a checkpoint needs (`serve --checkpoint-quorum`).
    public var checkpointQuorum: Int?

    static let keys: Set<String> = [
        "data_dir", "listen", "peers", "log_level", "api_listen", "max_clock_drift", "store", "ops_listen", "log_format",
        "checkpoint_quorum",
    ]

    /// Reads a config file.
    public static func load(_ path: String) throws -> ConfigFile {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw NodeError(.notFound, "cannot read config file \(path)")
        }
        return try parse(text, name: path)
    }

    /// Parses config text.
    public static func parse(_ text: String, name: String = "config") throws -> ConfigFile {
        var c = ConfigFile()
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = stripComment(String(raw)).trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw NodeError(.badInput, "\(name):\(n + 1): expected key = value")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            guard keys.contains(key) else {
                throw NodeError(.badInput, "\(name):\(n + 1): unknown key \(key) (known: \(keys.sorted().joined(separator: ", ")))")
            }
            switch key {
            case "peers": c.peers = try array(value, name, n + 1)
            case "data_dir": c.dataDir = try string(value, name, n + 1)
            case "listen": c.listen = try string(value, name, n + 1)
            case "api_listen": c.apiListen = try string(value, name, n + 1)
            case "max_clock_drift": c.maxClockDrift = try seconds(value, name, n + 1)
            case "store": c.store = try string(value, name, n + 1)
            case "ops_listen": c.opsListen = try string(value, name, n + 1)
            case "log_format": c.logFormat = try string(value, name, n + 1)
            case "checkpoint_quorum":
                guard let q = Int(value), (1...Node.maxCheckpointQuorum).contains(q) else {
                    throw NodeError(.badInput, "\(name):\(n + 1): expected a whole number of signatures from 1 to \(Node.maxCheckpointQuorum)")
                }
                c.checkpointQuorum = q
            default: c.logLevel = try string(value, name, n + 1)
            }
        }
        return c
    }

    static func stripComment(_ s: String) -> String {
        var inString = false
        for (i, ch) in s.enumerated() {
            if ch == "\"" { inString.toggle() }
            if ch == "#" && !inString { return String(s.prefix(i)) }
        }
        return s
    }

    static func string(_ v: String, _ name: String, _ line: Int) throws -> String {
        guard v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") else {
            throw NodeError(.badInput, "\(name):\(line): expected a quoted string")
        }
        return String(v.dropFirst().dropLast())
    }

    /// A whole number of seconds, as the drift bound takes.
    static func seconds(_ v: String, _ name: String, _ line: Int) throws -> UInt64 {
        guard let n = UInt64(v), n <= maxClockDriftSeconds else {
            throw NodeError(.badInput, "\(name):\(line): expected a whole number of seconds from 0 to \(maxClockDriftSeconds)")
        }
        return n
    }

    /// The largest drift bound accepted: one week.
    public static let maxClockDriftSeconds: UInt64 = 7 * 86_400

    static func array(_ v: String, _ name: String, _ line: Int) throws -> [String] {
        guard v.hasPrefix("["), v.hasSuffix("]") else {
            throw NodeError(.badInput, "\(name):\(line): expected [\"HOST:PORT\", …]")
        }
        let inner = v.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
        if inner.isEmpty { return [] }
        return try inner.split(separator: ",").map { try string($0.trimmingCharacters(in: .whitespaces), name, line) }
    }
}
