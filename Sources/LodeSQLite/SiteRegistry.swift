import Foundation
import GRDB
import LodeCore
import LodeStore

// A site's number in one dataset file (`_lode_sites.id`, LodeStore's
// `SiteNumber`): the clock of every cell names its writer by this number
// rather than by its 32-byte key.

/// The sites a dataset file knows, by key and by number. Touched only by
/// the writer, and reloaded with the rest of its state.
final class SiteRegistry {
    private(set) var numbers: [SiteID: SiteNumber] = [:]
    private(set) var keys: [SiteNumber: SiteID] = [:]

    /// Reads every site from the file.
    static func load(_ db: Database) throws -> SiteRegistry {
        let r = SiteRegistry()
        for row in try Row.fetchAll(db, sql: "SELECT id, key FROM _lode_sites") {
            let key = try SiteID(bytes: [UInt8](row["key"] as Data))
            r.numbers[key] = row["id"]
            r.keys[row["id"]] = key
        }
        return r
    }

    /// The number of `site`, registering it if new.
    func number(_ db: Database, _ site: SiteID) throws -> SiteNumber {
        if let n = numbers[site] { return n }
        try db.execute(sql: "INSERT INTO _lode_sites(key) VALUES (?)", arguments: [Data(site.bytes)])
        let n = db.lastInsertedRowID
        numbers[site] = n
        keys[n] = site
        return n
    }

    /// The key of site number `n`.
    func key(_ n: SiteNumber) -> SiteID? { keys[n] }

    /// Records what a site's certificate says. The row is written only when
    /// it changes: a node must open its datasets on a full disk.
    func register(_ db: Database, _ record: SiteRecord) throws {
        let n = try number(db, record.site)
        try db.execute(
            sql: """
                UPDATE _lode_sites SET name = ?1, role = ?2, cert = ?3, valid_from = ?4, valid_until = ?5 WHERE id = ?6
                AND (name IS NOT ?1 OR role IS NOT ?2 OR cert IS NOT ?3 OR valid_from IS NOT ?4 OR valid_until IS NOT ?5)
                """,
            arguments: [
                record.name, record.role?.rawValue, record.certificate.map { Data($0) },
                record.validFrom.map { Int64(clamping: $0) }, record.validUntil.map { Int64(clamping: $0) }, n,
            ])
    }

    /// Records this replica's own site as a writer: its name, role and
    /// certificate (their validity comes with the certificate, through
    /// `register`), written only when they change.
    func registerLocal(_ db: Database, _ local: LocalSite) throws {
        let n = try number(db, local.site)
        try db.execute(
            sql: "UPDATE _lode_sites SET name = ?1, role = ?2, cert = ?3 WHERE id = ?4 AND (name IS NOT ?1 OR role IS NOT ?2 OR cert IS NOT ?3)",
            arguments: [local.name, local.role.rawValue, local.record.certificate.map { Data($0) }, n])
    }

    /// What the file records of `site`, if anything.
    static func record(_ db: Database, _ site: SiteID) throws -> SiteRecord? {
        try Row.fetchOne(
            db, sql: "SELECT key, name, role, cert, valid_from, valid_until FROM _lode_sites WHERE key = ?", arguments: [Data(site.bytes)]
        )
        .map(record(from:))
    }

    /// Every site the file records.
    static func records(_ db: Database) throws -> [SiteRecord] {
        try Row.fetchAll(db, sql: "SELECT key, name, role, cert, valid_from, valid_until FROM _lode_sites").map(record(from:))
    }

    private static func record(from row: Row) throws -> SiteRecord {
        SiteRecord(
            site: try SiteID(bytes: [UInt8](row["key"] as Data)), name: row["name"],
            role: (row["role"] as String?).flatMap(Role.init(rawValue:)),
            certificate: (row["cert"] as Data?).map { [UInt8]($0) },
            validFrom: (row["valid_from"] as Int64?).map { UInt64(max(0, $0)) },
            validUntil: (row["valid_until"] as Int64?).map { UInt64(max(0, $0)) })
    }

    /// Display names by site number (the name, or the key's first digits).
    static func names(_ db: Database) throws -> [SiteNumber: String] {
        try Dictionary(
            Row.fetchAll(db, sql: "SELECT id, coalesce(name, hex(substr(key, 1, 4))) AS n FROM _lode_sites").map {
                ($0["id"] as Int64, ($0["n"] as String).lowercased())
            }, uniquingKeysWith: { a, _ in a })
    }
}
