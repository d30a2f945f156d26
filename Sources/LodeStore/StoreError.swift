import GRDB

/// An error from the store: a code for programs, a message for people, and
/// the underlying cause when there is one.
///
/// ```swift
/// do { try await replica.importCSV(table: "mines", from: url) }
/// catch let e as StoreError where e.code == .badInput { print(e.message) }
/// ```
public struct StoreError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is.
    public enum Code: String, Sendable, Codable {
        /// The input (CSV, SQL, schema, commit) is malformed or breaks a rule.
        case badInput = "bad_input"
        /// A table, column, dataset or row that does not exist.
        case notFound = "not_found"
        /// Something that exists already and may not be overwritten.
        case alreadyExists = "already_exists"
        /// The site's role does not allow the operation.
        case forbidden
        /// A commit from elsewhere failed verification.
        case rejected
        /// SQLite or the file system failed.
        case storage
    }

    /// The kind of failure.
    public let code: Code
    /// One line saying what went wrong and, where known, what to do.
    public let message: String
    /// The error underneath, if any.
    public let cause: (any Error)?

    /// Creates an error.
    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        if let cause { return "\(message) (\(cause))" }
        return message
    }

    static func badInput(_ m: String) -> StoreError { StoreError(.badInput, m) }
    static func notFound(_ m: String) -> StoreError { StoreError(.notFound, m) }
}

extension StoreError {
    /// A storage failure users can act on, told in their terms: a full disk
    /// (SQLITE_FULL) rolls the write back whole. Nil for anything else.
    public static func explaining(_ error: any Error) -> StoreError? {
        guard let e = error as? DatabaseError else { return nil }
        switch e.resultCode {
        case .SQLITE_FULL:
            return StoreError(.storage, "the disk holding the data directory is full: nothing of this write was stored; free some space and retry")
        case .SQLITE_IOERR:
            return StoreError(.storage, "the disk failed while writing (\(e.message ?? "I/O error")): nothing of this write was stored")
        default:
            return nil
        }
    }
}
