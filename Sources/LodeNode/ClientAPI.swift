import Foundation
import HTTPTypes
import Hummingbird
import LodeCore
import LodeProtocol
import LodeStore
import LodeSync
import Logging
import NIOCore
import ServiceLifecycle

/// The node's HTTP/JSON API (documented in `Protocol/client-api.yaml`).
/// `lode` is a thin client of it; `curl --unix-socket` works as well.
public struct ClientAPI: Sendable {
    let node: Node
    /// The host the peer port listens on, for status.
    let listenHost: String
    /// The node's sync engine.
    let sync: SyncEngine

    /// Creates the API of `node`.
    public init(node: Node, listenHost: String, sync: SyncEngine) {
        self.node = node
        self.listenHost = listenHost
        self.sync = sync
    }

    /// The node's status: identity, datasets with their vectors, peers.
    public func status() async throws -> API.Status {
        let peers = await sync.status().map { p in
            API.PeerInfo(
                address: p.address, state: p.state, site: p.site,
                datasets: p.lag.isEmpty ? nil : p.lag.mapValues { API.PeerInfo.Lag(ahead: $0.ahead, behind: $0.behind) },
                lastError: p.lastError)
        }
        let id = node.identity.certificate
        return API.Status(
            site: id.name, siteKey: id.site.hex, role: id.role.rawValue, cluster: id.cluster,
            listen: "\(listenHost):\(sync.port ?? 0)",
            dataDir: node.paths.dataDir, version: Node.version, datasets: try await datasetInfos(), peers: peers)
    }

    /// Builds the router for the local socket.
    public func router() -> Router<BasicRequestContext> { router(BasicRequestContext.self, role: nil) }

