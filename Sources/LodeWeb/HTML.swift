import Foundation
import LodeCore

/// HTML built from text that is escaped where it goes in: every value, name
/// and annotation reaches the page through `HTML.text` or `HTML.attr`, so a
/// cell holding `<script>` shows as those characters.
public struct HTML: Sendable, CustomStringConvertible {
    public private(set) var description: String

    public init(raw: String) { description = raw }

    /// Text as content.
    public static func text(_ s: String) -> HTML { HTML(raw: escape(s)) }

    /// Text for an attribute value in double quotes.
    public static func attr(_ s: String) -> String { escape(s) }

    /// Escapes `&`, `<`, `>`, `"` and `'`.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A path segment or query value, percent-encoded: only RFC 3986's
    /// unreserved ASCII characters are kept (Foundation's `alphanumerics`
    /// would keep letters such as "é" too).
    public static func component(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: unreserved) ?? s
    }

    private static let unreserved = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

    /// A cell's value as the page shows it.
    public static func value(_ v: Value?) -> HTML {
        switch v {
        case nil, .null?: HTML(raw: "<span class=\"null\">NULL</span>")
        case .integer(let i)?: text(String(i))
        case .real(let d)?: text(String(d))
        case .text(let t)?: text(t)
        case .blob(let b)?: HTML(raw: "<span class=\"blob\">\(b.count) bytes</span>")
        }
    }

    public static func + (a: HTML, b: HTML) -> HTML { HTML(raw: a.description + b.description) }
}

/// Builds HTML with interpolation that escapes: `"<td>\(value)</td>"`
/// escapes `value` unless it is `HTML`.
public struct Markup: ExpressibleByStringInterpolation, Sendable {
    public var html: HTML

    public init(stringLiteral value: String) { html = HTML(raw: value) }

    public init(stringInterpolation: Interpolation) { html = HTML(raw: stringInterpolation.out) }

    public struct Interpolation: StringInterpolationProtocol {
        var out = ""
        public init(literalCapacity: Int, interpolationCount: Int) { out.reserveCapacity(literalCapacity * 2) }
        public mutating func appendLiteral(_ literal: String) { out += literal }
        public mutating func appendInterpolation(_ s: String) { out += HTML.escape(s) }
        public mutating func appendInterpolation(_ h: HTML) { out += h.description }
        public mutating func appendInterpolation(_ n: Int) { out += String(n) }
        public mutating func appendInterpolation(_ items: [HTML]) { for h in items { out += h.description } }
    }
}
