import Foundation
import LodeCore
import LodeStore

/// What `lode serve` does in a data directory that holds no node: make a
/// development CA and site, and load the bundled `rare-earths` dataset.
public enum DevelopmentBootstrap {
    /// The site name for a development node: the host name, tidied.
    static func defaultSiteName() -> String {
        let host = ProcessInfo.processInfo.hostName.lowercased().split(separator: ".").first.map(String.init) ?? ""
        let tidy = String(host.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "-" }).trimmingCharacters(in: CharacterSet(charactersIn: "-"))
        return Identifier.isValidDataset(tidy) ? tidy : "dev"
    }

    /// Creates the CA, the site and the dataset (in the PostgreSQL database
    /// at `store`, if given). Returns what it did, as lines for the user.
    public static func run(dataDir: String, store: String? = nil) async throws -> [String] {
        let paths = NodePaths(dataDir)
        var lines: [String] = []
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        if !FileManager.default.fileExists(atPath: paths.devCA + "/ca.pem") {
            try Identity.createCA(dir: paths.devCA, cluster: "dev")
            lines.append("created a development CA in \(paths.devCA) (cluster \"dev\")")
        }
        let site = defaultSiteName()
        try Node.initialize(dataDir: dataDir, site: site, role: .editor, caDir: paths.devCA)
        lines.append("created site \(site) (editor) in \(dataDir)")
        let node = try await store.asyncMap { try await Node.open(dataDir: dataDir, store: $0) } ?? Node.open(dataDir: dataDir)
        defer { node.close() }
        if node.datasetNames().contains(SeedData.dataset) {
            lines.append("the database already holds the \(SeedData.dataset) dataset")
            return lines
        }
        let rows = try await loadSeed(into: node)
        lines.append(
            "loaded the bundled \(SeedData.dataset) dataset: \(rows) rows in \(SeedData.tables.count) tables (sources: lode query \(SeedData.dataset) \"SELECT source FROM facilities\")"
        )
        return lines
    }

    /// Creates the bundled dataset in `node`. Returns the rows loaded.
    @discardableResult
    public static func loadSeed(into node: Node) async throws -> Int {
        let schema = String(decoding: Data(base64Encoded: SeedData.schema)!, as: UTF8.self)
        let replica = try await node.createDataset(SeedData.dataset, schema: schema)
        try FileManager.default.createDirectory(atPath: node.paths.tmp, withIntermediateDirectories: true)
        var total = 0
        for (table, file, b64) in SeedData.tables {
            let path = node.paths.tmp + "/seed-" + file
            try Data(base64Encoded: b64)!.write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            total += try await replica.importCSV(table: table, path: path).rowsRead
        }
        return total
    }

    /// The bundled files, decoded: name → bytes (for checks and export).
    public static var bundledFiles: [String: [UInt8]] {
        var out = [
            "schema.sql": [UInt8](Data(base64Encoded: SeedData.schema)!),
            "SOURCES.md": [UInt8](Data(base64Encoded: SeedData.sources)!),
        ]
        for (_, file, b64) in SeedData.tables { out[file] = [UInt8](Data(base64Encoded: b64)!) }
        return out
    }
}

extension Optional {
    func asyncMap<T>(_ f: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let w = self else { return nil }
        return try await f(w)
    }
}
