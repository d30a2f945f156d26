import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Records what a verified certificate says about a site, so that its
    /// commits can be checked and shown by name.
    public func registerSite(_ record: SiteRecord) async throws {
        try await write { tx in try tx.state.sites.register(tx.db, record) }
    }

    public func knowsSite(_ site: SiteID) async throws -> Bool {
        try await read { db in try SiteRegistry.record(db, site)?.role != nil }
    }

    public func sites() async throws -> [SiteRecord] {
        try await read { db in try SiteRegistry.records(db) }
    }

    /// Verifies and applies commits from elsewhere, in order, in one
    /// transaction. `CommitVerifier` judges each commit in full before any
    /// of it is applied; a refused commit changes nothing and is kept aside
    /// with the reason, and the others still apply. Commits that must wait
    /// come back in `waiting`; commits may arrive out of causal order within
    /// a batch, so the waiting ones are retried while progress is made
    /// (`ApplyOutcome.collecting`).
    public func apply(_ commits: [Commit]) async throws -> ApplyOutcome {
        // Signatures are checked on every core before the one writer applies.
        try await groups.submit(await Commit.checkingSignatures(commits, except: vector)) { [self] batches in
            try await write { [self] tx in
                UncheckedBox(try batches.map { commits in try ApplyOutcome.collecting(commits) { try applyOne(tx, $0) } })
            }.value
        }
    }

    func applyOne(_ tx: WriteTransaction, _ commit: Commit) throws -> CommitVerifier.Verdict {
        let db = tx.db
        let verdict = try CommitVerifier.verify(
            commit, dataset: dataset, head: tx.state.feeds.head(commit.author), held: tx.state.feeds.vector,
            author: try SiteRegistry.record(db, commit.author), now: wallClock(), maxDrift: maxClockDrift, cutoffs: tx.state.feeds.cutoffs,
            heldHash: { seq in try FeedLog.hash(db, site: commit.author, seq: seq) })
        switch verdict {
        case .duplicate, .wait, .clockAhead:
            return verdict
        case .reject(let kind, let reason):
            try reject(db, commit, kind, reason)
            return verdict
        case .apply(let past):
            // Apply inside a savepoint so that a schema violation found
            // midway leaves nothing behind.
            let ctx = try tx.state.context(db, author: commit.author, hlc: commit.hlc, seq: commit.seq, past: past)
            do {
                try db.execute(sql: "SAVEPOINT lode_commit")
                try applyOps(tx.state, db, commit, ctx)
                try tx.state.feeds.append(
                    db, author: commit.author, number: ctx.author, seq: commit.seq, hlc: commit.hlc, hash: commit.hash, person: commit.person,
                    bytes: commit.bytes,
                    past: past)
                try db.execute(sql: "RELEASE lode_commit")
                tx.noteStored(StoredCommit(site: commit.author, seq: commit.seq, bytes: commit.bytes))
                return verdict
            } catch let violation as SchemaViolation {
                try db.execute(sql: "ROLLBACK TO lode_commit")
                try db.execute(sql: "RELEASE lode_commit")
                try tx.reload()
                try reject(db, commit, .invalid, violation.message)
                return .reject(.invalid, violation.message)
            }
        }
    }

    private func applyOps(_ state: WriterState, _ db: Database, _ commit: Commit, _ ctx: CommitContext) throws {
        let stamp = SchemaStamp(hlc: commit.hlc, site: commit.author)
        for op in commit.ops {
            switch op {
            case .defineTable(let def):
                try state.schema.define(db, def, stamp: stamp)
            case .put(let put):
                guard let t = state.schema[put.table] else { throw SchemaViolation("no table \(put.table)") }
                let slots = try put.columns.map { c in
                    guard let s = t.slot(c) else { throw SchemaViolation("no column \(c) in table \(put.table)") }
                    return s
                }
                for i in 0..<put.rowCount {
                    let values = put.row(i)
                    guard let meta = try state.rows.insertOrRead(db, t, pk: put.keys[i], length: put.lengths[i], slots: slots, values: values, ctx)
                    else { continue }
                    try state.rows.put(db, t, pk: put.keys[i], length: put.lengths[i], slots: slots, values: values, meta: meta, ctx)
                }
            case .delete(let del):
                guard let t = state.schema[del.table] else { throw SchemaViolation("no table \(del.table)") }
                for i in 0..<del.keys.count {
                    try state.rows.delete(db, t, pk: del.keys[i], length: del.lengths[i], ctx)
                }
            }
        }
    }

    /// Keeps a refusal aside as `RejectionLog` says: bytes only of a fork,
    /// and the newest `maxKept` of the others (pruned every 256 refusals).
    func reject(_ db: Database, _ commit: Commit, _ kind: RejectionKind, _ reason: String) throws {
        // The same bad commit offered again by another peer is kept once.
        try db.execute(
            sql: "INSERT OR IGNORE INTO _lode_rejected(received, site, seq, hash, kind, reason, bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [
                Int64(wallClock()), Data(commit.author.bytes), Int64(bitPattern: commit.seq), Data(commit.hash), kind.rawValue,
                RejectionLog.reason(reason), RejectionLog.keepsBytes(kind) ? Data(commit.bytes) : Data(),
            ])
        guard db.changesCount > 0, db.lastInsertedRowID % 256 == 0 else { return }
        try db.execute(
            sql: """
                DELETE FROM _lode_rejected WHERE id IN (
                    SELECT id FROM _lode_rejected WHERE kind != ? ORDER BY id DESC LIMIT -1 OFFSET ?)
                """,
            arguments: [RejectionKind.forkedFeed.rawValue, RejectionLog.maxKept])
    }

    public func rejectionCount() async throws -> Int {
        try await read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_rejected") ?? 0 }
    }

    public func rejections(limit: Int, kind: RejectionKind?) async throws -> [RejectionRecord] {
        try await read { db in
            try Row.fetchAll(
                db, sql: "SELECT site, seq, kind, reason, received FROM _lode_rejected WHERE ?1 IS NULL OR kind = ?1 ORDER BY id DESC LIMIT ?2",
                arguments: [kind?.rawValue, limit]
            )
            .map {
                RejectionRecord(
                    site: try SiteID(bytes: [UInt8]($0["site"] as Data)), seq: UInt64(bitPattern: $0["seq"] as Int64),
                    kind: RejectionKind(rawValue: $0["kind"]) ?? .invalid, reason: $0["reason"],
                    received: UInt64(max(0, $0["received"] as Int64)))
            }
        }
    }

    public func commitCount() async throws -> Int {
        try await read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_log") ?? 0 }
    }

    /// The commits a replica holding `vector` lacks, in local apply order
    /// (a causal order), stopping once about `maxBytes` or `maxCount` are
    /// gathered (at least one commit if any is missing). The scan starts at
    /// the first missing commit of any feed, found by index, so its cost
    /// follows what is missing, not the size of the log.
    public func missingCommits(after vector: VersionVector, maxBytes: Int, maxCount: Int) async throws -> [StoredCommit] {
        let held = self.vector
        if let answer = recent.withLock({ $0.missing(after: vector, held: held, maxBytes: maxBytes, maxCount: maxCount) }) {
            return answer
        }
        return try await read { db in
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
            var out: [StoredCommit] = []
            var total = 0
            let rows = try Row.fetchCursor(db, sql: "SELECT id, site, seq FROM _lode_log WHERE id >= ? ORDER BY id", arguments: [start])
            let body = try db.makeStatement(sql: "SELECT bytes FROM _lode_log WHERE id = ?")
            while let row = try rows.next() {
                guard let key = keys[row["site"]] else { continue }
                let seq = UInt64(row["seq"] as Int64)
                guard seq > vector[key] else { continue }
                // A commit compacted away (`compact`) cannot be sent: the peer
                // must start from a snapshot instead.
                guard let data = try Data.fetchOne(body, arguments: [row["id"] as Int64]), !data.isEmpty else { continue }
                let bytes = try LogBytes.commit(data)
                out.append(StoredCommit(site: key, seq: seq, bytes: bytes))
                total += bytes.count
                if total >= maxBytes || out.count >= maxCount { break }
            }
            return out
        }
    }
}
