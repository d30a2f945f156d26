import LodeCore

/// The messages of the client API (HTTP/JSON on `DATA_DIR/lode.sock`, or
/// over mutual TLS). `Protocol/client-api.yaml` documents the same.
public enum API {
    /// The version prefix of every path.
    public static let prefix = "/v1"

    /// An error response body: `{"error": {"code": …, "message": …}}`.
    public struct ErrorBody: Codable, Sendable {
        public struct Detail: Codable, Sendable {
            public var code: String
            public var message: String
            /// The operation to use instead, when the request used the wrong
            /// one: `exec`, `query`, `alter`, `annotate` or `create_dataset`.
            public var remedy: String?
            public init(code: String, message: String, remedy: String? = nil) {
                self.code = code
                self.message = message
                self.remedy = remedy
            }
        }
        public var error: Detail
        public init(code: String, message: String, remedy: String? = nil) { error = Detail(code: code, message: message, remedy: remedy) }
    }

    /// One entry of a version vector.
    public struct VectorEntry: Codable, Sendable, Hashable {
        /// The site name (from its certificate) or key prefix.
        public var site: String
        /// The full site key, hex.
        public var key: String
        /// The highest seq held.
        public var seq: UInt64
        public init(site: String, key: String, seq: UInt64) {
            self.site = site
            self.key = key
            self.seq = seq
        }
    }

    /// A dataset and what it holds.
    public struct DatasetInfo: Codable, Sendable {
        public struct Table: Codable, Sendable {
            public var name: String
            public var rows: Int
            public init(name: String, rows: Int) {
                self.name = name
                self.rows = rows
            }
        }
        public var name: String
        public var tables: [Table]
        public var bytes: UInt64
        public var commits: Int
        public var vector: [VectorEntry]
        /// Commits refused (bad signature, role, fork…), newest first.
        public var rejected: Int
        /// Other sites' feeds that need an operator's eye.
        public var alerts: [SiteAlert]
        public init(name: String, tables: [Table], bytes: UInt64, commits: Int, vector: [VectorEntry], rejected: Int, alerts: [SiteAlert] = []) {
            self.name = name
            self.tables = tables
            self.bytes = bytes
            self.commits = commits
            self.vector = vector
            self.rejected = rejected
            self.alerts = alerts
        }
    }

