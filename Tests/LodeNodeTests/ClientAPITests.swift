import AsyncHTTPClient
import Foundation
import LodeCore
import LodeTestSupport
import Logging
import NIOCore
import NIOHTTP1
import Testing

@testable import LodeNode

/// The client API over its real Unix socket.
@Suite(.serialized) struct ClientAPITests {
    let scratch = TempDir("lode-node")

    func withNode(_ body: (String) async throws -> Void) async throws {
        let dir = scratch.file("node")
        _ = try await DevelopmentBootstrap.run(dataDir: dir)
        var options = ServeOptions(dataDir: dir, listen: "127.0.0.1:0")
        options.handleSignals = false
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let node = try await NodeServer.launch(options, logger: logger)
        do {
            try await body(dir + "/lode.sock")
        } catch {
            await node.stop()
            throw error
        }
        await node.stop()
    }

    func get(_ socket: String, _ path: String, method: HTTPMethod = .GET, body: String? = nil) async throws -> (UInt, String) {
        var req = HTTPClientRequest(url: URL(httpURLWithSocketPath: socket, uri: path)!.absoluteString)
        req.method = method
        if let body {
            req.body = .bytes(ByteBuffer(string: body))
            req.headers.add(name: "Content-Type", value: path.hasSuffix("/import") ? "text/csv" : "application/json")
        }
        let res = try await HTTPClient.shared.execute(req, timeout: .seconds(30))
        let bytes = try await res.body.collect(upTo: 16 << 20)
        return (res.status.code, String(buffer: bytes))
    }

    /// Every path the OpenAPI document lists is served, and answers either
    /// success or the documented JSON error (never an unrouted 404).
    @Test func everyDocumentedPathIsServed() async throws {
        let yaml = try String(contentsOfFile: repoRoot + "/Protocol/client-api.yaml", encoding: .utf8)
        let paths = yaml.split(separator: "\n").filter { $0.hasPrefix("  /") }.map { $0.trimmingCharacters(in: .whitespaces).dropLast() }
        #expect(paths.count >= 14)
        try await withNode { socket in
            for p in paths {
                var path = String(p).replacingOccurrences(of: "{ds}", with: "rare-earths")
                    .replacingOccurrences(of: "{table}", with: "elements").replacingOccurrences(of: "{address}", with: "nowhere%3A1")
                if path.hasSuffix("/history") { path += "?pk=Nd" }
                let prefix = path == "/metrics" ? "" : "/v1"
                let methods: [(HTTPMethod, String?)] =
                    path.hasSuffix("/query")
                    ? [(.POST, "{\"sql\": \"SELECT 1\"}")]
                    : path.hasSuffix("/exec")
                        ? [(.POST, "{\"sql\": \"UPDATE elements SET notes = 'x' WHERE symbol = 'Nd'\"}")]
                        : path.hasSuffix("/alter")
                            ? [(.POST, "{\"schema\": \"CREATE TABLE extra (id TEXT PRIMARY KEY)\"}")]
                            : path.hasSuffix("/import")
                                ? [(.POST, "symbol,notes\nNd,y\n")]
                                : path.hasPrefix("/peers/")
                                    ? [(.DELETE, nil)]
                                    : [(.GET, nil)]
                for (method, body) in methods {
                    let (status, text) = try await get(socket, prefix + path, method: method, body: body)
                    #expect((200..<300).contains(status) || text.contains("\"error\""), "\(method) \(path): \(status) \(text)")
                }
            }
            let (status, text) = try await get(socket, "/v1/nowhere")
            #expect(status == 404 && !text.contains("rare-earths"))
        }
    }

    @Test func queryStreamsLargeResultsInEveryFormat() async throws {
        try await withNode { socket in
            let sql =
                "{\"sql\": \"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) SELECT i, 'row ' || i AS label, i / 3.0 AS third FROM n\"}"
            for format in ["csv", "json", "ndjson"] {
                let (status, text) = try await get(socket, "/v1/datasets/rare-earths/query?format=\(format)", method: .POST, body: sql)
                #expect(status == 200)
                #expect(text.contains("100000"), "\(format)")
                if format == "json" {
                    let parsed = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]]
                    #expect(parsed?.count == 100_000)
                }
            }
            let (status, text) = try await get(
                socket, "/v1/datasets/rare-earths/query?format=csv", method: .POST, body: "{\"sql\": \"SELECT * FROM nope\"}")
            #expect(status == 404 && text.contains("no such table"))
            let (s2, t2) = try await get(socket, "/v1/datasets/rare-earths/query", method: .POST, body: "not json")
            #expect(s2 == 400 && t2.contains("\"error\""))
        }
    }

    @Test func theSocketIsPrivate() async throws {
        try await withNode { socket in
            let mode = (try FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int) ?? 0
            #expect(mode & 0o077 == 0)
        }
    }
}
