import ArgumentParser
import AsyncHTTPClient
import Foundation
import LodeCore
import LodeProtocol
import NIOCore

struct DatasetGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset", abstract: "Create, list and alter datasets.",
        subcommands: [DatasetCreate.self, DatasetList.self, DatasetAlter.self])
}

func readFile(_ path: String) throws -> String {
    guard let s = try? String(contentsOfFile: DataDir.absolute(path), encoding: .utf8) else {
        throw CLIError.failed("cannot read \(path)")
    }
    return s
}

struct DatasetCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a dataset from CREATE TABLE statements (a TEXT primary key is required).",
        discussion: "Example: lode dataset create mines --schema mines.sql")
    @Argument(help: "The dataset name.") var name: String
    @Option(help: ArgumentHelp("A file of CREATE TABLE statements.", valueName: "FILE.sql")) var schema: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        let info = try await node.client().call(
            .POST, "/datasets", json: API.CreateDataset(name: name, schema: try readFile(schema)), as: API.DatasetInfo.self)
        out("created dataset \(info.name) with tables \(info.tables.map(\.name).joined(separator: ", "))\n")
    }
}

struct DatasetList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List datasets with their tables, row counts and sizes.",
        discussion: "Example: lode dataset list --format json")
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let infos = try await node.client().call(.GET, "/datasets", as: [API.DatasetInfo].self)
        if format.resolved == .json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            out(try enc.encode(infos) + Data("\n".utf8))
            return
        }
        var rows: [[Value]] = []
        for d in infos {
            for t in d.tables {
                rows.append([.text(d.name), .text(t.name), .integer(Int64(t.rows)), .text(formatBytes(d.bytes)), .integer(Int64(d.commits))])
            }
            if d.tables.isEmpty { rows.append([.text(d.name), .null, .integer(0), .text(formatBytes(d.bytes)), .integer(Int64(d.commits))]) }
        }
        RecordPrinter(format: format.resolved).print(columns: ["dataset", "table", "rows", "size", "commits"], rows: rows)
    }
}

struct DatasetAlter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alter",
        abstract: "Add the tables and columns FILE declares and the dataset lacks; drops, renames and type changes are refused.",
        discussion: "Example: lode dataset alter rare-earths --schema v2.sql")
    @Argument(help: "The dataset name.") var name: String
    @Option(help: ArgumentHelp("A file of CREATE TABLE statements.", valueName: "FILE.sql")) var schema: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        let r = try await node.client().call(
            .POST, "/datasets/\(percentEncode(name))/alter", json: API.AlterDataset(schema: try readFile(schema)), as: API.AlterResult.self)
        if r.addedTables.isEmpty && r.addedColumns.isEmpty {
            out("nothing to add: \(name) already has every table and column\n")
        } else {
            if !r.addedTables.isEmpty { out("added tables: \(r.addedTables.joined(separator: ", "))\n") }
            if !r.addedColumns.isEmpty { out("added columns: \(r.addedColumns.joined(separator: ", "))\n") }
        }
    }
}

struct SchemaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schema", abstract: "Print the dataset's CREATE TABLE statements.",
        discussion: "Example: lode schema rare-earths > schema.sql")
    @Argument(help: "The dataset name.") var name: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        out(try await node.client().callRaw(.GET, "/datasets/\(percentEncode(name))/schema"))
    }
}

/// Streams a query or export answer to stdout: CSV and JSON straight
/// through, tables after reading every row.
func printResult(_ client: NodeClient, _ format: OutputFormat, request: (ResultFormat) async throws -> HTTPClientResponse) async throws {
    let wire: ResultFormat = format == .table ? .ndjson : (format == .csv ? .csv : .json)
    let response = try await request(wire)
    try await client.checkStreaming(response)
    if format != .table {
        // Progress only when the output goes elsewhere (a file, a pipe).
        let progress = ProgressLine(enabled: stderrIsTerminal && !stdoutIsTerminal)
        var written: UInt64 = 0
        for try await buffer in response.body {
            out(buffer.readableBytesView)
            written += UInt64(buffer.readableBytes)
            progress.show("receiving: \(formatBytes(written))")
        }
        progress.clear()
        return
    }
    var columns: [String] = []
    var rows: [[Value]] = []
    let decoder = JSONDecoder()
    try await forEachLine(of: response) { line in
        if columns.isEmpty, let c = try? decoder.decode([String: [String]].self, from: Data(line)), let names = c["columns"] {
            columns = names
        } else {
            rows.append(try decoder.decode([Value].self, from: Data(line)))
        }
    }
    RecordPrinter(format: .table).print(columns: columns, rows: rows)
}

