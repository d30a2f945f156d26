import Foundation
import LodeCore
import LodeProtocol

/// Prints records as a table for people, CSV or JSON for programs.
struct RecordPrinter {
    var format: OutputFormat
    /// Cells longer than this are cut in table output.
    var maxWidth = 60

    func print(columns: [String], rows: [[Value]]) {
        switch format {
        case .csv, .json:
            var enc = ResultEncoder(format == .csv ? .csv : .json)
            out(enc.columns(columns))
            for r in rows { if let c = enc.row(r) { out(c) } }
            out(enc.finish())
        case .table:
            out(table(columns: columns, rows: rows))
        }
    }

    func table(columns: [String], rows: [[Value]]) -> String {
        let cells = rows.map { $0.map { cut(display($0)) } }
        let columns = columns.map(RecordPrinter.printable)
        var widths = columns.map { $0.count }
        for r in cells { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        let numeric = columns.indices.map { i in
            !rows.isEmpty
                && rows.allSatisfy { r in
                    if case .integer = r[i] { return true }
                    if case .real = r[i] { return true }
                    return r[i].isNull
                }
        }
        func line(_ values: [String]) -> String {
            values.enumerated().map { i, v in
                let pad = String(repeating: " ", count: widths[i] - v.count)
                return numeric[i] ? pad + v : v + pad
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        var s = line(columns) + "\n"
        s += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n"
        for r in cells { s += line(r) + "\n" }
        if rows.isEmpty { s += "(no rows)\n" }
        return s
    }

    func display(_ v: Value) -> String {
        switch v {
        case .null: ""
        case .integer(let i): String(i)
        case .real(let d): ResultEncoder.realText(d)
        case .text(let t): RecordPrinter.printable(t)
        case .blob(let b): "x'" + b.prefix(16).hexString + (b.count > 16 ? "…" : "") + "'"
        }
    }

    /// Text as a terminal may show it: a line break as ⏎, other control
    /// characters in caret notation (`^[` for ESC) or as `\u{9B}`, so that
    /// a value or a name a peer chose cannot move the cursor, retitle the
    /// window or plant a link (`ESC ]8`) in the analyst's terminal.
    static func printable(_ t: String) -> String {
        guard t.unicodeScalars.contains(where: isControl) else { return t }
        var out = String.UnicodeScalarView()
        for u in t.unicodeScalars {
            if u == "\n" {
                out.append("⏎")
            } else if u.value < 0x20 || u.value == 0x7F {
                out.append(contentsOf: "^".unicodeScalars)
                out.append(Unicode.Scalar(u.value ^ 0x40)!)
            } else if isControl(u) {
                out.append(contentsOf: "\\u{\(String(u.value, radix: 16, uppercase: true))}".unicodeScalars)
            } else {
                out.append(u)
            }
        }
        return String(out)
    }

    /// C0, DEL, C1, and the bidirectional overrides that reorder what follows.
    private static func isControl(_ u: Unicode.Scalar) -> Bool {
        u.value < 0x20 || (0x7F...0x9F).contains(u.value) || (0x202A...0x202E).contains(u.value) || (0x2066...0x2069).contains(u.value)
    }

    func cut(_ s: String) -> String {
        s.count > maxWidth ? String(s.prefix(maxWidth - 1)) + "…" : s
    }
}

/// Draws a one-line progress indicator on stderr when it is a terminal.
final class ProgressLine: @unchecked Sendable {
    private var last = Date.distantPast
    private var drawn = false
    let enabled: Bool

    init(enabled: Bool = stderrIsTerminal) { self.enabled = enabled }

    func show(_ text: String, force: Bool = false) {
        guard enabled, force || Date().timeIntervalSince(last) > 0.1 else { return }
        last = Date()
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
        drawn = true
    }

    func clear() {
        guard enabled, drawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        drawn = false
    }
}

func formatCount(_ n: Int) -> String {
    let f = NumberFormatter()
    f.numberStyle = .decimal
    f.groupingSeparator = ","
    return f.string(from: NSNumber(value: n)) ?? String(n)
}

func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var v = Double(n)
    var i = 0
    while v >= 1000 && i < units.count - 1 {
        v /= 1000
        i += 1
    }
    return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
}
