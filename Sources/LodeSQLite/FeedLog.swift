import Foundation
import GRDB
import LodeCore
import LodeStore

/// The log of a dataset file (`_lode_log`, one row per commit, in apply
/// order) and its feeds (`_lode_feeds`, each site's head): what the replica
/// holds, and the clock raised past every commit stored.
final class FeedLog {
    private(set) var heads: [SiteID: FeedHead] = [:]
    private(set) var vector = VersionVector()
    var clock = HybridLogicalClock()
    /// The log row the next commit takes.
    private(set) var nextID: Int64 = 1
    /// How many commits the current transaction stored, for observers.
    var added = 0
    /// The feeds cut off (`_lode_cutoffs`).
    var cutoffs = FeedCutoffs()

    /// Reads the heads and the clock from the file.
    static func load(_ db: Database, sites: SiteRegistry) throws -> FeedLog {
        let f = FeedLog()
        for row in try Row.fetchAll(db, sql: "SELECT site, seq, hash, vector FROM _lode_feeds") {
            guard let key = sites.key(row["site"]) else { continue }
            let head = FeedHead(
                seq: UInt64(row["seq"] as Int64), hash: [UInt8](row["hash"] as Data),
                vector: try VersionVector(decoding: [UInt8](row["vector"] as Data)))
            f.heads[key] = head
            f.vector[key] = head.seq
        }
        var cut: [SiteID: UInt64] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT site, seq FROM _lode_cutoffs") {
            if let key = sites.key(row["site"]) { cut[key] = UInt64(row["seq"] as Int64) }
        }
        f.cutoffs = FeedCutoffs(cut)
        f.clock = HybridLogicalClock(last: HLC(rawValue: UInt64(bitPattern: try Int64.fetchOne(db, sql: "SELECT max(hlc) FROM _lode_log") ?? 0)))
        f.nextID = (try Int64.fetchOne(db, sql: "SELECT max(id) FROM _lode_log") ?? 0) + 1
        return f
    }

    /// The head of `site`'s feed.
    func head(_ site: SiteID) -> FeedHead { heads[site] ?? .empty }

    /// Appends a commit to the log and advances its author's feed. `past`
    /// is the commit's full causal past.
    func append(
        _ db: Database, author: SiteID, number: SiteNumber, seq: UInt64, hlc: HLC, hash: [UInt8], person: String, bytes: [UInt8],
        past: VersionVector
    ) throws {
        let row = try advance(db, author: author, number: number, seq: seq, hlc: hlc, hash: hash, person: person, past: past)
        try store(db, row, LogBytes.stored(bytes))
    }

    /// A log row whose commit's bytes are still to be stored.
    struct PendingRow {
        let id: Int64
        let number: SiteNumber
        let seq: UInt64
        let hlc: HLC
        let hash: [UInt8]
        /// The person the commit names ("" for none).
        let person: String
    }

    /// Advances `author`'s feed by a commit and takes its log row, whose
    /// bytes the caller stores (`store`) before the transaction ends and
    /// before anything reads the log: so that a local writer can deflate
    /// one commit on another core while it builds the next.
    func advance(
        _ db: Database, author: SiteID, number: SiteNumber, seq: UInt64, hlc: HLC, hash: [UInt8], person: String, past: VersionVector
    ) throws -> PendingRow {
        try db.execute(
            sql: "INSERT OR REPLACE INTO _lode_feeds(site, seq, hash, vector) VALUES (?, ?, ?, ?)",
            arguments: [number, Int64(seq), Data(hash), Data(past.encoded)])
        let row = PendingRow(id: nextID, number: number, seq: seq, hlc: hlc, hash: hash, person: person)
        heads[author] = FeedHead(seq: seq, hash: hash, vector: past)
        vector[author] = seq
        nextID += 1
        clock.observe(hlc)
        added += 1
        return row
    }

    /// Stores the log row `advance` took, with the commit's stored bytes (`LogBytes.stored`).
    func store(_ db: Database, _ row: PendingRow, _ stored: Data) throws {
        try db.execute(
            sql: "INSERT INTO _lode_log(id, site, seq, hlc, hash, bytes, person) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [
                row.id, row.number, Int64(row.seq), Int64(bitPattern: row.hlc.rawValue), Data(row.hash), stored,
                row.person.isEmpty ? nil : row.person,
            ])
    }

    /// The hash of `site`'s commit `seq`, if held.
    static func hash(_ db: Database, site: SiteID, seq: UInt64) throws -> [UInt8]? {
        guard seq <= UInt64(Int64.max) else { return nil }
        return try Data.fetchOne(
            db, sql: "SELECT l.hash FROM _lode_log l JOIN _lode_sites s ON l.site = s.id WHERE s.key = ? AND l.seq = ?",
            arguments: [Data(site.bytes), Int64(seq)]
        ).map { [UInt8]($0) }
    }
}

/// How `_lode_log.bytes` holds a commit: as is (a commit's encoding begins
/// with its version, 1), or, when that saves at least a tenth, as `0xFF`,
/// the commit's length as a varint, then the commit deflated (zlib). A
/// replica's log then costs about a third of the values it carries
/// instead of all of them again. The signed bytes are what is read back.
enum LogBytes {
    static let deflated: UInt8 = 0xFF

    /// The stored form of a commit's bytes.
    static func stored(_ bytes: [UInt8]) -> Data {
        if bytes.count >= 128, let packed = Deflate.compress(bytes), packed.count + 10 < bytes.count - bytes.count / 10 {
            var w = ByteWriter(capacity: packed.count + 10)
            w.writeByte(deflated)
            w.writeVarint(UInt64(bytes.count))
            w.writeBytes(packed)
            return Data(w.bytes)
        }
        return Data(bytes)
    }

    /// A commit's bytes from their stored form.
    static func commit(_ stored: Data) throws -> [UInt8] {
        guard stored.first == deflated else { return [UInt8](stored) }
        return try stored.withUnsafeBytes { raw throws -> [UInt8] in
            var r = ByteReader(raw)
            _ = try r.readByte()
            let length = try r.readVarint()
            guard length <= UInt64(Limits.maxCommitBytes),
                let bytes = Deflate.decompress(UnsafeRawBufferPointer(rebasing: raw[r.offset...]), exactly: Int(length))
            else { throw StoreError(.storage, "a commit in the log does not inflate: the file is damaged") }
            return bytes
        }
    }
}
