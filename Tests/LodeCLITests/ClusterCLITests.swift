import Foundation
import LodeTestSupport
import Testing

/// A free TCP port on loopback, never handed to another test of this process.
func freePort() -> Int { TestPorts.fresh() }

/// Several `lode serve` processes on loopback ports, driven only with the
/// CLI, as operators would.
@Suite(.serialized) struct ClusterCLITests {
    let scratch = TempDir("lode-cli")

    func site(_ name: String, role: String) throws -> Site { try makeSite(name, role: role, in: scratch, cluster: "cli") }

    func serve(_ s: Site, peers: [Site] = []) throws -> ServeProcess {
        try ServeProcess(dataDir: s.dir, extra: peers.flatMap { ["--peer", $0.address] }, listen: s.address)
    }

    func export(_ s: Site) throws -> String {
        try lode(["export", "mines", "mines", "--format", "csv"] + s.flags).stdout
    }

    /// Syncs `s` until its checkpoint list (CSV) has checkpoint `id` on a
    /// line ending in `ending` (its signers and completeness), for a minute
    /// at most; returns the last listing.
    func syncUntilListed(_ id: some StringProtocol, ending: String, at s: Site) throws -> Outcome {
        let deadline = Date().addingTimeInterval(60)
        var out: Outcome
        repeat {
            _ = try lode(["sync", "--wait", "--timeout", "10"] + s.flags)
            out = try lode(["checkpoint", "mines", "--list", "--format", "csv"] + s.flags)
            if out.lines.contains(where: { $0.hasPrefix(id) && $0.hasSuffix(ending) }) { break }
            Thread.sleep(forTimeInterval: 0.5)
        } while Date() < deadline
        return out
    }

    @Test func editsTravelThroughARelayAndConvergeAfterItReturns() throws {
        let relay = try site("relay", role: "relay")
        let a = try site("a", role: "editor")
        let b = try site("b", role: "editor")
        var relayProcess = try serve(relay)
        let pa = try serve(a, peers: [relay])
        let pb = try serve(b, peers: [relay])
        defer {
            pa.stop()
            pb.stop()
            relayProcess.stop()
        }
        let schema = scratch.write("s.sql", "CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT, output_t INTEGER);")
        #expect(try lode(["dataset", "create", "mines", "--schema", schema] + a.flags).status == 0)
        #expect(
            try lode(["import", "mines", "mines", scratch.write("m.csv", "id,name,output_t\nmp,Mountain Pass,45455\nmw,Mount Weld,\n")] + a.flags)
                .status == 0)
        var r = try lode(["sync", "--wait", "--timeout", "30"] + a.flags)
        #expect(r.status == 0 && r.stdout == "in sync\n", "\(r)")
        #expect(try lode(["sync", "--wait", "--timeout", "30"] + b.flags).status == 0)
        #expect(try export(b) == export(a))
        // An edit at b reaches a.
        #expect(try lode(["exec", "mines", "UPDATE mines SET output_t = 50000 WHERE id = 'mp'"] + b.flags).stdout == "1\n")
        #expect(try lode(["sync", "--wait", "--timeout", "30"] + b.flags).status == 0)
        #expect(try lode(["sync", "--wait", "--timeout", "30"] + a.flags).status == 0)
        #expect(try export(a).contains("mp,Mountain Pass,50000"))
        // Status shows the peer and its state.
        r = try lode(["status", "--format", "json"] + a.flags)
        #expect(r.stdout.contains("\"state\" : \"connected\"") && r.stdout.contains("\"site\" : \"relay\""), "\(r)")

        // The relay stops; both sides edit; sync cannot finish and says why.
        let stopped = relayProcess.stop()
        #expect(stopped == 0, "\(relayProcess.logText.suffix(4000))")
        _ = try lode(["exec", "mines", "UPDATE mines SET name = 'Mountain Pass (MP Materials)' WHERE id = 'mp'"] + a.flags)
        _ = try lode(["exec", "mines", "INSERT INTO mines(id, name) VALUES ('bo', 'Bayan Obo')"] + b.flags)
        _ = try lode(["exec", "mines", "UPDATE mines SET output_t = 1 WHERE id = 'mw'"] + a.flags)
        _ = try lode(["exec", "mines", "UPDATE mines SET output_t = 2 WHERE id = 'mw'"] + b.flags)
        r = try lode(["sync", "--wait", "--timeout", "2"] + a.flags)
        #expect(r.status == 1 && r.stderr.contains(relay.address) && r.stderr.contains("unreachable"), "\(r)")
        // It comes back; everything converges.
        relayProcess = try serve(relay)
        for s in [a, b, a] { #expect(try lode(["sync", "--wait", "--timeout", "30"] + s.flags).status == 0) }
        let final = try export(a)
        #expect(try export(b) == final)
        #expect(final.contains("Mountain Pass (MP Materials)") && final.contains("Bayan Obo"), "\(final)")
        #expect(try lode(["conflicts", "mines", "--format", "csv"] + a.flags).lines.count == 2)
    }

