import Foundation
import LodeCore

/// The benchmark rows: seeded, reproducible, seven columns
/// (`id TEXT PRIMARY KEY, name TEXT, country TEXT, year INTEGER, tonnes
/// INTEGER, grade REAL, note TEXT`). `lode-bench rows N SEED` writes them
/// as CSV, so that any engine can be fed the same rows.
enum Rows {
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

    /// The key of row `i`.
    static func key(_ i: Int) -> String {
        let digits = String(i)
        return "site-" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// Writes `count` rows as CSV (header first) to a new file at `path`.
    static func write(count: Int, seed: UInt64, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let out = FileHandle(forWritingAtPath: path) else {
            throw BenchError("cannot write \(path)")
        }
        defer { try? out.close() }
        try write(count: count, seed: seed, to: out)
    }

    /// Writes `count` rows as CSV (header first).
    static func write(count: Int, seed: UInt64, to out: FileHandle) throws {
        var rng = SeededGenerator(seed: seed)
        var chunk = "id,name,country,year,tonnes,grade,note\n"
        for i in 0..<count {
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
