import LodeCore
import LodeProtocol

/// What the sync engine needs from the node: its datasets and their logs,
/// applying commits, and certificates. `LodeNode` implements it over its
/// replica stores; the engine never touches storage itself.
public protocol SyncHost: Sendable {
    /// This node's site.
    var localSite: SiteID { get }
    /// This node's cluster: SHA-256 of the CA certificate.
    var cluster: [UInt8] { get }
    /// Every dataset held, with its vector.
    func datasetVectors() async throws -> [String: VersionVector]
    /// The commits a replica holding `after` lacks, in a causal order, at
    /// most about `maxBytes` of them (always at least one if any is missing),
    /// as their original bytes with author and seq, for `peer`.
    func missingCommits(dataset: String, after: VersionVector, maxBytes: Int, for peer: PeerIdentity) async throws -> [StoredCommit]
    /// Verifies and applies commits received from `peer`; returns the
    /// vector after and the commits refused. For a dataset not held here, the dataset comes into
    /// being only through a commit that may create it (DESIGN §9); when
    /// none does, nothing is kept and `held` is false.
    func apply(dataset: String, commits: [Commit], from peer: SiteID) async throws -> SyncApplyResult
    /// The site certificates (DER) this node knows, its own included.
    func knownCertificates() async throws -> [[UInt8]]
    /// Who a TLS peer is, from its certificate (DER), already verified
    /// against the cluster CA by the handshake.
    func identifyPeer(_ der: [UInt8]) throws -> PeerIdentity
    /// Verifies certificates against the cluster CA and keeps the good ones.
    func addCertificates(_ ders: [[UInt8]]) async throws -> CertificateIntake
    /// The revocation notices this node keeps, for a new session.
    func revocationNotices() async throws -> [[UInt8]]
    /// The evidence of every fork this node found (both commits, by
    /// dataset), for a new session: a peer that was away when it was found
    /// learns of it then.
    func forkEvidence() async throws -> [(dataset: String, commits: [[UInt8]])]
    /// Checks a revocation notice a peer sent and takes it in (DESIGN §9).
    /// Throws when it is refused.
    func takeRevocation(_ notice: [UInt8]) async throws -> RevocationTaken

    // Snapshots (defaults below: none).

    /// A snapshot of `dataset` to offer `peer`, which holds `peerHolds` of
    /// it, when this node compacted away commits it lacks; nil to send
    /// commits as usual.
    func snapshotOffer(dataset: String, peerHolds: VersionVector, for peer: PeerIdentity) async throws -> SnapshotOffer?
    /// Makes (or reuses) a snapshot of `dataset` for `session` to send;
    /// returns its exact size.
    func openSnapshot(dataset: String, session: UInt64) async throws -> UInt64
    /// `count` bytes at `offset` of the snapshot `session` sends.
    func readSnapshot(dataset: String, session: UInt64, offset: UInt64, count: Int) async throws -> [UInt8]
    /// Starts taking a snapshot of `dataset` at `vector`, about `bytes`
    /// long, from `peer` in `session`; throws (saying why) when this node
    /// will not.
    func beginSnapshot(dataset: String, vector: VersionVector, bytes: UInt64, from peer: PeerIdentity, session: UInt64) async throws
    /// Stores the snapshot's bytes at `offset`; `total` is its exact size
    /// (checked against the node's bounds with the first bytes).
    func storeSnapshot(dataset: String, offset: UInt64, total: UInt64, bytes: [UInt8], session: UInt64) async throws
    /// Checks and installs the snapshot received whole; returns a line for the log.
    func installSnapshot(dataset: String, session: UInt64) async throws -> String
    /// Lets go of what `session` sends or receives of `dataset` (all when nil).
    func releaseSnapshots(session: UInt64, dataset: String?)
}

/// A snapshot a node can hand a peer that lacks commits of a dataset the
/// node compacted away (DESIGN §12).
public struct SnapshotOffer: Sendable, Equatable {
    /// The dataset's rows in it are at least at this vector.
    public var vector: VersionVector
    /// Its size, roughly (the dataset's file): the snapshot made on request
    /// says its exact size when its bytes start.
    public var bytes: UInt64

