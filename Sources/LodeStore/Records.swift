import Foundation
import LodeCore

/// This node's identity as a writer of commits.
public struct LocalSite: Sendable {
    /// Signs the site's commits.
    public let writer: FeedWriter
    /// The site's name, from its certificate.
    public let name: String
    /// The site's role, from its certificate.
    public let role: Role
    /// The site's certificate (DER), stored with its commits so that other
    /// replicas can check them.
    public let certificate: [UInt8]

    /// The site's key.
    public var site: SiteID { writer.site }

    /// Creates a local site.
    public init(writer: FeedWriter, name: String, role: Role, certificate: [UInt8]) {
        self.writer = writer
        self.name = name
        self.role = role
        self.certificate = certificate
    }

    /// What this site's certificate says, as other replicas record it.
    public var record: SiteRecord { SiteRecord(site: site, name: name, role: role, certificate: certificate.isEmpty ? nil : certificate) }
}

/// A site known to a replica: its key, and what its certificate says.
public struct SiteRecord: Sendable, Hashable {
    /// The key.
    public var site: SiteID
    /// The name from its certificate.
    public var name: String?
    /// The role from its certificate; nil until the certificate arrives.
    public var role: Role?
    /// The certificate (DER).
    public var certificate: [UInt8]?
    /// The start of the certificate's validity (Unix milliseconds).
    public var validFrom: UInt64?
    /// The end of the certificate's validity (Unix milliseconds).
    public var validUntil: UInt64?

    /// Creates a record.
    public init(site: SiteID, name: String?, role: Role?, certificate: [UInt8]?, validFrom: UInt64? = nil, validUntil: UInt64? = nil) {
        self.site = site
        self.name = name
        self.role = role
        self.certificate = certificate
        self.validFrom = validFrom
        self.validUntil = validUntil
    }

    /// The name to show: the certificate's, or the key's first digits.
    public var displayName: String { name ?? site.short }
}

/// Why a commit from elsewhere was refused.
public enum RejectionKind: String, Sendable, CaseIterable {
    /// The signature does not verify under the author's key.
    case badSignature = "bad_signature"
    /// The commit forks its author's feed: its previous hash names another
    /// head, or the author signed another commit with the same seq.
    case forkedFeed = "forked_feed"
    /// The author's certificate (role, validity) does not allow the commit.
    case notAuthorized = "not_authorized"
    /// An op breaks the schema or another rule.
    case invalid
}

/// A commit refused for good, and why.
public struct Rejection: Sendable {
    /// The commit.
    public var commit: Commit
    /// What kind of refusal.
    public var kind: RejectionKind
    /// Why, for a person to read.
    public var reason: String

    /// Creates a rejection.
    public init(commit: Commit, kind: RejectionKind, reason: String) {
        self.commit = commit
        self.kind = kind
        self.reason = reason
    }
}

/// What a replica keeps of the commits it refuses, the same in every store
/// (DESIGN §9: bounded whatever peers send). Only a fork is evidence, so
/// only a forked commit's bytes are kept; of the other refusals the newest
/// `maxKept` are kept (author, seq, hash, kind, reason), older ones dropped.
public enum RejectionLog {
    /// The most refusals kept per replica, forks aside.
    public static let maxKept = 10_000
    /// The longest reason kept, in characters.
    public static let maxReason = 1_000

    /// Whether a refusal of `kind` keeps the commit's bytes (as evidence).
    public static func keepsBytes(_ kind: RejectionKind) -> Bool { kind == .forkedFeed }

    /// The reason as kept.
    public static func reason(_ s: String) -> String { s.count <= maxReason ? s : String(s.prefix(maxReason)) + "…" }
}

/// A refused commit as a replica keeps it aside.
public struct RejectionRecord: Sendable, Hashable {
    /// The author.
    public var site: SiteID
    /// The commit's seq.
    public var seq: UInt64
    /// What kind of refusal.
    public var kind: RejectionKind
    /// Why.
    public var reason: String
    /// When it was refused (Unix milliseconds).
    public var received: UInt64

    /// Creates a record.
    public init(site: SiteID, seq: UInt64, kind: RejectionKind, reason: String, received: UInt64) {
        self.site = site
        self.seq = seq
        self.kind = kind
        self.reason = reason
        self.received = received
    }
}

/// What happened to a batch of commits from elsewhere.
public struct ApplyOutcome: Sendable {
    /// Commits applied, in order.
    public var applied: [Commit] = []
    /// Commits already held (replays and duplicates), skipped.
    public var duplicates = 0
    /// Commits that cannot be applied yet (a gap, a missing dependency, or
    /// an author whose certificate has not arrived): offer them again later.
    public var waiting: [Commit] = []
    /// Commits refused for good. Nothing of them was applied.
    public var rejected: [Rejection] = []
    /// Commits held back, neither applied nor kept, because they are
    /// stamped further ahead of this node's wall clock than the drift
    /// allows (DESIGN §9): the sender is to offer them again later.
    public var aheadOfClock: [Commit] = []

    /// An empty outcome.
    public init() {}
}

/// One event of a streamed result.
public enum QueryEvent: Sendable, Equatable {
    /// The column names, once, first.
    case columns([String])
    /// One row.
    case row([Value])
}

/// What `alter` added.
public struct SchemaChange: Sendable, Hashable {
    /// New tables.
    public var tables: [String]
    /// New columns, as `table.column`.
    public var columns: [String]

    /// Creates a change.
    public init(tables: [String], columns: [String]) {
        self.tables = tables
        self.columns = columns
    }
}

/// How many rows a table holds.
public struct TableRowCount: Sendable, Hashable {
    /// The table.
    public var table: String
    /// Its rows.
    public var rows: Int

    /// Creates a count.
    public init(table: String, rows: Int) {
        self.table = table
        self.rows = rows
    }
}

/// One local edit of a row, for `ReplicaStore.write`.
public enum RowEdit: Sendable, Hashable {
    /// Sets cells of a row, inserting it if absent: one value per column.
    case put(table: String, pk: String, columns: [String], values: [Value])
    /// Deletes a row if present.
    case delete(table: String, pk: String)
}
