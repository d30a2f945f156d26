import Foundation
import LodeStore
import PostgresNIO
import Synchronization

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

    /// Runs `body`, giving up after `limit` with `unavailable`: a query on
    /// a connection PostgreSQL closes under it (a restart while relays
    /// write) can wait for ever in postgres-nio 1.33, and a store that
    /// waits for ever holds its dataset's writes and every sync session
    /// behind it. What `body` returns after the limit is dropped; a
    /// transaction that committed meanwhile is read back like another
    /// process's write (its generation differs).
    static func bounded<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let race = Race<T>()
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            race.waiting.withLock { $0 = c }
            let timer = Task {
                // Cancelled: the work finished first.
                guard (try? await Task.sleep(for: limit)) != nil else { return }
                race.finish(.failure(StoreError(.unavailable, "PostgreSQL did not answer within \(limit): retry later")))
            }
            race.work.withLock {
                $0 = Task {
                    let outcome: Result<T, any Error>
                    do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
                    race.finish(outcome)
                    timer.cancel()
                }
            }
        }
    }

    /// The work and the timer of `bounded`: whichever finishes first
    /// resumes the caller; the timer cancels the work.
    private final class Race<T: Sendable>: Sendable {
        let waiting = Mutex<CheckedContinuation<T, any Error>?>(nil)
        let work = Mutex<Task<Void, Never>?>(nil)

        func finish(_ outcome: Result<T, any Error>) {
            guard let c = waiting.withLock({ $0.take() }) else { return }
            if case .failure = outcome { work.withLock { $0?.cancel() } }
            c.resume(with: outcome)
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

/// A value handed between tasks that the compiler cannot prove safe to
/// share: a closure and its result, used by one task at a time.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// `PGErrors.bounded` when there is a limit, else `body` as it is.
func bounded<T: Sendable>(_ limit: Duration?, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    guard let limit else { return try await body() }
    return try await PGErrors.bounded(limit, body)
}
