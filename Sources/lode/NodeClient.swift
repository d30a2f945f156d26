import AsyncHTTPClient
import Foundation
import LodeCore
import LodeProtocol
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// A thin client of the node's HTTP/JSON API: on its Unix socket, or on
/// a remote node over mutual TLS.
struct NodeClient: Sendable {
    let socket: String
    let dataDir: String
    /// For a remote node: its address and a client with our certificate.
    let remote: (address: String, client: HTTPClient)?

    init(socket: String, dataDir: String) {
        self.socket = socket
        self.dataDir = dataDir
        remote = nil
    }

    init(remote address: String, cert: String, key: String, ca: String) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
        } catch {
            throw CLIError.failed("cannot read the TLS files: \(error)")
        }
        // Sites are named in certificates, not by host names: trust the CA.
        tls.certificateVerification = .noHostnameVerification
        tls.minimumTLSVersion = .tlsv13
        tls.verifySignatureAlgorithms = [.ed25519]
        tls.signingSignatureAlgorithms = [.ed25519]
        var config = HTTPClient.Configuration(tlsConfiguration: tls)
        config.timeout = .init(connect: .seconds(10))
        socket = ""
        dataDir = ""
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        NodeClient.opened.withLock { $0.append(client) }
        remote = (address, client)
    }

    /// The clients made by this process (local and remote); shut down before it exits.
    static let opened = Mutex<[HTTPClient]>([])

    /// The client for the local socket. A node that dies between our probe
    /// and the connection must fail the command at once: AsyncHTTPClient
    /// would otherwise retry the dead socket until its 90 s connect timeout.
    static let local: HTTPClient = {
        var config = HTTPClient.Configuration()
        config.connectionPool.retryConnectionEstablishment = false
        config.timeout = .init(connect: .seconds(5))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        opened.withLock { $0.append(client) }
        return client
    }()

    /// Shuts down every client (AsyncHTTPClient requires it).
    static func shutdownAll() async {
        for c in opened.withLock({ o in
            defer { o = [] }; return o
        }) { try? await c.shutdown() }
    }

    var unreachable: CLIError {
        if let remote { return CLIError(message: "cannot reach the node at \(remote.address) over mutual TLS", exitCode: 3) }
        let hint = DataDir.isDefault(dataDir) ? "lode serve" : "lode serve --data-dir \(dataDir)"
        return CLIError(message: "cannot reach the node at \(socket): is it running? Start it with `\(hint)`.", exitCode: 3)
    }

    /// Whether something accepts connections on a Unix socket path.
    static func accepts(_ path: String) -> Bool {
        let fd = Foundation.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return rc == 0
    }

    func request(
        _ method: HTTPMethod, _ path: String, query: [String: String?] = [:], body: HTTPClientRequest.Body? = nil,
        contentType: String = "application/json"
    ) async throws -> HTTPClientResponse {
        var uri = API.prefix + path
        let items = query.compactMap { k, v in v.map { "\(k)=\(percentEncode($0))" } }.sorted()
        if !items.isEmpty { uri += "?" + items.joined(separator: "&") }
        let url: String
        if let remote {
            url = "https://\(remote.address)\(uri)"
        } else {
            // A socket left by a node that died refuses at once; AsyncHTTPClient
            // would retry it until its connect timeout, so ask first.
            guard Self.accepts(socket), let u = URL(httpURLWithSocketPath: socket, uri: uri) else {
                throw unreachable
            }
            url = u.absoluteString
        }
        var req = HTTPClientRequest(url: url)
        req.method = method
        // On the socket the CLI names the person at the terminal; over TLS a
        // client is a site's certificate, and names no one.
        if remote == nil, let person = CLIPerson.name { req.headers.add(name: "Lode-Person", value: person) }
        if let body {
            req.body = body
            req.headers.add(name: "Content-Type", value: contentType)
        }
        do {
            return try await (remote?.client ?? NodeClient.local).execute(req, timeout: .hours(24))
        } catch let e as HTTPClientError where e == .connectTimeout || e == .remoteConnectionClosed {
            throw unreachable
        } catch let e as IOError where [ECONNREFUSED, ENOENT, ENOTSOCK].contains(e.errnoCode) {
            throw unreachable
        } catch let e as ChannelError {
            _ = e
            throw unreachable
        }
    }

    /// Sends a request and decodes a JSON answer, turning error answers
    /// into a CLIError with the node's message.
    func call<T: Decodable>(
        _ method: HTTPMethod, _ path: String, query: [String: String?] = [:], json body: (some Encodable)? = Optional<Int>.none,
        as: T.Type
    ) async throws -> T {
        try decode(T.self, try await callRaw(method, path, query: query, json: body))
    }

    /// Sends a request with a body of another type (a streamed file) and
    /// decodes a JSON answer, as `call` does.
    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: HTTPClientRequest.Body, contentType: String, as: T.Type) async throws -> T {
        try decode(T.self, try await callRaw(method, path, body: body, contentType: contentType))
    }

    private func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw CLIError.failed("the node answered with something unexpected: \(error)")
        }
    }

    /// Sends a request and returns the raw answer body.
    func callRaw(
        _ method: HTTPMethod, _ path: String, query: [String: String?] = [:], json body: (some Encodable)? = Optional<Int>.none
    ) async throws -> Data {
        let b = try body.map { HTTPClientRequest.Body.bytes(ByteBuffer(bytes: try JSONEncoder().encode($0))) }
        return try await callRaw(method, path, query: query, body: b, contentType: "application/json")
    }

    private func callRaw(
        _ method: HTTPMethod, _ path: String, query: [String: String?] = [:], body: HTTPClientRequest.Body?, contentType: String
    ) async throws -> Data {
        let response = try await request(method, path, query: query, body: body, contentType: contentType)
        let bytes = try await response.body.collect(upTo: 256 << 20)
        let data = Data(buffer: bytes)
        try check(response, data)
        return data
    }

    /// Throws the node's error message for a non-2xx response.
    func check(_ response: HTTPClientResponse, _ body: Data) throws {
        guard !(200..<300).contains(response.status.code) else { return }
        if let e = try? JSONDecoder().decode(API.ErrorBody.self, from: body) {
            throw CLIError(e.error)
        }
        throw CLIError.failed("the node answered \(response.status): \(String(decoding: body.prefix(500), as: UTF8.self))")
    }

    /// Reads an error body from a streaming response and throws it.
    func checkStreaming(_ response: HTTPClientResponse) async throws {
        guard !(200..<300).contains(response.status.code) else { return }
        let bytes = try await response.body.collect(upTo: 1 << 20)
        try check(response, Data(buffer: bytes))
    }
}

