import Foundation
import LodeCore
import LodeProtocol
import LodeSQLite
import LodeStore
import LodeSync
import LodeTestSupport
import Testing

@testable import LodeNode

let clusterSchema = """
    CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', country TEXT, output_t INTEGER);
    """

/// Sync between real nodes, in one process, over mutual TLS on loopback.
@Suite(.serialized) struct ClusterTests {
    let scratch = TempDir("lode-node")

    func makeNodes(_ specs: [(String, Role)]) throws -> [TestNode] {
        let caDir = scratch.file("ca")
        if !FileManager.default.fileExists(atPath: caDir + "/ca.pem") { try Identity.createCA(dir: caDir, cluster: "test") }
        return try specs.map { try TestNode(name: $0.0, role: $0.1, caDir: caDir, root: scratch.path) }
    }

    /// Three editing sites and a relay: concurrent and offline edits, a
    /// delete concurrent with an update, a re-insert, annotations and a
    /// schema change made while one site was offline all converge to
    /// byte-identical tables.
    @Test func threeSitesAndARelayConverge() async throws {
        let nodes = try makeNodes([("relay", .relay), ("berlin", .editor), ("lyon", .editor), ("perth", .editor)])
        let (relay, berlin, lyon, perth) = (nodes[0], nodes[1], nodes[2], nodes[3])
        for n in nodes { try await n.start() }
        for site in [berlin, lyon, perth] { try site.connect(to: relay) }
        try await berlin.node.createDataset("mines", schema: clusterSchema)
        _ = try await berlin.replica("mines").exec(
            "INSERT INTO mines(id, name, output_t) VALUES ('mp', 'Mountain Pass', 45455), ('mw', 'Mount Weld', 0), ('bo', 'Bayan Obo', NULL)")
        let apart1 = await waitForSync(nodes)
        #expect(apart1 == [])

        // Concurrent edits of one cell, and a delete concurrent with an update.
        _ = try await berlin.replica("mines").exec("UPDATE mines SET output_t = 50000 WHERE id = 'mp'")
        _ = try await lyon.replica("mines").exec("UPDATE mines SET output_t = 51000 WHERE id = 'mp'")
        _ = try await perth.replica("mines").exec("DELETE FROM mines WHERE id = 'mw'")
        _ = try await lyon.replica("mines").exec("UPDATE mines SET country = 'Australia' WHERE id = 'mw'")
        _ = try await berlin.replica("mines").annotate(NewAnnotation(table: "mines", pk: "bo", text: "capacity unverified", tags: ["check"]))
        let apart2 = await waitForSync(nodes)
        #expect(apart2 == [])

        // Perth goes offline; the others change the schema and write; Perth
        // edits offline too; then it comes back.
        await perth.stop()
        _ = try await berlin.replica("mines").alter(
            SchemaParser.parse(
                clusterSchema.replacingOccurrences(of: "output_t INTEGER", with: "output_t INTEGER, status TEXT NOT NULL DEFAULT 'operating'")))
        let apart3 = await waitForSync([relay, berlin, lyon])
        #expect(apart3 == [])
        _ = try await lyon.replica("mines").exec("UPDATE mines SET status = 'expanding' WHERE id = 'mp'")
        _ = try await berlin.replica("mines").exec("INSERT INTO mines(id, name) VALUES ('mw', 'Mount Weld (re-opened)')")
        try await perth.start()
        _ = try await perth.replica("mines").exec("INSERT INTO mines(id, name, country) VALUES ('kv', 'Kvanefjeld', 'Greenland')")
        let apart4 = await waitForSync(nodes)
        #expect(apart4 == [])

        let expected = try await berlin.dump("mines")
        for n in [relay, lyon, perth] {
            #expect(try await n.dump("mines") == expected, "\(n.name) differs")
        }
        // The delete won over the concurrent update; the re-insert started clean.
        let mw = Lines()
        try await relay.replica("mines").query("SELECT name, country, status FROM mines WHERE id = 'mw'") { e in mw.add("\(e)") }
        #expect(mw.all.last == "row([LodeCore.Value.text(\"Mount Weld (re-opened)\"), LodeCore.Value.null, LodeCore.Value.text(\"operating\")])")
        // The concurrent writes to mp.output_t are a conflict everywhere, both values kept.
        for n in [berlin, lyon, perth] {
            let c = try await n.replica("mines").conflicts()
            #expect(c.contains { $0.pk == "mp" && Set([$0.winnerValue, $0.loserValue]) == [.integer(50000), .integer(51000)] }, "\(n.name)")
        }
        #expect(try await perth.replica("mines").annotations().first?.author == "berlin")
        for n in nodes { await n.stop() }
    }

