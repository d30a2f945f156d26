/// What a site may do, as its certificate says.
public enum Role: String, Sendable, CaseIterable, Codable {
    /// Reads, writes rows, annotates, creates datasets.
    case editor
    /// Reads and annotates.
    case annotator
    /// Reads.
    case reader
    /// Stores and forwards every commit; writes nothing of its own.
    case relay

    /// The system tables that hold annotations, writable by annotators.
    public static let annotationTables: Set<String> = ["_annotations", "_annotation_tags"]

    /// True when a site of this role may author `op`.
    public func permits(_ op: Op) -> Bool {
        op.isDefinition ? permits(defines: true, tables: []) : permits(defines: false, tables: [op.table])
    }

    /// True when a site of this role may author a commit that defines
    /// tables (`defines`) and writes rows of `tables`.
    public func permits(defines: Bool, tables: Set<String>) -> Bool {
        switch self {
        case .editor: true
        case .annotator: !defines && tables.isSubset(of: Role.annotationTables)
        case .reader, .relay: !defines && tables.isEmpty
        }
    }

    /// The roles a person of a site may be given (`lode user add`).
    public static let personRoles: [Role] = [.editor, .annotator, .reader]

    /// True when this role allows nothing `other` does not: a person's
    /// role is at most their site's. A relay's people may only read.
    public func isAtMost(_ other: Role) -> Bool {
        func rank(_ r: Role) -> Int {
            switch r {
            case .editor: 3
            case .annotator: 2
            case .reader, .relay: 1
            }
        }
        return self != .relay && rank(self) <= rank(other)
    }

    /// True when a site of this role may write rows of user tables.
    public var canEdit: Bool { self == .editor }
    /// True when a site of this role may add annotations.
    public var canAnnotate: Bool { self == .editor || self == .annotator }
}
