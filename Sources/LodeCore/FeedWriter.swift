import Crypto

/// Writes the next commit of a site's own feed in one dataset.
///
/// ```swift
/// let writer = FeedWriter(key: key)
/// let c = try writer.commit(dataset: "rare-earths", ops: ops, hlc: clock.tick(wallMillis: now),
///                           head: ownHead, held: replicaVector)
/// ```
public struct FeedWriter: Sendable {
    /// The site's signing key.
    public let key: Curve25519.Signing.PrivateKey
    /// The site id (the key's public half).
    public let site: SiteID

    /// Creates a writer for `key`.
    public init(key: Curve25519.Signing.PrivateKey) {
        self.key = key
        // A Curve25519 public key is always 32 bytes.
        site = try! SiteID(bytes: key.publicKey.rawRepresentation)
    }

    /// Signs the commit that follows `head` in this site's feed. `held` is
    /// everything the replica has applied; the commit's dependencies are the
    /// feeds that advanced since the author's previous commit.
    public func commit(dataset: String, person: String = "", ops: [Op], hlc: HLC, head: FeedHead, held: VersionVector) throws -> Commit {
        let content = CommitContent(
            dataset: dataset, author: site, person: person, seq: head.seq + 1, hlc: hlc, prev: head.hash,
            deps: held.dependencies(since: head.vector, author: site), ops: ops)
        return try Commit.sign(content, with: key)
    }

    /// Like `commit`, for ops already encoded.
    public func commit(
        dataset: String, person: String = "", ops: EncodedOps, hlc: HLC, head: FeedHead, held: VersionVector
    ) throws -> SignedCommit {
        let header = CommitContent(
            dataset: dataset, author: site, person: person, seq: head.seq + 1, hlc: hlc, prev: head.hash,
            deps: held.dependencies(since: head.vector, author: site), ops: [])
        return try Commit.sign(header: header, ops: ops, with: key)
    }
}
