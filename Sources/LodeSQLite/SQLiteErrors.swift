import GRDB
import LodeStore

extension StoreError {
    /// The error a store reports for `error` thrown by SQLite: a storage
    /// failure told in users' terms (a full disk rolls the write back whole
    /// and says so), never the SQL behind it, which stays in `cause` for the
    /// log. Errors that are not SQLite's pass through unchanged.
    static func converting(_ error: any Error) -> any Error {
        guard let e = error as? DatabaseError else { return error }
        switch e.resultCode {
        case .SQLITE_FULL:
            var full = StoreError(
                .storage, "the disk holding the data directory is full: nothing of this write was stored; free some space and retry", cause: e)
            full.isStorageFull = true
            return full
        case .SQLITE_IOERR:
            return StoreError(.storage, "the disk failed while writing (\(e.message ?? "I/O error")): nothing of this write was stored", cause: e)
        default:
            // SQLite's own words stay in `cause`, for the log.
            return StoreError(.storage, "the dataset file could not be read or written (SQLite error \(e.resultCode.rawValue))", cause: e)
        }
    }

    /// Runs `body`, converting what SQLite throws.
    static func converting<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw converting(error)
        }
    }

    /// The same, for synchronous work.
    static func converting<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw converting(error)
        }
    }
}
