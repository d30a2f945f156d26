import Hummingbird
import Synchronization

/// A router that records which methods each path has, so that a request for
/// a path that exists, with a method it does not have, is answered 405
/// Method Not Allowed with an `Allow` header, not 404
/// (`MethodNotAllowedMiddleware`). Routes are added through it as through a
/// `Router`, groups included.
struct MethodRouter<Context: RequestContext>: RouterMethods {
    let router: Router<Context>
    /// Which methods each path has.
    let methods = MethodTable()

    final class MethodTable: Sendable {
        let paths = Mutex<[(path: RouterPath, methods: [HTTPRequest.Method])]>([])
        func add(_ path: RouterPath, _ method: HTTPRequest.Method) {
            paths.withLock { p in
                if let i = p.firstIndex(where: { $0.path == path }) { p[i].methods.append(method) } else { p.append((path, [method])) }
            }
        }

        /// The methods the path of `request` has, when it has any: the answer
        /// to a request no route took because of its method.
        func allowed(for path: String) -> [HTTPRequest.Method]? {
            let segments = path.split(separator: "/", omittingEmptySubsequences: true)
            for (route, have) in paths.withLock({ $0 }) {
                let pattern = route.description.split(separator: "/", omittingEmptySubsequences: true)
                guard pattern.count == segments.count, zip(pattern, segments).allSatisfy({ $0.hasPrefix(":") || $0 == $1 }) else { continue }
                // HEAD comes with GET (the router answers it from the GET route).
                return have + (have.contains(.get) && !have.contains(.head) ? [.head] : [])
            }
            return nil
        }
    }

    init(_ router: Router<Context>) { self.router = router }

    @discardableResult
    func on<Responder: HTTPResponder>(_ path: RouterPath, method: HTTPRequest.Method, responder: Responder) -> Self
    where Responder.Context == Context {
        methods.add(path, method)
        router.on(path, method: method, responder: responder)
        return self
    }

    @discardableResult
    func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Self {
        router.add(middleware: middleware)
        return self
    }

}

/// Answers 405, with an `Allow` header, for a path that exists asked for with
/// a method it does not have (the router alone answers 404).
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: MethodRouter<Context>.MethodTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            guard let allowed = routes.allowed(for: request.uri.path) else { throw e }
            throw MethodNotAllowed(method: request.method, path: request.uri.path, allow: allowed.map(\.rawValue).joined(separator: ", "))
        }
    }
}

/// A path asked for with a method it does not have.
struct MethodNotAllowed: APIError {
    let method: HTTPRequest.Method
    let path: String
    /// The methods the path has, for the `Allow` header.
    let allow: String

    var status: HTTPResponse.Status { .methodNotAllowed }
    var apiCode: String { "method_not_allowed" }
    var apiMessage: String { "\(path) does not take \(method); it takes \(allow)" }
    var apiRemedy: String? { nil }
    var headers: HTTPFields { [.allow: allow] }
}
