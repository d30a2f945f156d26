import Foundation
import Hummingbird
import LodeProtocol
import LodeStore
import NIOCore

/// An error that answers a client-API request with its own HTTP status and
/// the body `{"error": {"code", "message", "remedy"}}`.
protocol APIError: HTTPResponseError {
    /// The code in the body (`Protocol/client-api.yaml`, `Error`).
    var apiCode: String { get }
    /// The message in the body: for people, never internals.
    var apiMessage: String { get }
    /// The operation to use instead, if any.
    var apiRemedy: String? { get }
    /// Headers the answer carries beside the body.
    var headers: HTTPFields { get }
}

extension APIError {
    var headers: HTTPFields { [:] }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try json(API.ErrorBody(code: apiCode, message: apiMessage, remedy: apiRemedy), status: status)
        response.headers.append(contentsOf: headers)
        return response
    }
}

extension StoreError.Code {
    /// The HTTP status of an error with this code.
    var status: HTTPResponse.Status {
        switch self {
        case .badInput: .badRequest
        case .notFound: .notFound
        case .alreadyExists: .conflict
        case .forbidden: .forbidden
        case .unauthorized: .unauthorized
        case .rejected: .unprocessableContent
        case .storage: .internalServerError
        case .unavailable: .serviceUnavailable
        }
    }
}

extension StoreError: APIError {
    /// A full disk is 507: nothing was stored, and it can be retried once there is room.
    public var status: HTTPResponse.Status { isStorageFull ? HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage") : code.status }
    var apiCode: String { code.rawValue }
    var apiMessage: String { message }
    var apiRemedy: String? { remedy?.rawValue }
}

extension NodeError: APIError {
    public var status: HTTPResponse.Status { code.status }
    var apiCode: String { code.rawValue }
    var apiMessage: String { message }
    var apiRemedy: String? { remedy?.rawValue }
}

/// What the API answers for an error that is not its own: a body that
/// does not decode, a route that is not there, or a failure inside the
/// node, which is logged whole and told to the client only in outline.
struct UnexpectedError: APIError {
    let status: HTTPResponse.Status
    let apiCode: String
    let apiMessage: String
    var apiRemedy: String? { nil }

    init(_ error: any Error) {
        switch error {
        case is Swift.DecodingError:
            status = .badRequest
            apiCode = "bad_input"
            apiMessage = "the request body is not the JSON this endpoint expects: \(UnexpectedError.describe(error))"
        case let e as HTTPError:
            status = e.status
            apiCode =
                switch e.status.code {
                case 404: "not_found"
                case 405: "method_not_allowed"
                case 413: "too_large"
                case 400..<500: "bad_input"
                default: "internal"
                }
            apiMessage = e.body ?? e.status.reasonPhrase
        default:
            status = .internalServerError
            apiCode = "internal"
            apiMessage = "the node failed to answer this request; its log says why"
        }
    }

    /// A JSON decoding error in a sentence, without Swift's type names.
    static func describe(_ error: any Error) -> String {
        guard let e = error as? Swift.DecodingError else { return "\(error)" }
        func path(_ c: Swift.DecodingError.Context) -> String {
            c.codingPath.isEmpty ? "the body" : c.codingPath.map(\.stringValue).joined(separator: ".")
        }
        switch e {
        case .keyNotFound(let key, _): return "\(key.stringValue) is missing"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "\(path(c)) has the wrong type"
        case .dataCorrupted(let c): return c.codingPath.isEmpty ? "it is not valid JSON" : "\(path(c)) is not valid"
        @unknown default: return "it does not decode"
        }
    }
}

/// Turns every error into an error response; errors the API does not know
/// are logged with their cause.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let answer: any APIError = (error as? any APIError) ?? UnexpectedError(error)
            if answer.status.code >= 500 {
                context.logger.error("request failed", metadata: ["method": "\(request.method)", "path": "\(request.uri.path)", "error": "\(error)"])
            }
            return try answer.response(from: request, context: context)
        }
    }
}
