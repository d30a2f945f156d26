// What the CRDT shows readers of a replica: the history of a row, the
// conflicts it kept, annotations, and what local writes did. The same
// records serve the stores, the client API (`LodeProtocol`'s `API`, in JSON)
// and the CLI.

/// One write to a row, from the log.
public struct HistoryEntry: Sendable, Codable, Hashable {
    /// When (the commit's clock, ISO 8601).
    public var time: String
    /// The author's site name (or key prefix when unknown).
    public var siteName: String
    /// The person at that site the commit names, if any.
    public var person: String?
    /// The commit's seq in the author's feed.
    public var seq: UInt64
    /// The column written; nil for a delete.
    public var column: String?
    /// The value written; nil for a delete.
    public var value: Value?
    /// True when this write is what the row shows now.
    public var won: Bool

    enum CodingKeys: String, CodingKey {
        case time, seq, column, value, won, person
        case siteName = "site"
    }

    /// Creates an entry.
    public init(time: String, siteName: String, person: String? = nil, seq: UInt64, column: String?, value: Value?, won: Bool) {
        self.time = time
        self.siteName = siteName
        self.person = person
        self.seq = seq
        self.column = column
        self.value = value
        self.won = won
    }
}

/// Two concurrent writes to one cell.
public struct ConflictRecord: Sendable, Codable, Hashable {
    public var table: String
    public var pk: String
    public var column: String
    public var winnerValue: Value
    /// The display names of the two writers' sites.
    public var winnerSiteName: String
    public var winnerTime: String
    public var loserValue: Value
    public var loserSiteName: String
    public var loserTime: String
    /// The people the two writes name, if any.
    public var winnerPerson: String?
    public var loserPerson: String?
    /// True once a later write that saw both replaced them.
    public var resolved: Bool

    enum CodingKeys: String, CodingKey {
        case table, pk, column, winnerValue, winnerTime, loserValue, loserTime, resolved, winnerPerson, loserPerson
        case winnerSiteName = "winnerSite"
        case loserSiteName = "loserSite"
    }

    /// Creates a record.
    public init(
        table: String, pk: String, column: String, winnerValue: Value, winnerSiteName: String, winnerTime: String,
        loserValue: Value, loserSiteName: String, loserTime: String, resolved: Bool, winnerPerson: String? = nil, loserPerson: String? = nil
    ) {
        self.winnerPerson = winnerPerson
        self.loserPerson = loserPerson
        self.table = table
        self.pk = pk
        self.column = column
        self.winnerValue = winnerValue
        self.winnerSiteName = winnerSiteName
        self.winnerTime = winnerTime
        self.loserValue = loserValue
        self.loserSiteName = loserSiteName
        self.loserTime = loserTime
        self.resolved = resolved
    }
}

/// An annotation on a row or one cell.
public struct Annotation: Sendable, Codable, Hashable {
    public var id: String
    public var table: String
    public var pk: String
    public var column: String?
    public var text: String
    /// The author's site (its name).
    public var author: String
    /// The person at that site who wrote it, if the commit names one.
    public var person: String?
    public var status: String
    public var replyTo: String?
    public var created: String
    public var tags: [String]
    /// False when the row it points at has since been deleted.
    public var targetExists: Bool

    /// Creates an annotation.
    public init(
        id: String, table: String, pk: String, column: String?, text: String, author: String, status: String,
        replyTo: String?, created: String, tags: [String], targetExists: Bool, person: String? = nil
    ) {
        self.id = id
        self.person = person
        self.table = table
        self.pk = pk
        self.column = column
        self.text = text
        self.author = author
        self.status = status
        self.replyTo = replyTo
        self.created = created
        self.tags = tags
        self.targetExists = targetExists
    }
}

/// What a write of local edits (SQL, rows, a CSV file) did.
public struct WriteReport: Sendable, Codable, Hashable {
    /// Rows inserted, updated or deleted.
    public var rowsChanged: Int
    /// Commits written.
    public var commits: Int

    /// Creates a report.
    public init(rowsChanged: Int, commits: Int) {
        self.rowsChanged = rowsChanged
        self.commits = commits
    }
}

/// What an import did.
public struct ImportReport: Sendable, Codable, Hashable {
    /// Data rows read from the file.
    public var rowsRead: Int
    /// Rows inserted or changed (rows equal to what is stored write nothing).
    public var rowsChanged: Int
    /// Commits written.
    public var commits: Int

    /// Creates a report.
    public init(rowsRead: Int, rowsChanged: Int, commits: Int) {
        self.rowsRead = rowsRead
        self.rowsChanged = rowsChanged
        self.commits = commits
    }
}

// How far an import has come.
public struct ImportProgress: Sendable, Codable, Hashable {
    /// Rows processed so far.
    public var rows: Int
    /// Bytes of input consumed so far.
    public var bytes: UInt64
    /// Total bytes of input, when known.
    public var totalBytes: UInt64?
    /// Rows written so far, once the whole input is read (an import sorts
    /// its rows by key before it writes them); nil while reading.
    public var written: Int?

    /// Creates a progress report.
    public init(rows: Int, bytes: UInt64, totalBytes: UInt64?, written: Int? = nil) {
        self.rows = rows
        self.bytes = bytes
        self.totalBytes = totalBytes
        self.written = written
    }
}

/// A person of this site (`lode user add`): who the workspace signs in and
/// every commit they make names (DESIGN §9, §11).
public struct Person: Sendable, Codable, Hashable {
    /// Their name, as commits carry it (`Identifier.isValidPerson`).
    public var name: String
    /// What they may do: at most what the site's role allows.
    public var role: Role
    /// When they were added (ISO 8601).
    public var added: String

    public init(name: String, role: Role, added: String) {
        self.name = name
        self.role = role
        self.added = added
    }
}
