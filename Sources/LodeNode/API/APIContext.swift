import Foundation
import HTTPTypes
import Hummingbird
import LodeCore
import LodeSQLite
import LodeStore
import NIOCore
import NIOSSL

/// What a request to the client API needs to do.
enum Permission: Sendable {
    /// Read datasets, status and peers; run read-only queries.
    case read
    /// Write annotations.
    case annotate
    /// Change rows and schemas, create datasets.
    case edit
    /// Run the node's sync: add and remove peers, sync now.
    case operate

    /// True when a client whose certificate grants `role` may do this.
    func allows(_ role: Role) -> Bool {
        switch self {
        case .read: true
        case .annotate: role.canAnnotate
        case .edit, .operate: role == .editor
        }
    }
}

/// Who is calling: the node's own user on its Unix socket, who may do
/// anything the site's role allows (and may name the person at the
/// terminal, `Lode-Person`); a person of the site, signed in to the
/// workspace or named on the socket, limited by their role; or a remote
/// client over mutual TLS, limited by its certificate's role.
enum Caller: Sendable {
    case local(person: String?)
    case person(String, Role)
    case remote(Role)

    /// Refuses what the caller may not do.
    func check(_ permission: Permission, _ request: Request) throws {
        switch self {
        case .local: return
        case .person(let name, let role):
            guard !permission.allows(role) else { return }
            throw NodeError(.forbidden, "\(name)'s role at this site is \(role.rawValue), which may not \(request.method) \(request.uri.path)")
        case .remote(let role):
            guard !permission.allows(role) else { return }
            throw NodeError(
                .forbidden, "the client's certificate is for a \(role.rawValue), which may not \(request.method) \(request.uri.path)")
        }
    }

    /// The person the caller's writes name ("" for none).
    var person: String {
        switch self {
        case .local(let p): p ?? ""
        case .person(let name, _): name
        case .remote: ""
        }
    }
}

/// Reads the person the CLI names on the socket (`Lode-Person`): a person
/// of the site is held to their role; a name the site does not know is
/// recorded as given (whoever can open the socket owns the node).
struct LocalPersonMiddleware: RouterMiddleware {
    static let header = HTTPTypes.HTTPField.Name("Lode-Person")!
    let node: Node

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        guard let name = request.headers[LocalPersonMiddleware.header], !name.isEmpty else { return try await next(request, context) }
        guard Identifier.isValidPerson(name) else {
            throw NodeError(.badInput, "Lode-Person \(name.debugDescription) is not a valid person name (set LODE_USER to one)")
        }
        var context = context
        if let p = try node.file.person(name) { context.caller = .person(p.name, p.role) } else { context.caller = .local(person: name) }
        return try await next(request, context)
    }
}

/// A request context that says who is calling.
protocol CallerContext: RequestContext {
    var caller: Caller { get }
}

/// The request context of the client API, on the Unix socket and over
/// mutual TLS alike.
struct APIRequestContext: CallerContext {
    var coreContext: CoreRequestContextStorage
    /// The connection, to read a remote client's certificate.
    let channel: any Channel
    /// Set by `RemoteClientMiddleware` for clients over mutual TLS.
    var caller = Caller.local(person: nil)
    /// Set by `DatasetMiddleware` in the routes of one dataset.
    var dataset: Result<any SQLReplicaStore, any Error>?
    /// The workspace's signed-in browser (`WorkspaceGuard`).
    var session: WorkspaceSession?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The context of a route under `/v1/datasets/{ds}`: the dataset, looked
/// up once for the request. A dataset that is not there is an error when
/// the route first uses it, after the route's permission was checked, so
/// that a caller without the permission learns nothing of what exists.
struct DatasetRequestContext: ChildRequestContext, CallerContext {
    var coreContext: CoreRequestContextStorage
    let caller: Caller
    private let lookup: Result<any SQLReplicaStore, any Error>

    init(context: APIRequestContext) throws {
        guard let lookup = context.dataset else { throw NodeError(.notFound, "no dataset in this path") }
        coreContext = context.coreContext
        caller = context.caller
        self.lookup = lookup
    }

    /// The dataset the path names.
    var dataset: any SQLReplicaStore { get throws { try lookup.get() } }
}

/// Looks up the dataset a path names (`{ds}`), for the routes of one dataset.
struct DatasetMiddleware: RouterMiddleware {
    let node: Node

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        context.dataset = Result { try node.replica(try context.parameters.decoded("ds")) }
        return try await next(request, context)
    }
}

/// Reads a remote client's role from its certificate (verified against the
/// cluster CA by the TLS handshake); a certificate without one, or of a
/// revoked site, is refused.
struct RemoteClientMiddleware: RouterMiddleware {
    let node: Node

    func handle(
        _ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        guard let cert = try? await context.channel.nioSSL_peerCertificate().get(), let der = try? cert.toDERBytes(),
            let site = try? SiteCertificate(der: der)
        else {
            throw NodeError(.forbidden, "the client certificate grants no role")
        }
        if node.revocation(of: site) != nil { throw NodeError(.forbidden, "the client certificate's site \(site.name) is revoked") }
        let role = site.role
        var context = context
        context.caller = .remote(role)
        return try await next(request, context)
    }
}

extension RouterMethods where Context: CallerContext {
    /// Adds a route that needs `permission`: a caller without it is refused
    /// before the handler runs.
    @discardableResult
    func on(
        _ method: HTTPRequest.Method, _ path: RouterPath, needs permission: Permission,
        use handler: @escaping @Sendable (Request, Context) async throws -> Response
    ) -> Self {
        on(path, method: method) { request, context in
            try context.caller.check(permission, request)
            // Every commit the request makes names the caller's person.
            return try await Attribution.$person.withValue(context.caller.person) { try await handler(request, context) }
        }
    }
}

extension Parameters {
    /// A path parameter, percent-decoded (`127.0.0.1%3A7443` is `127.0.0.1:7443`).
    func decoded(_ name: String) throws -> String {
        let raw = try require(name)
        guard let text = raw.removingPercentEncoding else { throw NodeError(.badInput, "the path segment \(raw) is not valid percent-encoding") }
        return text
    }
}

extension Request {
    /// A query parameter, if present.
    func query(_ name: String) -> String? { uri.queryParameters.get(name) }

    /// A whole-number query parameter within `range`, if present.
    func query(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = query(name) else { return nil }
        guard let n = Int(text), range.contains(n) else {
            throw NodeError(.badInput, "\(name) must be a whole number from \(range.lowerBound) to \(range.upperBound), not \(text)")
        }
        return n
    }

    /// A yes/no query parameter (`1`/`true` or `0`/`false`), if present.
    func flag(_ name: String) throws -> Bool? {
        guard let text = query(name) else { return nil }
        switch text {
        case "1", "true": return true
        case "0", "false": return false
        default: throw NodeError(.badInput, "\(name) must be 1, true, 0 or false, not \(text)")
        }
    }
}
