import Foundation
import LodeCore
import LodeSQLite
import LodeStore
import LodeTestSupport
import Synchronization
import Testing

@testable import LodePostgres

/// What the PostgreSQL store adds to the conformance suite: its tables are
/// the SQLite store's value for value (REALs to the bit), BI tools see
/// them typed under the dataset's schema, and its queries only read.
@Suite struct PostgresStoreTests {
    let dir = TempDir("lode-pg")

    /// A replica of dataset "d" in a database of its own; returns the
    /// database name too, for psql.
    func replica(_ local: LocalSite, dataset: String = "d", queryTimeLimit: TimeInterval = 10) async throws -> (PostgresReplica, String) {
        let url = try PostgresServer.shared().newDatabase()
        let catalog = try await PostgresCatalog.open(try PostgresLocation(url), local: local, connections: 2, queryTimeLimit: queryTimeLimit)
        let opened = try await catalog.openOrCreateStore(dataset)
        let name = try PostgresLocation(url).database
        return (opened.replica as! PostgresReplica, name)
    }

    /// Equal, REALs compared by their bits (-0.0 is not 0.0, NaN is NaN).
    func same(_ a: Value, _ b: Value) -> Bool {
        if case .real(let x) = a, case .real(let y) = b { return x.bitPattern == y.bitPattern }
        return a == b
    }

    /// Every kind of value a peer may send, including ones that do not fit
    /// their column's type, reaches an SQLite and a PostgreSQL replica;
    /// both export the same rows, value for value. The edge cases of
    /// SQLite's column affinity (`SQLiteAffinity`) come out the same in
    /// both: no signed zero, integral REALs in an INTEGER column as
    /// INTEGERs. Values the PostgreSQL column cannot hold (TEXT in
    /// BIGINT, NUL inside TEXT) are exported as written.
    @Test func tablesEqualAnSQLiteReplicasValueForValue() async throws {
        let clock = TestClock()
        let author = ReferenceStore(dataset: "d", local: site(1, "author"), wallClock: clock.now)
        let sqlite = try await StoreKind.sqlite.make(dir, site: site(2, "lite"), clock: clock)
        let (pg, _) = try await replica(site(3, "pg"))
        try await introduce([author, sqlite, pg])
        _ = try await author.alter(conformanceSchema)
        let cells: [(String, Value)] = [
            ("grade", .real(0.1)), ("grade", .real(1.0 / 3)), ("grade", .real(-0.0)), ("grade", .real(1e308)),
            ("grade", .real(5e-324)), ("grade", .real(-1.5)), ("grade", .real(.infinity)), ("grade", .real(-.infinity)),
            ("grade", .integer(7)), ("grade", .text("not a number")),
            ("output", .integer(.min)), ("output", .integer(.max)), ("output", .integer(0)), ("output", .real(42)),
            ("output", .real(1e30)), ("output", .real(2.5)), ("output", .text("abc")), ("output", .blob([1, 2])),
            ("note", .text("")), ("note", .text("ünïcödé")), ("note", .text("🪨 rare earth")), ("note", .text("quote \" and ' and \\")),
            ("note", .text("nul\u{0}inside")), ("note", .integer(12)), ("note", .blob([0x41])),
            ("raw", .blob([])), ("raw", .blob([0, 255, 0, 1])), ("raw", .text("text in a blob column")),
            ("name", .null), ("name", .text("named")),
        ]
        var edits: [RowEdit] = []
        for (i, (column, value)) in cells.enumerated() {
            edits.append(.put(table: "mines", pk: "r\(i)", columns: [column], values: [value]))
        }
        // A misfit overwritten by a value that fits, and a row with one deleted.
        edits.append(.put(table: "mines", pk: "later", columns: ["output"], values: [.text("first")]))
        edits.append(.put(table: "mines", pk: "gone", columns: ["output"], values: [.text("soon deleted")]))
        _ = try await author.write(edits)
        _ = try await author.write([
            .put(table: "mines", pk: "later", columns: ["output"], values: [.integer(5)]), .delete(table: "mines", pk: "gone"),
        ])
        let commits = try await author.commits(missingFrom: VersionVector(), limit: 1000)
        for r in [sqlite, pg as any ReplicaStore] {
            let outcome = try await r.apply(commits)
            #expect(outcome.rejected.isEmpty && outcome.waiting.isEmpty, "\(outcome.rejected.map(\.reason))")
        }
        let lite = try await tables(sqlite)["mines"] ?? [:]
        let post = try await tables(pg)["mines"] ?? [:]
        #expect(lite.count == cells.count + 1)
        #expect(Set(lite.keys) == Set(post.keys))
        for (pk, row) in lite {
            for (column, value) in row {
                let other = post[pk]?[column] ?? .null
                #expect(same(value, other), "\(pk).\(column): SQLite \(value), PostgreSQL \(other)")
            }
        }
        #expect(post["later"]?["output"] == .integer(5))
    }

