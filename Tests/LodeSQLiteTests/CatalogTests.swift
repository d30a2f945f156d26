import Foundation
import GRDB
import LodeCore
import LodeStore
import LodeTestSupport
import Testing

@testable import LodeSQLite

/// The files of a node: its datasets (one instance per file, one way to
/// create one) and its own file of settings, peers and certificates.
@Suite struct CatalogTests {
    let dir = TempDir("lode-cat")

    @Test func aDatasetIsCreatedOnceAndOpenedOnce() async throws {
        let catalog = SQLiteCatalog(directory: dir.file("datasets"), local: site(1, "alpha"))
        defer { catalog.close() }
        #expect(catalog.names().isEmpty)
        #expect(try catalog.replica("d") == nil)
        let made = try await catalog.create("d", tables: try SchemaParser.parse(elementsSchema))
        #expect(catalog.names() == ["d"])
        #expect(try catalog.replica("d") === made)
        #expect(try catalog.openOrCreate("d").replica === made && !(try catalog.openOrCreate("d").created))
        do {
            _ = try await catalog.create("d", tables: [])
            Issue.record("created d twice")
        } catch let e as StoreError {
            #expect(e.code == .alreadyExists)
        }
        // A dataset heard of from a peer starts empty.
        let heard = try catalog.openOrCreate("heard")
        #expect(heard.created && catalog.names() == ["d", "heard"])
        #expect(try await heard.replica.schema().isEmpty)
    }

    @Test func aRefusedCreateLeavesNoFile() async throws {
        let catalog = SQLiteCatalog(directory: dir.file("datasets"), local: site(1, "alpha"))
        defer { catalog.close() }
        for (name, tables, by) in [
            ("Bad Name", [TableDef](), site(1, "alpha")), ("d", [TableDef(name: "_x", primaryKey: "id", columns: [])], site(1, "alpha")),
        ] {
            await #expect(throws: StoreError.self) {
                _ = try await SQLiteCatalog(directory: dir.file("datasets"), local: by).create(name, tables: tables)
            }
        }
        let reader = SQLiteCatalog(directory: dir.file("datasets"), local: site(2, "reader", role: .reader))
        await #expect(throws: StoreError.self) { _ = try await reader.create("d", tables: try SchemaParser.parse(elementsSchema)) }
        #expect(catalog.names().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: catalog.path("d")))
    }

    /// Opening a dataset again writes nothing to its file, so a node starts
    /// (and serves reads) on a full disk (`lode-faults diskfull` found that
    /// opening rewrote the local site's row every time, and failed on a full
    /// disk); registering what a replica already knows writes nothing either.
    @Test func reopeningADatasetWritesNothing() async throws {
        let alpha = site(1, "alpha")
        var record = alpha.record
        record.validFrom = 1
        record.validUntil = 2
        do {
            let catalog = SQLiteCatalog(directory: dir.file("datasets"), local: alpha)
            let r = try await catalog.create("d", tables: try SchemaParser.parse(elementsSchema))
            try await r.registerSite(record)
            catalog.close()
        }
        for _ in 0..<2 {
            let catalog = SQLiteCatalog(directory: dir.file("datasets"), local: alpha)
            let r = try #require(try catalog.replica("d"))
            try await r.registerSite(record)
            #expect(try await r.sites().first { $0.site == alpha.site } == record, "opening keeps the certificate's validity")
            // The writer connection (the one that opened the file) changed no row.
            #expect(try await r.pool.write { $0.totalChangesCount } == 0)
            catalog.close()
        }
    }

    @Test func theNodeFileKeepsSettingsPeersAndTheNewestCertificates() throws {
        let file = try NodeFile(path: dir.file("node.db"))
        #expect(try file.setting("listen") == nil)
        try file.setSetting("listen", "127.0.0.1:7443")
        try file.setSetting("listen", "127.0.0.1:7443")
        #expect(try file.setting("listen") == "127.0.0.1:7443")
        #expect(try file.addPeer("127.0.0.1:1", added: "t") && !(try file.addPeer("127.0.0.1:1", added: "t")))
        #expect(try file.addPeer("127.0.0.1:2", added: "t"))
        #expect(try file.peers() == ["127.0.0.1:1", "127.0.0.1:2"])
        #expect(try file.removePeer("127.0.0.1:1") && !(try file.removePeer("127.0.0.1:1")))
        let s = site(3, "s").site
        #expect(try file.keepCertificate(site: s, der: [1], validUntil: 100))
        #expect(!(try file.keepCertificate(site: s, der: [2], validUntil: 50)), "an older certificate does not replace a newer one")
        #expect(try file.keepCertificate(site: s, der: [3], validUntil: 200))
        #expect(try file.certificates() == [[3]])
        try file.keepOwnCertificate(site: s, der: [4], validUntil: 10)
        #expect(try file.certificates() == [[4]])
        // Reopened, it holds the same.
        let again = try NodeFile(path: dir.file("node.db"))
        #expect(try again.peers() == ["127.0.0.1:2"] && again.setting("listen") == "127.0.0.1:7443")
    }

    @Test func sqliteFailuresAreToldInUsersTerms() {
        let full = StoreError.converting(DatabaseError(resultCode: .SQLITE_FULL, message: "database or disk is full", sql: "INSERT INTO secret"))
        guard let e = full as? StoreError else {
            Issue.record("not converted")
            return
        }
        #expect(e.code == .storage && e.isStorageFull && e.message.contains("full") && !e.message.contains("INSERT"))
        let other = StoreError.converting(DatabaseError(resultCode: .SQLITE_CORRUPT, message: "malformed", sql: "SELECT secret"))
        #expect((other as? StoreError)?.isStorageFull == false)
        #expect((other as? StoreError)?.message.contains("SELECT") == false)
        struct Unrelated: Error {}
        #expect(StoreError.converting(Unrelated()) is Unrelated)
    }
}
