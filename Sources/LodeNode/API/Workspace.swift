import Foundation
import HTTPTypes
import Hummingbird
import LodeCore
import LodeProtocol
import LodeSQLite
import LodeStore
import LodeWeb
import ServiceLifecycle
import Synchronization

/// The workspace (DESIGN §11) on `--web`: server-rendered pages for the
/// site's people, and the same client API (`/v1/…`) the CLI uses, for the
/// pages' writes, each limited by the signed-in person's role. A browser
/// signs in with a one-time link (`lode ui`, `lode user add`) and holds a
/// session cookie (HttpOnly, SameSite=Strict); every write carries the
/// session's CSRF token; a request whose Host is not this node's address,
/// or a write whose Origin is another site, gets nothing (DNS rebinding,
/// cross-site forms).
struct Workspace: Sendable {
    let api: ClientAPI
    /// Row counts by dataset and table, kept while the dataset's vector
    /// stays the same: counting a million rows takes tens of milliseconds,
    /// and a page shows the count every time.
    let counts = RowCountCache()
    var node: Node { api.node }
    static let cookie = "lode_session"
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!

    /// The router of the workspace's listener, bound to `host` and the port `port` says.
    func router(host: String, port: @escaping @Sendable () -> Int?) -> Router<APIRequestContext> {
        let inner = Router(context: APIRequestContext.self, options: .autoGenerateHeadEndpoints)
        let router = MethodRouter(inner)
        inner.add(middleware: ErrorMiddleware())
        inner.add(middleware: WorkspaceGuard(node: node, host: host, port: port))
        api.addRoutes(to: router)
        router.get("assets/lode.css") { _, _ in asset(Assets.css, "text/css; charset=utf-8") }
        router.get("assets/lode.js") { _, _ in asset(Assets.js, "text/javascript; charset=utf-8") }
        router.get("signin") { req, _ in try signInPage(req) }
        router.post("signin") { req, _ in try await signIn(req) }
        router.post("signout") { req, _ in
            if let id = req.cookies[Workspace.cookie]?.value { try node.file.closeSession(id) }
            var r = Response(status: .noContent)
            r.headers[.setCookie] = "\(Workspace.cookie)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            return r
        }
        router.get("/") { _, ctx in try await page(ctx) { v in Pages.datasets(try await datasets(), viewer: v) } }
        router.get("d/:ds/t/:table") { req, ctx in
            try await page(ctx) { v in Pages.table(try await table(req, ctx), viewer: v) }
        }
        router.get("d/:ds/t/:table/r/:pk") { _, ctx in
            try await page(ctx) { v in Pages.row(try await row(ctx), viewer: v) }
        }
        router.get("d/:ds/annotations") { req, ctx in
            try await page(ctx) { v in
                let ds = try ctx.parameters.decoded("ds")
                let words = req.form("q") ?? "", tag = req.form("tag") ?? "", person = req.form("person") ?? ""
                let status = req.form("status") ?? ""
                var list = try await node.replica(ds).annotations(
                    AnnotationFilter(tag: tag.isEmpty ? nil : tag, search: words.isEmpty ? nil : words, limit: 1000))
                if !person.isEmpty { list = list.filter { $0.person == person || $0.author == person } }
                if !status.isEmpty { list = list.filter { $0.status == status } }
                return Pages.annotations(dataset: ds, list: list, search: words, tag: tag, person: person, status: status, viewer: v)
            }
        }
        router.get("d/:ds/conflicts") { req, ctx in
            try await page(ctx) { v in
                let ds = try ctx.parameters.decoded("ds")
                let all = req.form("all") == "1"
                return Pages.conflicts(dataset: ds, list: try await node.replica(ds).conflicts(includeResolved: all), all: all, viewer: v)
            }
        }
        router.get("people") { req, ctx in
            try await page(ctx) { v in
                // The same permission as the people routes of the API.
                try ctx.caller.check(.operate, req)
                return Pages.people(try node.file.people(), siteRole: node.identity.local.role, viewer: v)
            }
        }
        router.get("peers") { _, ctx in
            try await page(ctx) { v in
                Pages.layout(
                    title: "Peers", viewer: v, crumbs: [("Datasets", "/"), ("Peers", nil)],
                    body: Markup("<h1>Peers</h1><div id=\"peers-live\">\(try await peersHTML())</div>").html)
            }
        }
        router.get("peers/events") { _, _ in
            // Server-sent events: the peers' state every second while the
            // page is open, for at most 10 minutes (the browser reconnects by
            // itself), and never past the node's shutdown, which an open
            // stream would otherwise hold up.
            let body = ResponseBody { writer in
                let end = ContinuousClock.now + .seconds(600)
                while !Task.isCancelled && !Task.isShuttingDownGracefully && ContinuousClock.now < end {
                    let html = try await peersHTML().description.replacingOccurrences(of: "\n", with: " ")
                    try await writer.write(ByteBuffer(string: "data: \(html)\n\n"))
                    try await Task.sleep(for: .seconds(1))
                }
                try await writer.finish(nil)
            }
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"], body: body)
        }
        return inner
    }