    public init(vector: VersionVector, bytes: UInt64) {
        self.vector = vector
        self.bytes = bytes
    }
}

/// Snapshots over sync (DESIGN §12): a node that compacted away commits
/// a peer lacks offers it a snapshot instead, and sends its bytes
/// if asked; the peer checks and installs it as a restore would. Hosts
/// that neither make nor take snapshots keep these defaults.
extension SyncHost {
    public func snapshotOffer(dataset: String, peerHolds: VersionVector, for peer: PeerIdentity) async throws -> SnapshotOffer? { nil }
    public func openSnapshot(dataset: String, session: UInt64) async throws -> UInt64 {
        throw SnapshotUnsupported()
    }
    public func readSnapshot(dataset: String, session: UInt64, offset: UInt64, count: Int) async throws -> [UInt8] {
        throw SnapshotUnsupported()
    }
    public func beginSnapshot(dataset: String, vector: VersionVector, bytes: UInt64, from peer: PeerIdentity, session: UInt64) async throws {
        throw SnapshotUnsupported()
    }
    public func storeSnapshot(dataset: String, offset: UInt64, total: UInt64, bytes: [UInt8], session: UInt64) async throws {
        throw SnapshotUnsupported()
    }
    public func installSnapshot(dataset: String, session: UInt64) async throws -> String { throw SnapshotUnsupported() }
    public func releaseSnapshots(session: UInt64, dataset: String?) {}
}

/// A host that keeps the defaults above.
public struct SnapshotUnsupported: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "this node neither makes nor takes snapshots" }
}

/// What a revocation notice did here.
public struct RevocationTaken: Sendable {
    /// Notices new here, for every other peer.
    public var forward: [[UInt8]]
    /// The revoked site's name: its sessions close.
    public var site: String?

    public init(forward: [[UInt8]], site: String?) {
        self.forward = forward
        self.site = site
    }
}

/// What became of certificates a peer sent.
public struct CertificateIntake: Sendable {
    /// The certificates that were new here (DER), to pass on to other peers.
    public var added: [[UInt8]]
    /// Why each refused one was refused.
    public var refused: [String]

    public init(added: [[UInt8]], refused: [String]) {
        self.added = added
        self.refused = refused
    }
}

/// A commit refused for good, as the sender is told.
public struct CommitRejection: Sendable, Hashable {
    /// The commit's author and seq.
    public var site: SiteID
    public var seq: UInt64
    /// Why, for programs and for people.
    public var code: RejectCode
    public var reason: String

    public init(site: SiteID, seq: UInt64, code: RejectCode, reason: String) {
        self.site = site
        self.seq = seq
        self.code = code
        self.reason = reason
    }
}

/// What applying a batch did.
public struct SyncApplyResult: Sendable {
    /// The dataset's vector afterwards.
    public var vector: VersionVector
    /// Commits refused for good.
    public var rejected: [CommitRejection]
    /// Commits kept for later (a gap, a missing dependency or certificate).
    public var waiting: Int
    /// Feeds held back at a commit stamped too far ahead of this node's
    /// clock (code `clockAhead`, the first such seq per author): the peer
    /// is to offer them again later.
    public var aheadOfClock: [CommitRejection]
    /// False when the dataset is not held here: the commits did not bring
    /// it into being.
    public var held: Bool
    /// Evidence of forks found by this apply (both commits of each, encoded),
    /// for every other peer (DESIGN §9): a peer offered both finds the fork
    /// itself, freezes the feed and passes the evidence on.
    public var evidence: [[UInt8]]

    public init(
        vector: VersionVector, rejected: [CommitRejection], waiting: Int, aheadOfClock: [CommitRejection] = [], held: Bool = true,
        evidence: [[UInt8]] = []
    ) {
        self.vector = vector
        self.rejected = rejected
        self.waiting = waiting
        self.aheadOfClock = aheadOfClock
        self.held = held
        self.evidence = evidence
    }
}
