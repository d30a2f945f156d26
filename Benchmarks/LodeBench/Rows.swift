import Foundation
import LodeCore

/// The benchmark rows: seeded, reproducible, seven columns
/// (`id TEXT PRIMARY KEY, name TEXT, country TEXT, year INTEGER, tonnes
/// INTEGER, grade REAL, note TEXT`). `lode-bench rows N SEED` writes them
/// as CSV, so that any engine can be fed the same rows.
///
/// Keys are random 16-hex-digit ids by default, as client-generated ids and
/// UUIDs are, so that rows land at random places in every B-tree; with
/// `--keys sequential` they are `site-00000000`, `site-00000001`, … and
/// every insert appends. Row `i` is named `Site i` in either case, which is
/// how the workloads pick subsets of rows (`Suite.rowsWhere`).
enum Rows {
    enum KeyOrder: String { case random, sequential }
    /// Set once from the command line, before any row is written.
    nonisolated(unsafe) static var keys = KeyOrder.random

    static let schema =
        "CREATE TABLE sites (id TEXT PRIMARY KEY, name TEXT, country TEXT, year INTEGER, tonnes INTEGER, grade REAL, note TEXT);"
    static let countries = [
        "China", "United States", "Australia", "Burma", "Nigeria", "Thailand", "India", "Russia",
        "Vietnam", "Brazil", "Madagascar", "Malaysia", "Laos", "Greenland", "Canada", "Tanzania",
    ]
    static let words = [
        "deposit", "carbonatite", "ionic clay", "monazite", "bastnaesite", "tailings", "pilot", "expansion",
        "offtake", "separation", "magnet", "feed", "concentrate", "permit", "survey", "assay",
    ]

    /// The key of row `i`: 16 hex digits from a bijective mix of `i` (so
    /// distinct rows never share a key), or `site-` and 8 digits.
    static func key(_ i: Int) -> String {
        switch keys {
        case .random:
            var g = SeededGenerator(seed: UInt64(i) ^ 0x6C6F_6465_7374_6F6E)
            let hex = String(g.next(), radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        case .sequential:
            let digits = String(i)
            return "site-" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
        }
    }

    /// Writes `count` rows as CSV (header first) to a new file at `path`.
    static func write(count: Int, seed: UInt64, to path: String) throws {
        try write(rows: 0..<count, seed: seed, to: path)
    }

    /// Writes the rows numbered `rows` (ascending) as CSV to a new file.
    static func write(rows: some Sequence<Int>, seed: UInt64, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path) else {
            throw BenchError("cannot write \(path)")
        }
        defer { try? out.close() }
        try write(rows: rows, seed: seed, to: out)
    }

    /// Writes `count` rows as CSV (header first).
    static func write(count: Int, seed: UInt64, to out: FileHandle) throws {
        try write(rows: 0..<count, seed: seed, to: out)
    }

    /// Writes the rows numbered `rows` as CSV (header first). The values
    /// other than key and name come from `seed`: the same rows written with
    /// another seed are the same rows with (almost every cell) changed.
    static func write(rows: some Sequence<Int>, seed: UInt64, to out: FileHandle) throws {
        var rng = SeededGenerator(seed: seed)
        var chunk = "id,name,country,year,tonnes,grade,note\n"
        for i in rows {
            var note = (0..<Int.random(in: 2...6, using: &rng)).map { _ in words.randomElement(using: &rng)! }.joined(separator: " ")
            if Double.random(in: 0..<1, using: &rng) < 0.1 { note = "\"" + note + ", revised\"" }
            let grade = Double.random(in: 0..<10, using: &rng)
            chunk += "\(key(i)),Site \(i),\(countries.randomElement(using: &rng)!),\(Int.random(in: 1990...2026, using: &rng)),"
            chunk += "\(Int.random(in: 0...500_000, using: &rng)),\(String(format: "%.6f", grade)),\(note)\n"
            if chunk.utf8.count > 1 << 20 {
                try out.write(contentsOf: Data(chunk.utf8))
                chunk = ""
            }
        }
        try out.write(contentsOf: Data(chunk.utf8))
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