    func asset(_ s: String, _ type: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: type, .cacheControl: "public, max-age=3600"], body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    /// What every page is sent with: no script, style or connection but
    /// the node's own, no framing (clickjacking), a Referer only to this
    /// node (a sign-in token in an address never leaves in one; `no-referrer`
    /// would make the browser send `Origin: null` on the sign-in form).
    static let pageHeaders: HTTPFields = [
        .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
        HTTPField.Name("Content-Security-Policy")!:
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        HTTPField.Name("X-Frame-Options")!: "DENY", HTTPField.Name("Referrer-Policy")!: "same-origin",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
    ]

    func html(_ s: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: Workspace.pageHeaders, body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    /// A page for the signed-in person (the guard let only them through).
    func page(_ ctx: APIRequestContext, _ render: (Viewer) async throws -> String) async throws -> Response {
        guard let s = ctx.session else { return html(Pages.signedOut("Sign in to see this page."), status: .unauthorized) }
        let viewer = Viewer(person: s.person.name, role: s.person.role, site: node.identity.local.name, csrf: s.csrf)
        do {
            return html(try await render(viewer))
        } catch let e as APIError {
            let body = Markup("<h1>\(e.status.code == 404 ? "Not found" : "Cannot show this")</h1><p>\(e.apiMessage)</p>").html
            return html(Pages.layout(title: "Error", viewer: viewer, crumbs: [("Datasets", "/")], body: body), status: e.status)
        }
    }

    static let badLink = "This sign-in link does not work: it was used already, it expired, or it is not for this node."

    /// `GET /signin?token=…`: a page with a button that signs in. Opening
    /// the link spends nothing, so a chat client or mail scanner that
    /// fetches it to show a preview does not use it up.
    func signInPage(_ req: Request) throws -> Response {
        let now = Int64(Date().timeIntervalSince1970)
        guard let token = req.form("token"), !token.isEmpty, token.count <= 100, let person = try node.file.signInTokenPerson(token, now: now)
        else { return html(Pages.signedOut(Workspace.badLink), status: .forbidden) }
        return html(Pages.signIn(person: person.name, role: person.role, site: node.identity.local.name, token: token))
    }

    /// `POST /signin` (the form's `token`): spends the link and opens a session.
    func signIn(_ req: Request) async throws -> Response {
        let now = Int64(Date().timeIntervalSince1970)
        let token = formValue(String(buffer: try await req.body.collect(upTo: 4096)), "token") ?? ""
        guard !token.isEmpty, token.count <= 100, let person = try node.file.redeemSignInToken(token, now: now) else {
            return html(Pages.signedOut(Workspace.badLink), status: .forbidden)
        }
        let session = try node.file.openSession(for: person.name, now: now)
        var r = Response(status: .seeOther, headers: [.location: "/"])
        r.headers[.setCookie] = "\(Workspace.cookie)=\(session.id); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(NodeFile.sessionSeconds)"
        return r
    }

    func datasets() async throws -> [Pages.DatasetSummary] {
        var out: [Pages.DatasetSummary] = []
        for name in node.datasetNames() {
            let r = try node.replica(name)
            let counts = try await self.counts.all(r)
            let open = Collected()
            try await r.query("SELECT count(*) FROM _annotations WHERE status = 'open' AND reply_to IS NULL") { e in
                if case .row(let v) = e { open.add(v) }
            }
            let conflicts = try await r.conflicts().count
            out.append(
                Pages.DatasetSummary(
                    name: name, tables: counts.map { ($0.table, $0.rows) },
                    openAnnotations: open.all.first.flatMap { if case .integer(let n)? = $0.first { Int(n) } else { nil } } ?? 0,
                    openConflicts: conflicts))
        }
        return out
    }

    /// A page of a table: 100 rows in the order asked, filtered; key order
    /// pages by key (`after`), so the millionth row costs what the first
    /// does; other orders page by offset.
    func table(_ req: Request, _ ctx: APIRequestContext) async throws -> Pages.TableView {
        let ds = try ctx.parameters.decoded("ds"), name = try ctx.parameters.decoded("table")
        let r = try node.replica(ds)
        guard !Identifier.isReserved(name), let schema = try await r.schema().first(where: { $0.name == name }) else {
            throw NodeError(.notFound, "no table \(name) in dataset \(ds)")
        }
        let pk = schema.primaryKey
        let columns = schema.orderedColumns
        let all = [pk] + columns.map(\.name)
        let sort = req.form("sort").flatMap { all.contains($0) ? $0 : nil } ?? pk
        let desc = req.form("desc") == "1"
        let search = req.form("q") ?? ""
        let filters = all.compactMap { c in req.form("f.\(c)").flatMap { $0.isEmpty ? nil : (column: c, value: $0) } }
        let after = req.form("after")
        let offset = max(0, Int(req.form("offset") ?? "") ?? 0)
        let asOf = req.form("asof").flatMap { $0.isEmpty ? nil : $0 }
        let point = try asOf.map { text in
            guard let p = HistoryPoint.parse(text) else {
                throw NodeError(.badInput, "as of takes \(HistoryPoint.forms), not \(text)")
            }
            return p
        }
        var conditions = filters.map { "\(SchemaSQL.quote($0.column)) = \(sqlText($0.value))" }
        if !search.isEmpty {
            let texts = [pk] + columns.filter { $0.type == .text }.map(\.name)
            conditions.append("(" + texts.map { "\(SchemaSQL.quote($0)) LIKE \(sqlText("%" + search + "%"))" }.joined(separator: " OR ") + ")")
        }
        if sort == pk, let after { conditions.append("\(SchemaSQL.quote(pk)) \(desc ? "<" : ">") \(sqlText(after))") }
        let order =
            sort == pk ? "\(SchemaSQL.quote(pk)) \(desc ? "DESC" : "")" : "\(SchemaSQL.quote(sort)) \(desc ? "DESC" : ""), \(SchemaSQL.quote(pk))"
        // As of a time, the columns added since are not there: `*`, and
        // the names the answer gives.
        let sql = """
            SELECT \(point == nil ? all.map(SchemaSQL.quote).joined(separator: ", ") : "*") FROM \(SchemaSQL.quote(name))
            \(conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")) ORDER BY \(order) LIMIT 101 \(sort == pk ? "" : "OFFSET \(offset)")
            """
        let rows = Collected()
        let shown = Collected()
        if let point {
            try await r.query(sql, asOf: point) { e in
                switch e {
                case .columns(let c): shown.add(c.map(Value.text))
                case .row(let v): rows.add(v)
                }
            }
        } else {
            try await r.query(sql) { e in if case .row(let v) = e { rows.add(v) } }
        }
        var page = rows.all
        let more = page.count > 100
        if more { page.removeLast() }
        // Open annotations on these rows, to mark them.
        var marks: [String: Set<String>] = [:]
        let keys = page.compactMap { if case .text(let k)? = $0.first { k } else { nil } }
        if !keys.isEmpty && point == nil {
            let found = Collected()
            try await r.query(
                """
                SELECT target_pk, coalesce(target_column, '') FROM _annotations
                WHERE target_table = \(sqlText(name)) AND status = 'open' AND reply_to IS NULL AND target_pk IN (\(keys.map(sqlText).joined(separator: ", ")))
                """
            ) { e in if case .row(let v) = e { found.add(v) } }
            for v in found.all { if case .text(let k) = v[0], case .text(let c) = v[1] { marks[k, default: []].insert(c) } }
        }
        var query = filters.map { "f.\(HTML.component($0.column))=\(HTML.component($0.value))" }
        if !search.isEmpty { query.append("q=\(HTML.component(search))") }
        if let asOf { query.append("asof=\(HTML.component(asOf))") }
        query.append("sort=\(HTML.component(sort))")
        if desc { query.append("desc=1") }
        let next: String? =
            !more
            ? nil
            : sort == pk
                ? (keys.last.map { (query + ["after=\(HTML.component($0))"]).joined(separator: "&") })
                : (query + ["offset=\(offset + 100)"]).joined(separator: "&")
        let isFirst = after == nil && offset == 0
        let total = filters.isEmpty && search.isEmpty && point == nil ? try await counts.all(r).first { $0.table == name }?.rows : nil
        let names = shown.all.first.map { $0.dropFirst().compactMap { if case .text(let c) = $0 { c } else { nil } } } ?? columns.map(\.name)
        return Pages.TableView(
            dataset: ds, table: name, primaryKey: pk, columns: names, rows: page, marks: marks, sort: sort, descending: desc,
            filters: filters, search: search, next: next, first: isFirst ? nil : query.joined(separator: "&"), total: total, asOf: asOf)
    }

    func row(_ ctx: APIRequestContext) async throws -> Pages.RowView {
        let ds = try ctx.parameters.decoded("ds"), name = try ctx.parameters.decoded("table"), pk = try ctx.parameters.decoded("pk")
        let r = try node.replica(ds)
        guard !Identifier.isReserved(name), let schema = try await r.schema().first(where: { $0.name == name }) else {
            throw NodeError(.notFound, "no table \(name) in dataset \(ds)")
        }
        let columns = schema.orderedColumns.map(\.name)
        let rows = Collected()
        try await r.query(
            "SELECT \(columns.map(SchemaSQL.quote).joined(separator: ", ")) FROM \(SchemaSQL.quote(name)) WHERE \(SchemaSQL.quote(schema.primaryKey)) = \(sqlText(pk))"
        ) {
            e in if case .row(let v) = e { rows.add(v) }
        }
        let history = try await r.history(table: name, pk: pk)
        let notes = try await r.annotations(AnnotationFilter(table: name, pk: pk))
        // Who resolved each resolved one: the write of its status that is shown.
        var resolvedBy: [String: HistoryEntry] = [:]
        for a in notes where a.status == "resolved" {
            resolvedBy[a.id] = try await r.history(table: AnnotationRows.notes, pk: a.id).last { $0.column == "status" && $0.won }
        }
        return Pages.RowView(
            dataset: ds, table: name, primaryKey: schema.primaryKey, pk: pk, columns: columns, values: rows.all.first, annotations: notes,
            history: history, resolvedBy: resolvedBy)
    }

    func peersHTML() async throws -> HTML {
        let peers = await StatusRoutes(api: api).peers()
        if peers.isEmpty { return Markup("<p>This node has no peers. Add one with <code>lode peers add HOST:PORT</code>.</p>").html }
        let items = peers.map { p -> HTML in
            let lag = (p.datasets ?? [:]).sorted { $0.key < $1.key }.map { d in
                Markup("<li>\(d.key): \(Int(d.value.ahead)) ahead, \(Int(d.value.behind)) behind</li>").html
            }
            return Markup(
                """
                <div class="peer"><strong>\(p.site ?? p.address)</strong> <span class="meta">\(p.address)</span> ·
                <span class="state">\(p.state.rawValue)</span>\(p.lastError.map { Markup(" <span class=\"deleted\">\($0)</span>").html } ?? HTML(raw: ""))
                <ul>\(lag)</ul></div>
                """
            ).html
        }
        return Markup("\(items)").html
    }
}

extension Request {
    /// A query value as an HTML form sends it.
    func form(_ name: String) -> String? { formValue(uri.query ?? "", name) }
}

/// The value of `name` in form fields as a browser encodes them
/// (application/x-www-form-urlencoded: `+` is a space, then
/// percent-decoding), in a query string or a form's body.
func formValue(_ encoded: String, _ name: String) -> String? {
    for pair in encoded.split(separator: "&") {
        let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        func decode(_ s: Substring) -> String { s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s) }
        if decode(kv[0]) == name { return kv.count > 1 ? decode(kv[1]) : "" }
    }
    return nil
}