struct QueryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query", abstract: "Run a read-only SQL query on the local replica; anything that would write is refused.",
        discussion: """
            Example: lode query rare-earths "SELECT country, mine_production_t_reo FROM country_production WHERE year = 2025 ORDER BY 2 DESC"
            """)
    @Argument(help: "The dataset name.") var name: String
    @Argument(help: "One SELECT, WITH, VALUES, EXPLAIN or read-only PRAGMA statement.") var sql: String
    @Option(
        name: .customLong("as-of"),
        help: ArgumentHelp(
            "Run on the dataset as it stood at this time (ISO 8601: 2026-03-01, 2026-03-01T12:00:00Z) or commit (SITE:SEQ).",
            valueName: "TIME"))
    var asOf: String?
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func validate() throws {
        if let asOf, HistoryPoint.parse(asOf) == nil {
            throw ValidationError("--as-of takes \(HistoryPoint.forms), not \(asOf)")
        }
    }

    func run() async throws {
        let client = try node.client()
        let body = try JSONEncoder().encode(API.SQLRequest(sql: sql, asOf: asOf))
        try await printResult(client, format.resolved) { wire in
            try await client.request(
                .POST, "/datasets/\(percentEncode(name))/query", query: ["format": wire.rawValue],
                body: .bytes(ByteBuffer(bytes: body)))
        }
    }
}