extension CLIError {
    /// The node's error, with what to run instead said as a `lode` command.
    init(_ e: API.ErrorBody.Detail) {
        let instead: String? =
            switch e.remedy {
            case "exec": "use lode exec to change rows"
            case "query": "use lode query to read"
            case "alter": "use lode dataset alter to change the schema"
            case "annotate": "use lode annotate"
            case "create_dataset": "create one with lode dataset create"
            default: nil
            }
        self = .failed(instead.map { "\(e.message): \($0)" } ?? e.message)
    }
}

func percentEncode(_ s: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
}

/// Calls `body` with each non-empty line of a streamed (NDJSON) response,
/// the last one included even without its newline.
func forEachLine(of response: HTTPClientResponse, _ body: ([UInt8]) throws -> Void) async throws {
    var pending: [UInt8] = []
    for try await buffer in response.body {
        for b in buffer.readableBytesView {
            if b == 0x0A {
                if !pending.isEmpty { try body(pending) }
                pending.removeAll(keepingCapacity: true)
            } else {
                pending.append(b)
            }
        }
    }
    if !pending.isEmpty { try body(pending) }
}

/// The person the CLI writes for, on the node's socket: `$LODE_USER` if set
/// (it must be a valid person name), else the login name made into one
/// (lowercased; other characters become `-`), else nobody. The node holds
/// a person it knows to their role and records any other name as given.
enum CLIPerson {
    static let name: String? = {
        let env = ProcessInfo.processInfo.environment
        if let u = env["LODE_USER"] { return u.isEmpty ? nil : u }
        let login = (env["USER"] ?? env["LOGNAME"] ?? "").lowercased()
        let cleaned = String(login.map { c in c.isASCII && (c.isLetter || c.isNumber || "._-".contains(c)) ? c : "-" })
        return Identifier.isValidPerson(cleaned) ? cleaned : nil
    }()
}
