import Foundation
import GRDB
import LodeCore

/// What happened to a batch of commits from elsewhere.
public struct ApplyOutcome: Sendable {
    /// Commits applied, in order.
    public var applied: [Commit] = []
    /// Commits already held (replays and duplicates), skipped.
    public var duplicates = 0
    /// Commits that cannot be applied yet (a gap or a missing dependency):
    /// the caller keeps them and retries once more has arrived.
    public var waiting: [Commit] = []
    /// Commits refused for good, with the kind and reason. Nothing of them was applied.
    public var rejected: [(commit: Commit, kind: RejectionKind, reason: String)] = []
}

/// Why a commit from elsewhere was refused.
public enum RejectionKind: String, Sendable {
    /// The signature does not verify under the author's key.
    case badSignature = "bad_signature"
    /// The previous hash names another head: a fork or an altered feed.
    case forkedFeed = "forked_feed"
    /// The author's certificate (role, validity) does not allow the commit.
    case notAuthorized = "not_authorized"
    /// An op breaks the schema or another rule.
    case invalid
}

/// A site known to the replica: the key, and what its certificate says.
public struct SiteRecord: Sendable, Hashable {
    /// The key.
    public var site: SiteID
    /// The name from its certificate.
    public var name: String?
    /// The role from its certificate.
    public var role: Role?
    /// The certificate (DER).
    public var certificate: [UInt8]?
    /// The certificate's validity (Unix milliseconds); commits stamped
    /// outside it (give or take an hour of clock drift) are refused.
    public var validFrom: UInt64?
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
}

extension Replica {
    /// Records what a verified certificate says about a site, so that its
    /// commits can be checked and shown by name.
    public func registerSite(_ record: SiteRecord) async throws {
        try await write { db, state in
            let idx = try state.siteIndex(db, record.site)
            try db.execute(
                sql: "UPDATE _lode_sites SET name = ?, role = ?, cert = ?, valid_from = ?, valid_until = ? WHERE id = ?",
                arguments: [
                    record.name, record.role?.rawValue, record.certificate.map { Data($0) },
                    record.validFrom.map { Int64(clamping: $0) }, record.validUntil.map { Int64(clamping: $0) }, idx,
                ])
        }
    }

    /// True when a certificate for `site` has been registered here.
    public func knowsSite(_ site: SiteID) async throws -> Bool {
        try await read { db in
            try Bool.fetchOne(db, sql: "SELECT role IS NOT NULL FROM _lode_sites WHERE key = ?", arguments: [Data(site.bytes)]) ?? false
        }
    }

