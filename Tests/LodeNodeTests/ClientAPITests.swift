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

    /// Every path the OpenAPI document lists is served, and answers either
    /// success or the documented JSON error (never an unrouted 404).
    @Test func everyDocumentedPathIsServed() async throws {
        let yaml = try String(contentsOfFile: repoRoot + "/Protocol/client-api.yaml", encoding: .utf8)
        let paths = yaml.split(separator: "\n").filter { $0.hasPrefix("  /") }.map { $0.trimmingCharacters(in: .whitespaces).dropLast() }
        #expect(paths.count >= 17)
        try await withNode { socket in
            for p in paths {
                var path = String(p).replacingOccurrences(of: "{ds}", with: "rare-earths")
                    .replacingOccurrences(of: "{table}", with: "elements").replacingOccurrences(of: "{address}", with: "nowhere%3A1")
                if path.hasSuffix("/history") { path += "?pk=Nd" }
                let requests: [(suffix: String, method: HTTPMethod, body: String?)] = [
                    ("/query", .POST, "{\"sql\": \"SELECT 1\"}"),
                    ("/exec", .POST, "{\"sql\": \"UPDATE elements SET notes = 'x' WHERE symbol = 'Nd'\"}"),
                    ("/alter", .POST, "{\"schema\": \"CREATE TABLE extra (id TEXT PRIMARY KEY, note TEXT)\"}"),
                    ("/import", .POST, "symbol,notes\nNd,y\n"),
                    ("/sync", .POST, "{}"),
                    // Without a query, a watch answers at once (with an error) instead of streaming.
                    ("/watch", .GET, nil),
                ]
                let (method, body) =
                    requests.first { path.hasSuffix($0.suffix) }.map { ($0.method, $0.body) }
                    ?? (path.hasPrefix("/v1/peers/") ? (.DELETE, nil) : (.GET, nil))
                let (status, text) = try await apiRequest(socket, path, method: method, body: body)
                #expect((200..<300).contains(status) || text.contains("\"error\""), "\(method) \(path): \(status) \(text)")
            }
            let (status, text) = try await apiRequest(socket, "/v1/nowhere")
            #expect(status == 404 && !text.contains("rare-earths"))
        }
    }

    @Test func queryStreamsLargeResultsInEveryFormat() async throws {
        try await withNode { socket in
            let sql =
                "{\"sql\": \"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) SELECT i, 'row ' || i AS label, i / 3.0 AS third FROM n\"}"
            for format in ["csv", "json", "ndjson"] {
                let (status, text) = try await apiRequest(socket, "/v1/datasets/rare-earths/query?format=\(format)", method: .POST, body: sql)
                #expect(status == 200)
                #expect(text.contains("100000"), "\(format)")
                if format == "json" {
                    let parsed = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]]
                    #expect(parsed?.count == 100_000)
                }
            }
            let (status, text) = try await apiRequest(
                socket, "/v1/datasets/rare-earths/query?format=csv", method: .POST, body: "{\"sql\": \"SELECT * FROM nope\"}")
            #expect(status == 404 && text.contains("no such table"))
            let (s2, t2) = try await apiRequest(socket, "/v1/datasets/rare-earths/query", method: .POST, body: "not json")
            #expect(s2 == 400 && t2.contains("\"error\""))
        }
    }

    /// What Schemathesis found against the document (issue 15), each as it
    /// was reported: searches that made the node fail, path parameters not
    /// percent-decoded, error codes outside the documented set, 404 for a
    /// method a path does not have, limits and flags taken as anything.
    @Test func theAPIKeepsItsContract() async throws {
        try await withNode { socket in
            let annotations = "/v1/datasets/rare-earths/annotations"
            _ = try await apiRequest(
                socket, annotations, method: .POST, body: #"{"table": "elements", "pk": "Nd", "text": "check the mass", "tags": []}"#)
            // Searches of blanks, control characters and stray syntax answer, never 500.
            for search in ["%0A", "%00", "%0A%0D%09", "-", "%22", "*", "a%20OR", "NEAR(", "%22%00%22", "mass%00"] {
                let (status, text) = try await apiRequest(socket, annotations + "?search=" + search)
                #expect(status == 200, "search=\(search): \(status) \(text)")
            }
            #expect(try await apiRequest(socket, annotations + "?search=mass").1.contains("check the mass"))
            // A peer address percent-encoded in the path, as HTTP clients send it.
            #expect(try await apiRequest(socket, "/v1/peers", method: .POST, body: #"{"address": "127.0.0.1:27999"}"#).0 == 201)
            #expect(try await apiRequest(socket, "/v1/peers/127.0.0.1%3A27999", method: .DELETE).0 == 204)
            #expect(try await apiRequest(socket, "/v1/datasets/rare%2Dearths").0 == 200)
            // Error codes from the documented set.
            let (s1, t1) = try await apiRequest(socket, "/v1/datasets/rare-earths/exec", method: .POST)
            #expect(s1 == 400 && t1.contains(#""code":"bad_input""#), "\(t1)")
            let (s2, t2) = try await apiRequest(socket, "/v1/nowhere")
            #expect(s2 == 404 && t2.contains(#""code":"not_found""#), "\(t2)")
            // A method the path does not have: 405 with what it takes.
            var req = HTTPClientRequest(url: URL(httpURLWithSocketPath: socket, uri: "/v1/peers")!.absoluteString)
            req.method = .PUT
            let res = try await HTTPClient.shared.execute(req, timeout: .seconds(30))
            let body = String(buffer: try await res.body.collect(upTo: 1 << 20))
            #expect(res.status.code == 405 && res.headers["Allow"].first == "GET, POST, HEAD" && body.contains("method_not_allowed"), "\(body)")
            // Parameters are what the document says, or refused.
            #expect(try await apiRequest(socket, annotations + "?limit=abc").0 == 400)
            #expect(try await apiRequest(socket, annotations + "?limit=0").0 == 400)
            #expect(try await apiRequest(socket, annotations + "?limit=1").0 == 200)
            #expect(try await apiRequest(socket, "/v1/datasets/rare-earths/conflicts?all=garbage").0 == 400)
            #expect(try await apiRequest(socket, "/v1/datasets/rare-earths/conflicts?all=false").0 == 200)
            #expect(try await apiRequest(socket, "/v1/datasets/rare-earths/tables/elements/export?format=xml").0 == 400)
            #expect(try await apiRequest(socket, "/v1/sync", method: .POST, body: #"{"timeout": -1}"#).0 == 400)
            for bad in ["10.0.0.2", "::1:80", "a b:80", "host:+80", "host:080", "host:0", "[zz]:80"] {
                #expect(try await apiRequest(socket, "/v1/peers", method: .POST, body: #"{"address": "\#(bad)"}"#).0 == 400, "\(bad)")
            }
            // An import with no body, or a header that does not fit, is refused before it starts.
            #expect(try await apiRequest(socket, "/v1/datasets/rare-earths/tables/elements/import", method: .POST).0 == 400)
            #expect(try await apiRequest(socket, "/v1/datasets/rare-earths/tables/elements/import", method: .POST, body: "[]").0 == 404)
            #expect(try await apiRequest(socket, "/v1/datasets/rare-earths/tables/nope/import", method: .POST, body: "id\n").0 == 404)
            // A table Lodestone keeps (or any reserved name) is a bad request, not a role's refusal:
            // 403 says only that the caller's role may not (the contract run's role check).
            for table in ["__main__", "_annotations", "sqlite_master"] {
                let (s, t) = try await apiRequest(socket, "/v1/datasets/rare-earths/tables/\(table)/import", method: .POST, body: "id\n1\n")
                #expect(s == 400 && t.contains(#""code":"bad_input""#), "\(table): \(s) \(t)")
            }
            let (s3, t3) = try await apiRequest(
                socket, "/v1/datasets/rare-earths/exec", method: .POST, body: #"{"sql": "DELETE FROM _annotations"}"#)
            #expect(s3 == 400 && t3.contains(#""code":"bad_input""#) && t3.contains("annotate"), "\(t3)")
        }
    }

    /// A client that stops reading a streamed result but keeps its
    /// connection open used to hold a database reader for ever (and with
    /// it every WAL checkpoint). The producer now gives up after the stall
    /// limit; a consumer that keeps reading is never cut off.
    @Test func aClientThatStopsReadingReleasesTheQuery() async throws {
        // Producers block, as a database reader does: on their own threads.
        func produce(_ body: @escaping @Sendable () throws -> Void) async -> (any Error)? {
            await withCheckedContinuation { done in
                DispatchQueue.global().async {
                    do {
                        try body()
                        done.resume(returning: nil)
                    } catch {
                        done.resume(returning: error)
                    }
                }
            }
        }
        let stalled = ChunkPipe(capacity: 1, stallLimit: 0.3)
        let error = await produce {
            try stalled.send([1])
            try stalled.send([2])
        }
        guard let error, error is ChunkPipe.Stalled else {
            Issue.record("a producer whose consumer stopped reading was not released: \(String(describing: error))")
            return
        }
        #expect("\(error)".contains("read nothing for 0.3 seconds"))
        let slow = ChunkPipe(capacity: 1, stallLimit: 5)
        async let steady = produce {
            do {
                for i in 0..<6 { try slow.send([UInt8(i)]) }
                slow.finish()
            } catch {
                slow.finish(error)
                throw error
            }
        }
        var got: [UInt8] = []
        while let chunk = try await slow.next() {
            got += chunk
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(await steady == nil)
        #expect(got == [0, 1, 2, 3, 4, 5])
    }

    @Test func theSocketIsPrivate() async throws {
        try await withNode { socket in
            let mode = (try FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int) ?? 0
            #expect(mode & 0o077 == 0)
            // So are the dataset files, their WAL, and a dataset made while serving.
            #expect(
                try await apiRequest(socket, "/v1/datasets/rare-earths/exec", method: .POST, body: #"{"sql": "UPDATE elements SET name = name"}"#).0
                    == 200)
            let dir = (socket as NSString).deletingLastPathComponent + "/datasets"
            let files = try FileManager.default.contentsOfDirectory(atPath: dir)
            #expect(files.contains("rare-earths.db") && files.contains("rare-earths.db-wal"), "\(files)")
            for f in files {
                let m = (try FileManager.default.attributesOfItem(atPath: dir + "/" + f)[.posixPermissions] as? Int) ?? 0
                #expect(m & 0o077 == 0, "\(f) is \(String(m, radix: 8))")
            }
        }
    }
}
