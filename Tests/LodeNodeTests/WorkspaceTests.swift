import AsyncHTTPClient
import Foundation
import LodeCore
import LodeSQLite
import LodeStore
import LodeTestSupport
import Logging
import NIOCore
import NIOHTTP1
import Testing

@testable import LodeNode

/// The workspace's security rules, over HTTP against a real node (DESIGN
/// §11): one-time expiring links, the session cookie's flags, CSRF on
/// every write, Host and Origin checks, roles enforced by the server, and
/// output escaped; and that what a person writes names them.
@Suite(.serialized) struct WorkspaceTests {
    let scratch = TempDir("lode-web")

    struct Answer {
        var status: UInt
        var headers: HTTPHeaders
        var body: String
    }

    /// A node with the bundled dataset, its workspace on a free port.
    func launch() async throws -> (LaunchedNode, String) {
        let dir = scratch.file("node")
        _ = try await DevelopmentBootstrap.run(dataDir: dir)
        var options = ServeOptions(dataDir: dir, listen: "127.0.0.1:0")
        options.handleSignals = false
        options.web = "127.0.0.1:0"
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let node = try await NodeServer.launch(options, logger: logger)
        return (node, try #require(node.running.node.workspaceURL))
    }

    /// A client that follows no redirect, so that sign-in's answer is seen.
    static let client = HTTPClient(configuration: .init(redirectConfiguration: .disallow))

    func send(
        _ url: String, method: HTTPMethod = .GET, cookie: String? = nil, csrf: String? = nil, headers: [(String, String)] = [],
        json: String? = nil
    ) async throws -> Answer {
        var req = HTTPClientRequest(url: url)
        req.method = method
        if let cookie { req.headers.add(name: "Cookie", value: cookie) }
        if let csrf { req.headers.add(name: "X-CSRF-Token", value: csrf) }
        for (k, v) in headers { req.headers.replaceOrAdd(name: k, value: v) }
        if let json {
            req.body = .bytes(ByteBuffer(string: json))
            req.headers.add(name: "Content-Type", value: "application/json")
        }
        let res = try await Self.client.execute(req, timeout: .seconds(30))
        let body = try await res.body.collect(upTo: 16 << 20)
        return Answer(status: res.status.code, headers: res.headers, body: String(buffer: body))
    }

    /// Opens a sign-in link and presses its button, as a browser does: the
    /// link's page (which spends nothing), then the form's POST.
    func redeem(_ web: String, _ token: String) async throws -> Answer {
        let page = try await send("\(web)/signin?token=\(token)")
        guard page.status == 200 else { return page }
        #expect(page.body.contains("Sign in as"))
        return try await post(web, token)
    }

    /// The sign-in form's POST, with a browser's Origin.
    func post(_ web: String, _ token: String) async throws -> Answer {
        var req = HTTPClientRequest(url: "\(web)/signin")
        req.method = .POST
        req.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        req.headers.add(name: "Origin", value: web)
        req.body = .bytes(ByteBuffer(string: "token=\(token)"))
        let res = try await Self.client.execute(req, timeout: .seconds(30))
        let body = try await res.body.collect(upTo: 1 << 20)
        return Answer(status: res.status.code, headers: res.headers, body: String(buffer: body))
    }

    /// Signs `person` in with a fresh link: the session cookie and the page's CSRF token.
    func signIn(_ node: Node, _ web: String, _ person: String) async throws -> (cookie: String, csrf: String) {
        let token = try node.file.issueSignInToken(for: person, seconds: 60, now: Int64(Date().timeIntervalSince1970))
        let r = try await redeem(web, token)
        #expect(r.status == 303)
        let set = try #require(r.headers["Set-Cookie"].first)
        #expect(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "\(set)")
        let cookie = try #require(set.split(separator: ";").first.map(String.init))
        let page = try await send("\(web)/", cookie: cookie)
        #expect(page.status == 200)
        let csrf = try #require(page.body.firstMatch(of: /name="csrf-token" content="([^"]+)"/)?.1)
        return (cookie, String(csrf))
    }

    @Test func signInLinksSessionsCSRFHostOriginRolesAndEscaping() async throws {
        let (launched, web) = try await launch()
        defer { Task { await launched.stop() } }
        let node = launched.running.node
        let now = Int64(Date().timeIntervalSince1970)
        _ = try node.file.addPerson("ana", role: .editor, siteRole: .editor, added: "2026-12-03T00:00:00.000Z")
        _ = try node.file.addPerson("rui", role: .reader, siteRole: .editor, added: "2026-12-03T00:00:00.000Z")
        #expect(throws: StoreError.self) { try node.file.addPerson("x", role: .editor, siteRole: .annotator, added: "") }

        // Nobody signed in: pages say to sign in, the API refuses.
        #expect(try await send("\(web)/").body.contains("Sign in"))
        #expect(try await send("\(web)/v1/datasets").status == 401)
        // A link works once; an expired or foreign one never.
        let token = try node.file.issueSignInToken(for: "ana", seconds: 60, now: now)
        // Opening the link (as a chat client's preview does) spends nothing.
        #expect(try await send("\(web)/signin?token=\(token)").status == 200)
        #expect(try await redeem(web, token).status == 303)
        #expect(try await post(web, token).status == 403)
        #expect(try await send("\(web)/signin?token=\(token)").status == 403)
        let stale = try node.file.issueSignInToken(for: "ana", seconds: 1, now: now - 10)
        #expect(try await redeem(web, stale).status == 403)
        #expect(try await redeem(web, "made-up-elsewhere").status == 403)
        // A sign-in posted from another site (login CSRF) is refused.
        let other = try node.file.issueSignInToken(for: "ana", seconds: 60, now: now)
        var forged = HTTPClientRequest(url: "\(web)/signin")
        forged.method = .POST
        forged.headers.add(name: "Origin", value: "http://evil.example")
        forged.body = .bytes(ByteBuffer(string: "token=\(other)"))
        #expect(try await Self.client.execute(forged, timeout: .seconds(30)).status.code == 403)

        let ana = try await signIn(node, web, "ana")
        let api = "\(web)/v1/datasets/rare-earths"
        let note = #"{"table": "facilities", "pk": "mountain-pass", "text": "<script>alert(1)</script> check", "tags": ["check"]}"#
        // A write without the page's token, or from another origin, is refused.
        #expect(try await send("\(api)/annotations", method: .POST, cookie: ana.cookie, json: note).status == 403)
        #expect(try await send("\(api)/annotations", method: .POST, cookie: ana.cookie, csrf: "guess", json: note).status == 403)
        #expect(
            try await send(
                "\(api)/annotations", method: .POST, cookie: ana.cookie, csrf: ana.csrf, headers: [("Origin", "http://evil.example")], json: note
            ).status == 403)
        // Another Host name (DNS rebinding) gets nothing, not even a page.
        let port = web.split(separator: ":").last!
        #expect(try await send("\(web)/", cookie: ana.cookie, headers: [("Host", "rebound.example:\(port)")]).status == 403)
        // With the token: written, and named after its person.
        let made = try await send("\(api)/annotations", method: .POST, cookie: ana.cookie, csrf: ana.csrf, json: note)
        #expect(made.status == 201, "\(made.body)")
        let id = try #require(made.body.firstMatch(of: /"id"\s*:\s*"([^"]+)"/)?.1)
        let listed = try await node.replica("rare-earths").annotations().first { $0.id == String(id) }
        #expect(listed?.person == "ana")
        // Shown as text, marked on the row, on the row's page.
        let row = try await send("\(web)/d/rare-earths/t/facilities/r/mountain-pass", cookie: ana.cookie)
        #expect(row.body.contains("&lt;script&gt;alert(1)&lt;/script&gt; check") && !row.body.contains("<script>alert"))
        #expect(row.body.contains("<span class=\"person\">ana</span>"))
        // Only the node's own script runs, nothing frames the page, no Referer leaves it.
        #expect(row.headers["Content-Security-Policy"].first?.contains("script-src 'self'") == true)
        #expect(row.headers["X-Frame-Options"].first == "DENY" && row.headers["Referrer-Policy"].first == "same-origin")
        let table = try await send("\(web)/d/rare-earths/t/facilities?f.id=mountain-pass", cookie: ana.cookie)
        #expect(table.body.contains("title=\"annotated\""), "the annotated row is marked")
        // Resolve through the page's API, then an editor's cell edit (as exec).
        #expect(
            try await send(
                "\(api)/annotations/\(id)/status", method: .POST, cookie: ana.cookie, csrf: ana.csrf, json: #"{"status": "resolved"}"#
            ).status == 200)
        #expect(try await node.replica("rare-earths").annotations().first { $0.id == String(id) }?.status == "resolved")

