import LodeCore

/// An error from a store: a code for programs, a message for people, and
/// the underlying cause when there is one.
///
/// Messages speak of the store's own operations, never of a particular
/// client's commands: `remedy` names the operation to use instead, and each
/// client says it in its own terms (`lode` prints "use lode exec").
///
/// ```swift
/// do { _ = try await replica.importCSV(table: "mines", path: "mines.csv", progress: nil) }
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
        /// Nobody is signed in (the workspace): sign in first.
        case unauthorized
        /// A commit from elsewhere failed verification.
        case rejected
        /// The storage underneath failed.
        case storage
        /// The service is not ready (a node starting or stopping, a database
        /// out of reach): retry later.
        case unavailable
    }

    /// The operation to use instead of the one refused.
    public enum Remedy: String, Sendable, Codable {
        /// Change rows with SQL (`INSERT`, `UPDATE`, `DELETE`).
        case exec
        /// Read with a query.
        case query
        /// Add tables or columns.
        case alter
        /// Write annotations.
        case annotate
        /// Create a dataset.
        case createDataset = "create_dataset"
    }

    /// The kind of failure.
    public let code: Code
    /// One line saying what went wrong.
    public let message: String
    /// What to use instead, when the operation was the wrong one.
    public var remedy: Remedy?
    /// True when the storage is full: nothing of the write was stored, and
    /// it can be retried once there is room.
    public var isStorageFull = false
    /// The error underneath, if any.
    public let cause: (any Error)?

    /// Creates an error.
    public init(_ code: Code, _ message: String, remedy: Remedy? = nil, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.remedy = remedy
        self.cause = cause
    }

    public var description: String {
        if let cause { return "\(message) (\(cause))" }
        return message
    }

    /// Bad input, with the message.
    public static func badInput(_ m: String, remedy: Remedy? = nil) -> StoreError { StoreError(.badInput, m, remedy: remedy) }
    /// Not found, with the message.
    public static func notFound(_ m: String) -> StoreError { StoreError(.notFound, m) }
    /// A write of rows to a table whose name Lodestone reserves (its own
    /// tables, annotations, SQLite's): the request is wrong whatever the
    /// caller's role, so it is bad input, never `forbidden`.
    public static func managedTable(_ name: String) -> StoreError {
        let annotations = Role.annotationTables.contains(name)
        return StoreError(
            .badInput,
            "table \(name) is managed by Lodestone: only rows of user tables may be written"
                + (annotations ? " (annotations are written with annotate)" : ""),
            remedy: annotations ? .annotate : nil)
    }
}
