/// The rules for table, column and dataset names.
public enum Identifier {
    /// True for a table or column name: 1 to 64 characters, a lowercase ASCII
    /// letter or `_` first, then lowercase letters, digits or `_`. SQLite
    /// compares names without regard to case, so Lodestone keeps one spelling.
    public static func isValid(_ s: String) -> Bool {
        let u = s.utf8
        guard let first = u.first, u.count <= 64 else { return false }
        guard first == UInt8(ascii: "_") || (first >= UInt8(ascii: "a") && first <= UInt8(ascii: "z")) else { return false }
        return u.allSatisfy { c in
            c == UInt8(ascii: "_") || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
        }
    }

    /// A person's name within a site (`lode user add`): the same rule as a
    /// dataset name (1 to 64 of lowercase letters, digits, '-', '_', '.',
    /// starting with a letter or digit), so that it is safe in a file name,
    /// a URL and a log line.
    public static func isValidPerson(_ s: String) -> Bool { isValidDataset(s) }

    /// True for a dataset name: 1 to 64 characters from lowercase letters,
    /// digits, `-`, `_` and `.`, starting with a letter or digit.
    public static func isValidDataset(_ s: String) -> Bool {
        let u = s.utf8
        guard let first = u.first, u.count <= 64 else { return false }
        func alnum(_ c: UInt8) -> Bool {
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
        }
        guard alnum(first) else { return false }
        return u.allSatisfy { c in alnum(c) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") }
    }

    /// True for names reserved to Lodestone's own tables.
    public static func isReserved(_ s: String) -> Bool {
        s.hasPrefix("_") || s.hasPrefix("sqlite_")
    }
}