    /// One editor signs a checkpoint; the other co-signs it by itself once
    /// sync brings it the commits, and both then list it complete; then one
    /// compacts to it and edits still travel both ways. A reader site may
    /// not sign, and its node, wanting three signatures, may not compact.
    @Test func aCheckpointIsCoSignedBySyncAlone() throws {
        let a = try site("cp-a", role: "editor")
        let b = try site("cp-b", role: "editor")
        let r = try site("cp-r", role: "reader")
        let pa = try serve(a)
        let pb = try serve(b, peers: [a])
        // The reader wants three signatures: only two editors can sign.
        let pr = try ServeProcess(dataDir: r.dir, extra: ["--peer", a.address, "--checkpoint-quorum", "3"], listen: r.address)
        defer {
            pa.stop()
            pb.stop()
            pr.stop()
        }
        let schema = scratch.write("cp.sql", "CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT, output_t INTEGER);")
        #expect(try lode(["dataset", "create", "mines", "--schema", schema] + a.flags).status == 0)
        _ = try lode(["import", "mines", "mines", scratch.write("cp.csv", "id,name,output_t\nmp,Mountain Pass,45455\nmw,Mount Weld,\n")] + a.flags)
        _ = try lode(["exec", "mines", "UPDATE mines SET output_t = 1 WHERE id = 'mw'"] + a.flags)
        var out = try lode(["checkpoint", "mines", "--format", "csv"] + a.flags)
        #expect(out.status == 0 && out.lines.count == 2 && out.lines[1].hasSuffix(",cp-a,no (1 of 2)"), "\(out)")
        let id = out.lines[1].split(separator: ",")[0]
        #expect(out.lines[1].split(separator: ",")[2] == "2", "the digest covers the two mines; \(out)")
        out = try syncUntilListed(id, ending: ",cp-a cp-b,yes", at: a)
        #expect(out.lines.contains { $0.hasPrefix(id) && $0.hasSuffix(",cp-a cp-b,yes") }, "\(out) \(pb.logText.suffix(2000))")
        _ = try lode(["sync", "--wait", "--timeout", "10"] + r.flags)
        out = try lode(["checkpoint", "mines", "--list", "--format", "json"] + r.flags)
        #expect(out.stdout.contains("\"complete\" : false") && out.stdout.contains("\"quorum\" : 3"), "\(out)")
        out = try lode(["compact", "mines"] + r.flags)
        #expect(out.status == 1 && out.stderr.contains("has the 3 signatures"), "not complete there: \(out)")
        out = try lode(["checkpoint", "mines"] + r.flags)
        #expect(out.status == 1 && out.stderr.contains("reader"), "\(out)")
        // Complete: a compacts to it, keeping no history; what it shows and serves stays.
        let before = try lode(["export", "mines", "mines", "--format", "csv"] + a.flags).stdout
        let then = Date().addingTimeInterval(-1).ISO8601Format()
        out = try lode(["compact", "mines", "--keep-history", "0", "--format", "json"] + a.flags)
        #expect(out.status == 0 && out.stdout.contains("\"checkpoint\" : \"\(id)\""), "\(out)")
        #expect(!out.stdout.contains("\"commitsDropped\" : 0,"), "\(out)")
        #expect(try lode(["export", "mines", "mines", "--format", "csv"] + a.flags).stdout == before)
        out = try lode(["query", "mines", "SELECT count(*) FROM mines", "--as-of", then] + a.flags)
        #expect(out.status == 1 && out.stderr.contains("compacted"), "\(out)")
        out = try lode(["history", "mines", "mines", "mw", "--format", "csv"] + a.flags)
        #expect(out.status == 0 && out.stdout.contains("output_t,1,"), "\(out)")
        #expect(try lode(["compact", "mines", "--keep-history", "soon"] + a.flags).status == 2)
        // Writes go on and travel both ways.
        _ = try lode(["exec", "mines", "UPDATE mines SET output_t = 2 WHERE id = 'mw'"] + a.flags)
        _ = try lode(["exec", "mines", "INSERT INTO mines(id, name) VALUES ('bo', 'Bayan Obo')"] + b.flags)
        for s in [a, b, a] { _ = try lode(["sync", "--wait", "--timeout", "10"] + s.flags) }
        let after = try lode(["export", "mines", "mines", "--format", "csv"] + a.flags).stdout
        #expect(after.contains("mw,Mount Weld,2") && after.contains("bo,Bayan Obo"), "\(after)")
        #expect(try lode(["export", "mines", "mines", "--format", "csv"] + b.flags).stdout == after)
        // A new node starts from a's compacted backup (a snapshot at the
        // checkpoint, its digest checked), then syncs what follows.
        let file = scratch.file("cp-mines.lodebackup")
        #expect(try lode(["backup", "mines", file] + a.flags).status == 0)
        _ = try lode(["exec", "mines", "UPDATE mines SET name = 'Mountain Pass Mine' WHERE id = 'mp'"] + a.flags)
        let c = try site("cp-c", role: "editor")
        let pc = try serve(c)
        defer { pc.stop() }
        out = try lode(["restore", file, "--format", "csv"] + c.flags)
        #expect(out.status == 0 && out.lines.count == 2 && out.lines[1].hasSuffix(",\(id)"), "\(out)")
        #expect(try lode(["export", "mines", "mines", "--format", "csv"] + c.flags).stdout == after)
        #expect(try lode(["peers", "add", a.address] + c.flags).status == 0)
        _ = try lode(["sync", "--wait", "--timeout", "10"] + c.flags)
        let latest = try lode(["export", "mines", "mines", "--format", "csv"] + a.flags).stdout
        let atC = try lode(["export", "mines", "mines", "--format", "csv"] + c.flags).stdout
        #expect(latest.contains("Mountain Pass Mine") && atC == latest, "\(atC)")
        // A node that wants more signatures than the checkpoint can have
        // (three editors, c among them, may sign) will not start from it.
        let d = try site("cp-d", role: "editor")
        let pd = try ServeProcess(dataDir: d.dir, extra: ["--checkpoint-quorum", "4"], listen: d.address)
        defer { pd.stop() }
        out = try lode(["restore", file] + d.flags)
        #expect(out.status == 1 && out.stderr.contains("no checkpoint with the 4 signatures"), "\(out)")
        // Synced with a instead, d asks for commits a compacted away: once
        // a no longer holds them in memory either (a restart), it cannot
        // send them, and says so in its status (not of c, which started
        // from the snapshot, nor of b, which holds them all).
        pa.stop()
        let pa2 = try serve(a)
        defer { pa2.stop() }
        #expect(try lode(["peers", "add", a.address] + d.flags).status == 0)
        var status = ""
        for _ in 0..<300 {
            status = try lode(["status", "--format", "json"] + a.flags).stdout
            if status.contains("\"kind\" : \"needs-snapshot\"") { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(status.contains("\"kind\" : \"needs-snapshot\"") && status.contains("lacks 3 commits this node compacted away"), "\(status)")
        let parsed = try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any]
        let alerts = ((parsed?["datasets"] as? [[String: Any]])?.first?["alerts"] as? [[String: Any]]) ?? []
        #expect(alerts.map { "\($0["kind"] ?? "") \($0["site"] ?? "") \($0["seq"] ?? "")" } == ["needs-snapshot cp-d 3"], "d alone: \(status)")
        #expect(pa2.logText.contains("a peer cannot catch up from this node"), "\(pa2.logText.suffix(2000))")
        // d was offered a snapshot first, took it, and refused it itself:
        // it wants four signatures.
        #expect(
            pd.logText.contains("refused a peer's snapshot") && pd.logText.contains("no checkpoint with the 4 signatures"),
            "\(pd.logText.suffix(3000))")
        #expect(try lode(["query", "mines", "SELECT count(*) FROM mines"] + d.flags).status != 0, "d holds nothing of it")
        // A new node that only peers with a starts from a's snapshot, handed
        // over by sync (its signatures and digest checked here), then syncs
        // what follows.
        _ = try lode(["exec", "mines", "UPDATE mines SET output_t = 3 WHERE id = 'mw'"] + a.flags)
        let e = try site("cp-e", role: "editor")
        let pe = try serve(e, peers: [a])
        defer { pe.stop() }
        let wanted = try lode(["export", "mines", "mines", "--format", "csv"] + a.flags).stdout
        var atE = ""
        for _ in 0..<300 {
            atE = try lode(["export", "mines", "mines", "--format", "csv"] + e.flags).stdout
            if atE == wanted { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(atE == wanted && wanted.contains("mw,Mount Weld,3"), "\(atE) \(pe.logText.suffix(3000))")
        #expect(
            pa2.logText.contains("offering a snapshot") && pe.logText.contains("installed a peer's snapshot"),
            "\(pe.logText.suffix(3000))")
        // The checkpoint came with it (c, an editor, co-signed it too by now).
        out = try lode(["checkpoint", "mines", "--list", "--format", "csv"] + e.flags)
        #expect(out.lines.contains { $0.hasPrefix(id) && $0.contains(",cp-a cp-b") && $0.hasSuffix(",yes") }, "\(out)")
        // Written at e, it travels back to a.
        _ = try lode(["exec", "mines", "INSERT INTO mines(id, name) VALUES ('ly', 'Lynas Kalgoorlie')"] + e.flags)
        for s in [e, a] { _ = try lode(["sync", "--wait", "--timeout", "10"] + s.flags) }
        #expect(try lode(["export", "mines", "mines", "--format", "csv"] + a.flags).stdout.contains("ly,Lynas Kalgoorlie"))
        // Nothing of the transfers is left in either node's tmp folder.
        for dir in [a.dir, e.dir] {
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/tmp")) ?? []).filter { $0.hasPrefix("snapshot-in") }
            #expect(left.isEmpty, "\(dir): \(left)")
        }
    }

    /// A site offline while the others compact, with edits of its own,
    /// catches up by sync from a node that compacted: offered a snapshot,
    /// it merges it into what it holds, gets what followed, and its own
    /// edits (one of them to a row deleted meanwhile) end where the others'
    /// commits would have put them. No one then says it needs a snapshot.
    @Test func aSiteOfflineAcrossACompactionCatchesUpBySync() throws {
        let a = try site("off-a", role: "editor")
        let b = try site("off-b", role: "editor")
        let f = try site("off-f", role: "editor")
        var pa = try serve(a)
        let pb = try serve(b, peers: [a])
        var pf = try serve(f, peers: [a])
        defer {
            pa.stop()
            pb.stop()
            pf.stop()
        }
        let schema = scratch.write("off.sql", "CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT, output_t INTEGER);")
        #expect(try lode(["dataset", "create", "mines", "--schema", schema] + a.flags).status == 0)
        let csv = scratch.write("off.csv", "id,name,output_t\nmp,Mountain Pass,45455\nmw,Mount Weld,\nbo,Bayan Obo,\n")
        #expect(try lode(["import", "mines", "mines", csv] + a.flags).status == 0)
        for s in [a, b, f, a] { _ = try lode(["sync", "--wait", "--timeout", "10"] + s.flags) }
        #expect(try export(f) == export(a))
        // f goes offline; meanwhile a and b write, sign, and a compacts.
        pf.stop()
        _ = try lode(["exec", "mines", "UPDATE mines SET output_t = 1 WHERE id = 'mw'"] + a.flags)
        _ = try lode(["exec", "mines", "DELETE FROM mines WHERE id = 'bo'"] + a.flags)
        var out = try lode(["checkpoint", "mines", "--format", "csv"] + a.flags)
        let id = out.lines.count == 2 ? String(out.lines[1].split(separator: ",")[0]) : ""
        #expect(!id.isEmpty, "\(out)")
        _ = try syncUntilListed(id, ending: ",yes", at: a)
        out = try lode(["compact", "mines", "--keep-history", "0", "--format", "json"] + a.flags)
        #expect(out.status == 0 && out.stdout.contains("\"checkpoint\" : \"\(id)\""), "\(out)")
        // What a holds in memory could still serve f: restarted, it cannot.
        pa.stop()
        pa = try serve(a)
        _ = try lode(["exec", "mines", "UPDATE mines SET name = 'Mountain Pass Mine' WHERE id = 'mp'"] + a.flags)
        // f, still alone, writes: a new row, and to the row a deleted.
        pf = try serve(f)
        _ = try lode(["exec", "mines", "INSERT INTO mines(id, name) VALUES ('ly', 'Lynas Kalgoorlie')"] + f.flags)
        _ = try lode(["exec", "mines", "UPDATE mines SET output_t = 9 WHERE id = 'bo'"] + f.flags)
        // Back in touch with a alone.
        #expect(try lode(["peers", "add", a.address] + f.flags).status == 0)
        var (atA, atF) = ("", "")
        for _ in 0..<300 {
            (atA, atF) = (try export(a), try export(f))
            if atA == atF && atA.contains("ly,Lynas Kalgoorlie") { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(atA == atF, "\(atF) \(pf.logText.suffix(3000))")
        #expect(
            atA.contains("mp,Mountain Pass Mine,45455") && atA.contains("mw,Mount Weld,1") && atA.contains("ly,Lynas Kalgoorlie")
                && !atA.contains("bo,"), "the delete wins over f's update: \(atA)")
        #expect(pa.logText.contains("offering a snapshot"), "\(pa.logText.suffix(3000))")
        #expect(pf.logText.contains("merged the rows of checkpoint \(id)"), "\(pf.logText.suffix(3000))")
        // b gets f's edits too, and no node names anyone as needing a snapshot.
        for s in [f, a, b] { _ = try lode(["sync", "--wait", "--timeout", "10"] + s.flags) }
        #expect(try export(b) == atA)
        let status = try lode(["status", "--format", "json"] + a.flags).stdout
        #expect(!status.contains("needs-snapshot"), "\(status)")
    }

    @Test func aClientWithoutACertificateCannotCompleteASession() throws {
        let s = try site("solo", role: "editor")
        let p = try serve(s)
        defer { p.stop() }
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["s_client", "-connect", s.address, "-tls1_3", "-quiet"]
        let input = Pipe(), output = Pipe()
        openssl.standardInput = input
        openssl.standardOutput = output
        openssl.standardError = output
        guard (try? openssl.run()) != nil else { return }  // no openssl here
        signal(SIGPIPE, SIG_IGN)  // openssl may be gone by the time we write
        usleep(700_000)
        try? input.fileHandleForWriting.write(contentsOf: Data("hello\n".utf8))
        usleep(300_000)
        try? input.fileHandleForWriting.close()
        openssl.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(openssl.terminationStatus != 0, "\(text)")
        #expect(text.contains("certificate required"), "\(text)")
        #expect(p.logText.contains("refused a sync connection"))
        // The node keeps serving.
        #expect(try lode(["status"] + s.flags).status == 0)
    }

    @Test func aRemoteClientUsesTheAPIOverMutualTLSWithinItsRole() throws {
        let s = try site("hub", role: "editor")
        let apiPort = freePort()
        let p = try ServeProcess(dataDir: s.dir, extra: ["--api-listen", "127.0.0.1:\(apiPort)"], listen: s.address)
        defer { p.stop() }
        #expect(
            try lode(
                ["dataset", "create", "mines", "--schema", scratch.write("s.sql", "CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT);")] + s.flags
            ).status == 0)
        // A reader's certificate may read but not write; an editor's may write.
        let reader = try site("remote-reader", role: "reader")
        let editor = try site("remote-editor", role: "editor")
        func remote(_ site: Site) -> [String] {
            [
                "--node", "127.0.0.1:\(apiPort)", "--cert", site.dir + "/site.pem", "--key", site.dir + "/site.key", "--ca",
                scratch.file("ca") + "/ca.pem",
            ]
        }
        var r = try lode(["exec", "mines", "INSERT INTO mines(id, name) VALUES ('x', 'X')"] + remote(editor))
        #expect(r.status == 0 && r.stdout == "1\n", "\(r)")
        r = try lode(["query", "mines", "SELECT id FROM mines"] + remote(reader))
        #expect(r.status == 0 && r.stdout == "id\r\nx\r\n", "\(r)")
        r = try lode(["exec", "mines", "DELETE FROM mines"] + remote(reader))
        #expect(r.status == 1 && r.stderr.contains("reader"), "\(r)")
        // Without the right flags: usage error.
        #expect(try lode(["status", "--node", "127.0.0.1:\(apiPort)"]).status == 2)
    }
}

@Suite struct DemoTests {
    @Test func theDemoRunsAndEndsConverged() throws {
        let r = try lode(["demo", "--fast"])
        #expect(r.status == 0, "\(r)")
        #expect(r.stdout.contains("all three are identical"), "\(r.stdout)")
        #expect(r.stdout.contains("won over 60000 by lyon"), "\(r.stdout)")
        #expect(r.stdout.contains("by lyon on facilities/mountain-pass"), "\(r.stdout)")
        // Its output is a pipe here, not a terminal: no escape codes in it.
        #expect(!r.stdout.contains("\u{1B}"), "\(r.stdout.prefix(200).debugDescription)")
    }
}

@Suite struct WatchTests {
    let scratch = TempDir("lode-cli")

