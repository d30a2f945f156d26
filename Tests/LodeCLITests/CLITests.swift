import Foundation
import LodeTestSupport
import Testing

/// End-to-end tests: the built `lode` binary against a running node, as a
/// user would drive it.
@Suite(.serialized) struct CLITests {
    let scratch = TempDir("lode-cli")

    /// A node made with `lode ca init` and `lode init`, serving.
    func node(_ name: String, role: String = "editor", ca: String? = nil) throws -> (ServeProcess, [String]) {
        let caDir = ca ?? scratch.file("ca")
        if !FileManager.default.fileExists(atPath: caDir + "/ca.pem") {
            let r = try lode(["ca", "init", "--dir", caDir, "--cluster", "test"])
            #expect(r.status == 0, "\(r)")
        }
        let dir = scratch.file(name)
        let r = try lode(["init", "--site", name, "--ca", caDir, "--role", role, "--data-dir", dir])
        #expect(r.status == 0, "\(r)")
        return (try ServeProcess(dataDir: dir), ["--data-dir", dir])
    }

    static let schema = """
        CREATE TABLE mines (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            country TEXT,
            output_t INTEGER,
            grade REAL
        );
        """

    @Test func serveWithNoNodeLoadsTheBundledDatasetAndQueryNeedsNoFlags() throws {
        let dir = scratch.file("default")
        let server = try ServeProcess(dataDir: dir)
        defer { server.stop() }
        #expect(server.logText.contains("loaded the bundled rare-earths dataset"))
        let env = ["LODE_DATA_DIR": dir]
        let q = try lode(["query", "rare-earths", "SELECT symbol, name FROM elements WHERE symbol IN ('Nd', 'Dy') ORDER BY symbol"], env: env)
        #expect(q.status == 0, "\(q)")
        #expect(q.stdout == "symbol,name\r\nDy,Dysprosium\r\nNd,Neodymium\r\n")
        let counts = try lode(
            [
                "query", "rare-earths",
                """
                SELECT (SELECT count(*) FROM elements), (SELECT count(*) FROM country_production), (SELECT count(*) FROM facilities),
                       (SELECT count(*) FROM trade_policies), (SELECT count(*) FROM dependencies), (SELECT count(*) FROM facilities WHERE source IS NULL)
                """, "--format", "json",
            ], env: env)
        #expect(
            counts.stdout.contains("17") && counts.stdout.contains("72") && counts.stdout.contains("27") && counts.stdout.contains("25")
                && counts.stdout.contains("33"), "\(counts)")
        let list = try lode(["dataset", "list"], env: env)
        #expect(list.lines.count == 6, "\(list)")
        #expect(server.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: server.socket))
    }

    @Test func theWholeTourWorks() throws {
        let (server, d) = try node("berlin")
        defer { server.stop() }
        let schema = scratch.write("mines.sql", Self.schema)
        var r = try lode(["dataset", "create", "mines", "--schema", schema] + d)
        #expect(r.status == 0, "\(r)")
        r = try lode(["schema", "mines"] + d)
        #expect(r.stdout.contains("name TEXT NOT NULL DEFAULT ''") && r.stdout.contains("id TEXT PRIMARY KEY"), "\(r)")
        let csv = scratch.write(
            "mines.csv",
            "id,name,country,output_t,grade\r\nmp,Mountain Pass,United States,45455,7.98\r\nmw,\"Mount Weld, WA\",Australia,,\r\nbo,Bayan Obo,China,,3.5\r\n"
        )
        r = try lode(["import", "mines", "mines", csv] + d)
        #expect(r.status == 0 && r.stdout == "3\n", "\(r)")
        r = try lode(["export", "mines", "mines", "--format", "csv"] + d)
        #expect(
            r.stdout
                == "id,name,country,output_t,grade\r\nbo,Bayan Obo,China,,3.5\r\nmp,Mountain Pass,United States,45455,7.98\r\nmw,\"Mount Weld, WA\",Australia,,\r\n",
            "\(r)")
        r = try lode(["query", "mines", "SELECT id, output_t, grade FROM mines WHERE id = 'mp'", "--format", "json"] + d)
        #expect(r.stdout == "[\n{\"id\":\"mp\",\"output_t\":45455,\"grade\":7.98}\n]\n", "\(r)")
        r = try lode(["query", "mines", "SELECT id, name FROM mines ORDER BY id", "--format", "table"] + d)
        #expect(r.lines == ["id  name", "--  --------------", "bo  Bayan Obo", "mp  Mountain Pass", "mw  Mount Weld, WA"], "\(r)")
        // A value or a name from elsewhere cannot drive the analyst's terminal.
        r = try lode(
            [
                "query", "mines",
                "SELECT char(27) || ']0;pwned' || char(7) || char(155) || 'x' || char(8238) AS \"a\u{1B}[2Jb\", 'line' || char(10) || 'two' AS t",
                "--format", "table",
            ] + d)
        #expect(
            r.status == 0 && !r.stdout.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" || $0.value == 0x9B || $0.value == 0x202E }, "\(r)")
        #expect(r.lines.first == "a^[[2Jb" + String(repeating: " ", count: 22) + "t", "\(r)")
        #expect(r.lines.last == "^[]0;pwned^G\\u{9B}x\\u{202E}  line⏎two", "\(r)")
        r = try lode(["exec", "mines", "UPDATE mines SET output_t = 50000 WHERE id = 'mp'"] + d)
        #expect(r.status == 0 && r.stdout == "1\n", "\(r)")
        r = try lode(
            ["annotate", "mines", "mines", "mp", "--text", "2024 actual output", "--column", "output_t", "--tag", "check", "--tag", "capacity"] + d)
        #expect(r.status == 0, "\(r)")
        let id = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        r = try lode(["annotate", "mines", "mines", "mp", "--text", "confirmed", "--reply-to", id] + d)
        #expect(r.status == 0, "\(r)")
        r = try lode(["annotations", "mines", "--tag", "check", "--format", "json"] + d)
        #expect(
            r.stdout.contains("\"id\" : \"\(id)\"") && r.stdout.contains("\"targetExists\" : true") && r.stdout.contains("\"author\" : \"berlin\""),
            "\(r)")
        r = try lode(["annotations", "mines", "--search", "confirmed", "--format", "csv"] + d)
        #expect(r.lines.count == 2 && r.stdout.contains(id), "\(r)")
        r = try lode(["history", "mines", "mines", "mp", "--format", "csv"] + d)
        #expect(r.lines.contains { $0.hasSuffix(",berlin,tess,3,output_t,50000,yes") }, "\(r)")
        #expect(r.lines.contains { $0.hasSuffix(",berlin,tess,2,output_t,45455,no") }, "\(r)")
        r = try lode(["conflicts", "mines", "--format", "csv"] + d)
        #expect(r.status == 0 && r.lines.count == 1, "\(r)")
        // People: a link for the person at the terminal, who joins with the
        // site's role; people added with a role at most the site's.
        r = try lode(["ui"] + d)
        #expect(r.status == 0 && r.stdout.hasPrefix("http://127.0.0.1:") && r.stdout.contains("/signin?token="), "\(r)")
        r = try lode(["user", "add", "ana", "--role", "annotator"] + d)
        #expect(r.status == 0 && r.stdout.contains("added ana (annotator)") && r.stdout.contains("/signin?token="), "\(r)")
        r = try lode(["user", "add", "ana", "--role", "reader"] + d)
        #expect(r.status == 1 && r.stderr.contains("already a person"), "\(r)")
        r = try lode(["user", "add", "Bad Name", "--role", "reader"] + d)
        #expect(r.status == 1 && r.stderr.contains("not a valid person name"), "\(r)")
        r = try lode(["user", "list", "--format", "csv"] + d)
        #expect(r.lines.count == 3 && r.lines[1].hasPrefix("ana,annotator,") && r.lines[2].hasPrefix("tess,editor,"), "\(r)")
        // Any person at the terminal gets a link for themselves.
        r = try lode(["ui"] + d, env: ["LODE_USER": "ana"])
        #expect(r.status == 0 && r.stdout.contains("/signin?token="), "\(r)")
        // An annotator at the terminal may annotate but not change rows.
        r = try lode(["exec", "mines", "UPDATE mines SET grade = 1 WHERE id = 'mp'"] + d, env: ["LODE_USER": "ana"])
        #expect(r.status == 1 && r.stderr.contains("ana's role at this site is annotator"), "\(r)")
        r = try lode(["user", "remove", "ana"] + d)
        #expect(r.status == 0, "\(r)")
        // A script from standard input or from a file runs as one exec, all or nothing.
        r = try lode(
            ["exec", "mines"] + d,
            stdin:
                "UPDATE mines SET grade = 8.0 WHERE id = 'mp';\n-- a comment; with a semicolon\nUPDATE mines SET name = 'Bayan Obo; Inner Mongolia' WHERE id = 'bo';\n"
        )
        #expect(r.status == 0 && r.stdout == "2\n", "\(r)")
        r = try lode(
            [
                "exec", "mines", "--file",
                scratch.write("bad.sql", "UPDATE mines SET grade = 9.5 WHERE id = 'mp';\nUPDATE mines SET output_t = 'lots';\n"),
            ] + d)
        #expect(r.status != 0 && r.stderr.contains("is INTEGER"), "\(r)")
        r = try lode(["query", "mines", "SELECT grade, (SELECT name FROM mines WHERE id = 'bo') FROM mines WHERE id = 'mp'", "--format", "csv"] + d)
        #expect(r.lines.last == "8.0,Bayan Obo; Inner Mongolia", "\(r)")
        r = try lode(["status", "--format", "json"] + d)
        #expect(r.stdout.contains("\"site\" : \"berlin\"") && r.stdout.contains("\"role\" : \"editor\""), "\(r)")
        r = try lode(["peers", "add", "10.0.0.2:7443"] + d)
        #expect(r.status == 0, "\(r)")
        r = try lode(
            [
                "dataset", "alter", "mines", "--schema",
                scratch.write("v2.sql", Self.schema.replacingOccurrences(of: "grade REAL", with: "grade REAL,\n    status TEXT")),
            ] + d)
        #expect(r.status == 0 && r.stdout.contains("mines.status"), "\(r)")
        // Exec's delete leaves the annotation, which says its row is gone.
        r = try lode(["exec", "mines", "DELETE FROM mines WHERE id = 'mp'"] + d)
        #expect(r.stdout == "1\n")
        r = try lode(["annotations", "mines", "--pk", "mp", "--format", "csv"] + d)
        #expect(r.lines.dropFirst().allSatisfy { $0.contains(",deleted,") }, "\(r)")
        // Peers are kept across a restart.
        #expect(server.stop() == 0)
        let again = try ServeProcess(dataDir: server.dataDir)
        defer { again.stop() }
        r = try lode(["peers", "list", "--format", "csv"] + d)
        #expect(r.stdout.contains("10.0.0.2:7443"), "\(r)")
    }

    /// `query --as-of` answers with the tables as they stood at a time or a
    /// commit; `diff` lists what changed since, with who changed it.
    @Test func asOfQueriesAndDiffsFromTheCommandLine() throws {
        let (server, d) = try node("porto")
        defer { server.stop() }
        _ = try lode(["dataset", "create", "mines", "--schema", scratch.write("s.sql", Self.schema)] + d)
        let csv = scratch.write("m.csv", "id,name,output_t\nmp,Mountain Pass,45455\nbo,Bayan Obo,\nmw,Mount Weld,12000\n")
        var r = try lode(["import", "mines", "mines", csv] + d)
        #expect(r.status == 0, "\(r)")
        Thread.sleep(forTimeInterval: 0.01)
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let before = iso.string(from: Date())
        Thread.sleep(forTimeInterval: 0.01)
        r = try lode(["exec", "mines", "UPDATE mines SET output_t = 50000 WHERE id = 'mp'; DELETE FROM mines WHERE id = 'mw'"] + d)
        #expect(r.status == 0 && r.stdout == "2\n", "\(r)")
        r = try lode(["import", "mines", "mines", scratch.write("n.csv", "id,name\nmk,Mount Kiki\n")] + d)
        let sql = "SELECT id, output_t FROM mines ORDER BY id"
        r = try lode(["query", "mines", sql, "--as-of", before, "--format", "csv"] + d)
        #expect(r.status == 0 && r.lines == ["id,output_t", "bo,", "mp,45455", "mw,12000"], "\(r)")
        // The same by commit: porto's seq 2 is the first import.
        r = try lode(["query", "mines", sql, "--as-of", "porto:2", "--format", "csv"] + d)
        #expect(r.status == 0 && r.lines == ["id,output_t", "bo,", "mp,45455", "mw,12000"], "\(r)")
        r = try lode(["query", "mines", sql, "--as-of", "porto:3", "--format", "csv"] + d)
        #expect(r.lines == ["id,output_t", "bo,", "mp,50000"], "\(r)")
        r = try lode(["query", "mines", sql, "--format", "csv"] + d)
        #expect(r.lines == ["id,output_t", "bo,", "mk,", "mp,50000"], "\(r)")
        r = try lode(["diff", "mines", "--from", before, "--format", "csv"] + d)
        #expect(r.status == 0 && r.lines.first == "table,key,change,column,old,new,time,site,person", "\(r)")
        let changes = r.lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).prefix(6).joined(separator: ",") }
        #expect(
            changes == [
                "mines,mk,added,name,,Mount Kiki", "mines,mk,added,country,,", "mines,mk,added,output_t,,", "mines,mk,added,grade,,",
                "mines,mp,changed,output_t,45455,50000",
                "mines,mw,deleted,name,Mount Weld,", "mines,mw,deleted,country,,", "mines,mw,deleted,output_t,12000,", "mines,mw,deleted,grade,,",
            ], "\(r)")
        #expect(r.lines.dropFirst().allSatisfy { $0.hasSuffix(",porto,tess") }, "\(r)")
        r = try lode(["diff", "mines", "--from", before, "--to", "porto:3", "--table", "mines", "--format", "json"] + d)
        #expect(r.status == 0 && r.stdout.contains("\"change\":\"changed\"") && !r.stdout.contains("Mount Kiki"), "\(r)")
        // Backwards: the changes undone, from the later point to the earlier.
        r = try lode(["diff", "mines", "--from", "porto:3", "--to", "porto:2", "--format", "csv"] + d)
        #expect(r.status == 0 && r.lines.contains { $0.hasPrefix("mines,mp,changed,output_t,50000,45455,") }, "\(r)")
        #expect(r.lines.contains { $0.hasPrefix("mines,mw,added,name,,Mount Weld,") }, "\(r)")
        // Mistakes say what is accepted.
        for (args, fragment, status) in [
            (["query", "mines", sql, "--as-of", "yesterday"], "ISO 8601", Int32(2)),
            (["diff", "mines", "--from", "2026-13-01"], "ISO 8601", 2),
            (["query", "mines", sql, "--as-of", "lisbon:1"], "no site lisbon", 1),
            (["query", "mines", sql, "--as-of", "porto:99"], "no commit 99 of site porto", 1),
            (["query", "mines", sql, "--as-of", "1999-01-01"], "no such table as of 1999-01-01", 1),
            (["diff", "mines", "--from", before, "--table", "quarries"], "no table quarries", 1),
        ] {
            r = try lode(args + d)
            #expect(r.status == status && r.stderr.contains(fragment), "\(args): \(r)")
        }
    }

    /// `lode backup` writes a copy of a dataset while the node serves;
    /// `lode restore` brings it back on another node of the cluster,
    /// verifying every commit, and refuses what the cluster's CA did not
    /// certify.
    @Test func backupAndRestoreBetweenNodes() throws {
        let (porto, p) = try node("porto2")
        defer { porto.stop() }
        _ = try lode(["dataset", "create", "mines", "--schema", scratch.write("s.sql", Self.schema)] + p)
        _ = try lode(["import", "mines", "mines", scratch.write("m.csv", "id,name,output_t\nmp,Mountain Pass,45455\nbo,Bayan Obo,\n")] + p)
        _ = try lode(["exec", "mines", "UPDATE mines SET output_t = 50000 WHERE id = 'mp'; DELETE FROM mines WHERE id = 'bo'"] + p)
        let file = scratch.file("mines.lodebackup")
        var r = try lode(["backup", "mines", file] + p)
        #expect(r.status == 0 && FileManager.default.fileExists(atPath: file), "\(r)")
        #expect(!FileManager.default.fileExists(atPath: file + ".partial"))
        r = try lode(["backup", "mines", file] + p)
        #expect(r.status == 1 && r.stderr.contains("exists"), "\(r)")
        let (faro, f) = try node("faro")
        defer { faro.stop() }
        r = try lode(["restore", file, "--format", "csv"] + f)
        #expect(
            r.status == 0 && r.lines == ["dataset,commits,applied,already_held,refused,unapplied,certificates_added,snapshot", "mines,3,3,0,0,0,1,"],
            "\(r)")
        let export = ["export", "mines", "mines", "--format", "csv"]
        #expect(try lode(export + f).stdout == lode(export + p).stdout)
        let history = ["history", "mines", "mines", "mp", "--format", "csv"]
        #expect(try lode(history + f).lines.count == 4 && lode(history + f).stdout == lode(history + p).stdout)
        // Again: nothing new.
        r = try lode(["restore", file, "--format", "csv"] + f)
        #expect(r.lines.last == "mines,3,0,3,0,0,0,", "\(r)")
        // A node of another cluster trusts none of it.
        let (other, o) = try node("elsewhere", ca: scratch.file("other-ca"))
        defer { other.stop() }
        r = try lode(["restore", file] + o)
        #expect(r.status == 1 && r.stderr.contains("cannot bring dataset mines into being"), "\(r)")
        #expect(try lode(["dataset", "list", "--format", "csv"] + o).lines.count == 1)
        r = try lode(["restore", scratch.write("not.lodebackup", "id,name\nmp,x\n")] + f)
        #expect(r.status == 1 && r.stderr.contains("not a Lodestone backup"), "\(r)")
    }

    /// Every bad input gets a clear error and leaves the data exactly as it was.
    @Test func errorPathsLeaveTheDataUntouched() throws {
        let (server, d) = try node("lyon")
        defer { server.stop() }
        _ = try lode(["dataset", "create", "mines", "--schema", scratch.write("s.sql", Self.schema)] + d)
        _ = try lode(["import", "mines", "mines", scratch.write("ok.csv", "id,name,output_t\nmp,Mountain Pass,45455\n")] + d)
        func snapshot() throws -> String {
            try lode(["export", "mines", "mines", "--format", "csv"] + d).stdout + (try lode(["status", "--format", "csv"] + d).stdout)
        }
        let before = try snapshot()
        let cases: [([String], String)] = [
            (["import", "mines", "mines", scratch.write("bad1.csv", "id,name\nbo,Bayan Obo\nmw,\"Mount Weld\n")], "line 3"),
            (
                ["import", "mines", "mines", scratch.write("bad2.csv", "id,output_t\nbo,1000\nmw,lots\n")],
                "line 3, column output_t: \"lots\" is not an INTEGER"
            ),
            (["import", "mines", "mines", scratch.write("bad3.csv", "id,colour\nbo,red\n")], "unknown column colour"),
            (["import", "mines", "quarries", scratch.write("bad4.csv", "id\nx\n")], "no table quarries"),
            (["import", "nope", "mines", scratch.write("bad5.csv", "id\nx\n")], "no dataset nope"),
            (["query", "mines", "DELETE FROM mines"], "use lode exec"),
            (["query", "mines", "SELECT colour FROM mines"], "no such column: colour"),
            (["query", "mines", "SELECT * FROM quarries"], "no such table: quarries"),
            (["exec", "mines", "UPDATE mines SET output_t = 'lots'"], "is INTEGER"),
            (["exec", "mines", "UPDATE quarries SET x = 1"], "no such table"),
            (["exec", "mines", "DROP TABLE mines"], "INSERT, UPDATE and DELETE only"),
            (["annotate", "mines", "mines", "nope", "--text", "x"], "no row nope"),
            (["history", "mines", "mines", "nope"], "no row nope"),
            (
                [
                    "dataset", "alter", "mines", "--schema",
                    scratch.write("drop.sql", "CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '')"),
                ], "cannot be dropped"
            ),
            (["dataset", "create", "bad", "--schema", scratch.write("u.sql", "CREATE TABLE t (id TEXT PRIMARY KEY, e TEXT UNIQUE)")], "UNIQUE"),
            (["dataset", "create", "mines", "--schema", scratch.write("again.sql", Self.schema)], "already exists"),
        ]
        for (args, fragment) in cases {
            let r = try lode(args + d)
            #expect(r.status == 1, "\(args): \(r)")
            #expect(r.stderr.contains(fragment), "\(args): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "one line on stderr: \(r.stderr)")
            #expect(try snapshot() == before, "\(args) changed the data")
        }
        // An upload the node refuses by its URL alone (no such dataset) is
        // read whole before the answer: answered while the client was still
        // sending, about 3 in 100 got HTTPClientError.bodyLengthMismatch
        // instead of the answer (8 of 300 before the fix, 0 of 300 after).
        let small = scratch.write("small.csv", "id\nx\n")
        var broken: [String] = []
        for _ in 0..<150 {
            let r = try lode(["import", "nope", "mines", small] + d)
            if !(r.status == 1 && r.stderr.contains("no dataset nope")) { broken.append(r.stderr) }
        }
        #expect(broken.isEmpty, "\(broken.count) of 150: \(broken.prefix(3))")
        let r = try lode(["exec", "nope", "--file", scratch.write("small.sql", "DELETE FROM mines;")] + d)
        #expect(r.status == 1 && r.stderr.contains("no dataset nope"), "\(r)")
        let list = try lode(["dataset", "list", "--format", "csv"] + d)
        #expect(!list.stdout.contains("bad"), "a refused dataset was left behind: \(list)")
    }

    /// `lode ca revoke` writes a CA-signed revocation; `lode revoke` hands it
    /// to a node, which prints the cut-offs it fixed and lists it after a
    /// restart; a file altered after signing is refused.
    @Test func aRevocationIsWrittenByTheCAAndHandedToANode() throws {
        let (server, d) = try node("hq")
        _ = try lode(["dataset", "create", "mines", "--schema", scratch.write("rv.sql", Self.schema)] + d)
        var r = try lode(["ca", "revoke", "--dir", scratch.file("ca"), "--site", "laptop-7", "--reason", "stolen on the train"])
        #expect(r.status == 0 && r.stdout.hasSuffix(".json\n"), "\(r)")
        let file = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let mode = (try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int) ?? 0
        #expect(mode & 0o022 == 0, "\(String(mode, radix: 8))")
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let altered = scratch.write("altered.json", text.replacingOccurrences(of: "stolen on the train", with: "lost"))
        r = try lode(["revoke", altered] + d)
        #expect(r.status == 1 && r.stderr.contains("signature"), "\(r)")
        r = try lode(["revoke", file] + d)
        #expect(r.status == 0 && r.stdout.contains("revoked laptop-7 (stolen on the train)"), "\(r)")
        server.stop()
        let again = try ServeProcess(dataDir: server.dataDir)
        defer { again.stop() }
        r = try lode(["status", "--format", "table"] + d)
        #expect(r.status == 0 && r.stdout.contains("revoked\n  laptop-7 since ") && r.stdout.contains(": stolen on the train"), "\(r)")
        r = try lode(["revoke", file] + d)
        #expect(r.status == 0, "\(r)")
        r = try lode(["revoke", scratch.write("junk.json", "{}")] + d)
        #expect(r.status == 1 && r.stderr.contains("not a revocation file"), "\(r)")
    }

    @Test func aRoleThatMayNotWriteIsRefused() throws {
        // An editor makes a dataset; readers and annotators hold copies of it
        // (as they would after syncing) and try to change it.
        let (editor, e) = try node("editor1")
        _ = try lode(["dataset", "create", "mines", "--schema", scratch.write("s.sql", Self.schema)] + e)
        _ = try lode(["import", "mines", "mines", scratch.write("m.csv", "id,name\nmp,Mountain Pass\n")] + e)
        editor.stop()
        for (name, role) in [("reader1", "reader"), ("annot1", "annotator"), ("relay1", "relay")] {
            let caDir = scratch.file("ca")
            let dir = scratch.file(name)
            #expect(try lode(["init", "--site", name, "--ca", caDir, "--role", role, "--data-dir", dir]).status == 0)
            for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: editor.dataDir + "/datasets/mines.db" + suffix) {
                try FileManager.default.copyItem(atPath: editor.dataDir + "/datasets/mines.db" + suffix, toPath: dir + "/datasets/mines.db" + suffix)
            }
            let server = try ServeProcess(dataDir: dir)
            defer { server.stop() }
            let d = ["--data-dir", dir]
            let before = try lode(["export", "mines", "mines", "--format", "csv"] + d).stdout
            for args in [
                ["exec", "mines", "UPDATE mines SET name = 'x'"],
                ["import", "mines", "mines", scratch.write("n.csv", "id,name\nbo,Bayan Obo\n")],
                ["dataset", "create", "other", "--schema", scratch.file("s.sql")],
                [
                    "dataset", "alter", "mines", "--schema",
                    scratch.write("a.sql", Self.schema.replacingOccurrences(of: "grade REAL", with: "grade REAL, extra TEXT")),
                ],
            ] {
                let r = try lode(args + d)
                #expect(r.status == 1 && r.stderr.contains(role), "\(role) \(args): \(r)")
            }
            let note = try lode(["annotate", "mines", "mines", "mp", "--text", "seen"] + d)
            #expect(note.status == (role == "annotator" ? 0 : 1), "\(role) annotate: \(note)")
            #expect(try lode(["export", "mines", "mines", "--format", "csv"] + d).stdout == before)
            #expect(try lode(["query", "mines", "SELECT count(*) FROM mines"] + d).status == 0, "every role may read")
        }
    }

    @Test func exitCodesForUsageAndUnreachableNode() throws {
        #expect(try lode(["query"]).status == 2)
        #expect(try lode(["frobnicate"]).status == 2)
        #expect(try lode(["export", "a", "b", "--format", "yaml"]).status == 2)
        let r = try lode(["status", "--data-dir", scratch.file("nobody")])
        #expect(r.status == 3 && r.stderr.contains("lode serve --data-dir"), "\(r)")
        // A node killed with -9 leaves its socket file behind: still exit 3, at once.
        let (server, d) = try node("stale")
        server.kill9()
        #expect(FileManager.default.fileExists(atPath: server.dataDir + "/lode.sock"))
        // (Before the client probed the socket, this waited out a 90 s connect timeout.)
        let stale = try lode(["exec", "rare-earths", "DELETE FROM elements"] + d)
        #expect(stale.status == 3 && stale.stderr.contains("is it running"), "\(stale)")
        #expect(try lode(["--help"]).status == 0)
        #expect(try lode(["query", "--help"]).stdout.contains("Example"))
    }

    @Test func identityFilesAreSecretAndNeverOverwritten() throws {
        let ca = scratch.file("ca2")
        #expect(try lode(["ca", "init", "--dir", ca]).status == 0)
        let again = try lode(["ca", "init", "--dir", ca])
        #expect(again.status == 1 && again.stderr.contains("refusing to overwrite"), "\(again)")
        let mode = { (p: String) in ((try? FileManager.default.attributesOfItem(atPath: p))?[.posixPermissions] as? Int) ?? -1 }
        #expect(mode(ca + "/ca.key") == 0o600)
        let dir = scratch.file("site")
        #expect(try lode(["init", "--site", "s1", "--ca", ca, "--data-dir", dir]).status == 0)
        #expect(mode(dir + "/site.key") == 0o600)
        let keyBefore = try String(contentsOfFile: dir + "/site.key", encoding: .utf8)
        let twice = try lode(["init", "--site", "s2", "--ca", ca, "--data-dir", dir])
        #expect(twice.status == 1 && twice.stderr.contains("refusing to overwrite"), "\(twice)")
        #expect(try String(contentsOfFile: dir + "/site.key", encoding: .utf8) == keyBefore)
        // openssl agrees that the site certificate chains to the CA.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = ["verify", "-CAfile", ca + "/ca.pem", dir + "/site.pem"]
        p.standardOutput = Pipe()
        p.standardError = Pipe()
        if (try? p.run()) != nil {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
    }

    /// kill -9 in the middle of an import: on restart the node holds none
    /// or all of it, and SQLite's integrity check passes.
    @Test func killDuringImportLosesNothingHalfWritten() throws {
        let (server, d) = try node("crashy")
        let n = 150_000
        var csv = "id,name,country,output_t,grade\n"
        for i in 0..<n { csv += "m\(i),Mine \(i),Country \(i % 50),\(i * 7),\(Double(i) / 8)\n" }
        let file = scratch.write("big.csv", csv)
        // How long a whole import takes here, so the kills land inside one.
        _ = try lode(["dataset", "create", "probe", "--schema", scratch.write("p.sql", Self.schema)] + d)
        let timed = Date()
        #expect(try lode(["import", "probe", "mines", file] + d).status == 0)
        let importMicros = UInt32(Date().timeIntervalSince(timed) * 1_000_000)
        var current = server
        var rng = SystemRandomNumberGenerator()
        var killsMidImport = 0
        // Each round imports into a dataset of its own, so that a round
        // whose import finished before the kill (a slow probe) does not end
        // the test: rounds go on until two kills have landed mid-import.
        var dataset = "mines"
        for round in 0..<8 where killsMidImport < 2 {
            dataset = "mines\(round)"
            #expect(try lode(["dataset", "create", dataset, "--schema", scratch.write("s\(round).sql", Self.schema)] + d).status == 0)
            let importer = Process()
            importer.executableURL = URL(fileURLWithPath: lodeBinary)
            importer.arguments = ["import", dataset, "mines", file] + d
            importer.standardOutput = Pipe()
            importer.standardError = Pipe()
            try importer.run()
            // Somewhere inside the import (the rows sit in SQLite's page cache
            // until the commit, so the files show nothing until the end).
            usleep(UInt32.random(in: (importMicros / 10)...(importMicros * 3 / 5), using: &rng))
            if importer.isRunning { killsMidImport += 1 }
            current.kill9()
            importer.waitUntilExit()
            current = try ServeProcess(dataDir: current.dataDir)
            let count = try lode(["query", dataset, "SELECT count(*) FROM mines"] + d)
            let rows = Int(count.lines.last ?? "") ?? -1
            #expect(rows == 0 || rows == n, "round \(round): \(rows) rows after kill -9")
            let check = try lode(["query", dataset, "PRAGMA integrity_check"] + d)
            #expect(check.lines.last == "ok", "\(check)")
        }
        #expect(killsMidImport > 0, "no kill landed while the import was running")
        // After the crashes the node still imports the whole file.
        let r = try lode(["import", dataset, "mines", file] + d)
        #expect(r.status == 0, "\(r)")
        let count = try lode(["query", dataset, "SELECT count(*) FROM mines"] + d)
        #expect(count.lines.last == "\(n)")
        current.stop()
    }

    @Test func theBundledDatasetMatchesTheSeedFiles() throws {
        // `lode serve` embeds seed/rare-earths; export must give back the same rows.
        let dir = scratch.file("seedcheck")
        let server = try ServeProcess(dataDir: dir)
        defer { server.stop() }
        let elements = try lode(["export", "rare-earths", "elements", "--format", "csv", "--data-dir", dir])
        let original = try String(contentsOfFile: repoRoot + "/seed/rare-earths/elements.csv", encoding: .utf8)
        let exported = Set(elements.stdout.components(separatedBy: "\r\n").dropFirst().filter { !$0.isEmpty })
        let expected = Set(original.components(separatedBy: "\r\n").dropFirst().filter { !$0.isEmpty })
        #expect(exported == expected)
    }
}
