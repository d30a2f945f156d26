import ArgumentParser
import Foundation
import LodeCore
import LodeProtocol
import NIOCore

struct SyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Dial every configured peer now; with --wait, exit 0 once this node and every node it is connected to hold the same commits.",
        discussion: """
            Exits 1 at the timeout, naming the peers still apart or unreachable.

            Example: lode sync --wait --timeout 30
            """)
    @Flag(help: "Wait until every peer holds the same commits.") var wait = false
    @Option(help: "Seconds to wait (with --wait).") var timeout: Double = 60
    @OptionGroup var node: NodeOptions

    func validate() throws {
        guard timeout > 0 else { throw ValidationError("--timeout must be more than 0 seconds") }
    }

    func run() async throws {
        let r = try await node.client().call(.POST, "/sync", json: API.SyncRequest(wait: wait, timeout: timeout), as: API.SyncResult.self)
        guard wait else {
            out("dialling every peer\n")
            return
        }
        if r.inSync {
            out("in sync\n")
        } else {
            throw CLIError.failed(
                "not in sync after \(Int(timeout)) s: " + (r.apart.isEmpty ? "no peer is connected" : r.apart.joined(separator: "; ")))
        }
    }
}

struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Print a query's result, then print it again each time a change (local or synced) alters it, until interrupted.",
        discussion: "Example: lode watch rare-earths \"SELECT id, status FROM facilities WHERE country = 'United States'\"")
    @Argument(help: "The dataset name.") var name: String
    @Argument(help: "One read-only statement.") var sql: String
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let client = try node.client()
        let response = try await client.request(.GET, "/datasets/\(percentEncode(name))/watch", query: ["sql": sql])
        try await client.checkStreaming(response)
        let printer = RecordPrinter(format: format.resolved)
        var first = true
        // Server-sent events: one `data:` line per result; comments (`:`) keep the stream open.
        try await forEachLine(of: response) { line in
            guard line.starts(with: Array("data: ".utf8)) else { return }
            let result = try JSONDecoder().decode(WatchResult.self, from: Data(line.dropFirst(6)))
            if !first && printer.format == .table {
                out("\n-- \(formatISO8601(millis: UInt64(Date().timeIntervalSince1970 * 1000)))\n")
            }
            first = false
            printer.print(columns: result.columns, rows: result.rows)
        }
    }

    struct WatchResult: Decodable {
        var columns: [String]
        var rows: [[Value]]
    }
}