struct DiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff", abstract: "Rows added, deleted and cells changed between two times, with who changed each.",
        discussion: """
            One line per changed cell (an added or deleted row gives one per column): table, key, change, column, old and new
            value, and the time, site and person of the write that made it. Times are ISO 8601 (2026-03-01,
            2026-03-01T12:00:00Z) or a commit SITE:SEQ; without --to, up to now.
            Example: lode diff rare-earths --from 2026-03-01 --table export_controls
            """)
    @Argument(help: "The dataset name.") var name: String
    @Option(help: ArgumentHelp("From this time or commit (changes after it).", valueName: "TIME")) var from: String
    @Option(help: ArgumentHelp("Up to this time or commit (default: now).", valueName: "TIME")) var to: String?
    @Option(help: ArgumentHelp("Only this table.", valueName: "T")) var table: String?
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func validate() throws {
        for (flag, value) in [("--from", from), ("--to", to)] {
            if let value, HistoryPoint.parse(value) == nil {
                throw ValidationError("\(flag) takes \(HistoryPoint.forms), not \(value)")
            }
        }
    }

    func run() async throws {
        let client = try node.client()
        var query = ["from": from]
        if let to { query["to"] = to }
        if let table { query["table"] = table }
        try await printResult(client, format.resolved) { wire in
            query["format"] = wire.rawValue
            return try await client.request(.GET, "/datasets/\(percentEncode(name))/diff", query: query)
        }
    }
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup", abstract: "Write a consistent copy of a dataset to a file, while the node keeps serving and syncing.",
        discussion: """
            The copy is an SQLite file holding the dataset's tables, history and signed log; lode restore brings it back
            on any node of the cluster, verifying every commit. FILE must not exist.
            Example: lode backup rare-earths rare-earths-2026-12-01.lodebackup
            """)
    @Argument(help: "The dataset name.") var name: String
    @Argument(help: "The file to write.") var file: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        let path = DataDir.absolute(file)
        guard !FileManager.default.fileExists(atPath: path) else { throw CLIError.failed("\(file) exists; name a new file") }
        let client = try node.client()
        let response = try await client.request(.GET, "/datasets/\(percentEncode(name))/backup")
        try await client.checkStreaming(response)
        // Written beside the target and renamed once whole, so that an
        // interrupted backup never looks like a finished one.
        let partial = path + ".partial"
        guard FileManager.default.createFile(atPath: partial, contents: nil, attributes: [.posixPermissions: 0o600]),
            let out = FileHandle(forWritingAtPath: partial)
        else { throw CLIError.failed("cannot write \(file)") }
        let progress = ProgressLine()
        var written: UInt64 = 0
        do {
            for try await buffer in response.body {
                try out.write(contentsOf: buffer.readableBytesView)
                written += UInt64(buffer.readableBytes)
                progress.show("receiving \(name): \(formatBytes(written))")
            }
            try out.synchronize()
            try out.close()
            if let expected = response.headers.first(name: "Content-Length").flatMap(UInt64.init), expected != written {
                throw CLIError.failed("the node stopped after \(formatBytes(written)) of \(formatBytes(expected)); no backup was written")
            }
            try FileManager.default.moveItem(atPath: partial, toPath: path)
        } catch {
            progress.clear()
            try? out.close()
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        }
        progress.clear()
        if stderrIsTerminal { note("backed up \(name) to \(file) (\(formatBytes(written)))") }
    }
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore", abstract: "Bring a dataset back from a backup file; every commit in it is verified like a peer's.",
        discussion: """
            The backup's site certificates are checked against the cluster CA and its commits applied as sync applies a
            peer's: a dataset the node lacks comes into being, one it holds gains what it lacks. Prints what was applied.
            Example: lode restore rare-earths-2026-12-01.lodebackup
            """)
    @Argument(help: "The backup file (lode backup).") var file: String
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let path = DataDir.absolute(file)
        guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? UInt64,
            FileManager.default.isReadableFile(atPath: path)
        else { throw CLIError.failed("cannot read \(file)") }
        let progress = ProgressLine()
        let chunks = FileChunks(path: path) { sent in
            progress.show("uploading \(file): \(Int(Double(sent) / Double(max(size, 1)) * 100))% of \(formatBytes(size))")
        }
        let report = try await node.client().call(
            .POST, "/restore", body: .stream(chunks, length: .known(Int64(size))), contentType: "application/vnd.sqlite3",
            as: API.RestoreReport.self)
        progress.clear()
        if format.resolved == .json { return try printJSON(report) }
        RecordPrinter(format: format.resolved).print(
            columns: ["dataset", "commits", "applied", "already_held", "refused", "unapplied", "certificates_added", "snapshot"],
            rows: [
                [
                    .text(report.dataset), .integer(Int64(report.commits)), .integer(Int64(report.applied)), .integer(Int64(report.alreadyHeld)),
                    .integer(Int64(report.refused)), .integer(Int64(report.unapplied)), .integer(Int64(report.certificatesAdded)),
                    report.snapshot.map(Value.text) ?? .null,
                ]
            ])
        for reason in report.reasons { note(reason) }
    }
}

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Print a whole table, ordered by primary key.",
        discussion: "Example: lode export rare-earths facilities --format csv > facilities.csv")
    @Argument(help: "The dataset name.") var name: String
    @Argument(help: "The table.") var table: String
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let client = try node.client()
        try await printResult(client, format.resolved) { wire in
            try await client.request(.GET, "/datasets/\(percentEncode(name))/tables/\(percentEncode(table))/export", query: ["format": wire.rawValue])
        }
    }
}

struct ExecCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec", abstract: "Run INSERT, UPDATE or DELETE; the changes become replicated edits. Prints the rows changed.",
        discussion: """
            The statements come as an argument, from a file (--file), or from standard input (no SQL, or -); \
            all of them commit together or not at all. A file or standard input streams to the node, so a \
            script of any size runs in bounded memory.
            Examples: lode exec rare-earths "UPDATE facilities SET status = 'operating' WHERE id = 'mp-10x'"
                      lode exec rare-earths --file corrections.sql
                      sqlite3 old.db .dump | grep '^INSERT' | lode exec rare-earths
            """)
    @Argument(help: "The dataset name.") var name: String
    @Argument(help: ArgumentHelp("INSERT, UPDATE or DELETE statements; - or none to read them from standard input.", valueName: "SQL"))
    var sql: String?
    @Option(name: .customLong("file"), help: ArgumentHelp("Read the statements from this file.", valueName: "FILE.sql")) var file: String?
    @OptionGroup var node: NodeOptions

    func validate() throws {
        if file != nil && sql != nil { throw ValidationError("give the statements as an argument or with --file, not both") }
    }

    func run() async throws {
        let client = try node.client()
        let path = "/datasets/\(percentEncode(name))/exec"
        if let sql, sql != "-" {
            let r = try await client.call(.POST, path, json: API.SQLRequest(sql: sql), as: API.ExecResult.self)
            out("\(r.rowsChanged)\n")
            return
        }
        let source = file.map(DataDir.absolute) ?? "/dev/stdin"
        if file == nil && isatty(0) != 0 { note("reading SQL statements from the terminal; end with Ctrl-D") }
        guard FileManager.default.isReadableFile(atPath: source) else { throw CLIError.failed("cannot read \(file ?? "standard input")") }
        var length = HTTPClientRequest.Body.Length.unknown
        if file != nil, let size = (try? FileManager.default.attributesOfItem(atPath: source))?[.size] as? UInt64 {
            length = .known(Int64(size))
        }
        let body = HTTPClientRequest.Body.stream(FileChunks(path: source) { _ in }, length: length)
        let r = try await client.call(.POST, path, body: body, contentType: "application/sql", as: API.ExecResult.self)
        out("\(r.rowsChanged)\n")
    }
}