    @Test func aChainDeliversAndPushesEveryNewCommit() async throws {
        let nodes = try makeNodes([("a", .editor), ("b", .relay), ("c", .editor)])
        for n in nodes { try await n.start() }
        try nodes[0].connect(to: nodes[1])
        try nodes[2].connect(to: nodes[1])
        try await nodes[0].node.createDataset("mines", schema: clusterSchema)
        let apart5 = await waitForSync(nodes)
        #expect(apart5 == [])
        // Pushes: each edit at A shows at C without any `sync`.
        for i in 0..<5 {
            _ = try await nodes[0].replica("mines").exec("INSERT INTO mines(id, name) VALUES ('m\(i)', 'Mine \(i)')")
            let deadline = ContinuousClock.now + .seconds(10)
            while try (try? nodes[2].replica("mines").vector) != nodes[0].replica("mines").vector, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        #expect(try nodes[2].replica("mines").vector == nodes[0].replica("mines").vector)
        #expect(try await nodes[2].dump("mines") == nodes[0].dump("mines"))
        for n in nodes { await n.stop() }
    }

    /// Two sites that each wrote megabytes offline push to each other at
    /// once when they reconnect; neither may wait on the other forever.
    @Test func bothSidesPushingAtOnceConverge() async throws {
        let nodes = try makeNodes([("east", .editor), ("west", .editor)])
        for n in nodes { try await n.start() }
        try nodes[0].connect(to: nodes[1])
        try await nodes[0].node.createDataset("mines", schema: clusterSchema)
        let first = await waitForSync(nodes)
        #expect(first == [])
        for n in nodes { n.sync.setOffline(true) }
        for (i, n) in nodes.enumerated() {
            _ = try await n.replica("mines").exec(
                """
                WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 40000)
                INSERT INTO mines(id, name, country) SELECT '\(i)-' || i, printf('%0200d', i), 'site \(i)' FROM k
                """)
        }
        for n in nodes { n.sync.setOffline(false) }
        let apart = await waitForSync(nodes, timeout: .seconds(120))
        #expect(apart == [])
        let counts = Lines()
        try await nodes[1].replica("mines").query("SELECT count(*) FROM mines") { counts.add("\($0)") }
        #expect(counts.all.last == "row([LodeCore.Value.integer(80000)])")
        for n in nodes { await n.stop() }
    }

    @Test func aNodeFromAnotherCACannotConnect() async throws {
        let nodes = try makeNodes([("home", .editor)])
        try Identity.createCA(dir: scratch.file("other-ca"), cluster: "test")
        let stranger = try TestNode(name: "stranger", role: .editor, caDir: scratch.file("other-ca"), root: scratch.path)
        try await nodes[0].start()
        try await stranger.start()
        try await nodes[0].node.createDataset("mines", schema: clusterSchema)
        try stranger.connect(to: nodes[0])
        let r = await stranger.sync.waitUntilInSync(timeout: .seconds(3))
        #expect(!r.inSync)
        #expect(r.apart.first?.contains("unreachable") == true, "\(r.apart)")
        #expect(await nodes[0].sync.status().isEmpty)
        #expect(stranger.node.datasetNames().isEmpty)
        await stranger.stop()
        await nodes[0].stop()
    }

    /// A peer that takes the TCP connection and never answers TLS is not
    /// "connected": until a session with a checked certificate exists the
    /// dialler says "handshake", and a wait calls the peer unreachable; and
    /// the node stops at once, without waiting out the handshake.
    @Test func aPeerStuckBeforeTLSIsInHandshakeNotConnected() async throws {
        let nodes = try makeNodes([("home", .editor)])
        try await nodes[0].start()
        // A listener that never accepts: the kernel completes TCP, nothing speaks TLS.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) == 0 && getsockname(fd, $0, &size) == 0 }
        }
        #expect(bound && listen(fd, 4) == 0)
        let address = "127.0.0.1:\(UInt16(bigEndian: addr.sin_port))"
        try nodes[0].node.addPeer(address)
        nodes[0].sync.peersChanged()
        var states: [String] = []
        while states.last != "handshake" && states.count < 50 {
            states.append(await nodes[0].sync.status().first { $0.address == address }?.state.rawValue ?? "absent")
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(states.last == "handshake", "\(states)")
        #expect(!states.contains("connected"), "\(states)")
        let r = await nodes[0].sync.waitUntilInSync(timeout: .milliseconds(500))
        #expect(r.apart == ["\(address) is unreachable"], "\(r.apart)")
        // Stopping does not wait out the 10 s handshake limit.
        let stopping = ContinuousClock.now
        await nodes[0].stop()
        #expect(ContinuousClock.now - stopping < .seconds(9))
    }
}
