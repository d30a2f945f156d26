import ArgumentParser
import Foundation
import LodeNode
import Logging

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the node in the foreground; SIGINT or SIGTERM stops it cleanly.",
        discussion: """
            The client API listens on DATA_DIR/lode.sock. With no node in the data directory, serve
            creates a development CA and site and loads the bundled rare-earths dataset.

            Example: lode serve --data-dir ./berlin --listen 127.0.0.1:7444 --peer 127.0.0.1:7443
            """)

    @OptionGroup var node: DataDirOption
    @Option(help: ArgumentHelp("Where peers connect.", valueName: "HOST:PORT")) var listen: String?
    @Option(name: .customLong("peer"), help: ArgumentHelp("A peer to dial (repeatable; kept across restarts).", valueName: "HOST:PORT"))
    var peers: [String] = []
    @Option(
        name: .customLong("api-listen"),
        help: ArgumentHelp("Also serve the client API here over mutual TLS, for `lode --node HOST:PORT --cert --key --ca`.", valueName: "HOST:PORT"))
    var apiListen: String?
    @Option(
        help: ArgumentHelp(
            "Where the workspace (the web page) listens; default 127.0.0.1:7480, or a free port if that is taken (`lode ui` shows it); `off` for none.",
            valueName: "HOST:PORT|off"))
    var web: String?
    @Option(
        name: .customLong("max-clock-drift"),
        help: ArgumentHelp(
            "How far ahead of this machine's clock other sites' commits may be stamped and still apply at once (default 600); later ones are held back until the clock catches up.",
            valueName: "SECONDS"))
    var maxClockDrift: UInt64?
    @Option(
        help: ArgumentHelp(
            "Keep the datasets in this PostgreSQL database instead of SQLite files (relays, server replicas); several nodes may share one.",
            valueName: "postgresql://USER@HOST:PORT/DB"))
    var store: String?
    @Option(help: ArgumentHelp("A config file (see deploy/lode.example.toml).", valueName: "FILE")) var config: String?
    @Option(
        name: .customLong("ops-listen"),
        help: ArgumentHelp("Serve /metrics (Prometheus), /healthz and /readyz over plain HTTP here, for operators.", valueName: "HOST:PORT"))
    var opsListen: String?
    @Option(
        name: .customLong("checkpoint-quorum"),
        help: ArgumentHelp(
            "How many editor sites must sign a checkpoint before this node counts it complete (default 2; kept for later starts).",
            valueName: "N"))
    var checkpointQuorum: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: String?
    @Option(help: ArgumentHelp("Log lines as text (default) or as JSON objects, one per line, for log shippers.", valueName: "text|json"))
    var logFormat: String?

    func run() async throws {
        let file = try config.map { try ConfigFile.load(DataDir.absolute($0)) }
        let dataDir = node.dataDir.map(DataDir.absolute) ?? file?.dataDir.map(DataDir.absolute) ?? node.resolvedDataDir
        let level = Logger.Level(rawValue: logLevel ?? file?.logLevel ?? ProcessInfo.processInfo.environment["LODE_LOG_LEVEL"] ?? "info") ?? .info
        let format = logFormat ?? file?.logFormat ?? "text"
        guard format == "text" || format == "json" else { throw ValidationError("--log-format is text or json, not \(format)") }
        LoggingSystem.bootstrap { label in
            if format == "json" {
                var h = JSONLogHandler(label: label)
                h.logLevel = level
                return h
            }
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "lode")
        var options = ServeOptions(
            dataDir: dataDir, listen: listen ?? file?.listen ?? "127.0.0.1:7443", peers: peers + (file?.peers ?? []),
            apiListen: apiListen ?? file?.apiListen)
        options.web = web
        options.store = store ?? file?.store
        options.opsListen = opsListen ?? file?.opsListen
        if let q = checkpointQuorum ?? file?.checkpointQuorum {
            guard (1...Node.maxCheckpointQuorum).contains(q) else {
                throw ValidationError("--checkpoint-quorum is a number of signatures from 1 to \(Node.maxCheckpointQuorum)")
            }
            options.checkpointQuorum = q
        }
        if let drift = maxClockDrift ?? file?.maxClockDrift {
            guard drift <= ConfigFile.maxClockDriftSeconds else {
                throw ValidationError("--max-clock-drift must be at most \(ConfigFile.maxClockDriftSeconds) seconds (a week)")
            }
            options.maxClockDrift = drift * 1000
        }
        let firstRun = !Node.exists(dataDir: dataDir)
        if firstRun {
            note("lode: no node in \(dataDir); setting up a development node")
            for line in try await DevelopmentBootstrap.run(dataDir: dataDir, store: options.store) { note("lode: \(line)") }
        }
        let flag = DataDir.isDefault(dataDir) ? "" : " --data-dir \(dataDir)"
        try await NodeServer.run(options, logger: logger) { running in
            let id = running.node.identity.certificate
            note(
                "lode: site \(id.name) (\(id.role.rawValue), cluster \(id.cluster)) serving \(running.node.paths.socket), peers on port \(running.sync.port ?? 0)"
            )
            if let web = running.node.workspaceURL {
                note("lode: workspace at \(web) (sign in with a link from `lode ui\(flag)`)")
            }
            if firstRun {
                note(
                    """
                    lode: ready. Try, in another terminal:
                      lode ui\(flag)          (a sign-in link to the workspace, for you)
                      lode status\(flag)
                      lode dataset list\(flag)
                      lode query rare-earths "SELECT symbol, name, under_china_export_control_apr2025 FROM elements"\(flag)
                      lode annotate rare-earths facilities mountain-pass --text "check the 2025 output" --tag check\(flag)
                      lode history rare-earths facilities mountain-pass\(flag)
                    """)
            }
        }
        note("lode: stopped")
    }
}
