// A point in a dataset's history, as readers name it (DESIGN §12).

/// A point in a dataset's history that a reader names: a time, or a commit.
public enum HistoryPoint: Hashable, Sendable {
    /// Everything stamped at or before this millisecond (UTC).
    case time(millis: UInt64)
    /// Everything stamped at or before the commit `seq` of the site named
    /// `site` (its name, or a prefix of its key in hex).
    case commit(site: String, seq: UInt64)

    /// Reads `2026-03-01`, `2026-03-01T12:00:00Z`, `2026-03-01T12:00:00.250+01:00`
    /// or `SITE:SEQ`; nil for anything else.
    public static func parse(_ text: String) -> HistoryPoint? {
        if let millis = parseISO8601(text) { return .time(millis: millis) }
        guard let colon = text.lastIndex(of: ":"), !text.contains("T") else { return nil }
        let site = String(text[..<colon])
        guard !site.isEmpty, let seq = UInt64(text[text.index(after: colon)...]), seq > 0 else { return nil }
        return .commit(site: site, seq: seq)
    }

    /// What `parse` reads, for messages that refuse anything else.
    public static let forms = "an ISO 8601 time (2026-03-01, 2026-03-01T12:00:00Z) or a commit SITE:SEQ"

    /// The largest stamp a time includes: every counter of its millisecond.
    public static func stamp(millis: UInt64) -> HLC { HLC(millis: min(millis, 0xFFFF_FFFF_FFFF), counter: .max) }
}

/// Parses an ISO 8601 date or UTC/offset date-time into milliseconds since
/// 1970; nil when the text is not one or its year is before 1970. (A time
/// of 1970-01-01 that an offset puts before the epoch is 0: before every
/// commit either way.)
public func parseISO8601(_ text: String) -> UInt64? {
    let b = Array(text.utf8)
    var i = 0
    func number(_ n: Int) -> Int64? {
        guard i + n <= b.count else { return nil }
        var v: Int64 = 0
        for k in i..<(i + n) {
            guard b[k] >= 48 && b[k] <= 57 else { return nil }
            v = v * 10 + Int64(b[k] - 48)
        }
        i += n
        return v
    }
    func expect(_ c: UInt8) -> Bool {
        guard i < b.count, b[i] == c else { return false }
        i += 1
        return true
    }
    guard let y = number(4), expect(45), let mo = number(2), expect(45), let d = number(2) else { return nil }
    guard (1...12).contains(mo), (1...31).contains(d), y >= 1970 else { return nil }
    var h: Int64 = 0
    var mi: Int64 = 0
    var s: Int64 = 0
    var ms: Int64 = 0
    var offset: Int64 = 0
    if i < b.count {
        guard expect(84) || expect(32), let hh = number(2), expect(58), let mm = number(2) else { return nil }
        h = hh
        mi = mm
        if expect(58) {
            guard let ss = number(2) else { return nil }
            s = ss
            if expect(46) {
                var digits = 0
                var frac: Int64 = 0
                while i < b.count, b[i] >= 48 && b[i] <= 57 {
                    if digits < 3 { frac = frac * 10 + Int64(b[i] - 48) }
                    digits += 1
                    i += 1
                }
                guard digits > 0 else { return nil }
                while digits < 3 {
                    frac *= 10
                    digits += 1
                }
                ms = frac
            }
        }
        guard h < 24, mi < 60, s < 61 else { return nil }
        if expect(90) {
        } else if i < b.count, b[i] == 43 || b[i] == 45 {
            let sign: Int64 = b[i] == 43 ? 1 : -1
            i += 1
            guard let oh = number(2), expect(58), let om = number(2), oh < 24, om < 60 else { return nil }
            offset = sign * (oh * 60 + om)
        } else if i < b.count {
            return nil
        }
    }
    guard i == b.count else { return nil }
    // Days from civil (Howard Hinnant's algorithm), the inverse of formatISO8601.
    let yy = mo <= 2 ? y - 1 : y
    let era = yy / 400
    let yoe = yy - era * 400
    let mp = mo > 2 ? mo - 3 : mo + 9
    let doy = (153 * mp + 2) / 5 + d - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    let days = era * 146_097 + doe - 719_468
    let millis = ((days * 24 + h) * 60 + mi - offset) * 60_000 + s * 1000 + ms
    return UInt64(max(0, millis))
}
