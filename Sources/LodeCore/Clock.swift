/// A hybrid logical clock value: 48 bits of Unix milliseconds and a 16-bit
/// counter, so that stamps order like wall time but never run backwards.
///
/// ```swift
/// var clock = HybridLogicalClock()
/// let a = clock.tick(wallMillis: 1_700_000_000_000)
/// clock.observe(remote)          // after applying a remote commit
/// let b = clock.tick(wallMillis: 1_700_000_000_000)  // b > a, b > remote
/// ```
public struct HLC: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The packed 64-bit value.
    public let rawValue: UInt64

    /// Wraps a packed value.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Packs milliseconds and a counter.
    public init(millis: UInt64, counter: UInt16) {
        rawValue = (millis << 16) | UInt64(counter)
    }

    /// The wall-clock part, in milliseconds since 1970.
    public var millis: UInt64 { rawValue >> 16 }
    /// The logical counter part.
    public var counter: UInt16 { UInt16(truncatingIfNeeded: rawValue) }

    public static func < (a: HLC, b: HLC) -> Bool { a.rawValue < b.rawValue }

    /// The zero stamp, below every real one.
    public static let zero = HLC(rawValue: 0)

    /// The stamp as ISO 8601 UTC time with milliseconds.
    public var iso8601: String { formatISO8601(millis: millis) }

    public var description: String { "\(iso8601)#\(counter)" }
}

/// The clock of one replica. `tick` gives the stamp of a new local commit;
/// `observe` raises the clock past every applied remote commit so that a
/// write made after seeing another always carries a larger stamp.
public struct HybridLogicalClock: Sendable {
    /// The largest stamp issued or observed.
    public private(set) var last: HLC

    /// Creates a clock that has seen `last`.
    public init(last: HLC = .zero) { self.last = last }

    /// Returns a new stamp: max(wall, last + 1).
    public mutating func tick(wallMillis: UInt64) -> HLC {
        let wall = HLC(millis: wallMillis & 0xFFFF_FFFF_FFFF, counter: 0)
        let next = wall > last ? wall : HLC(rawValue: last.rawValue &+ 1)
        last = next
        return next
    }

    /// Raises the clock to at least `stamp`.
    public mutating func observe(_ stamp: HLC) {
        if stamp > last { last = stamp }
    }
}

/// Formats milliseconds since 1970 as `YYYY-MM-DDTHH:MM:SS.mmmZ` by
/// arithmetic alone: the same text on every platform and locale, and far
/// cheaper than a date formatter (history and conflicts print many stamps).
public func formatISO8601(millis: UInt64) -> String {
    let ms = Int64(millis % 1000)
    var secs = Int64(millis / 1000)
    let s = secs % 60; secs /= 60
    let m = secs % 60; secs /= 60
    let h = secs % 24
    var days = secs / 24
    // Civil-from-days (Howard Hinnant's algorithm).
    days += 719_468
    let era = days / 146_097
    let doe = days - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
    var y = yoe + era * 400
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let mo = mp < 10 ? mp + 3 : mp - 9
    if mo <= 2 { y += 1 }
    func pad(_ v: Int64, _ n: Int) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, n - s.count)) + s
    }
    return "\(pad(y, 4))-\(pad(mo, 2))-\(pad(d, 2))T\(pad(h, 2)):\(pad(m, 2)):\(pad(s, 2)).\(pad(ms, 3))Z"
}

extension Duration {
    /// The whole nanoseconds of the duration.
    public var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    /// The duration in seconds.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