    /// Something wrong with another site's feed of a dataset (DESIGN §9).
    public struct SiteAlert: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable {
            /// Its commits are stamped further ahead of this node's clock
            /// than the allowed drift: held back until the clock catches up.
            case clockAhead = "clock-ahead"
            /// It signed two different commits with one seq (its key leaked,
            /// or it misbehaves): its feed is frozen here at `seq`; both
            /// commits are kept as evidence. Ask the CA to revoke it.
            case forked
            /// It asked for commits this node compacted away: it cannot
            /// catch up from here and needs a snapshot (`seq` says how many
            /// such commits it lacks).
            case needsSnapshot = "needs-snapshot"
        }
        public var kind: Kind
        /// The site name (from its certificate) or key prefix.
        public var site: String
        /// The full site key, hex.
        public var key: String
        /// The first commit of the feed concerned (needs-snapshot: how
        /// many compacted commits the site lacks).
        public var seq: UInt64
        /// When this node first noticed (ISO 8601).
        public var since: String
        /// What is wrong, in a sentence.
        public var detail: String
        public init(kind: Kind, site: String, key: String, seq: UInt64, since: String, detail: String) {
            self.kind = kind
            self.site = site
            self.key = key
            self.seq = seq
            self.since = since
            self.detail = detail
        }
    }

    /// A configured or connected peer.
    public struct PeerInfo: Codable, Sendable {
        public var address: String
        public var state: PeerState
        /// The peer's site name once known.
        public var site: String?
        /// Per dataset: commits the peer lacks (ahead) and this node lacks (behind).
        public var datasets: [String: Lag]?
        public var lastError: String?
        public init(address: String, state: PeerState, site: String? = nil, datasets: [String: Lag]? = nil, lastError: String? = nil) {
            self.address = address
            self.state = state
            self.site = site
            self.datasets = datasets
            self.lastError = lastError
        }
    }

    /// `GET /v1/status`.
    public struct Status: Codable, Sendable {
        public var site: String
        public var siteKey: String
        public var role: String
        public var cluster: String
        public var listen: String
        public var dataDir: String
        public var version: String
        public var datasets: [DatasetInfo]
        public var peers: [PeerInfo]
        public init(
            site: String, siteKey: String, role: String, cluster: String, listen: String, dataDir: String,
            version: String, datasets: [DatasetInfo], peers: [PeerInfo]
        ) {
            self.site = site
            self.siteKey = siteKey
            self.role = role
            self.cluster = cluster
            self.listen = listen
            self.dataDir = dataDir
            self.version = version
            self.datasets = datasets
            self.peers = peers
        }
    }

    /// `POST /v1/datasets`.
    public struct CreateDataset: Codable, Sendable {
        public var name: String
        /// `CREATE TABLE` statements.
        public var schema: String
        public init(name: String, schema: String) {
            self.name = name
            self.schema = schema
        }
    }

    /// `POST /v1/datasets/{ds}/alter`.
    public struct AlterDataset: Codable, Sendable {
        public var schema: String
        public init(schema: String) { self.schema = schema }
    }

    /// The answer to an alter.
    public struct AlterResult: Codable, Sendable {
        public var addedTables: [String]
        public var addedColumns: [String]
        public init(addedTables: [String], addedColumns: [String]) {
            self.addedTables = addedTables
            self.addedColumns = addedColumns
        }
    }

    /// `POST /v1/datasets/{ds}/query` and `/exec`.
    public struct SQLRequest: Codable, Sendable {
        public var sql: String
        /// Query: run on the dataset as it stood at this point, an ISO 8601
        /// time or a commit `SITE:SEQ` (`HistoryPoint`). Not for exec.
        public var asOf: String?
        public init(sql: String, asOf: String? = nil) {
            self.sql = sql
            self.asOf = asOf
        }
    }

    /// `/v1/datasets/{ds}/checkpoints`: "at vector V the dataset's digest
    /// is D", and the editor sites that signed it (DESIGN §12).
    public struct Checkpoint: Codable, Sendable, Equatable {
        /// Names (V, D).
        public var id: String
        /// V: the commits it covers, per site.
        public var vector: [VectorEntry]
        /// How many commits V covers.
        public var commits: UInt64
        /// D: the SHA-256 digest of the dataset at V, hex.
        public var digest: String
        /// Rows the digest covers (every table, annotations included).
        public var rows: Int
        /// The sites that signed, by name.
        public var signers: [String]
        /// Signatures this node wants before a checkpoint is complete.
        public var quorum: Int
        /// True once `signers` reaches `quorum`.
        public var complete: Bool

        public init(id: String, vector: [VectorEntry], commits: UInt64, digest: String, rows: Int, signers: [String], quorum: Int) {
            self.id = id
            self.vector = vector
            self.commits = commits
            self.digest = digest
            self.rows = rows
            self.signers = signers
            self.quorum = quorum
            complete = signers.count >= quorum
        }
    }

    /// `POST /v1/datasets/{ds}/compact`: how much history to keep.
    public struct CompactRequest: Codable, Sendable, Equatable {
        /// Seconds of history to keep before now (nil: 30 days).
        public var keepHistory: UInt64?
        public init(keepHistory: UInt64? = nil) { self.keepHistory = keepHistory }
        /// The most history a compaction may be asked to keep: 100 years.
        public static let maxKeepHistory: UInt64 = 3_153_600_000
    }

    /// What a compaction did.
    public struct CompactionReport: Codable, Sendable, Equatable {
        /// The complete checkpoint compacted to.
        public var checkpoint: String
        public var commitsDropped: Int
        public var historyEntriesDropped: Int
        public var rowsFolded: Int
        /// As-of queries and diffs reach back to here.
        public var horizon: String
        public var bytesBefore: UInt64
        public var bytesAfter: UInt64

        public init(
            checkpoint: String, commitsDropped: Int, historyEntriesDropped: Int, rowsFolded: Int, horizon: String, bytesBefore: UInt64,
            bytesAfter: UInt64
        ) {
            self.checkpoint = checkpoint
            self.commitsDropped = commitsDropped
            self.historyEntriesDropped = historyEntriesDropped
            self.rowsFolded = rowsFolded
            self.horizon = horizon
            self.bytesBefore = bytesBefore
            self.bytesAfter = bytesAfter
        }
    }

    /// `POST /v1/restore`: what a restore did.
    public struct RestoreReport: Codable, Sendable, Equatable {
        /// The dataset the backup holds.
        public var dataset: String
        /// Commits in the backup's log.
        public var commits = 0
        /// Commits applied here.
        public var applied = 0
        /// Commits this node already held.
        public var alreadyHeld = 0
        /// Commits refused (forged, altered, unauthorized, past a cut-off…).
        public var refused = 0
        /// Commits that could not be applied: what they follow is missing
        /// from the backup and from this node.
        public var unapplied = 0
        /// Site certificates the backup carried that this node did not know,
        /// verified against the cluster CA and kept.
        public var certificatesAdded = 0
        /// The checkpoint a compacted backup's rows were installed at (a new
        /// dataset started from a snapshot), if any.
        public var snapshot: String?
        /// Why commits or certificates were refused (the first few).
        public var reasons: [String] = []

        public init(dataset: String) { self.dataset = dataset }
    }

    /// The answer to an exec.
    public typealias ExecResult = WriteReport

    /// A line of the NDJSON stream an import answers with.
    public struct ImportEvent: Codable, Sendable {
        /// Progress so far (rows, bytes, totalBytes).
        public var progress: ImportProgress?
        /// The final result.
        public var result: ImportResult?
        /// A failure; nothing was imported.
        public var error: ErrorBody.Detail?
        public init(progress: ImportProgress? = nil, result: ImportResult? = nil, error: ErrorBody.Detail? = nil) {
            self.progress = progress
            self.result = result
            self.error = error
        }
    }

    /// How far an import has come.
    public typealias ImportProgress = LodeCore.ImportProgress

    /// What an import did.
    public typealias ImportResult = ImportReport

    /// `POST /v1/datasets/{ds}/annotations`.
    public struct AnnotateRequest: Codable, Sendable {
        public var table: String
        public var pk: String
        public var column: String?
        public var text: String
        public var tags: [String]
        public var replyTo: String?
        public init(table: String, pk: String, column: String?, text: String, tags: [String], replyTo: String?) {
            self.table = table
            self.pk = pk
            self.column = column
            self.text = text
            self.tags = tags
            self.replyTo = replyTo
        }
    }

    /// An annotation as listed.
    public typealias Annotation = LodeCore.Annotation

    /// One write in a row's history.
    public typealias HistoryEntry = LodeCore.HistoryEntry

    /// Two concurrent writes to one cell.
    public typealias Conflict = ConflictRecord

    /// `POST /v1/sync`: dial every peer now; with `wait`, answer once this
    /// node and every connected peer hold the same commits, or at `timeout`
    /// seconds (default 60).
    public struct SyncRequest: Codable, Sendable {
        public var wait: Bool?
        public var timeout: Double?
        public init(wait: Bool?, timeout: Double?) {
            self.wait = wait
            self.timeout = timeout
        }
    }

    /// The answer to a sync.
    public struct SyncResult: Codable, Sendable {
        /// True when every peer holds the same commits as this node.
        public var inSync: Bool
        /// Peers still apart or unreachable, with why.
        public var apart: [String]
        /// False when the request did not ask to wait.
        public var waited: Bool
        public init(inSync: Bool, apart: [String], waited: Bool) {
            self.inSync = inSync
            self.apart = apart
            self.waited = waited
        }
    }

    /// A revocation handed in (`GET` and `POST /v1/revocations`): the site,
    /// why, when, and the cut-offs this node fixed.
    public struct RevocationInfo: Codable, Sendable, Hashable {
        public var site: String
        public var reason: String
        /// When the CA revoked it (ISO 8601).
        public var revoked: String
        public var cutoffs: [Cutoff]
        public init(site: String, reason: String, revoked: String, cutoffs: [Cutoff]) {
            self.site = site
            self.reason = reason
            self.revoked = revoked
            self.cutoffs = cutoffs
        }

        /// One feed of the site in one dataset: commits after `seq` are refused.
        public struct Cutoff: Codable, Sendable, Hashable {
            public var dataset: String
            /// The feed's site key (hex).
            public var key: String
            public var seq: UInt64
            public init(dataset: String, key: String, seq: UInt64) {
                self.dataset = dataset
                self.key = key
                self.seq = seq
            }
        }
    }

    /// `POST /v1/peers`.
    public struct PeerRequest: Codable, Sendable {
        public var address: String
        public init(address: String) { self.address = address }
    }

    /// A person of the site (`GET /v1/people`).
    public typealias PersonInfo = Person

    /// `POST /v1/people`: add a person with a role no higher than the site's.
    public struct PersonRequest: Codable, Sendable {
        public var name: String
        public var role: Role
        public init(name: String, role: Role) {
            self.name = name
            self.role = role
        }
    }

    /// `POST /v1/signin-links`: a link for `person` (if absent, the person
    /// the caller is, `Lode-Person` on the socket; that person, at the
    /// node's own terminal, is added with the site's role if new).
    public struct SignInRequest: Codable, Sendable {
        public var person: String?
        public init(person: String? = nil) { self.person = person }
    }

    /// A one-time sign-in link to the workspace.
    public struct SignInLink: Codable, Sendable, Hashable {
        public var person: String
        public var role: Role
        /// `http://HOST:PORT/signin?token=…`: works once, until `expires`.
        public var url: String
        public var expires: String
        public init(person: String, role: Role, url: String, expires: String) {
            self.person = person
            self.role = role
            self.url = url
            self.expires = expires
        }
    }

    /// `POST /v1/datasets/{ds}/annotations/{id}/status`: resolve or reopen.
    public struct AnnotationStatusRequest: Codable, Sendable {
        public var status: String
        public init(status: String) { self.status = status }
    }

    /// `POST /v1/datasets/{ds}/conflicts/resolve`: write `value` to the
    /// cell as a new edit that has seen both sides, which ends the conflict
    /// everywhere ("keep this value"), even when it is the value shown.
    public struct ResolveRequest: Codable, Sendable {
        public var table: String
        public var pk: String
        public var column: String
        public var value: Value
        public init(table: String, pk: String, column: String, value: Value) {
            self.table = table
            self.pk = pk
            self.column = column
            self.value = value
        }
    }
}