    /// `psql` (or any BI tool) sees the dataset as a schema named like it,
    /// its tables under their own names and typed, with the rows an export
    /// gives.
    @Test func psqlShowsTheDatasetAsTypedTables() async throws {
        let (pg, database) = try await replica(site(1, "pg"))
        _ = try await pg.alter(conformanceSchema)
        _ = try await pg.write([
            .put(table: "mines", pk: "mp", columns: ["name", "output", "grade"], values: [.text("Mountain Pass"), .integer(45_000), .real(0.08)]),
            .put(table: "plants", pk: "p1", columns: ["mine", "tonnes"], values: [.text("mp"), .integer(12)]),
        ])
        let server = try PostgresServer.shared()
        let types = try server.psql(
            database,
            "SELECT column_name || ' ' || data_type FROM information_schema.columns WHERE table_schema = 'd' AND table_name = 'mines' ORDER BY ordinal_position"
        )
        #expect(
            types.split(separator: "\n") == ["id text", "name text", "output bigint", "grade double precision", "note text", "raw bytea"], "\(types)")
        #expect(try server.psql(database, "SELECT name, output, grade FROM d.mines") == "Mountain Pass|45000|0.08\n")
        #expect(try server.psql(database, "SELECT tonnes FROM d.plants WHERE id = 'p1'") == "12\n")
    }

    /// A query runs in PostgreSQL's dialect on the dataset's schema, may
    /// only read, and is stopped when it runs too long.
    @Test func queriesOnlyReadAndAreStopped() async throws {
        // A name with a dash and a dot, as dataset names may have.
        let (pg, _) = try await replica(site(1, "pg"), dataset: "rare-earths.v2", queryTimeLimit: 1)
        _ = try await pg.alter(conformanceSchema)
        _ = try await pg.write([.put(table: "mines", pk: "mp", columns: ["output"], values: [.integer(3)])])
        let rows = Rows()
        try await pg.query("SELECT id, output * 2 AS twice, grade FROM mines") { rows.add("\($0)") }
        #expect(
            rows.all == [#"columns(["id", "twice", "grade"])"#, #"row([LodeCore.Value.text("mp"), LodeCore.Value.integer(6), LodeCore.Value.null])"#])
        for sql in ["DELETE FROM mines", "CREATE TABLE x(a int)", "SELECT 1; DELETE FROM mines", "SELECT nope FROM mines"] {
            await #expect(throws: StoreError.self, "\(sql)") { try await pg.query(sql) { _ in } }
        }
        let slow = await #expect(throws: StoreError.self) { try await pg.query("SELECT pg_sleep(60)") { _ in } }
        #expect(slow?.message.contains("time limit") == true, "\(String(describing: slow))")
        #expect(try await tables(pg)["mines"]?["mp"]?["output"] == .integer(3))
    }

    /// A program the tests start (pg_ctl, and the server it leaves
    /// running) inherits no descriptor of the test process: the server
    /// once held test nodes' listening sockets, and a node restarted on
    /// its own port failed with "Address already in use".
    @Test func programsTheTestsStartInheritNoDescriptor() throws {
        // A socket without close-on-exec, as a listener may be.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd > 2)
        defer { close(fd) }
        let listed = try PostgresServer.run("/bin/sh", ["-c", "ls /proc/$$/fd"])
        let open = listed.split(whereSeparator: \.isNewline).compactMap { Int($0) }.sorted()
        #expect(open == [0, 1, 2], "\(open)")
    }

    /// Nor one opened by another thread while the program starts: a pipe
    /// of a `lode` command another test was running once passed to a
    /// PostgreSQL server started at that moment, so that command never
    /// read the end of its output and the whole test run hung (the list of
    /// descriptors to close was read before the spawn, and missed it).
    @Test func programsTheTestsStartInheritNoDescriptorOpenedMeanwhile() throws {
        let stop = Atomic<Bool>(false)
        let churn = Thread {
            var fds: [Int32] = [0, 0]
            while !stop.load(ordering: .relaxed) {
                guard pipe(&fds) == 0 else { continue }
                close(fds[0])
                close(fds[1])
            }
        }
        churn.start()
        defer { stop.store(true, ordering: .relaxed) }
        var leaks: [[Int]] = []
        for _ in 0..<300 {
            let listed = try PostgresServer.run("/bin/sh", ["-c", "ls /proc/$$/fd"])
            let open = listed.split(whereSeparator: \.isNewline).compactMap { Int($0) }.sorted()
            if open != [0, 1, 2] { leaks.append(open) }
        }
        #expect(leaks.isEmpty, "\(leaks.count) of 300 started with more: \(leaks.prefix(3))")
    }

    /// Two processes sharing one database (two relays; the second an
    /// editor with `secondRole`): `author`'s schema applied through the
    /// first, which the second has read. Close both catalogs after.
    func twoProcesses(
        author: ReferenceStore, secondRole: Role = .relay
    ) async throws -> (one: PostgresCatalog, two: PostgresCatalog, first: any SQLReplicaStore, second: PostgresReplica) {
        let url = try PostgresServer.shared().newDatabase()
        let one = try await PostgresCatalog.open(try PostgresLocation(url), local: site(1, "one", role: .relay), connections: 2)
        let two = try await PostgresCatalog.open(try PostgresLocation(url), local: site(2, "two", role: secondRole), connections: 2)
        _ = try await author.alter(conformanceSchema)
        let first = try await one.openOrCreateStore("d").replica
        try await introduce([author, first])
        _ = try await first.apply(try await author.commits(missingFrom: VersionVector(), limit: 1000))
        try await two.refresh()
        return (one, two, first, try #require(two.replica("d")))
    }

    /// Two processes share a database (two relays). When one writes
    /// something that adds no commit (a site's record) and finds, under
    /// the lock, that the other stored commits meanwhile, its observers
    /// (sync) hear of them: its view is now current, so no later re-read
    /// would. Before, they never did, and a relay's peers never received
    /// a dataset another relay had stored.
    @Test func aWriteThatFindsAnotherProcessesCommitsTellsObservers() async throws {
        let author = ReferenceStore(dataset: "d", local: site(3, "author"))
        let (one, two, first, second) = try await twoProcesses(author: author)
        defer {
            one.close()
            two.close()
        }
        #expect(second.vector == first.vector)
        let heard = Mutex<[VersionVector]>([])
        second.addObserver { v in heard.withLock { $0.append(v) } }

        _ = try await author.write([.put(table: "mines", pk: "mp", columns: ["name"], values: [.text("Mountain Pass")])])
        let edit = try await author.commits(missingFrom: first.vector, limit: 1000)
        #expect(try await first.apply(edit).applied.count == 1)
        try await second.registerSite(SiteRecord(site: site(4, "late").site, name: "late", role: .editor, certificate: nil))
        #expect(second.vector == first.vector)
        #expect(heard.withLock { $0 } == [first.vector])
    }

    /// A dataset another process stored opens here on a re-read, and its
    /// observers (sync) hear of it once it is listed, so that they find it
    /// among the datasets. Before, the node was told from `onOpen`, before
    /// the listing: sync could look too early, and a relay's peers then
    /// never got a dataset another relay had stored (a full test run in a
    /// few failed so).
    @Test func aDatasetAnotherProcessStoredIsListedBeforeObserversHearOfIt() async throws {
        let url = try PostgresServer.shared().newDatabase()
        let one = try await PostgresCatalog.open(try PostgresLocation(url), local: site(1, "one", role: .relay), connections: 2)
        let heard = Mutex<[[String]]>([])
        let box = Mutex<PostgresCatalog?>(nil)
        let two = try await PostgresCatalog.open(
            try PostgresLocation(url), local: site(2, "two", role: .relay), connections: 2,
            onOpen: { replica in
                replica.addObserver { _ in
                    let names = box.withLock { $0 }?.names() ?? []
                    heard.withLock { $0.append(names) }
                }
            })
        box.withLock { $0 = two }
        defer {
            one.close()
            two.close()
        }
        let author = ReferenceStore(dataset: "d", local: site(3, "author"))
        _ = try await author.alter(conformanceSchema)
        let first = try await one.openOrCreateStore("d").replica
        try await introduce([author, first])
        _ = try await first.apply(try await author.commits(missingFrom: VersionVector(), limit: 1000))
        try await two.refresh()
        #expect(two.names() == ["d"])
        #expect(heard.withLock { $0 } == [["d"]], "told once, with d listed")
    }

    /// After another process's write, a re-read takes in only the feeds
    /// when nothing else changed, and everything when the sites or the
    /// schema did (`catalog` in `_lode_meta`): a column and an author
    /// another process added are seen, and so is every commit.
    @Test func aReReadTakesInTheColumnsAndSitesAnotherProcessAdded() async throws {
        let author = ReferenceStore(dataset: "d", local: site(3, "author"))
        let (one, two, first, second) = try await twoProcesses(author: author)
        defer {
            one.close()
            two.close()
        }
        // Rows only: the feeds are read again.
        _ = try await author.write([.put(table: "mines", pk: "mp", columns: ["name"], values: [.text("Mountain Pass")])])
        _ = try await first.apply(try await author.commits(missingFrom: first.vector, limit: 1000))
        #expect(try await second.refresh() && second.vector == first.vector)
        // A new column, and a new author: everything is read again.
        _ = try await author.alter(
            try SchemaParser.parse(
                "CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', output INTEGER, grade REAL, note TEXT, raw BLOB, country TEXT)"
            ))
        let other = ReferenceStore(dataset: "d", local: site(4, "other"))
        try await introduce([author, other, first])
        _ = try await other.apply(try await author.commits(missingFrom: VersionVector(), limit: 1000))
        _ = try await other.write([.put(table: "mines", pk: "bo", columns: ["country"], values: [.text("CN")])])
        _ = try await first.apply(try await other.commits(missingFrom: first.vector, limit: 1000))
        #expect(try await second.refresh() && second.vector == first.vector)
        #expect(try await second.schema().first { $0.name == "mines" }?.columns["country"] != nil)
        #expect(try await second.knowsSite(site(4, "other").site))
        #expect(try await tables(second) == tables(first))
    }

    /// A process's clock takes in the stamps of what another process
    /// stored (read from the feeds' heads when it re-reads the dataset): a
    /// write after a commit stamped a minute ahead of now is stamped after it.
    @Test func aWriteAfterAnotherProcessesCommitIsStampedAfterIt() async throws {
        let ahead = ReferenceStore(
            dataset: "d", local: site(3, "ahead"), wallClock: { UInt64(Date().timeIntervalSince1970 * 1000) + 60_000 })
        let (one, two, first, second) = try await twoProcesses(author: ahead, secondRole: .editor)
        defer {
            one.close()
            two.close()
        }
        _ = try await ahead.write([.put(table: "mines", pk: "mp", columns: ["name"], values: [.text("Mountain Pass")])])
        let late = try await ahead.commits(missingFrom: first.vector, limit: 1000)
        #expect(try await first.apply(late).applied.count == 1)

        let before = second.vector
        _ = try await second.write([.put(table: "mines", pk: "bo", columns: ["name"], values: [.text("Bayan Obo")])])
        let own = try await second.missingCommits(after: first.vector, maxBytes: 1 << 20, maxCount: 10)
        #expect(own.count == 1 && before != second.vector)
        let stamped = try Commit(decoding: try #require(own.first).bytes)
        #expect(stamped.hlc > (try #require(late.last)).hlc)
    }

    /// An operation PostgreSQL never answers (a query on a connection the
    /// server closed under it, during a restart while relays wrote, waited
    /// for ever and held every sync session behind it) ends with
    /// `unavailable` after its limit; one that answers in time returns
    /// its value; an error is passed on.
    @Test func anOperationPostgreSQLNeverAnswersEndsAfterItsLimit() async throws {
        let started = ContinuousClock.now
        let stuck = await #expect(throws: StoreError.self) {
            try await PGErrors.bounded(.milliseconds(200)) { () async throws -> Int in
                try await withUnsafeThrowingContinuation { (_: UnsafeContinuation<Int, any Error>) in }
            }
        }
        #expect(stuck?.code == .unavailable && stuck?.message.contains("did not answer") == true, "\(String(describing: stuck))")
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(try await PGErrors.bounded(.seconds(30)) { 42 } == 42)
        await #expect(throws: StoreError.self) {
            try await PGErrors.bounded(.seconds(30)) { () async throws -> Int in throw StoreError.badInput("x") }
        }
    }
}
