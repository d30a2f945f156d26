import ArgumentParser
import Foundation
import LodeCore
import LodeNode
import LodeStore
import LodeSync
import Logging

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Three nodes in one process on loopback: offline edits, a conflict, annotations, reconnect, convergence, told step by step.",
        discussion: "Everything happens in a temporary directory, removed at the end (keep it with --keep). Example: lode demo")
    @Flag(help: "Keep the demo's directory and print where it is.") var keep = false
    @Flag(help: "Do not pause between steps.") var fast = false

    func run() async throws {
        let root = NSTemporaryDirectory() + "lode-demo-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { if !keep { try? FileManager.default.removeItem(atPath: root) } }
        var logger = Logger(label: "demo")
        logger.logLevel = .critical
        let demo = Demo(root: root, logger: logger, pause: fast ? 0 : 0.6)
        try await demo.run()
        if keep { out("\nThe demo's nodes are in \(root)\n") }
    }
}

/// The demo's script.
struct Demo {
    let root: String
    let logger: Logger
    let pause: Double

    func say(_ step: String, _ text: String) async {
        // Bold step numbers on a terminal; plain text in a file or a pipe.
        out(stdoutIsTerminal ? "\n\u{1B}[1m\(step)\u{1B}[0m \(text)\n" : "\n\(step) \(text)\n")
        if pause > 0 { try? await Task.sleep(for: .milliseconds(Int(pause * 1000))) }
    }

    func show(_ node: RunningNode, _ sql: String) async throws {
        let rows = Collected()
        try await node.node.replica("rare-earths").query(sql) { e in rows.add(e) }
        let text = RecordPrinter(format: .table, maxWidth: 40).table(columns: rows.columns, rows: rows.rows)
        out(text.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n") + "\n")
    }

    func start(_ name: String, role: Role, caDir: String) async throws -> LaunchedNode {
        let dir = root + "/" + name
        try Node.initialize(dataDir: dir, site: name, role: role, caDir: caDir)
        var options = ServeOptions(dataDir: dir, listen: "127.0.0.1:0")
        options.handleSignals = false
        return try await NodeServer.launch(options, logger: logger)
    }

    func converge(_ nodes: [RunningNode]) async {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            var done = true
            for n in nodes where !(await n.sync.waitUntilInSync(timeout: .milliseconds(200)).inSync) { done = false }
            let vectors = nodes.map { (try? $0.node.replica("rare-earths").vector) ?? VersionVector() }
            if done && Set(vectors).count == 1 { return }
        }
    }

