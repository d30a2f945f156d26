import Foundation
import Hummingbird
import LodeCore
import LodeProtocol
import LodeStore
import NIOCore
import ServiceLifecycle

/// The rows of a dataset: read-only queries and SQL edits, export and
/// import of a table, a row's history, and a query watched as it changes.
struct TableRoutes: Sendable {
    let node: Node

    func add(to group: RouterGroup<DatasetRequestContext>) {
        group.on(.post, "query", needs: .read) { req, ctx in
            let body = try await req.decodeJSON(as: API.SQLRequest.self)
            let format = try req.resultFormat()
            let r = try ctx.dataset
            if let text = body.asOf {
                let point = try historyPoint(text, "asOf")
                return try await stream(format) { each in try await r.query(body.sql, asOf: point, each) }
            }
            return try await stream(format) { each in try await r.query(body.sql, each) }
        }
        group.on(.get, "diff", needs: .read) { req, ctx in
            guard let from = req.query("from") else { throw NodeError(.badInput, "diff needs ?from=TIME (ISO 8601, or a commit SITE:SEQ)") }
            let start = try historyPoint(from, "from")
            let end = try req.query("to").map { try historyPoint($0, "to") }
            let table = req.query("table")
            let format = try req.resultFormat()
            let r = try ctx.dataset
            return try await stream(format) { each in try await r.diff(from: start, to: end, table: table, each) }
        }
        group.on(.post, "exec", needs: .edit) { req, ctx in
            // A script as the body (`application/sql`) streams to a file and
            // runs from there in bounded memory; JSON carries up to 2 MiB.
            if let type = req.headers[.contentType], type.lowercased().hasPrefix("application/sql") {
                // Read whole before the dataset is looked up: an answer sent
                // while the client is still uploading reaches it as a broken
                // upload, not as the answer.
                let spool = try await node.spool(req.body, as: "sql", empty: "the request needs a body of SQL statements")
                defer { try? FileManager.default.removeItem(atPath: spool) }
                return try json(try await ctx.dataset.exec(file: spool))
            }
            let body = try await req.decodeJSON(as: API.SQLRequest.self)
            guard body.asOf == nil else { throw NodeError(.badInput, "exec writes now; asOf is for query only") }
            let report = try await ctx.dataset.exec(body.sql)
            return try json(report)
        }
        group.on(.get, "tables/:table/export", needs: .read) { req, ctx in
            let table = try ctx.parameters.decoded("table")
            let r = try ctx.dataset
            return try await stream(try req.resultFormat()) { each in try await r.export(table: table, each) }
        }
        group.on(.post, "tables/:table/import", needs: .edit) { req, ctx in
            // Spooled before the dataset is looked up (as exec's script is).
            let spool = try await node.spool(req.body, as: "csv", empty: "the request needs a CSV body: a header naming the columns, then rows")
            return try await importCSV(spool: spool, into: { try ctx.dataset }, table: try ctx.parameters.decoded("table"))
        }
        group.on(.get, "tables/:table/history", needs: .read) { req, ctx in
            guard let pk = req.query("pk") else { throw NodeError(.badInput, "history needs ?pk=KEY") }
            return try json(try await ctx.dataset.history(table: try ctx.parameters.decoded("table"), pk: pk))
        }
        group.on(.get, "watch", needs: .read) { req, ctx in
            guard let sql = req.query("sql") else { throw NodeError(.badInput, "watch needs ?sql=QUERY") }
            return try await watch(try ctx.dataset, sql: sql)
        }
    }

    /// A point in history a request names, or a bad-input error saying
    /// what is accepted.
    func historyPoint(_ text: String, _ field: String) throws -> HistoryPoint {
        guard let p = HistoryPoint.parse(text) else {
            throw NodeError(
                .badInput, "\(field) must be \(HistoryPoint.forms), not \(text)")
        }
        return p
    }

    /// Imports the uploaded CSV, spooled to a temporary file (so the import,
    /// which is one transaction, never waits on the network), into the
    /// dataset `dataset` names, answering with NDJSON progress lines and a
    /// final result line. The file is removed once done.
    func importCSV(spool: String, into dataset: () throws -> any SQLReplicaStore, table: String) async throws -> Response {
        // A file whose dataset, table or header does not fit is refused with
        // a status of its own, before the answer starts; later errors (a bad
        // line) come as the stream's last line.
        let r: any SQLReplicaStore
        do {
            r = try dataset()
            try CSVImport.check(table: table, by: r.local)
            let tables = try await r.schema()
            guard let t = tables.first(where: { $0.name == table }) else {
                throw DatasetRules.noTable(table, in: r.dataset, tables: tables.map(\.name))
            }
            try CSVImport.checkHeader(path: spool, table: t)
        } catch {
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
                    try? pipe.send(line(API.ImportEvent(progress: p)))
                }
                try pipe.send(line(API.ImportEvent(result: rep)))
                pipe.finish()
            } catch {
                let answer: any APIError = (error as? any APIError) ?? UnexpectedError(error)
                try? pipe.send(line(API.ImportEvent(error: .init(code: answer.apiCode, message: answer.apiMessage, remedy: answer.apiRemedy))))
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

    /// The most rows one `watch` result may have.
    static let watchRowLimit = 10_000

    /// Runs a query now and again after every change to the dataset that
    /// alters its result, answering with server-sent events, one per
    /// distinct result (`data: {"columns": [...], "rows": [[...], ...]}`).
    /// Ends when the client goes or the node stops.
    func watch(_ replica: any SQLReplicaStore, sql: String) async throws -> Response {
        @Sendable func run() async throws -> [UInt8] {
            let rows = RowCollector(limit: TableRoutes.watchRowLimit)
            try await replica.query(sql) { event in try rows.add(event) }
            return rows.line()
        }
        let first = try await run()  // errors become error responses
        let (changes, continuation) = AsyncStream.makeStream(of: Bool.self, bufferingPolicy: .bufferingNewest(2))
        let token = replica.addObserver { _ in continuation.yield(true) }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer {
                    replica.removeObserver(token)
                    continuation.finish()
                }
                // A comment every few seconds finds out when the client has
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
                    try await writer.write(ByteBuffer(bytes: RowCollector.event(first)))
                    for await changed in changes {
                        guard changed else {
                            try await writer.write(ByteBuffer(string: ": keepalive\n\n"))
                            continue
                        }
                        let next = try await run()
                        if next != last {
                            try await writer.write(ByteBuffer(bytes: RowCollector.event(next)))
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

/// Gathers one query result as a single line of JSON.
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
        s += "]}"
        return Array(s.utf8)
    }

    /// A result as one server-sent event (JSON has no raw newline, so one `data:` line).
    static func event(_ line: [UInt8]) -> [UInt8] { Array("data: ".utf8) + line + [0x0A, 0x0A] }
}
