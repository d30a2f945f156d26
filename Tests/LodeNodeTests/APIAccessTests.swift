import AsyncHTTPClient
import Crypto
import Foundation
import LodeCore
import LodeTestSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Testing
import X509

@testable import LodeNode

/// What each role may do through the client API, route by route: over
/// mutual TLS a client is limited by its certificate's role; on the Unix
/// socket the node's own user may do everything.
@Suite(.serialized) struct APIAccessTests {
    let scratch = TempDir("lode-acl")

    /// Every route, the permission it needs, and a request that is valid
    /// apart from that (`ROLE` is replaced by the caller's role, so that
    /// each creates its own dataset).
    static let routes: [(Permission, HTTPMethod, String, String?)] = [
        (.read, .GET, "/v1/status", nil),
        (.read, .GET, "/v1/datasets", nil),
        (.edit, .POST, "/v1/datasets", #"{"name": "made-by-ROLE", "schema": "CREATE TABLE t (id TEXT PRIMARY KEY, note TEXT)"}"#),
        (.read, .GET, "/v1/datasets/rare-earths", nil),
        (.read, .GET, "/v1/datasets/rare-earths/schema", nil),
        (.edit, .POST, "/v1/datasets/rare-earths/alter", #"{"schema": "CREATE TABLE ROLE_notes (id TEXT PRIMARY KEY, note TEXT)"}"#),
        (.read, .POST, "/v1/datasets/rare-earths/query", #"{"sql": "SELECT 1"}"#),
        (.edit, .POST, "/v1/datasets/rare-earths/exec", #"{"sql": "UPDATE elements SET name = name WHERE symbol = 'Nd'"}"#),
        (.read, .GET, "/v1/datasets/rare-earths/tables/elements/export?format=csv", nil),
        (.edit, .POST, "/v1/datasets/rare-earths/tables/elements/import", "symbol,name\nNd,Neodymium\n"),
        (.read, .GET, "/v1/datasets/rare-earths/tables/elements/history?pk=Nd", nil),
        (.annotate, .POST, "/v1/datasets/rare-earths/annotations", #"{"table": "elements", "pk": "Nd", "text": "by ROLE", "tags": []}"#),
        (.read, .GET, "/v1/datasets/rare-earths/annotations", nil),
        (.read, .GET, "/v1/datasets/rare-earths/conflicts", nil),
        (.read, .GET, "/v1/peers", nil),
        (.operate, .POST, "/v1/peers", #"{"address": "127.0.0.1:9"}"#),
        (.operate, .DELETE, "/v1/peers/127.0.0.1%3A9", nil),
        (.operate, .POST, "/v1/sync", #"{"wait": false}"#),
        (.read, .GET, "/v1/revocations", nil),
        (.operate, .POST, "/v1/revocations", #"{"format": "not-one"}"#),
    ]

    @Test func permissionsFollowTheRoles() {
        for role in Role.allCases {
            #expect(Permission.read.allows(role))
            #expect(Permission.annotate.allows(role) == (role == .editor || role == .annotator))
            #expect(Permission.edit.allows(role) == (role == .editor))
            #expect(Permission.operate.allows(role) == (role == .editor))
        }
    }

    /// A node with the bundled dataset in `dir`, serving the remote API on a free port.
    func launch(_ dir: String, _ adjust: (inout ServeOptions) -> Void = { _ in }) async throws -> (LaunchedNode, Int) {
        _ = try await DevelopmentBootstrap.run(dataDir: dir)
        let apiPort = try freePort()
        var options = ServeOptions(dataDir: dir, listen: "127.0.0.1:0", apiListen: "127.0.0.1:\(apiPort)")
        options.handleSignals = false
        adjust(&options)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return (try await NodeServer.launch(options, logger: logger), apiPort)
    }

    @Test func eachRouteRefusesExactlyTheRolesWithoutItsPermission() async throws {
        let dir = scratch.file("node")
        let (node, apiPort) = try await launch(dir)
        let ca = try Identity.loadCA(dir: dir + "/dev-ca")
        for role in Role.allCases {
            let client = try Self.client(role: role, ca: ca)
            defer { Task { try? await client.shutdown() } }
            for (permission, method, path, body) in Self.routes {
                let status = try await Self.send(
                    client, url: "https://127.0.0.1:\(apiPort)\(path)", method: method,
                    body: body?.replacingOccurrences(of: "ROLE", with: role.rawValue))
                if permission.allows(role) {
                    #expect(status != 403 && status < 500, "\(role) \(method) \(path): \(status)")
                } else {
                    #expect(status == 403, "\(role) \(method) \(path): \(status)")
                }
            }
        }
        // The node's own user on the socket may do everything (here with a real revocation).
        let revocation = String(decoding: try Revocation.issue(site: "ghost", reason: "test", by: ca).encoded, as: UTF8.self)
        for (_, method, path, example) in Self.routes {
            let body = path == "/v1/revocations" && method == .POST ? revocation : example
            var req = HTTPClientRequest(url: URL(httpURLWithSocketPath: dir + "/lode.sock", uri: path)!.absoluteString)
            req.method = method
            if let body {
                req.body = .bytes(ByteBuffer(string: body.replacingOccurrences(of: "ROLE", with: "local")))
            }
            let res = try await HTTPClient.shared.execute(req, timeout: .seconds(30))
            _ = try await res.body.collect(upTo: 16 << 20)
            #expect(res.status.code < 400, "local \(method) \(path): \(res.status.code)")
        }
        await node.stop()
    }

    /// A connection to the remote API that never starts its TLS handshake
    /// (or sends no request after it) used to stay open for ever; with
    /// enough of them the node ran out of file descriptors.
    @Test func aSilentRemoteConnectionIsClosed() async throws {
        let dir = scratch.file("silent")
        let (node, apiPort) = try await launch(dir) { $0.apiIdleTimeout = .seconds(1) }
        defer { Task { await node.stop() } }
        // The remote listener may come up just after the node reports ready.
        var connected: Channel?
        for _ in 0..<100 where connected == nil {
            connected = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: apiPort).get()
            if connected == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let channel = try #require(connected)
        let start = ContinuousClock.now
        let outcome = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await channel.closeFuture.get()
                return true
            }
            group.addTask {
                try await Task.sleep(for: .seconds(15))
                try? await channel.close()
                return false
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
        #expect(outcome, "the silent connection was still open after 15 s")
        #expect(ContinuousClock.now - start < .seconds(15))
        // The API still serves a real client.
        let ca = try Identity.loadCA(dir: dir + "/dev-ca")
        let client = try Self.client(role: .reader, ca: ca)
        defer { Task { try? await client.shutdown() } }
        #expect(try await Self.send(client, url: "https://127.0.0.1:\(apiPort)/v1/status", method: .GET, body: nil) == 200)
    }

    /// One client certificate opening connection after connection to the
    /// remote API used to get them all, and a client dripping its request
    /// head a byte at a time held its connection for ever (each byte reset
    /// the idle timer). Now a certificate holds at most
    /// `RemoteAPI.connectionsPerCertificate` connections (the next is
    /// closed after the handshake, and other certificates are served), and
    /// a request head must arrive whole within the idle timeout.
    @Test func oneCertificateHoldsAFewConnectionsAndAHeadMayNotDrip() async throws {
        let dir = scratch.file("bounded")
        let (node, apiPort) = try await launch(dir) { $0.apiIdleTimeout = .seconds(6) }
        defer { Task { await node.stop() } }
        let ca = try Identity.loadCA(dir: dir + "/dev-ca")
        let context = try NIOSSLContext(configuration: Self.clientTLS(name: "hoarder", role: .reader, ca: ca))
        func open() async throws -> Channel {
            for _ in 0..<100 {
                if let c = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelInitializer({ ch in
                        ch.eventLoop.makeCompletedFuture {
                            try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                        }
                    })
                    .connect(host: "127.0.0.1", port: apiPort).get()
                {
                    return c
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw NodeError(.unavailable, "cannot connect to the remote API")
        }
        /// True when the channel closes within `seconds`.
        func closes(_ c: Channel, within seconds: Int) async -> Bool {
            await withTaskGroup(of: Bool.self) { group in
                group.addTask { (try? await c.closeFuture.get()) != nil }
                group.addTask {
                    try? await Task.sleep(for: .seconds(seconds))
                    return false
                }
                let first = await group.next()!
                group.cancelAll()
                return first
            }
        }
        // Of 17 connections of one certificate (a silent one may stay 6 s), one is
        // closed right after its handshake; which one depends on the order the
        // handshakes finish in.
        var held: [Channel] = []
        for _ in 0...RemoteAPI.connectionsPerCertificate { held.append(try await open()) }
        let oneCloses = await withTaskGroup(of: Bool.self) { group in
            for c in held { group.addTask { await closes(c, within: 2) } }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(oneCloses == 1, "\(oneCloses) of 17 connections of one certificate were closed")
        // Another certificate is served meanwhile.
        let client = try Self.client(role: .reader, ca: ca)
        defer { Task { try? await client.shutdown() } }
        #expect(try await Self.send(client, url: "https://127.0.0.1:\(apiPort)/v1/status", method: .GET, body: nil) == 200)
        for c in held { try? await c.close() }
        try await Task.sleep(for: .seconds(7))  // the node closes them (idle timeout) and frees their slots
        // Dripping a request head a byte a second (each resets the 6 s idle timer)
        // ends in the connection closing about 6 s after it opened.
        let drip = try await open()
        let start = ContinuousClock.now
        var closed = false
        for byte in Array("GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 40) {
            if !drip.isActive {
                closed = true
                break
            }
            try? await drip.writeAndFlush(ByteBuffer(bytes: [byte])).get()
            try await Task.sleep(for: .seconds(1))
        }
        let took = ContinuousClock.now - start
        #expect(closed, "a dripping request head kept its connection")
        #expect(took > .seconds(4) && took < .seconds(15), "\(took)")
    }

    /// A client certificate for `role`, from the node's CA.
    static func client(role: Role, ca: CertificateAuthority) throws -> HTTPClient {
        HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: HTTPClient.Configuration(tlsConfiguration: try clientTLS(name: "client-\(role.rawValue)", role: role, ca: ca)))
    }

    /// TLS for a client holding a new certificate for site `name` and `role`, from the node's CA.
    static func clientTLS(name: String, role: Role, ca: CertificateAuthority) throws -> TLSConfiguration {
        let key = Curve25519.Signing.PrivateKey()
        let cert = try Identity.issueSite(name: name, role: role, key: key.publicKey, ca: ca.certificate, caKey: ca.key)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = [.certificate(try NIOSSLCertificate(bytes: Array(cert.serializeAsPEM().pemString.utf8), format: .pem))]
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(Certificate.PrivateKey(key).serializeAsPEM().pemString.utf8), format: .pem))
        tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: Array(ca.certificate.serializeAsPEM().pemString.utf8), format: .pem)])
        tls.certificateVerification = .noHostnameVerification
        tls.minimumTLSVersion = .tlsv13
        tls.verifySignatureAlgorithms = [.ed25519]
        tls.signingSignatureAlgorithms = [.ed25519]
        return tls
    }

    static func send(_ client: HTTPClient, url: String, method: HTTPMethod, body: String?) async throws -> UInt {
        var req = HTTPClientRequest(url: url)
        req.method = method
        if let body { req.body = .bytes(ByteBuffer(string: body)) }
        let res = try await client.execute(req, timeout: .seconds(30))
        _ = try await res.body.collect(upTo: 16 << 20)
        return res.status.code
    }
}