    func run() async throws {
        await say("1.", "A cluster CA, then three sites: berlin and lyon (editors) and relay-1 (a headless relay).")
        let caDir = root + "/ca"
        try Identity.createCA(dir: caDir, cluster: "demo")
        let launched = [
            try await start("relay-1", role: .relay, caDir: caDir), try await start("berlin", role: .editor, caDir: caDir),
            try await start("lyon", role: .editor, caDir: caDir),
        ]
        let (relay, berlin, lyon) = (launched[0].running, launched[1].running, launched[2].running)
        defer { Task { for n in launched { await n.stop() } } }
        let relayAddress = "127.0.0.1:\(relay.sync.port ?? 0)"
        out("    relay-1 listens on \(relayAddress) (mutual TLS 1.3, certificates from the demo CA)\n")

        await say("2.", "berlin and lyon dial the relay; they never talk to each other directly.")
        for n in [berlin, lyon] {
            try n.node.addPeer(relayAddress)
            n.sync.peersChanged()
        }

        await say("3.", "berlin loads the rare-earths dataset (174 sourced rows). Its signed commits flow through the relay to lyon.")
        let rows = try await DevelopmentBootstrap.loadSeed(into: berlin.node)
        await converge([relay, berlin, lyon])
        out("    berlin loaded \(rows) rows; lyon now holds:\n")
        try await show(lyon, "SELECT 'facilities' AS tbl, count(*) AS rows FROM facilities UNION ALL SELECT 'elements', count(*) FROM elements")

        await say("4.", "lyon goes offline (a laptop on a plane) and keeps working.")
        lyon.sync.setOffline(true)
        let lyonReplica = try lyon.node.replica("rare-earths")
        let berlinReplica = try berlin.node.replica("rare-earths")
        _ = try await lyonReplica.exec("UPDATE facilities SET capacity_t_per_year = 60000 WHERE id = 'mountain-pass'")
        let note = try await lyonReplica.annotate(
            NewAnnotation(
                table: "facilities", pk: "mountain-pass", column: "capacity_t_per_year", text: "60,000 t is the 2027 target, not output",
                tags: ["check"]))
        out("    lyon, offline: capacity of mountain-pass := 60000, and annotation \(note) tagged 'check'\n")

        await say("5.", "Meanwhile berlin edits the same cell, and deletes a row lyon has not touched.")
        try await Task.sleep(for: .milliseconds(20))  // berlin's edit is the later one by the clock
        _ = try await berlinReplica.exec("UPDATE facilities SET capacity_t_per_year = 50000, as_of = 2025 WHERE id = 'mountain-pass'")
        _ = try await berlinReplica.exec("DELETE FROM facilities WHERE id = 'mp-10x'")
        out("    berlin: capacity of mountain-pass := 50000, as_of := 2025; facility mp-10x deleted\n")
        out("    berlin sees:\n")
        try await show(berlin, "SELECT id, capacity_t_per_year, as_of FROM facilities WHERE id IN ('mountain-pass', 'mp-10x')")
        out("    lyon sees:\n")
        try await show(lyon, "SELECT id, capacity_t_per_year, as_of FROM facilities WHERE id IN ('mountain-pass', 'mp-10x')")

        await say("6.", "lyon reconnects. Each side sends what the other lacks; both apply the same merge rules.")
        lyon.sync.setOffline(false)
        await converge([relay, berlin, lyon])
        for (name, n) in [("berlin", berlin), ("lyon", lyon), ("relay-1", relay)] {
            out("    \(name):\n")
            try await show(n, "SELECT id, capacity_t_per_year, as_of FROM facilities WHERE id IN ('mountain-pass', 'mp-10x')")
        }

        await say(
            "7.", "The two writes to one cell were concurrent: the later one (by the hybrid logical clock) shows, and both are kept as a conflict.")
        for c in try await berlinReplica.conflicts() {
            out(
                "    \(c.table).\(c.pk).\(c.column): \(ResultEncoderShim.show(c.winnerValue)) by \(c.winnerSiteName) won over \(ResultEncoderShim.show(c.loserValue)) by \(c.loserSiteName)\n"
            )
        }

        await say("8.", "lyon's annotation reached berlin too, with its tag and author:")
        for a in try await berlinReplica.annotations(AnnotationFilter(tag: "check")) {
            out("    \(a.id) by \(a.author) on \(a.table)/\(a.pk).\(a.column ?? ""): \(a.text)\n")
        }

        await say("9.", "Every replica holds the same commits and identical tables:")
        var dumps: [String] = []
        for (name, n) in [("berlin", berlin), ("lyon", lyon), ("relay-1", relay)] {
            let replica = try n.node.replica("rare-earths")
            let all = Collected()
            for t in try await replica.schema() {
                try await replica.query("SELECT * FROM \(t.name) ORDER BY 1") { all.add($0) }
            }
            dumps.append("\(all.rows)")
            let names = Dictionary(try await replica.sites().map { ($0.site, $0.name ?? $0.site.short) }, uniquingKeysWith: { a, _ in a })
            let vector = replica.vector.sorted.map { "\(names[$0.site] ?? $0.site.short):\($0.seq)" }.joined(separator: " ")
            out("    \(name): \(all.rows.count) rows in 5 tables, version vector {\(vector)}\n")
        }
        out(Set(dumps).count == 1 ? "    all three are identical, row for row and cell for cell\n" : "    they differ (this is a bug)\n")
        out("\nDone. Try it with real processes: README.md, \"Running several sites\".\n")
    }
}

/// Collects a query's result.
final class Collected: @unchecked Sendable {
    var columns: [String] = []
    var rows: [[Value]] = []
    func add(_ e: QueryEvent) {
        switch e {
        case .columns(let c): columns = c
        case .row(let r): rows.append(r)
        }
    }
}

enum ResultEncoderShim {
    static func show(_ v: Value) -> String { RecordPrinter(format: .table).display(v) }
}
