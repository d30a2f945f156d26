import Foundation
import LodeStore
import PostgresNIO

/// PostgreSQL's errors as a store's: out of reach (`unavailable`: retry
/// later, nothing was stored), a query that is wrong or too slow
/// (`badInput`), or anything else the database refused (`storage`).
enum PGErrors {
    static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw map(error)
        }
    }

    static func map(_ error: any Error) -> any Error {
        if error is StoreError { return error }
        if let t = error as? PostgresTransactionError {
            return map(t.closureError ?? t.beginError ?? t.commitError ?? t.rollbackError ?? StoreError(.storage, "a transaction failed"))
        }
        guard let e = error as? PSQLError else { return error }
        switch e.code {
        case .server:
            let state = e.serverInfo?[.sqlState] ?? ""
            let message = e.serverInfo?[.message] ?? "an error"
            switch state {
            case "57014": return StoreError.badInput("the query ran past its time limit and was stopped")
            case "25006": return StoreError.badInput("a query may only read: \(message)")
            case _ where state.hasPrefix("42") || state.hasPrefix("22") || state.hasPrefix("0A"):
                return StoreError.badInput("PostgreSQL: \(message)")
            case _ where state.hasPrefix("08") || state.hasPrefix("57") || state.hasPrefix("53"):
                return StoreError(.unavailable, "PostgreSQL is not serving (\(message)): retry later", cause: e)
            default:
                return StoreError(.storage, "PostgreSQL refused a write (\(state) \(message))", cause: e)
            }
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed, .uncleanShutdown:
            return StoreError(.unavailable, "PostgreSQL is out of reach: retry later", cause: e)
        default:
            return StoreError(.storage, "PostgreSQL: \(e.code)", cause: e)
        }
    }
}