    /// Builds the router. With `role` set (a remote client's certificate
    /// role), requests that role may not make are refused.
    public func router<Context: RequestContext>(_ context: Context.Type, role: (@Sendable (Context) async -> Role?)?) -> Router<Context> {
        let router = Router(context: Context.self)
        router.add(middleware: ErrorMiddleware())
        if let role { router.add(middleware: RoleMiddleware(role: role)) }
        let v1 = router.group("v1")
        v1.get("status") { _, _ in try json(try await status()) }
        v1.get("datasets") { _, _ in try json(await datasetInfos()) }
        v1.post("datasets") { req, ctx in
            let body = try await req.decode(as: API.CreateDataset.self, context: ctx)
            try await node.createDataset(body.name, schema: body.schema)
            return try json(await datasetInfo(body.name), status: .created)
        }
        v1.get("datasets/:ds") { _, ctx in try json(await datasetInfo(try ctx.parameters.require("ds"))) }
        v1.get("datasets/:ds/schema") { _, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            return text(try await r.schemaSQL(), contentType: "application/sql")
        }
        v1.post("datasets/:ds/alter") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            let body = try await req.decode(as: API.AlterDataset.self, context: ctx)
            let result = try await r.alter(try SchemaParser.parse(body.schema))
            return try json(API.AlterResult(addedTables: result.tables, addedColumns: result.columns))
        }
        v1.post("datasets/:ds/query") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            let body = try await req.decode(as: API.SQLRequest.self, context: ctx)
            let format = try resultFormat(req)
            return try await stream(format) { each in try await r.query(body.sql, each) }
        }
        v1.get("datasets/:ds/tables/:table/export") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            let table = try ctx.parameters.require("table")
            return try await stream(try resultFormat(req)) { each in try await r.export(table: table, each) }
        }
        v1.post("datasets/:ds/exec") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            let body = try await req.decode(as: API.SQLRequest.self, context: ctx)
            let rep = try await r.exec(body.sql)
            return try json(API.ExecResult(rowsChanged: rep.rowsChanged, commits: rep.commits))
        }
        v1.post("datasets/:ds/tables/:table/import") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            let table = try ctx.parameters.require("table")
            return try await importCSV(r, table: table, body: req.body)
        }
        v1.post("datasets/:ds/annotations") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            let a = try await req.decode(as: API.AnnotateRequest.self, context: ctx)
            let id = try await r.annotate(table: a.table, key: a.pk, column: a.column, text: a.text, tags: a.tags, replyTo: a.replyTo)
            return try json(["id": id], status: .created)
        }
        v1.get("datasets/:ds/annotations") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            let q = req.uri.queryParameters
            let filter = AnnotationFilter(
                table: q.get("table"), key: q.get("pk"), tag: q.get("tag"), search: q.get("search"),
                limit: q.get("limit").flatMap { Int($0) })
            return try json(
                try await r.annotations(filter).map {
                    API.Annotation(
                        id: $0.id, table: $0.table, pk: $0.key, column: $0.column, text: $0.text, author: $0.author,
                        status: $0.status, replyTo: $0.replyTo, created: $0.created, tags: $0.tags, targetExists: $0.targetExists)
                })
        }
        v1.get("datasets/:ds/tables/:table/history") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            guard let pk = req.uri.queryParameters.get("pk") else { throw NodeError(.badInput, "history needs ?pk=KEY") }
            return try json(
                try await r.history(table: try ctx.parameters.require("table"), key: pk).map {
                    API.HistoryEntry(time: $0.time, site: $0.site, seq: $0.seq, column: $0.column, value: $0.value, won: $0.won)
                })
        }
        v1.get("datasets/:ds/conflicts") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            let all = req.uri.queryParameters.get("all").map { $0 == "1" || $0 == "true" } ?? false
            return try json(
                try await r.conflicts(includeResolved: all).map {
                    API.Conflict(
                        table: $0.table, pk: $0.key, column: $0.column, winnerValue: $0.winnerValue, winnerSite: $0.winnerSite,
                        winnerTime: $0.winnerTime, loserValue: $0.loserValue, loserSite: $0.loserSite,
                        loserTime: $0.loserTime, resolved: $0.resolved)
                })
        }
        v1.get("peers") { _, _ in try json(try await status().peers) }
        v1.post("peers") { req, ctx in
            let body = try await req.decode(as: API.PeerRequest.self, context: ctx)
            let added = try node.addPeer(body.address)
            sync.peersChanged()
            return try json(["address": body.address, "added": added ? "yes" : "already there"], status: added ? .created : .ok)
        }
        v1.delete("peers/:address") { _, ctx in
            let address = try ctx.parameters.require("address")
            guard try node.removePeer(address) else { throw NodeError(.notFound, "\(address) is not a peer of this node") }
            sync.peersChanged()
            return Response(status: .noContent)
        }
        v1.post("sync") { req, ctx in
            let body = try await req.decode(as: API.SyncRequest.self, context: ctx)
            sync.syncNow()
            guard body.wait ?? false else { return try json(API.SyncResult(inSync: false, apart: [], waited: false)) }
            let timeout = max(0, min(body.timeout ?? 60, 86_400))
            let result = await sync.waitUntilInSync(timeout: .milliseconds(Int(timeout * 1000)))
            return try json(API.SyncResult(inSync: result.inSync, apart: result.apart, waited: true))
        }
        v1.get("datasets/:ds/watch") { req, ctx in
            let r = try node.replica(try ctx.parameters.require("ds"))
            guard let sql = req.uri.queryParameters.get("sql") else { throw NodeError(.badInput, "watch needs ?sql=QUERY") }
            return try await watch(r, sql: String(sql))
        }
        return router
    }

    // MARK: Helpers

    func datasetInfos() async throws -> [API.DatasetInfo] {
        var out: [API.DatasetInfo] = []
        for name in node.datasetNames() { out.append(try await datasetInfo(name)) }
        return out
    }

    func datasetInfo(_ name: String) async throws -> API.DatasetInfo {
        let r = try node.replica(name)
        let sites = try await r.sites()
        let names = Dictionary(sites.map { ($0.site, $0.name) }, uniquingKeysWith: { a, _ in a })
        let vector = r.vector.sorted.map { API.VectorEntry(site: names[$0.site].flatMap { $0 } ?? $0.site.short, key: $0.site.hex, seq: $0.seq) }
        return API.DatasetInfo(
            name: name, tables: try await r.rowCounts().map { API.DatasetInfo.Table(name: $0.table, rows: $0.rows) },
            bytes: r.fileSize, commits: try await r.commitCount(), vector: vector, rejected: try await r.rejectionCount())
    }

    func resultFormat(_ req: Request) throws -> ResultFormat {
        guard let f = req.uri.queryParameters.get("format") else { return .json }
        guard let format = ResultFormat(rawValue: String(f)) else {
            throw NodeError(.badInput, "unknown format \(f): use csv, json or ndjson")
        }
        return format
    }

    /// Streams rows produced on a database thread. The producer runs until
    /// its first chunk (the column names) before the response starts, so
    /// that errors such as a bad table name become proper error responses.
    func stream(
        _ format: ResultFormat, _ produce: @escaping @Sendable (@escaping @Sendable (QueryEvent) throws -> Void) async throws -> Void
    ) async throws -> Response {
        let pipe = ChunkPipe()
        let encoder = EncoderBox(format)
        let producer = Task {
            do {
                try await produce { event in
                    switch event {
                    case .columns(let c): try pipe.send(encoder.columns(c))
                    case .row(let r): if let chunk = encoder.row(r) { try pipe.send(chunk) }
                    }
                }
                try pipe.send(encoder.finish())
                pipe.finish()
            } catch {
                pipe.finish(error)
            }
        }
        let first: [UInt8]?
        do {
            first = try await pipe.next()
        } catch {
            pipe.cancel()
            _ = await producer.result
            throw error
        }
        var headers = HTTPFields()
        headers[.contentType] = format.contentType
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                do {
                    if let first { try await writer.write(ByteBuffer(bytes: first)) }
                    while let chunk = try await pipe.next() { try await writer.write(ByteBuffer(bytes: chunk)) }
                    try await writer.finish(nil)
                } catch {
                    pipe.cancel()
                    _ = await producer.result
                    throw error
                }
                _ = await producer.result
            })
    }

    /// Spools the uploaded CSV to a temporary file (so the import, which is
    /// one transaction, never waits on the network), then imports it,
    /// answering with NDJSON progress lines and a final result line.
    func importCSV(_ r: Replica, table: String, body: RequestBody) async throws -> Response {
        try FileManager.default.createDirectory(atPath: node.paths.tmp, withIntermediateDirectories: true)
        let spool = node.paths.tmp + "/upload-\(UUID().uuidString).csv"
        guard FileManager.default.createFile(atPath: spool, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = FileHandle(forWritingAtPath: spool)
        else {
            throw NodeError(.storage, "cannot create \(spool)")
        }
        do {
            for try await buffer in body {
                try handle.write(contentsOf: buffer.readableBytesView)
            }
            try handle.close()
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: spool)
            throw error
        }
        let pipe = ChunkPipe(capacity: 64)
        let encoder = JSONEncoder()
        @Sendable func line(_ e: API.ImportEvent) -> [UInt8] { Array((try? encoder.encode(e)) ?? Data()) + [0x0A] }
        let task = Task {
            defer { try? FileManager.default.removeItem(atPath: spool) }
            do {
                let rep = try await r.importCSV(table: table, path: spool) { p in
                    try? pipe.send(line(API.ImportEvent(progress: API.ImportProgress(rows: p.rows, bytes: p.bytes, totalBytes: p.totalBytes))))
                }
                try pipe.send(
                    line(API.ImportEvent(result: API.ImportResult(rowsRead: rep.rowsRead, rowsChanged: rep.rowsChanged, commits: rep.commits))))
                pipe.finish()
            } catch {
                let (_, code, message) = describeError(error)
                try? pipe.send(line(API.ImportEvent(error: .init(code: code, message: message))))
                pipe.finish()
            }
        }
        var headers = HTTPFields()
        headers[.contentType] = ResultFormat.ndjson.contentType
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                while let chunk = try await pipe.next() { try await writer.write(ByteBuffer(bytes: chunk)) }
                _ = await task.result
                try await writer.finish(nil)
            })
    }
}