    /// Every site this replica knows of.
    public func sites() async throws -> [SiteRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT key, name, role, cert, valid_from, valid_until FROM _lode_sites").map { row in
                SiteRecord(
                    site: try SiteID(bytes: [UInt8](row["key"] as Data)), name: row["name"],
                    role: (row["role"] as String?).flatMap(Role.init(rawValue:)),
                    certificate: (row["cert"] as Data?).map { [UInt8]($0) },
                    validFrom: (row["valid_from"] as Int64?).map { UInt64(max(0, $0)) },
                    validUntil: (row["valid_until"] as Int64?).map { UInt64(max(0, $0)) })
            }
        }
    }

    /// Verifies and applies commits from elsewhere, in order, in one
    /// transaction. Each commit is checked in full before any of it is
    /// applied: dataset, feed position, previous hash, causal dependencies,
    /// signature, the author's certificate (role and validity), and the
    /// schema of every op. A commit that fails is rejected (kept aside with
    /// the reason) and changes nothing; the others still apply. A commit
    /// whose feed has a gap, whose dependencies are not held, or whose
    /// author's certificate has not arrived yet waits: it is returned in
    /// `waiting` for the caller to offer again later. Signatures are checked
    /// only once a commit can be applied, so waiting costs nothing.
    public func apply(_ commits: [Commit]) async throws -> ApplyOutcome {
        try await write { [self] db, state in
            var outcome = ApplyOutcome()
            var pending = commits
            // Commits may arrive out of causal order within a batch: retry
            // the waiting ones while progress is made.
            var progress = true
            while progress {
                progress = false
                var next: [Commit] = []
                for commit in pending {
                    switch try applyOne(db, state, commit) {
                    case .applied:
                        outcome.applied.append(commit)
                        progress = true
                    case .duplicate: outcome.duplicates += 1
                    case .waiting: next.append(commit)
                    case .rejected(let kind, let reason): outcome.rejected.append((commit, kind, reason))
                    }
                }
                pending = next
            }
            outcome.waiting = pending
            return UncheckedBox(outcome)
        }.value
    }

    enum ApplyResult {
        case applied, duplicate, waiting
        case rejected(RejectionKind, String)
    }

    /// Allowed difference between a commit's clock and its certificate's validity.
    static let validitySlackMillis: UInt64 = 3_600_000

    private func applyOne(_ db: Database, _ state: WriterState, _ commit: Commit) throws -> ApplyResult {
        if commit.dataset != dataset {
            return try reject(db, commit, .invalid, "commit is for dataset \(commit.dataset), not \(dataset)")
        }
        let head = state.heads[commit.author] ?? .empty
        let past: VersionVector
        do {
            past = try FeedRules.check(commit, head: head, held: state.vector)
        } catch {
            switch error {
            case .alreadyHeld:
                // The same seq with other bytes is tampering or a forked feed.
                let held = try Data.fetchOne(
                    db, sql: "SELECT l.hash FROM _lode_log l JOIN _lode_sites s ON l.site = s.id WHERE s.key = ? AND l.seq = ?",
                    arguments: [Data(commit.author.bytes), Int64(commit.seq)])
                guard let held, [UInt8](held) != commit.hash else { return .duplicate }
                if !commit.hasValidSignature { return try reject(db, commit, .badSignature, "bad signature on a copy of seq \(commit.seq)") }
                return try reject(db, commit, .forkedFeed, "the author signed two different commits with seq \(commit.seq)")
            case .gap, .missingDependency: return .waiting
            case .wrongPrevious:
                return try reject(
                    db, commit, .forkedFeed, "previous hash does not match the feed's head at seq \(head.seq): a forked or altered feed")
            }
        }
        guard
            let site = try Row.fetchOne(
                db, sql: "SELECT role, valid_from, valid_until FROM _lode_sites WHERE key = ? AND role IS NOT NULL",
                arguments: [Data(commit.author.bytes)]),
            let role = Role(rawValue: site["role"])
        else {
            // Its certificate has not arrived yet.
            return .waiting
        }
        guard commit.hasValidSignature else { return try reject(db, commit, .badSignature, "bad signature") }
        let millis = commit.hlc.millis
        if let from = site["valid_from"] as Int64?, millis + Replica.validitySlackMillis < UInt64(max(0, from)) {
            return try reject(db, commit, .notAuthorized, "commit is stamped before its author's certificate was valid")
        }
        if let until = site["valid_until"] as Int64?, millis > UInt64(max(0, until)) + Replica.validitySlackMillis {
            return try reject(db, commit, .notAuthorized, "commit is stamped after its author's certificate expired")
        }
        if let op = commit.ops.first(where: { !role.permits($0) }) {
            return try reject(db, commit, .notAuthorized, "author \(commit.author.short) is a \(role.rawValue) and may not write table \(op.table)")
        }
        // Apply inside a savepoint so that a schema violation found midway
        // leaves nothing behind.
        let siteIndex = try state.siteIndex(db, commit.author)
        let ctx = CommitContext(site: siteIndex, hlc: commit.hlc, seq: commit.seq, logID: state.nextLogID, past: past)
        do {
            try db.execute(sql: "SAVEPOINT lode_commit")
            try applyOps(db, state, commit, ctx)
            try storeCommit(
                db, state, author: commit.author, seq: commit.seq, hlc: commit.hlc, hash: commit.hash, bytes: commit.bytes,
                logID: ctx.logID, site: siteIndex, past: past)
            try db.execute(sql: "RELEASE lode_commit")
            return .applied
        } catch let violation as SchemaViolation {
            try db.execute(sql: "ROLLBACK TO lode_commit")
            try db.execute(sql: "RELEASE lode_commit")
            try state.reload(db)
            return try reject(db, commit, .invalid, violation.message)
        }
    }

    private func applyOps(_ db: Database, _ state: WriterState, _ commit: Commit, _ ctx: CommitContext) throws {
        let stamp = SchemaStamp(hlc: commit.hlc, site: commit.author)
        for op in commit.ops {
            switch op {
            case .defineTable(let def):
                if Identifier.isReserved(def.name) { throw SchemaViolation("table name \(def.name) is reserved") }
                try state.define(db, def, stamp: stamp)
            case .put(let put):
                guard let t = state.tables[put.table] else { throw SchemaViolation("no table \(put.table)") }
                let slots = try put.columns.map { c in
                    guard let s = t.slots[c] else { throw SchemaViolation("no column \(c) in table \(put.table)") }
                    return s
                }
                if put.table == "_annotations", let authorCol = put.columns.firstIndex(of: "author") {
                    let name = try String.fetchOne(db, sql: "SELECT name FROM _lode_sites WHERE id = ?", arguments: [ctx.site])
                    for i in 0..<put.rowCount where put.values[i * put.columns.count + authorCol] != .text(name ?? "") {
                        throw SchemaViolation("an annotation names an author other than the site that signed it")
                    }
                }
                for i in 0..<put.rowCount {
                    if try state.insertIfAbsent(db, t, key: put.keys[i], length: put.lengths[i], slots: slots, values: put.row(i), ctx) { continue }
                    try state.put(db, t, key: put.keys[i], length: put.lengths[i], slots: slots, values: put.row(i), ctx)
                }
            case .delete(let del):
                guard let t = state.tables[del.table] else { throw SchemaViolation("no table \(del.table)") }
                for i in 0..<del.keys.count {
                    try state.delete(db, t, key: del.keys[i], length: del.lengths[i], ctx)
                }
            }
        }
    }

    private func reject(_ db: Database, _ commit: Commit, _ kind: RejectionKind, _ reason: String) throws -> ApplyResult {
        // The same bad commit offered again by another peer is kept once.
        try db.execute(
            sql: "INSERT OR IGNORE INTO _lode_rejected(received, site, seq, hash, kind, reason, bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [
                Int64(wallClock()), Data(commit.author.bytes), Int64(commit.seq), Data(commit.hash), kind.rawValue, reason, Data(commit.bytes),
            ])
        return .rejected(kind, reason)
    }

    /// How many commits this replica has refused.
    public func rejectionCount() async throws -> Int {
        try await read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_rejected") ?? 0 }
    }

    /// Commits refused by this replica, newest first.
    public func rejections(limit: Int = 100) async throws -> [(site: SiteID, seq: UInt64, reason: String, received: UInt64)] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT site, seq, reason, received FROM _lode_rejected ORDER BY id DESC LIMIT ?", arguments: [limit]).map {
                (try SiteID(bytes: [UInt8]($0["site"] as Data)), UInt64($0["seq"] as Int64), $0["reason"], UInt64($0["received"] as Int64))
            }
        }
    }

    /// The commits this replica holds that a replica holding `vector` lacks,
    /// decoded, in local apply order, at most `limit` of them.
    public func commits(missingFrom vector: VersionVector, limit: Int = 1000) async throws -> [Commit] {
        try await missingCommits(after: vector, maxBytes: .max, maxCount: limit).map { try Commit(decoding: $0.bytes) }
    }
}

