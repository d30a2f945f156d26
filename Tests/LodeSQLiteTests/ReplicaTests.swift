import Foundation
import GRDB
import LodeCore
import LodeStore
import LodeTestSupport
import Testing

@testable import LodeSQLite

@Suite struct ReplicaTests {
    let dir = TempDir()

    func make(_ name: String = "d", site s: LocalSite = site(1, "alpha")) async throws -> SQLiteReplica {
        try await createReplica(in: dir, name, site: s, tables: SchemaParser.parse(elementsSchema))
    }

    @Test func importThenQueryAndExport() async throws {
        let r = try await make()
        let csv = dir.write("e.csv", "symbol,name,atomic_number,mass\nNd,Neodymium,60,144.242\nDy,\"Dysprosium, heavy\",66,162.5\n")
        let report = try await r.importCSV(table: "elements", path: csv)
        #expect(report.rowsRead == 2 && report.rowsChanged == 2 && report.commits == 1)
        #expect(
            try await dump(r, "SELECT symbol, name, atomic_number, mass, notes FROM elements ORDER BY symbol") == [
                "columns([\"symbol\", \"name\", \"atomic_number\", \"mass\", \"notes\"])",
                "row([LodeCore.Value.text(\"Dy\"), LodeCore.Value.text(\"Dysprosium, heavy\"), LodeCore.Value.integer(66), LodeCore.Value.real(162.5), LodeCore.Value.null])",
                "row([LodeCore.Value.text(\"Nd\"), LodeCore.Value.text(\"Neodymium\"), LodeCore.Value.integer(60), LodeCore.Value.real(144.242), LodeCore.Value.null])",
            ])
        // Importing the same rows again changes nothing and writes no commit.
        let again = try await r.importCSV(table: "elements", path: csv)
        #expect(again.rowsChanged == 0 && again.commits == 0)
        // A partial re-import updates only the named columns.
        let upd = dir.write("u.csv", "symbol,mass\nNd,144.24\n")
        #expect(try await r.importCSV(table: "elements", path: upd).rowsChanged == 1)
        #expect(
            try await dump(r, "SELECT name, mass FROM elements WHERE symbol = 'Nd'").last
                == "row([LodeCore.Value.text(\"Neodymium\"), LodeCore.Value.real(144.24)])")
    }

    @Test func badImportsLeaveTheDataExactlyAsItWas() async throws {
        let r = try await make()
        _ = try await r.importCSV(table: "elements", path: dir.write("ok.csv", "symbol,name,atomic_number\nNd,Neodymium,60\n"))
        let before = try await fullDump(r)
        let vector = r.vector
        let cases: [(String, String, StoreError.Code, String)] = [
            ("symbol,name\nLa,Lanthanum\nCe,\"Cerium\n", "elements", .badInput, "line 3"),
            (
                "symbol,atomic_number\nLa,57\nCe,fifty-eight\n", "elements", .badInput,
                "line 3, column atomic_number: \"fifty-eight\" is not an INTEGER"
            ),
            ("symbol,colour\nLa,white\n", "elements", .notFound, "unknown column colour"),
            ("symbol,name\nLa,Lanthanum\nCe\n", "elements", .badInput, "line 3: 1 fields, but the header has 2"),
            ("name\nLanthanum\n", "elements", .badInput, "no symbol column"),
            ("symbol,name\nLa,Lanthanum\n", "minerals", .notFound, "no table minerals"),
            ("symbol,name\n,Lanthanum\n", "elements", .badInput, "line 2: the primary key"),
        ]
        for (text, table, code, fragment) in cases {
            do {
                _ = try await r.importCSV(table: table, path: dir.write("bad.csv", text))
                Issue.record("import of \(text.debugDescription) succeeded")
            } catch let e as StoreError {
                #expect(e.code == code, "\(e)")
                #expect(e.message.contains(fragment), "\(e.message)")
            }
            #expect(try await fullDump(r) == before)
            #expect(r.vector == vector)
        }
    }

    @Test func nonUTF8AndOversizedValuesAreRefusedAndLargeOnesTravel() async throws {
        let r = try await make()
        _ = try await r.importCSV(table: "elements", path: dir.write("ok.csv", "symbol,name\nNd,Neodymium\n"))
        let before = try await fullDump(r)
        let vector = r.vector
        // A CSV with a byte that is not UTF-8 on line 3.
        let binary = dir.file("latin1.csv")
        try Data(Array("symbol,name\nLa,Lanthanum\nCe,C".utf8) + [0xE9] + Array("rium\n".utf8)).write(to: URL(fileURLWithPath: binary))
        await #expect(throws: StoreError.self) { try await r.importCSV(table: "elements", path: binary) }
        // SQL can make text that is not UTF-8, and values and rows too large for a peer.
        for sql in [
            "INSERT INTO elements(symbol, name) VALUES ('X', CAST(x'ff' AS TEXT))",
            "UPDATE elements SET notes = CAST(x'c328' AS TEXT) WHERE symbol = 'Nd'",
            "INSERT INTO elements(symbol, notes) VALUES ('Big', zeroblob(\(Limits.maxText + 1)))",
            "INSERT INTO elements(symbol, name, notes) VALUES ('Wide', hex(zeroblob(5000000)), hex(zeroblob(5000000)))",
        ] {
            await #expect(throws: StoreError.self, "\(sql.prefix(60))") { try await r.exec(sql) }
            #expect(try await fullDump(r) == before)
            #expect(r.vector == vector)
        }
        // A 6 MB field imports, reads back whole, and its commit decodes as a peer would.
        let big = String(repeating: "rare earth ", count: 600_000)
        _ = try await r.importCSV(table: "elements", path: dir.write("big.csv", "symbol,notes\nXL,\"\(big)\"\n"))
        let length = try await dump(r, "SELECT length(notes) FROM elements WHERE symbol = 'XL'")
        #expect(length.last == "row([LodeCore.Value.integer(\(big.utf8.count))])", "\(length)")
        for c in try await r.commits(missingFrom: vector) { #expect(throws: Never.self) { try Commit(decoding: c.bytes) } }
    }

    @Test func execCapturesWritesAsCommits() async throws {
        let r = try await make()
        var rep = try await r.exec("INSERT INTO elements(symbol, name, atomic_number) VALUES ('Nd', 'Neodymium', 60), ('Pr', 'Praseodymium', 59)")
        #expect(rep.rowsChanged == 2 && rep.commits == 1)
        rep = try await r.exec("UPDATE elements SET mass = 144.242 WHERE symbol = 'Nd'")
        #expect(rep.rowsChanged == 1)
        rep = try await r.exec("DELETE FROM elements WHERE atomic_number < 60")
        #expect(rep.rowsChanged == 1)
        #expect(try await dump(r, "SELECT symbol, mass FROM elements").count == 2)
        // The rows came from commits: the log holds create + 3 execs.
        #expect(try await r.commitCount() == 4)
        // UPDATE that changes nothing writes nothing.
        #expect(try await r.exec("UPDATE elements SET mass = mass WHERE symbol = 'Nd'").rowsChanged == 0)
    }

    @Test func execRefusesWhatItMustNotDo() async throws {
        let r = try await make()
        _ = try await r.exec("INSERT INTO elements(symbol, name) VALUES ('Nd', 'Neodymium')")
        let before = try await fullDump(r)
        let bad: [(String, StoreError.Code)] = [
            ("DROP TABLE elements", .badInput),
            ("SELECT * FROM elements", .badInput),
            ("PRAGMA writable_schema = 1", .badInput),
            ("DELETE FROM _lode_rows", .badInput),
            ("INSERT INTO _annotations(id, body) VALUES ('x', 'y')", .badInput),
            ("UPDATE elements SET atomic_number = 'sixty'", .badInput),
            ("UPDATE elements SET name = NULL", .badInput),
            ("UPDATE minerals SET x = 1", .notFound),
            ("UPDATE elements SET colour = 1", .notFound),
            ("INSERT INTO elements(symbol) VALUES (NULL)", .badInput),
            ("INSERT INTO elements(symbol, name) VALUES ('La', 'Lanthanum'); DROP TABLE elements", .badInput),
            ("UPDATE elements SET name = 'x'; COMMIT", .badInput),
            // A key longer than any peer's decoder accepts (it closed every session as malformed).
            ("INSERT INTO elements(symbol, name) VALUES (printf('%.4097c', 'k'), 'long')", .badInput),
            ("UPDATE elements SET symbol = printf('%.5000c', 'k') WHERE symbol = 'Nd'", .badInput),
        ]
        for (sql, code) in bad {
            do {
                _ = try await r.exec(sql)
                Issue.record("exec \(sql) succeeded")
            } catch let e as StoreError {
                #expect(e.code == code, "\(sql): \(e)")
            }
            #expect(try await fullDump(r) == before, "\(sql)")
        }
    }

    @Test func queryIsReadOnly() async throws {
        let r = try await make()
        for sql in [
            "DELETE FROM elements", "INSERT INTO elements(symbol) VALUES ('x')", "DROP TABLE elements",
            "WITH x AS (SELECT 1) DELETE FROM elements", "ATTACH '/tmp/x.db' AS x", "PRAGMA journal_mode = DELETE",
            "SELECT 1; DELETE FROM elements", "CREATE TABLE x(a)",
        ] {
            await #expect(throws: StoreError.self, "\(sql)") { try await r.query(sql) { _ in } }
        }
        #expect(try await dump(r, "PRAGMA table_info(elements)").count == 6)
        await #expect(throws: StoreError.self) { try await r.query("SELECT * FROM nope") { _ in } }
    }

    /// Debian's SQLite has `fts3_tokenizer`, which handed any reader a
    /// pointer into the node, and `randomblob(1e9)` allocated a gigabyte
    /// per call.
    @Test func queryCannotReachPastTheData() async throws {
        let r = try await make()
        for (sql, says) in [
            ("SELECT hex(fts3_tokenizer('simple'))", "fts3_tokenizer"),
            ("SELECT load_extension('/tmp/x')", "load_extension"),
            ("SELECT length(randomblob(200000000))", "too big"),
            ("SELECT length(zeroblob(200000000))", "too big"),
            ("SELECT fts3_tokenizer('simple', x'0000000000000000')", "fts3_tokenizer"),
        ] {
            do {
                try await r.query(sql) { _ in }
                Issue.record("\(sql) ran")
            } catch let e as StoreError {
                #expect(e.code == .badInput && e.message.contains(says), "\(sql): \(e.message)")
            }
        }
        // What analysts use still runs, and the connection is left as it was.
        #expect(try await dump(r, "SELECT name FROM pragma_table_info('elements')").count == 6)
        #expect(try await dump(r, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5) SELECT x FROM c").count == 6)
        #expect(try await dump(r, "SELECT length(randomblob(1000000)), sum(1) FROM elements").count == 2)
        #expect(try await r.schema().contains { $0.name == "elements" })
        // exec runs an editor's SQL on the writer: the same functions are withheld there.
        do {
            _ = try await r.exec("INSERT INTO elements(symbol, name) VALUES ('Zz', hex(fts3_tokenizer('simple')))")
            Issue.record("exec called fts3_tokenizer")
        } catch let e as StoreError {
            #expect(e.message.contains("fts3_tokenizer"), "\(e.message)")
        }
    }

    @Test func aRunawayQueryIsStoppedAndTheReplicaKeepsServing() async throws {
        let made = try await make()
        try made.close()
        let r = try SQLiteReplica.open(at: made.path, dataset: "d", local: site(1, "alpha"), stepTimeLimit: 0.3)
        do {
            try await r.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c") { _ in }
            Issue.record("the runaway query finished")
        } catch let e as StoreError {
            #expect(e.message.contains("without producing a row"))
        }
        // Stopped by its limit (the message says which), not a timed check:
        // the query would never end on its own. A wall-clock bound failed
        // on a loaded 2-core CI machine at 10.1 s.
        #expect(try await dump(r, "SELECT 1").count == 2)
        // Rows produced steadily for ever: stopped by the total limit (5 × 0.3 s).
        let rows = Counter()
        do {
            try await r.query("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c") { _ in rows.add() }
            Issue.record("the endless stream finished")
        } catch let e as StoreError {
            #expect(e.message.contains("ran for more than 1 seconds"), "\(e.message)")
        }
        #expect(rows.value > 1000)
        // exec holds the single writer: a runaway statement is stopped, writes nothing, and the writer serves again.
        _ = try await r.exec("INSERT INTO elements(symbol, name) VALUES ('Nd', 'Neodymium')")
        let before = try await fullDump(r)
        do {
            _ = try await r.exec(
                "UPDATE elements SET name = (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c)")
            Issue.record("the runaway exec finished")
        } catch let e as StoreError {
            #expect(e.code == .badInput && e.message.contains("nothing was written"), "\(e.message)")
        }
        #expect(try await fullDump(r) == before)
        #expect(try await r.exec("UPDATE elements SET name = 'Neo' WHERE symbol = 'Nd'").rowsChanged == 1)
    }

    @Test func schemaRulesRefuseWhatTheCRDTCannotHonour() throws {
        let refused: [(String, String)] = [
            ("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)", "TEXT primary key"),
            ("CREATE TABLE t (a TEXT)", "no primary key"),
            ("CREATE TABLE t (a TEXT, b TEXT, PRIMARY KEY (a, b))", "composite"),
            ("CREATE TABLE t (id TEXT PRIMARY KEY, email TEXT UNIQUE)", "UNIQUE"),
            ("CREATE TABLE t (id TEXT PRIMARY KEY, p TEXT REFERENCES other(id))", "foreign keys"),
            ("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT)", "AUTOINCREMENT"),
            ("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER CHECK (n > 0))", "CHECK"),
            ("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL)", "NOT NULL without a DEFAULT"),
            ("CREATE TABLE t (id TEXT PRIMARY KEY, n NUMERIC)", "INTEGER, REAL, TEXT or BLOB"),
            ("CREATE TABLE t (id TEXT PRIMARY KEY, d TEXT DEFAULT CURRENT_TIMESTAMP)", "not a constant"),
            ("CREATE TABLE _t (id TEXT PRIMARY KEY)", "reserved"),
            ("CREATE TABLE t AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x AS id FROM c", "AS WITH"),
            ("CREATE TABLE t AS VALUES ('a')", "AS VALUES"),
            ("CREATE TABLE t AS SELECT 'a' AS id", "AS SELECT"),
            ("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER AS (1 + 1))", "generated"),
            ("CREATE INDEX i ON t(a)", "CREATE INDEX"),
            ("DROP TABLE t", "only CREATE TABLE"),
            ("CREATE TABLE t (id TEXT PRIMARY KEY,", "not valid SQL"),
        ]
        for (sql, fragment) in refused {
            do {
                _ = try SchemaParser.parse(sql)
                Issue.record("accepted \(sql)")
            } catch let e as StoreError {
                #expect(e.message.contains(fragment), "\(sql): \(e.message)")
            }
        }
        let ok = try SchemaParser.parse(
            "CREATE TABLE Mines (ID text primary key, \"Capacity\" int NOT NULL DEFAULT 0, note varchar(40), w double, b blob)")
        #expect(
            ok == [
                TableDef(
                    name: "mines", primaryKey: "id",
                    columns: [
                        ColumnDef(name: "capacity", type: .integer, notNull: true, defaultValue: .integer(0)),
                        ColumnDef(name: "note", type: .text), ColumnDef(name: "w", type: .real), ColumnDef(name: "b", type: .blob),
                    ])
            ])
    }

    @Test func alterAddsAndRefusesDropsRenamesAndTypeChanges() async throws {
        let r = try await make()
        _ = try await r.exec("INSERT INTO facilities(id, name) VALUES ('f1', 'Mountain Pass')")
        let added = try await r.alter(
            SchemaParser.parse(
                """
                CREATE TABLE facilities (id TEXT PRIMARY KEY, name TEXT, capacity INTEGER, status TEXT NOT NULL DEFAULT 'operating');
                CREATE TABLE trade (id TEXT PRIMARY KEY, year INTEGER);
                """))
        #expect(added.tables == ["trade"] && added.columns == ["facilities.status"])
        #expect(try await dump(r, "SELECT status FROM facilities").last == "row([LodeCore.Value.text(\"operating\")])")
        let before = try await fullDump(r)
        for (sql, fragment) in [
            ("CREATE TABLE facilities (id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL DEFAULT 'operating')", "column capacity is missing"),
            (
                "CREATE TABLE facilities (id TEXT PRIMARY KEY, name TEXT, capacity REAL, status TEXT NOT NULL DEFAULT 'operating')",
                "cannot become REAL"
            ),
            ("CREATE TABLE facilities (code TEXT PRIMARY KEY, name TEXT, capacity INTEGER, status TEXT NOT NULL DEFAULT 'operating')", "primary key"),
        ] {
            do {
                _ = try await r.alter(SchemaParser.parse(sql))
                Issue.record("alter accepted \(sql)")
            } catch let e as StoreError {
                #expect(e.message.contains(fragment), "\(e.message)")
            }
        }
        #expect(try await fullDump(r) == before)
    }

    @Test func rolesAreEnforcedLocally() async throws {
        let editor = try await make()
        let reader = try SQLiteReplica.open(at: editor.path + ".reader", dataset: "d", local: site(2, "reader", role: .reader))
        await #expect(throws: StoreError.self) { try await reader.exec("INSERT INTO x VALUES (1)") }
        let annotator = try SQLiteReplica.open(at: editor.path, dataset: "d", local: site(3, "annot", role: .annotator))
        defer { try? annotator.close() }
        do {
            _ = try await annotator.exec("INSERT INTO elements(symbol) VALUES ('La')")
            Issue.record("annotator wrote a row")
        } catch let e as StoreError {
            #expect(e.code == .forbidden)
        }
    }

    @Test func annotationsWithTagsRepliesSearchAndDeletedTargets() async throws {
        let r = try await make()
        _ = try await r.exec("INSERT INTO facilities(id, name) VALUES ('f1', 'Mountain Pass'), ('f2', 'Mount Weld')")
        let a = try await r.annotate(
            NewAnnotation(
                table: "facilities", pk: "f1", column: "capacity", text: "Capacity figure is actual 2024 output", tags: ["check", "capacity"]))
        let b = try await r.annotate(NewAnnotation(table: "facilities", pk: "f1", text: "Confirmed with the annual report", replyTo: a))
        _ = try await r.annotate(NewAnnotation(table: "facilities", pk: "f2", text: "Expansion announced", tags: ["news"]))
        var all = try await r.annotations()
        #expect(all.count == 3)
        #expect(all.first { $0.id == a }?.tags == ["capacity", "check"])
        #expect(all.first { $0.id == b }?.replyTo == a)
        #expect(try await r.annotations(AnnotationFilter(tag: "news")).map(\.pk) == ["f2"])
        #expect(try await r.annotations(AnnotationFilter(search: "annual")).map(\.id) == [b])
        #expect(try await r.annotations(AnnotationFilter(search: "\"unbalanced")).isEmpty)
        _ = try await r.exec("DELETE FROM facilities WHERE id = 'f1'")
        all = try await r.annotations(AnnotationFilter(pk: "f1"))
        #expect(all.count == 2 && all.allSatisfy { !$0.targetExists })
        await #expect(throws: StoreError.self) { try await r.annotate(NewAnnotation(table: "facilities", pk: "nope", text: "x")) }
        await #expect(throws: StoreError.self) { try await r.annotate(NewAnnotation(table: "facilities", pk: "f2", text: "x", replyTo: "nope")) }
    }

    /// An import sets its rows aside and applies them in key order, so the
    /// commits it writes carry their rows in key order too (and a replica
    /// applying them writes its B-trees in order); a key given twice takes
    /// its last line, as when rows were applied as read.
    @Test func anImportAppliesRowsInKeyOrderAndTheLastLineOfAKeyWins() async throws {
        let r = try await make()
        var lines = ["symbol,name,atomic_number"]
        var rng = SeededGenerator(seed: 11)
        let keys = (0..<500).map { _ in String(UInt64.random(in: 0...UInt64.max, using: &rng), radix: 16) }
        for (i, k) in keys.enumerated() { lines.append("\(k),first \(i),\(i)") }
        lines.append("\(keys[7]),second,7")
        let report = try await r.importCSV(table: "elements", path: dir.write("random.csv", lines.joined(separator: "\n") + "\n"))
        #expect(report.rowsRead == 501 && report.rowsChanged == 501)
        #expect(try await dump(r, "SELECT name FROM elements WHERE symbol = '\(keys[7])'").last == "row([LodeCore.Value.text(\"second\")])")
        var written: [String] = []
        for c in try await r.commits(missingFrom: VersionVector(), limit: 100) {
            for case .put(let p) in c.ops where p.table == "elements" { written += p.keys }
        }
        // Both lines of the key given twice were written, one after the other, the last line last.
        #expect(written == (keys + [keys[7]]).sorted(), "the rows were not written in key order")
        // Progress: while reading, then, past 4,096 rows, while writing.
        let events = Rows()
        let many = (0..<5000).map { "m\($0),many,\($0)" }.joined(separator: "\n")
        _ = try await r.importCSV(table: "elements", path: dir.write("many.csv", "symbol,name,atomic_number\n" + many + "\n")) { p in
            events.add(p.written.map { "written \($0) of \(p.rows)" } ?? "read \(p.rows) \(p.bytes == p.totalBytes)")
        }
        #expect(events.all.contains("read 5000 true") && events.all.contains("written 4096 of 5000"), "\(events.all)")
    }

    /// A large exec is written in key order too (SQLite's changeset comes
    /// in hash order), and writes exactly what the statements said.
    @Test func aLargeExecIsWrittenInKeyOrder() async throws {
        let r = try await make()
        var rng = SeededGenerator(seed: 5)
        let keys = (0..<12_000).map { _ in String(UInt64.random(in: 0...UInt64.max, using: &rng), radix: 16) }
        let csv = "symbol,name,atomic_number\n" + keys.enumerated().map { "\($1),n \($0),\($0)" }.joined(separator: "\n") + "\n"
        _ = try await r.importCSV(table: "elements", path: dir.write("k.csv", csv))
        let before = r.vector
        let report = try await r.exec(
            "UPDATE elements SET name = name || ' (checked)', mass = atomic_number * 1.5 WHERE atomic_number % 3 != 0; DELETE FROM elements WHERE atomic_number % 3 = 0"
        )
        #expect(report.rowsChanged == 12_000)
        var written: [String] = []
        for c in try await r.commits(missingFrom: before, limit: 100) {
            for op in c.ops {
                switch op {
                case .put(let p): written += p.keys
                case .delete(let d): written += d.keys
                case .defineTable: break
                }
            }
        }
        #expect(written.count == 12_000 && written == written.sorted(), "the changes were not written in key order")
        #expect(
            try await dump(r, "SELECT count(*), sum(name LIKE '% (checked)'), sum(mass = atomic_number * 1.5) FROM elements").last
                == "row([LodeCore.Value.integer(8000), LodeCore.Value.integer(8000), LodeCore.Value.integer(8000)])")
    }

    /// The log keeps a large commit deflated (format 2) and hands back the
    /// signed bytes; a format 1 file, whose log holds commits as they are,
    /// opens, reads and is brought to the current format (gaining `_lode_log.person`, and a history rebuilt from its log); a damaged deflated commit is a
    /// storage error, not a crash or a wrong commit.
    @Test func theLogKeepsCommitsDeflatedAndReadsFilesThatDoNot() async throws {
        let r = try await make()
        let rows = (0..<300).map { "e\($0),Element number \($0),\($0)" }.joined(separator: "\n")
        _ = try await r.importCSV(table: "elements", path: dir.write("many.csv", "symbol,name,atomic_number\n" + rows + "\n"))
        let commits = try await r.missingCommits(after: VersionVector(), maxBytes: .max)
        let stored = try await r.read { db in
            try Row.fetchAll(db, sql: "SELECT hash, bytes FROM _lode_log ORDER BY id").map {
                ([UInt8]($0["hash"] as Data), [UInt8]($0["bytes"] as Data))
            }
        }
        #expect(commits.count == stored.count && commits.count == 2)
        for (c, s) in zip(commits, stored) { #expect(try Commit(decoding: c.bytes).hash == s.0) }
        let large = commits[1].bytes
        #expect(stored[1].1.first == LogBytes.deflated && stored[1].1.count < large.count / 2)
        #expect(stored[0].1.first == Commit.version, "a small commit is kept as it is")
        // A file of format 1: the same commit as it is.
        let path = r.path
        try await r.write { tx in
            try tx.db.execute(sql: "UPDATE _lode_log SET bytes = ? WHERE hash = ?", arguments: [Data(large), Data(stored[1].0)])
            try tx.db.execute(sql: "UPDATE _lode_meta SET value = 1 WHERE key = 'format'")
            try tx.db.execute(sql: "ALTER TABLE _lode_log DROP COLUMN person")
        }
        try r.close()
        let old = try SQLiteReplica.open(at: path, dataset: "d", local: site(1, "alpha"))
        #expect(try await old.missingCommits(after: VersionVector(), maxBytes: .max).map(\.bytes) == commits.map(\.bytes))
        #expect(try await old.read { db in try Int.fetchOne(db, sql: "SELECT value FROM _lode_meta WHERE key = 'format'") } == DatasetFormat.version)
        // Format 3 keeps the person a commit names; the old commits name no one.
        #expect(try await old.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_log WHERE person IS NULL") } == 2)
        // Damage: a deflated commit that does not inflate.
        var damaged = [UInt8](LogBytes.stored(large))
        damaged[damaged.count / 2] ^= 0xFF
        let broken = damaged
        try await old.write { tx in
            try tx.db.execute(sql: "UPDATE _lode_log SET bytes = ? WHERE hash = ?", arguments: [Data(broken), Data(stored[1].0)])
        }
        await #expect(throws: StoreError.self) { try await old.missingCommits(after: VersionVector(), maxBytes: .max) }
    }

    /// A script file runs as one exec a piece (a megabyte) at a time:
    /// later pieces see what earlier ones wrote, `;` inside strings and
    /// comments does not end a statement, and a bad statement anywhere
    /// leaves the data exactly as it was.
    @Test func execOfAFileRunsInPiecesAsOneTransaction() async throws {
        let r = try await make()
        var script = "-- elements; many of them\n"
        for i in 0..<3_000 { script += "INSERT INTO elements(symbol, name) VALUES ('x\(i)', 'made up; number \(i)');\n" }
        script += "UPDATE elements SET atomic_number = CAST(substr(symbol, 2) AS INTEGER) WHERE symbol LIKE 'x%';\n"
        script += "/* the last; */ DELETE FROM elements WHERE symbol = 'x7'"
        // Pieces of 64 KiB: about 800 statements each.
        let report = try await r.exec(file: dir.write("big.sql", script), chunkBytes: 64 << 10)
        // A row inserted and updated within one piece is written once.
        #expect(report.rowsChanged > 3_001 && report.rowsChanged < 6_001, "\(report)")
        #expect(
            try await dump(r, "SELECT count(*), sum(atomic_number) FROM elements").last
                == "row([LodeCore.Value.integer(2999), LodeCore.Value.integer(4498493)])")
        #expect(try await dump(r, "SELECT name FROM elements WHERE symbol = 'x2999'").last == "row([LodeCore.Value.text(\"made up; number 2999\")])")
        let before = try await fullDump(r)
        for bad in [
            script + ";\nUPDATE elements SET atomic_number = 'many'", "INSERT INTO elements(symbol) VALUES ('y1');\nSELECT 1;", "-- nothing\n",
            "INSERT INTO elements(symbol) VALUES ('y2",
        ] {
            await #expect(throws: StoreError.self) { try await r.exec(file: dir.write("bad.sql", bad)) }
            #expect(try await fullDump(r) == before)
        }
    }

    /// `SQLScript` never cuts a statement, whatever the chunk size, and
    /// a string full of `;` costs one pass (SQLite was asked about every
    /// `;` with all of the statement so far: quadratic, a way for an
    /// editor's script to hold the writer for hours).
    @Test func aScriptIsCutBetweenWholeStatementsOnly() throws {
        let semicolons = String(repeating: ";", count: 1 << 20)
        var pieces: [String] = []
        try SQLScript(path: dir.write("semi.sql", "INSERT INTO t VALUES ('\(semicolons)');\nDELETE FROM t;"), chunkBytes: 1).forEachChunk {
            pieces.append($0)
        }
        #expect(pieces.count == 2 && pieces[0].utf8.count == (1 << 20) + 26)
        let text =
            "INSERT INTO t VALUES ('a;b', \"c;d\", [e;f], `g;h`); -- c;\nUPDATE t SET x = 1; /*/ ; */ /* ; */\nCREATE TRIGGER g AFTER INSERT ON t BEGIN SELECT 1; END;\nDELETE FROM t"
        for size in [1, 10, 40, 1 << 20] {
            var chunks: [String] = []
            let script = SQLScript(path: dir.write("s.sql", text), chunkBytes: size)
            try script.forEachChunk { chunks.append($0) }
            #expect(chunks.joined() == text)
            for c in chunks.dropLast() { #expect(c.hasSuffix(";"), "\(size): \(chunks)") }
            if size == 1 {
                #expect(chunks.count == 4, "\(chunks)")
            }
        }
    }

    @Test func crashSafeReopenKeepsState() async throws {
        let path: String
        do {
            let r = try await make()
            _ = try await r.exec("INSERT INTO elements(symbol, name) VALUES ('Nd', 'Neodymium')")
            path = r.path
            try r.close()
        }
        let again = try SQLiteReplica.open(at: path, dataset: "d", local: site(1, "alpha"))
        _ = try await again.exec("INSERT INTO elements(symbol, name) VALUES ('Pr', 'Praseodymium')")
        #expect(again.vector[site(1, "alpha").site] == 3)
        #expect(try await dump(again, "PRAGMA integrity_check").last == "row([LodeCore.Value.text(\"ok\")])")
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}
