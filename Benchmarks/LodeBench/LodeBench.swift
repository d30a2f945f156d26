import Foundation
import LodeCore
import LodeNode
import LodeSQLite
import LodeStore

/// The benchmark suite (release build):
///
///   swift run -c release lode-bench [all | W1 … W15]... [--rows N] [--runs K] [--keys random|sequential] [--sites N] [--relay-cores C] [--json FILE]
///   swift run -c release lode-bench rows N [SEED] [--keys …] > rows.csv
///   swift run -c release lode-bench import-only FILE.csv...     (for profiling)
///   swift run -c release lode-bench scan-only NODE-DIR DATASET MILLIS [SQL] [--runs K]   (for profiling; MILLIS 0: now; an EXPLAIN prints its rows)
///
/// Every workload is measured beside its baseline in the same run; medians
/// of `--runs` runs (default 3) are printed as a table and written as JSON.
@main
enum LodeBench {
    static func main() async throws {
        _ = SQLiteSetup.prepare  // before the raw baselines open SQLite
        var args = Array(CommandLine.arguments.dropFirst())
        func option(_ name: String) -> String? {
            guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
            defer { args.removeSubrange(i...(i + 1)) }
            return args[i + 1]
        }
        let rows = option("--rows").flatMap { Int($0) } ?? 1_000_000
        let runs = option("--runs").flatMap { Int($0) } ?? 3
        let sites = option("--sites").flatMap { Int($0) } ?? 200
        let relayCores = option("--relay-cores").flatMap { Double($0) } ?? 0.5
        let json = option("--json") ?? "bench-results.json"
        if let k = option("--keys") {
            guard let order = Rows.KeyOrder(rawValue: k) else { throw BenchError("--keys is random or sequential, not \(k)") }
            Rows.keys = order
        }
        if args.first == "scan-only", args.count > 3 {
            // For profiling: one query run again and again on an existing
            // node's dataset, now or as of a time (milliseconds; 0: now).
            let node = try Node.open(dataDir: args[1])
            defer { node.close() }
            let replica = try node.replica(args[2])
            let millis = UInt64(args[3]) ?? 0
            let sql = args.count > 4 ? args[4] : "SELECT * FROM sites"
            if sql.uppercased().hasPrefix("EXPLAIN") {
                let point: HistoryPoint? = millis == 0 ? nil : .time(millis: millis)
                let show: @Sendable (QueryEvent) -> Void = { e in if case .row(let r) = e { print(r.map { "\($0)" }.joined(separator: " | ")) } }
                if let point { try await replica.query(sql, asOf: point, show) } else { try await replica.query(sql, show) }
                return
            }
            for _ in 0..<runs {
                let (s, n) = try await Suite.timed(replica, sql, asOf: millis == 0 ? nil : .time(millis: millis))
                print(String(format: "%d rows in %.3f s", n, s))
            }
            return
        }
        if args.first == "import-only", args.count > 1 {
            // For profiling: only the import path, on existing CSV files
            // imported one after the other into one table.
            let ws = try Workspace()
            defer { ws.remove() }
            let node = try Node.open(dataDir: try ws.makeNode("profile"))
            let replica = try await node.createDataset("bench", schema: Rows.schema)
            for file in args.dropFirst() {
                let start = ContinuousClock.now
                let report = try await replica.importCSV(table: "sites", path: file)
                print(String(format: "imported %d rows (%d changed) in %.2f s", report.rowsRead, report.rowsChanged, seconds(since: start)))
            }
            print("SQLite multi-thread mode \(SQLiteSetup.applied ? "on" : "OFF")")
            node.close()
            return
        }
        if args.first == "rows" {
            let n = args.count > 1 ? Int(args[1]) ?? 1000 : 1000
            let seed = args.count > 2 ? UInt64(args[2]) ?? 42 : 42
            try Rows.write(count: n, seed: seed, to: FileHandle.standardOutput)
            return
        }
        var wanted = Set(args.map { $0.uppercased() })
        if wanted.isEmpty || wanted.contains("ALL") {
            wanted = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10", "W11", "W12", "W13", "W14", "W15"]
        }
        let ws = try Workspace()
        defer { ws.remove() }
        let csv = ws.path("rows.csv")
        let small = ws.path("small.csv")
        try Rows.write(count: rows, seed: 42, to: csv)
        try Rows.write(count: 1000, seed: 7, to: small)
        let lode = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lode").path
        var suite = Suite(ws: ws, rows: rows, runs: runs, csv: csv, source: nil)
        var results: [Result] = []
        func report(_ r: Result) {
            results.append(r)
            print(line(r))
        }
        print(
            "lode-bench: \(rows) rows, \(Rows.keys) keys, \(runs) runs, \(ProcessInfo.processInfo.activeProcessorCount) cores, SQLite multi-thread mode \(SQLiteSetup.applied ? "on" : "OFF")\n"
        )
        print(header)
        // W1 builds the dataset the others use.
        // (W11, W12, W14 and W15 have their own data.)
        if !wanted.subtracting(["W11", "W12", "W14", "W15"]).isEmpty {
            let w1 = try await suite.w1()
            if wanted.contains("W1") { report(w1) }
        }
        if wanted.contains("W2") { report(try await suite.w2()) }
        if wanted.contains("W3") { report(try await suite.w3()) }
        if wanted.contains("W4") { report(try await suite.w4()) }
        if wanted.contains("W5") {
            if FileManager.default.isExecutableFile(atPath: lode) {
                report(try suite.w5(lode: lode))
            } else {
                print("W5 skipped: build the lode binary first (swift build -c release --product lode)")
            }
        }
        if wanted.contains("W6") { report(try await suite.w6()) }
        if wanted.contains("W7") { report(try await suite.w7(small: small)) }
        if wanted.contains("W8") { report(try await suite.w8()) }
        if wanted.contains("W9") { report(try await suite.w9()) }
        if wanted.contains("W10") { report(try await suite.w10()) }
        if wanted.contains("W11") {
            if FileManager.default.isExecutableFile(atPath: lode) {
                for r in try await suite.w11(lode: lode, sites: sites, relayCores: relayCores) { report(r) }
            } else {
                print("W11 skipped: build the lode binary first (swift build -c release --product lode)")
            }
        }
        if wanted.contains("W12") { report(try await suite.w12()) }
        if wanted.contains("W13") { for r in try await suite.w13() { report(r) } }
        if wanted.contains("W14") { for r in try await suite.w14() { report(r) } }
        if wanted.contains("W15") { for r in try await suite.w15() { report(r) } }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(results).write(to: URL(fileURLWithPath: json))
        print("\nwritten to \(json)")
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

    static let header = pad("", 5) + pad("result", 18) + pad("baseline", 34) + pad("ratio", 8) + pad("peak MB", 9) + pad("target", 34) + "notes"

    static func line(_ r: Result) -> String {
        let value = String(format: "%.2f ", r.value) + r.unit
        let base = r.baseline.map { String(format: "%.2f ", $0) + (r.baselineUnit ?? "") } ?? "—"
        let ratio = r.ratio.map { String(format: "%.2f×", $0) } ?? "—"
        let met = r.met.map { $0 ? " (met)" : " (MISSED)" } ?? ""
        return pad(r.workload, 5) + pad(value, 18) + pad(base, 34) + pad(ratio, 8) + pad(String(format: "%.0f", r.peakMemoryMB), 9)
            + pad(r.target + met, 34) + r.what + "; " + r.notes
    }
}