    @Test func watchReprintsWhenAChangeAltersTheResult() throws {
        let dir = scratch.file("w")
        let server = try ServeProcess(dataDir: dir)
        defer { server.stop() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: lodeBinary)
        p.arguments = ["watch", "rare-earths", "SELECT id, status FROM facilities WHERE id = 'mp-10x'", "--format", "csv", "--data-dir", dir]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = Pipe()
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        let reader = LineReader(out.fileHandleForReading)
        #expect(reader.next(timeout: 30) == "id,status")
        #expect(reader.next(timeout: 30) == "mp-10x,planned")
        // A change that does not alter the result prints nothing; one that does, prints again.
        _ = try lode(["exec", "rare-earths", "UPDATE facilities SET notes = 'x' WHERE id = 'bayan-obo'", "--data-dir", dir])
        _ = try lode(["exec", "rare-earths", "UPDATE facilities SET status = 'construction' WHERE id = 'mp-10x'", "--data-dir", dir])
        #expect(reader.next(timeout: 30) == "id,status")
        #expect(reader.next(timeout: 30) == "mp-10x,construction")
        // SIGTERM stops the node promptly although a watch is open, and the watch ends.
        #expect(server.stop() == 0)
        let deadline = Date().addingTimeInterval(10)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!p.isRunning)
    }
}

