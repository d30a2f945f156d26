import CLodeSQLite
import Foundation
import LodeStore

/// A file of SQL statements read a piece at a time: whole statements are
/// gathered into chunks of about `chunkBytes` and handed out in order, so
/// that a script of any length is run in bounded memory (a statement is
/// whole when SQLite's `sqlite3_complete` says so: strings, comments and
/// trigger bodies may hold `;`).
struct SQLScript {
    /// The longest statement a script may hold.
    static let maxStatementBytes = 16 << 20
    let path: String
    let chunkBytes: Int

    /// Calls `body` with each chunk of whole statements, in order. The
    /// last chunk also takes whatever follows the last whole statement (an
    /// unfinished statement is for SQLite to refuse).
    func forEachChunk(_ body: (String) throws -> Void) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw StoreError.badInput("cannot read the SQL file") }
        defer { try? handle.close() }
        var chunk: [UInt8] = []
        var pending: [UInt8] = []
        var lexer = Lexer()
        func flush() throws {
            guard !chunk.isEmpty else { return }
            guard let sql = String(validating: chunk, as: UTF8.self) else {
                throw StoreError.badInput("the SQL is not valid UTF-8")
            }
            chunk.removeAll(keepingCapacity: true)
            try body(sql)
        }
        while let block = try handle.read(upToCount: 64 << 10), !block.isEmpty {
            for byte in block {
                pending.append(byte)
                // Only a `;` outside strings, names and comments may end a
                // statement, so SQLite is asked once per statement (a `;`
                // inside a trigger body aside), not once per `;` in a string.
                guard lexer.feed(byte) else { continue }
                pending.append(0)
                let whole = pending.withUnsafeBufferPointer { p in
                    p.withMemoryRebound(to: CChar.self) { sqlite3_complete($0.baseAddress) != 0 }
                }
                pending.removeLast()
                guard whole else { continue }
                chunk += pending
                pending.removeAll(keepingCapacity: true)
                if chunk.count >= chunkBytes { try flush() }
            }
            guard pending.count <= Self.maxStatementBytes else {
                throw StoreError.badInput("a statement is longer than \(Self.maxStatementBytes >> 20) MiB: split it")
            }
        }
        if pending.contains(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D) }) { chunk += pending }
        try flush()
    }

    /// Where a byte of SQL text falls: in a string ('…'), a quoted name
    /// ("…", `…`, […]), a comment (-- … or /* … */), or outside them.
    struct Lexer {
        enum State { case outside, single, double, backtick, bracket, lineComment, blockComment }
        var state = State.outside
        var previous: UInt8 = 0

        /// Takes the next byte; true when it is a `;` outside strings, names and comments.
        mutating func feed(_ b: UInt8) -> Bool {
            let last = previous
            // A byte that ends a two-byte token (--, /*, */) starts none.
            previous = b
            switch state {
            case .outside:
                switch b {
                case UInt8(ascii: "'"): state = .single
                case UInt8(ascii: "\""): state = .double
                case UInt8(ascii: "`"): state = .backtick
                case UInt8(ascii: "["): state = .bracket
                case UInt8(ascii: "-") where last == UInt8(ascii: "-"):
                    state = .lineComment
                    previous = 0
                case UInt8(ascii: "*") where last == UInt8(ascii: "/"):
                    state = .blockComment
                    previous = 0
                case UInt8(ascii: ";"): return true
                default: break
                }
            case .single: if b == UInt8(ascii: "'") { state = .outside }
            case .double: if b == UInt8(ascii: "\"") { state = .outside }
            case .backtick: if b == UInt8(ascii: "`") { state = .outside }
            case .bracket: if b == UInt8(ascii: "]") { state = .outside }
            case .lineComment: if b == 0x0A { state = .outside }
            case .blockComment:
                if b == UInt8(ascii: "/") && last == UInt8(ascii: "*") {
                    state = .outside
                    previous = 0
                }
            }
            return false
        }
    }
}