/// The user tables' row counts of each dataset, counted again only once
/// the dataset has changed (its version vector moved).
final class RowCountCache: Sendable {
    private let kept = Mutex<[String: (vector: VersionVector, counts: [TableRowCount])]>([:])

    func all(_ r: any SQLReplicaStore) async throws -> [TableRowCount] {
        let vector = r.vector
        if let k = kept.withLock({ $0[r.dataset] }), k.vector == vector { return k.counts }
        let counts = try await r.rowCounts().filter { !Identifier.isReserved($0.table) }
        kept.withLock { $0[r.dataset] = (vector, counts) }
        return counts
    }
}

/// Rows gathered from a query's callback.
final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var rows: [[Value]] = []
    func add(_ r: [Value]) { lock.withLock { rows.append(r) } }
    var all: [[Value]] { lock.withLock { rows } }
}

/// A text literal in SQL (`Value.sqlLiteral`, which also writes text holding NUL).
func sqlText(_ s: String) -> String { Value.text(s).sqlLiteral }

/// The workspace's gate: the Host must be this node's address (a page on
/// another name, as DNS rebinding makes, gets nothing); a write's Origin
/// must be this node; the session cookie says who is calling, and a write
/// must carry the session's CSRF token. Only the sign-in page and the
/// assets are open without a session.
struct WorkspaceGuard: RouterMiddleware {
    let node: Node
    /// The address the listener is bound to (`--web`); a wildcard one
    /// (0.0.0.0) adds no name, so only loopback names reach it then.
    let host: String
    let port: @Sendable () -> Int?

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        // Never the socket's all-powerful caller: nobody until a session says who.
        context.caller = .person("", .reader)
        let host = request.head.authority ?? ""
        guard let port = port(), ["127.0.0.1", "localhost", "[::1]", self.host.lowercased()].map({ "\($0):\(port)" }).contains(host.lowercased())
        else {
            throw NodeError(.forbidden, "this workspace answers only to its own address, not to host \(host.debugDescription)")
        }
        let path = request.uri.path
        let safe = request.method == .get || request.method == .head
        if !safe, let origin = request.headers[.origin], origin.lowercased() != "http://\(host.lowercased())" {
            throw NodeError(.forbidden, "a write from another site (origin \(origin)) is refused")
        }
        if path == "/signin" || path.hasPrefix("/assets/") { return try await next(request, context) }
        let now = Int64(Date().timeIntervalSince1970)
        guard let id = request.cookies[Workspace.cookie]?.value, let session = try node.file.session(id, now: now) else {
            if path.hasPrefix("/v1/") || !safe { throw NodeError(.unauthorized, "sign in first: run `lode ui` for a link") }
            return try await next(request, context)  // the page says to sign in
        }
        if !safe {
            guard let token = request.headers[Workspace.csrfHeader], token == session.csrf else {
                throw NodeError(.forbidden, "this write lacks the page's CSRF token; reload the page")
            }
        }
        context.session = session
        context.caller = .person(session.person.name, session.person.role)
        return try await next(request, context)
    }
}
