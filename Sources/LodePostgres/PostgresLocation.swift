import Foundation
import LodeStore
import PostgresNIO

/// Where a PostgreSQL store lives, from the URL `lode serve --store` takes:
/// `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, or with
/// `?host=/run/postgresql` a Unix socket folder instead of a network host
/// (libpq's convention). `description` never shows the password.
///
/// ```swift
/// let at = try PostgresLocation("postgresql://lode@127.0.0.1:5432/lode")
/// ```
public struct PostgresLocation: Sendable, CustomStringConvertible {
    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String
    /// The folder of the server's Unix socket, when it is reached by one.
    public var socketDirectory: String?

    public init(_ url: String) throws {
        func bad(_ why: String) -> StoreError {
            StoreError.badInput(
                "\(why): a PostgreSQL store is named postgresql://USER@HOST:PORT/DATABASE (as in postgresql://lode@127.0.0.1:5432/lode)")
        }
        guard let c = URLComponents(string: url), let scheme = c.scheme, ["postgresql", "postgres"].contains(scheme) else {
            throw bad("\(url.split(separator: "@").last.map(String.init) ?? "") is not a postgresql:// URL")
        }
        guard let user = c.user, !user.isEmpty else { throw bad("the URL names no user") }
        let database = String(c.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else { throw bad("the URL names no database") }
        self.user = user.removingPercentEncoding ?? user
        password = c.password.map { $0.removingPercentEncoding ?? $0 }
        self.database = database.removingPercentEncoding ?? database
        socketDirectory = c.queryItems?.first { $0.name == "host" }?.value.flatMap { $0.hasPrefix("/") ? $0 : nil }
        host = c.host.map { $0.hasPrefix("[") ? String($0.dropFirst().dropLast()) : $0 } ?? ""
        if host.isEmpty && socketDirectory == nil { throw bad("the URL names no host") }
        if host.isEmpty { host = "localhost" }
        port = c.port ?? 5432
        guard (1...65535).contains(port) else { throw bad("port \(port) is out of range") }
    }

    /// The URL without its password.
    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "postgresql://\(user)@\(h):\(port)/\(database)" + (socketDirectory.map { "?host=\($0)" } ?? "")
    }

    /// The connection pool's configuration: at most `connections` open.
    func configuration(connections: Int) -> PostgresClient.Configuration {
        var config: PostgresClient.Configuration
        if let dir = socketDirectory {
            config = PostgresClient.Configuration(
                unixSocketPath: "\(dir)/.s.PGSQL.\(port)", username: user, password: password, database: database)
        } else {
            config = PostgresClient.Configuration(
                host: host, port: port, username: user, password: password, database: database, tls: .disable)
        }
        config.options.maximumConnections = max(2, connections)
        config.options.minimumConnections = 0
        config.options.connectTimeout = .seconds(5)
        config.options.additionalStartupParameters = [("application_name", "lode")]
        return config
    }
}