extension WriterState {
    /// Reloads everything from the file (after a rolled-back savepoint).
    func reload(_ db: Database) throws {
        let fresh = try WriterState.load(db, dataset: dataset)
        sites = fresh.sites
        siteKeys = fresh.siteKeys
        tables = fresh.tables
        heads = fresh.heads
        vector = fresh.vector
        clock = fresh.clock
        nextLogID = fresh.nextLogID
    }
}

extension Replica {
    /// The commits a replica holding `vector` lacks, in local apply order
    /// (a causal order), stopping once about `maxBytes` are gathered (at
    /// least one commit if any is missing). The scan starts at the first
    /// missing commit of any feed, found by index, so its cost follows what
    /// is missing, not the size of the log.
    public func missingCommits(
        after vector: VersionVector, maxBytes: Int, maxCount: Int = .max
    ) async throws
        -> [(site: SiteID, seq: UInt64, bytes: [UInt8])]
    {
        try await read { db in
            var keys: [Int64: SiteID] = [:]
            var start: Int64?
            for row in try Row.fetchAll(db, sql: "SELECT id, key FROM _lode_sites") {
                let id: Int64 = row["id"]
                let key = try SiteID(bytes: [UInt8](row["key"] as Data))
                keys[id] = key
                let next = vector[key] == UInt64.max ? nil : vector[key] + 1
                if let next, next <= UInt64(Int64.max),
                    let logID = try Int64.fetchOne(db, sql: "SELECT id FROM _lode_log WHERE site = ? AND seq = ?", arguments: [id, Int64(next)])
                {
                    start = min(start ?? logID, logID)
                }
            }
            guard let start else { return [] }
            var out: [(site: SiteID, seq: UInt64, bytes: [UInt8])] = []
            var total = 0
            let rows = try Row.fetchCursor(db, sql: "SELECT id, site, seq FROM _lode_log WHERE id >= ? ORDER BY id", arguments: [start])
            let body = try db.makeStatement(sql: "SELECT bytes FROM _lode_log WHERE id = ?")
            while let row = try rows.next() {
                guard let key = keys[row["site"]] else { continue }
                let seq = UInt64(row["seq"] as Int64)
                guard seq > vector[key] else { continue }
                guard let data = try Data.fetchOne(body, arguments: [row["id"] as Int64]) else { continue }
                out.append((key, seq, [UInt8](data)))
                total += data.count
                if total >= maxBytes || out.count >= maxCount { break }
            }
            return out
        }
    }
}