/// Reads a file as a stream of byte buffers, for uploads.
struct FileChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String
    let onProgress: @Sendable (UInt64) -> Void

    struct AsyncIterator: AsyncIteratorProtocol {
        let handle: FileHandle
        var sent: UInt64 = 0
        let onProgress: @Sendable (UInt64) -> Void
        mutating func next() async throws -> ByteBuffer? {
            let data = try handle.read(upToCount: 1 << 20) ?? Data()
            if data.isEmpty {
                try? handle.close()
                return nil
            }
            sent += UInt64(data.count)
            onProgress(sent)
            return ByteBuffer(bytes: data)
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(handle: FileHandle(forReadingAtPath: path)!, onProgress: onProgress)
    }
}

struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Insert or update rows from a CSV whose header names the columns; all or nothing. Prints the number of rows.",
        discussion: "Example: lode import rare-earths facilities new-facilities.csv")
    @Argument(help: "The dataset name.") var name: String
    @Argument(help: "The table.") var table: String
    @Argument(help: ArgumentHelp("The CSV file (RFC 4180, UTF-8, a header row).", valueName: "FILE.csv")) var file: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        let path = DataDir.absolute(file)
        guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? UInt64 else {
            throw CLIError.failed("cannot read \(file)")
        }
        guard FileManager.default.isReadableFile(atPath: path) else { throw CLIError.failed("cannot read \(file)") }
        let progress = ProgressLine()
        let chunks = FileChunks(path: path) { sent in
            progress.show("uploading \(file): \(Int(Double(sent) / Double(max(size, 1)) * 100))% of \(formatBytes(size))")
        }
        let client = try node.client()
        let response = try await client.request(
            .POST, "/datasets/\(percentEncode(name))/tables/\(percentEncode(table))/import",
            body: .stream(chunks, length: .known(Int64(size))), contentType: "text/csv")
        try await client.checkStreaming(response)
        var result: API.ImportResult?
        var failure: API.ErrorBody.Detail?
        let decoder = JSONDecoder()
        try await forEachLine(of: response) { line in
            guard let e = try? decoder.decode(API.ImportEvent.self, from: Data(line)) else { return }
            if let p = e.progress {
                if let w = p.written {
                    // Read whole and sorted by key; now written.
                    progress.show("writing \(file): \(formatCount(w)) of \(formatCount(p.rows)) rows (\(w * 100 / max(p.rows, 1))%)")
                } else {
                    let pct = p.totalBytes.map { " (\(Int(Double(p.bytes) / Double(max($0, 1)) * 100))%)" } ?? ""
                    progress.show("reading \(file): \(formatCount(p.rows)) rows\(pct)")
                }
            }
            if let r = e.result { result = r }
            if let f = e.error { failure = f }
        }
        progress.clear()
        if let failure { throw CLIError(failure) }
        guard let result else { throw CLIError.failed("the node stopped before the import finished; nothing was imported") }
        if stderrIsTerminal {
            note(
                "imported \(formatCount(result.rowsRead)) rows into \(name).\(table) (\(formatCount(result.rowsChanged)) new or changed, \(result.commits) commits)"
            )
        }
        out("\(result.rowsRead)\n")
    }
}