        // A reader: no write offered on the page, and refused by the server anyway.
        let rui = try await signIn(node, web, "rui")
        let readerPage = try await send("\(web)/d/rare-earths/t/facilities/r/mountain-pass", cookie: rui.cookie)
        #expect(readerPage.status == 200 && !readerPage.body.contains("data-api=\"/v1") && !readerPage.body.contains("Add annotation"))
        #expect(try await send("\(api)/annotations", method: .POST, cookie: rui.cookie, csrf: rui.csrf, json: note).status == 403)
        #expect(
            try await send(
                "\(api)/exec", method: .POST, cookie: rui.cookie, csrf: rui.csrf, json: #"{"sql": "UPDATE elements SET name = 'x'"}"#
            ).status == 403)
        // Signing out ends the session; removing a person ends theirs.
        #expect(try await send("\(web)/signout", method: .POST, cookie: ana.cookie, csrf: ana.csrf).status == 204)
        #expect(try await send("\(web)/v1/datasets", cookie: ana.cookie).status == 401)
        #expect(try node.file.removePerson("rui"))
        #expect(try await send("\(web)/v1/datasets", cookie: rui.cookie).status == 401)
    }

    /// Several nodes on one machine start: when the default port is taken
    /// by the time the workspace binds it (another process won the race
    /// after the probe), the workspace takes a free port; an address given
    /// explicitly that cannot bind fails the start with a clear error.
    @Test func aTakenDefaultPortFallsBackAndAGivenOneFails() async throws {
        let holder = try TCPHolder()
        let dir = scratch.file("fallback")
        _ = try await DevelopmentBootstrap.run(dataDir: dir)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var options = ServeOptions(dataDir: dir, listen: "127.0.0.1:0")
        options.handleSignals = false
        options.defaultWeb = "127.0.0.1:\(holder.port)"
        options.probeWebPort = false
        let node = try await NodeServer.launch(options, logger: logger)
        let web = try #require(node.running.node.workspaceURL)
        #expect(web.hasPrefix("http://127.0.0.1:") && !web.hasSuffix(":\(holder.port)"), "\(web)")
        await node.stop()
        options.web = "127.0.0.1:\(holder.port)"
        do {
            let again = try await NodeServer.launch(options, logger: logger)
            await again.stop()
            Issue.record("a node started although its --web address was taken")
        } catch {
            #expect("\(error)".contains("the workspace cannot listen on 127.0.0.1:\(holder.port)"), "\(error)")
        }
    }
}

/// A listening TCP socket on a free loopback port, held until deinit.
final class TCPHolder {
    let fd: Int32
    let port: Int
    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        guard listen(fd, 8) == 0 else { throw CocoaError(.fileWriteUnknown) }
        port = Int(UInt16(bigEndian: addr.sin_port))
    }
    deinit { close(fd) }
}