extension ClientAPI {
    /// The most rows one `watch` result may have.
    static let watchRowLimit = 10_000

    /// Runs a query now and again after every change to the dataset that
    /// alters its result, answering with one NDJSON line per distinct result:
    /// `{"columns": [...], "rows": [[...], ...]}`. Ends when the client goes.
    func watch(_ replica: Replica, sql: String) async throws -> Response {
        @Sendable func run() async throws -> [UInt8] {
            let rows = RowCollector(limit: ClientAPI.watchRowLimit)
            try await replica.query(sql) { event in try rows.add(event) }
            return rows.line()
        }
        let first = try await run()  // errors become error responses
        let (changes, continuation) = AsyncStream.makeStream(of: Bool.self, bufferingPolicy: .bufferingNewest(2))
        let token = replica.addObserver { _ in continuation.yield(true) }
        var headers = HTTPFields()
        headers[.contentType] = ResultFormat.ndjson.contentType
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer {
                    replica.removeObserver(token)
                    continuation.finish()
                }
                // A blank line every few seconds finds out when the client has
                // gone; the node's shutdown ends the watch too.
                let heartbeat = Task {
                    while !Task.isCancelled {
                        try await Task.sleep(for: .seconds(5))
                        continuation.yield(false)
                    }
                }
                defer { heartbeat.cancel() }
                try await withGracefulShutdownHandler {
                    var last = first
                    try await writer.write(ByteBuffer(bytes: first))
                    for await changed in changes {
                        guard changed else {
                            try await writer.write(ByteBuffer(bytes: [0x0A]))
                            continue
                        }
                        let next = try await run()
                        if next != last {
                            try await writer.write(ByteBuffer(bytes: next))
                            last = next
                        }
                    }
                } onGracefulShutdown: {
                    continuation.finish()
                }
                try await writer.finish(nil)
            })
    }
}

