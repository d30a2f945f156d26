import Foundation
import GRDB
import LodeCore
import LodeStore
import LodeTestSupport
import Testing

@testable import LodeSQLite

/// Backups (`SQLiteReplica.backup`) and reading them back (`BackupFile`).
@Suite struct BackupTests {
    let dir = TempDir()

    /// A backup taken while another task keeps writing holds a whole
    /// prefix of the log, and tables that match it: its commits applied to
    /// an empty replica give the tables the backup file itself holds.
    @Test func aBackupTakenDuringWritesIsConsistent() async throws {
        let r = try await createReplica(in: dir, site: site(1, "s0"), tables: try SchemaParser.parse(elementsSchema))
        let writer = Task {
            for i in 0..<300 {
                _ = try await r.write([
                    .put(table: "elements", pk: "e\(i % 40)", columns: ["name", "mass"], values: [.text("n\(i)"), .real(Double(i))]),
                    .delete(table: "elements", pk: "e\((i + 7) % 40)"),
                ])
            }
        }
        // Once a tenth of the writes are in: the backup is taken while the
        // writer still has most of its commits to make.
        while r.vector[r.local.site] < 30 { try await Task.sleep(for: .milliseconds(2)) }
        let copy = dir.file("copy.db")
        try await r.backup(to: copy)
        try await writer.value
        let file = try BackupFile(path: copy)
        #expect(file.dataset == "d" && file.commitCount > 1 && file.commitCount < 302)
        let restored = try SQLiteReplica.open(at: dir.file("restored.db"), dataset: "d", local: site(2, "s1", role: .reader))
        try await introduce([r, restored])
        try await file.commits(maxBytes: 4096) { batch in
            let outcome = try await restored.apply(batch)
            #expect(outcome.rejected.isEmpty && outcome.waiting.isEmpty && outcome.applied.count == batch.count)
        }
        let backedUp = try SQLiteReplica.open(at: copy, dataset: "d", local: site(3, "s2", role: .reader))
        #expect(try await fullDump(restored) == fullDump(backedUp))
        #expect(restored.vector == backedUp.vector)
    }

    /// A file that is not a backup, or a damaged one, is refused with a
    /// clear error; so is writing a backup over an existing file.
    @Test func badBackupsAreRefused() async throws {
        let r = try await createReplica(in: dir, site: site(1, "s0"), tables: try SchemaParser.parse(elementsSchema))
        _ = try await r.write([.put(table: "elements", pk: "Nd", columns: ["name"], values: [.text("Neodymium")])])
        let copy = dir.file("copy.db")
        try await r.backup(to: copy)
        await #expect(throws: StoreError.self) { try await r.backup(to: copy) }
        for (name, bytes) in [("empty", Data()), ("text", Data("id,name\n".utf8)), ("random", Data((0..<8192).map { UInt8($0 % 251) }))] {
            let path = dir.file(name)
            FileManager.default.createFile(atPath: path, contents: bytes)
            #expect(throws: StoreError.self, "\(name)") { try BackupFile(path: path) }
        }
        // An SQLite file without a log.
        let plain = try DatabaseQueue(path: dir.file("plain.db"))
        try await plain.write { db in try db.execute(sql: "CREATE TABLE t(a)") }
        try plain.close()
        #expect(throws: StoreError.self) { try BackupFile(path: dir.file("plain.db")) }
        // A log entry that is not a commit.
        let damaged = try DatabaseQueue(path: copy)
        try await damaged.write { db in try db.execute(sql: "UPDATE _lode_log SET bytes = x'0102' WHERE id = (SELECT max(id) FROM _lode_log)") }
        try damaged.close()
        let file = try BackupFile(path: copy)
        await #expect(throws: StoreError.self) { try await file.commits { _ in } }
    }
}
