/// A token of SQL text: enough of SQLite's lexical rules to find statement
/// boundaries and keywords without being fooled by strings, quoted names
/// or comments.
struct SQLToken: Equatable {
    enum Kind: Equatable {
        /// A bare word: keyword or unquoted identifier (uppercased in `text`).
        case word
        /// A quoted identifier ("x", `x` or [x]); `text` is the name.
        case quotedName
        /// A string literal; `text` is its content.
        case string
        /// A number, blob literal, parameter or operator.
        case other
        /// `;`
        case semicolon
    }
    var kind: Kind
    var text: String
    /// Offset of the token's first byte in the source.
    var offset: Int
}

/// Splits SQL into tokens, skipping white space and comments.
enum SQLLexer {
    /// A byte of a bare word (keyword or unquoted name).
    static func isWordByte(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x24 || c >= 0x80
    }

    static func tokens(_ sql: String) -> [SQLToken] {
        let b = Array(sql.utf8)
        var out: [SQLToken] = []
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x0C {
                i += 1
            } else if c == UInt8(ascii: "-") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "-") {
                while i < b.count && b[i] != 0x0A { i += 1 }
            } else if c == UInt8(ascii: "/") && i + 1 < b.count && b[i + 1] == UInt8(ascii: "*") {
                i += 2
                while i + 1 < b.count && !(b[i] == UInt8(ascii: "*") && b[i + 1] == UInt8(ascii: "/")) { i += 1 }
                i = min(b.count, i + 2)
            } else if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") || c == UInt8(ascii: "`") || c == UInt8(ascii: "[") {
                let close = c == UInt8(ascii: "[") ? UInt8(ascii: "]") : c
                let start = i
                i += 1
                var content: [UInt8] = []
                while i < b.count {
                    if b[i] == close {
                        if close != UInt8(ascii: "]") && i + 1 < b.count && b[i + 1] == close {
                            content.append(close)
                            i += 2
                            continue
                        }
                        break
                    }
                    content.append(b[i])
                    i += 1
                }
                i = min(b.count, i + 1)
                out.append(
                    SQLToken(
                        kind: c == UInt8(ascii: "'") ? .string : .quotedName,
                        text: String(decoding: content, as: UTF8.self), offset: start))
            } else if c == UInt8(ascii: ";") {
                out.append(SQLToken(kind: .semicolon, text: ";", offset: i))
                i += 1
            } else if isWordByte(c) && !(c >= 0x30 && c <= 0x39) {
                let start = i
                while i < b.count && isWordByte(b[i]) { i += 1 }
                out.append(SQLToken(kind: .word, text: String(decoding: b[start..<i], as: UTF8.self).uppercased(), offset: start))
            } else {
                let start = i
                if c >= 0x30 && c <= 0x39 {
                    while i < b.count && (isWordByte(b[i]) || b[i] == UInt8(ascii: ".")) { i += 1 }
                } else {
                    i += 1
                }
                out.append(SQLToken(kind: .other, text: String(decoding: b[start..<i], as: UTF8.self), offset: start))
            }
        }
        return out
    }

    /// The statements of `sql` as token lists, without their semicolons.
    static func statements(_ sql: String) -> [[SQLToken]] {
        var out: [[SQLToken]] = []
        var current: [SQLToken] = []
        for t in tokens(sql) {
            if t.kind == .semicolon {
                if !current.isEmpty { out.append(current) }
                current = []
            } else {
                current.append(t)
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// The first keyword of each statement in `sql`.
    static func leadingKeywords(_ sql: String) -> [String] {
        statements(sql).map { $0.first?.kind == .word ? $0.first!.text : "" }
    }
}