/// Gathers one query result as a single NDJSON line.
final class RowCollector: @unchecked Sendable {
    private var columns: [String] = []
    private var rows: [[Value]] = []
    let limit: Int
    init(limit: Int) { self.limit = limit }

    func add(_ e: QueryEvent) throws {
        switch e {
        case .columns(let c): columns = c
        case .row(let r):
            guard rows.count < limit else { throw NodeError(.badInput, "watch shows at most \(limit) rows; narrow the query") }
            rows.append(r)
        }
    }

    func line() -> [UInt8] {
        var s = "{\"columns\":[" + columns.map(ResultEncoder.jsonString).joined(separator: ",") + "],\"rows\":["
        s += rows.map { "[" + $0.map(ResultEncoder.jsonValue).joined(separator: ",") + "]" }.joined(separator: ",")
        s += "]}\n"
        return Array(s.utf8)
    }
}

/// Refuses, for a remote client, what its certificate's role may not do:
/// a reader or relay only reads, an annotator also annotates.
struct RoleMiddleware<Context: RequestContext>: RouterMiddleware {
    let role: @Sendable (Context) async -> Role?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let r = await role(context) else { throw NodeError(.forbidden, "the client certificate grants no role") }
        let path = request.uri.path
        let reads = request.method == .get || path.hasSuffix("/query")
        let annotates = request.method == .post && path.hasSuffix("/annotations")
        let allowed = reads || r == .editor || (annotates && r == .annotator)
        guard allowed else {
            throw NodeError(.forbidden, "the client's certificate is for a \(r.rawValue), which may not \(request.method) \(path)")
        }
        return try await next(request, context)
    }
}

/// A ResultEncoder shared between the producer's callbacks (which run one
/// at a time on the database thread).
final class EncoderBox: @unchecked Sendable {
    private var encoder: ResultEncoder
    init(_ format: ResultFormat) { encoder = ResultEncoder(format) }
    func columns(_ c: [String]) -> [UInt8] { encoder.columns(c) }
    func row(_ r: [Value]) -> [UInt8]? { encoder.row(r) }
    func finish() -> [UInt8] { encoder.finish() }
}

func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
}

func text(_ s: String, contentType: String = "text/plain; charset=utf-8") -> Response {
    var headers = HTTPFields()
    headers[.contentType] = contentType
    return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: s)))
}

/// The HTTP status for an error code shared by `StoreError` and `NodeError`.
func httpStatus(_ code: String) -> HTTPResponse.Status {
    switch code {
    case "bad_input": .badRequest
    case "not_found": .notFound
    case "already_exists": .conflict
    case "forbidden": .forbidden
    case "rejected": .unprocessableContent
    case "unavailable": .serviceUnavailable
    default: .internalServerError
    }
}

/// HTTP status, code and message for any error the API can meet.
func describeError(_ error: any Error) -> (HTTPResponse.Status, String, String) {
    switch error {
    case let e as StoreError:
        return (httpStatus(e.code.rawValue), e.code.rawValue, e.description)
    case let e as NodeError:
        return (httpStatus(e.code.rawValue), e.code.rawValue, e.message)
    case let e as HTTPError:
        return (e.status, "bad_request", e.body ?? "\(e.status)")
    case is DecodingError:
        return (.badRequest, "bad_input", "the request body is not the JSON this endpoint expects: \(error)")
    default:
        if let e = StoreError.explaining(error) { return (.init(code: 507, reasonPhrase: "Insufficient Storage"), e.code.rawValue, e.message) }
        return (.internalServerError, "internal", "\(error)")
    }
}

/// Turns thrown errors into `{"error": {"code", "message"}}` responses.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let (status, code, message) = describeError(error)
            if status.code >= 500 {
                context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return try json(API.ErrorBody(code: code, message: message), status: status)
        }
    }
}
