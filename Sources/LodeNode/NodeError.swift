import LodeStore

/// An error of the node: its keys, certificates and files, its datasets
/// and peers. Store errors pass through as they are (`StoreError`).
public struct NodeError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure: the same codes as a store's.
    public typealias Code = StoreError.Code
    /// The kind.
    public let code: Code
    /// One line for the user.
    public let message: String
    /// What to use instead, when the operation was the wrong one.
    public var remedy: StoreError.Remedy?

    /// Creates an error.
    public init(_ code: Code, _ message: String, remedy: StoreError.Remedy? = nil) {
        self.code = code
        self.message = message
        self.remedy = remedy
    }
    public var description: String { message }
}
