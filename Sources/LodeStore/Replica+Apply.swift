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
    /// Commits refused for good, with the reason. Nothing of them was applied.
    public var rejected: [(commit: Commit, reason: String)] = []
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
}

extension Replica {
    /// Records what a verified certificate says about a site, so that its
    /// commits can be checked and shown by name.
    public func registerSite(_ record: SiteRecord) async throws {
        try await write { db, state in
            let idx = try state.siteIndex(db, record.site)
            try db.execute(
                sql: "UPDATE _lode_sites SET name = ?, role = ?, cert = ? WHERE id = ?",
                arguments: [record.name, record.role?.rawValue, record.certificate.map { Data($0) }, idx])
        }
    }

    /// Every site this replica knows of.
    public func sites() async throws -> [SiteRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT key, name, role, cert FROM _lode_sites").map { row in
                SiteRecord(
                    site: try SiteID(bytes: [UInt8](row["key"] as Data)), name: row["name"],
                    role: (row["role"] as String?).flatMap(Role.init(rawValue:)),
                    certificate: (row["cert"] as Data?).map { [UInt8]($0) })
            }
        }
    }

    /// Verifies and applies commits from elsewhere, in order, in one
    /// transaction. Each commit is checked in full before any of it is
    /// applied: dataset, signature, feed position, previous hash, causal
    /// dependencies, the author's role, and the schema of every op. A commit
    /// that fails is rejected (kept aside with the reason) and changes
    /// nothing; the others still apply.
    public func apply(_ commits: [Commit]) async throws -> ApplyOutcome {
        let verified = commits.map { c in (c, c.dataset == dataset && c.hasValidSignature) }
        return try await write { [self] db, state in
            var outcome = ApplyOutcome()
            var pending = verified
            // Commits may arrive out of causal order within a batch: retry
            // the waiting ones while progress is made.
            var progress = true
            while progress {
                progress = false
                var next: [(Commit, Bool)] = []
                for (commit, signed) in pending {
                    switch try applyOne(db, state, commit, signatureOK: signed) {
                    case .applied:
                        outcome.applied.append(commit)
                        progress = true
                    case .duplicate: outcome.duplicates += 1
                    case .waiting: next.append((commit, signed))
                    case .rejected(let reason): outcome.rejected.append((commit, reason))
                    }
                }
                pending = next
            }
            outcome.waiting = pending.map(\.0)
            return UncheckedBox(outcome)
        }.value
    }

    enum ApplyResult {
        case applied, duplicate, waiting
        case rejected(String)
    }

    private func applyOne(_ db: Database, _ state: WriterState, _ commit: Commit, signatureOK: Bool) throws -> ApplyResult {
        if commit.dataset != dataset {
            return try reject(db, commit, "commit is for dataset \(commit.dataset), not \(dataset)")
        }
        let head = state.heads[commit.author] ?? .empty
        let past: VersionVector
        do {
            past = try FeedRules.check(commit, head: head, held: state.vector)
        } catch {
            switch error {
            case .alreadyHeld: return .duplicate
            case .gap, .missingDependency: return .waiting
            case .wrongPrevious:
                return try reject(db, commit, "previous hash does not match the feed's head at seq \(head.seq): a forked or altered feed")
            }
        }
        guard signatureOK else { return try reject(db, commit, "bad signature") }
        let role = try String.fetchOne(db, sql: "SELECT role FROM _lode_sites WHERE key = ?", arguments: [Data(commit.author.bytes)])
            .flatMap(Role.init(rawValue:))
        guard let role else {
            return try reject(db, commit, "author \(commit.author.short) has no known certificate")
        }
        if let op = commit.ops.first(where: { !role.permits($0) }) {
            return try reject(db, commit, "author \(commit.author.short) is a \(role.rawValue) and may not write table \(op.table)")
        }
        // Apply inside a savepoint so that a schema violation found midway
        // leaves nothing behind.
        let site = try state.siteIndex(db, commit.author)
        let ctx = CommitContext(site: site, hlc: commit.hlc, seq: commit.seq, logID: state.nextLogID, past: past)
        do {
            try db.execute(sql: "SAVEPOINT lode_commit")
            try applyOps(db, state, commit, ctx)
            try storeCommit(db, state, commit, logID: ctx.logID, site: site, past: past)
            try db.execute(sql: "RELEASE lode_commit")
            return .applied
        } catch let violation as SchemaViolation {
            try db.execute(sql: "ROLLBACK TO lode_commit")
            try db.execute(sql: "RELEASE lode_commit")
            try state.reload(db)
            return try reject(db, commit, violation.message)
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

    private func reject(_ db: Database, _ commit: Commit, _ reason: String) throws -> ApplyResult {
        try db.execute(
            sql: "INSERT INTO _lode_rejected(received, site, seq, reason, bytes) VALUES (?, ?, ?, ?, ?)",
            arguments: [Int64(wallClock()), Data(commit.author.bytes), Int64(commit.seq), reason, Data(commit.bytes)])
        return .rejected(reason)
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
    /// in local apply order (a causal order), at most `limit` of them.
    public func commits(missingFrom vector: VersionVector, limit: Int = 1000) async throws -> [Commit] {
        try await read { db in
            var out: [Commit] = []
            let sites = try Row.fetchAll(db, sql: "SELECT id, key FROM _lode_sites")
            var conditions: [String] = []
            var args: [DatabaseValueConvertible] = []
            for row in sites {
                let key = try SiteID(bytes: [UInt8](row["key"] as Data))
                conditions.append("(site = ? AND seq > ?)")
                args.append(row["id"] as Int64)
                args.append(Int64(vector[key]))
            }
            guard !conditions.isEmpty else { return [] }
            args.append(limit)
            let cursor = try Row.fetchCursor(
                db, sql: "SELECT bytes FROM _lode_log WHERE \(conditions.joined(separator: " OR ")) ORDER BY id LIMIT ?",
                arguments: StatementArguments(args))
            while let row = try cursor.next() {
                out.append(try Commit(decoding: [UInt8](row["bytes"] as Data)))
            }
            return out
        }
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