extension ClusterCLITests {
    /// SIGTERM stops a node promptly although a browser holds its peers
    /// page open (a server-sent events stream): the stream used to hold the
    /// node's graceful shutdown until the browser went away.
    @Test func anOpenWorkspaceStreamDoesNotHoldUpSIGTERM() throws {
        let dir = scratch.file("sse")
        let server = try ServeProcess(dataDir: dir, extra: ["--web", "127.0.0.1:0"])
        defer { server.stop() }
        let link = try lode(["ui", "--data-dir", dir]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let url = try #require(URL(string: link))
        let port = try #require(url.port)
        // The link's page, then its button's POST, as a browser signs in.
        let form = url.query ?? ""
        let signIn = try RawHTTP.request(
            port: port,
            "POST /signin HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: \(form.utf8.count)\r\nConnection: close\r\n\r\n\(form)"
        )
        let cookie = try #require(signIn.firstMatch(of: /Set-Cookie: (lode_session=[^;]+)/)?.1, "\(signIn)")
        let stream = try RawHTTP.open(port: port, "GET /peers/events HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nCookie: \(cookie)\r\n\r\n")
        defer { close(stream) }
        #expect(RawHTTP.read(stream, timeout: 10).contains("data: "), "the stream sends the peers")
        #expect(server.stop() == 0, "the node did not stop within 15 s of SIGTERM with a peers page open")
    }
}

/// Just enough HTTP/1.1 over a socket to test the workspace from here.
enum RawHTTP {
    static func open(port: Int, _ request: String) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else {
            close(fd)
            throw CocoaError(.fileReadUnknown)
        }
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        return fd
    }

    static func read(_ fd: Int32, timeout: TimeInterval) -> String {
        var out = Data()
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) > 0 else { if !out.isEmpty { break } else { continue } }
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            out.append(contentsOf: buf[..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func request(port: Int, _ request: String) throws -> String {
        let fd = try open(port: port, request)
        defer { close(fd) }
        return read(fd, timeout: 10)
    }
}

/// Reads lines from a pipe with a timeout.
final class LineReader: @unchecked Sendable {
    private let handle: FileHandle
    private var buffer = Data()
    init(_ handle: FileHandle) { self.handle = handle }

    func next(timeout: TimeInterval) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let i = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                buffer.removeSubrange(...i)
                return line
            }
            var fds = pollfd(fd: handle.fileDescriptor, events: Int16(POLLIN), revents: 0)
            if poll(&fds, 1, 100) > 0 {
                let chunk = handle.availableData
                if chunk.isEmpty { return nil }
                buffer.append(chunk)
            }
        }
        return nil
    }
}
