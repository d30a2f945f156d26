import Testing

@testable import LodeCore

/// How readers name a point in history: ISO 8601 times (the inverse of the
/// format every stamp prints in) and commits.
@Suite struct HistoryPointTests {
    @Test func timesReadBackAsTheyPrint() {
        var rng = SeededGenerator(seed: 11)
        for _ in 0..<2000 {
            let millis = UInt64.random(in: 0..<4_102_444_800_000, using: &rng)  // before 2100
            #expect(parseISO8601(formatISO8601(millis: millis)) == millis)
        }
        #expect(parseISO8601("1970-01-01") == 0)
        #expect(parseISO8601("2026-03-01") == 1_772_323_200_000)
        #expect(parseISO8601("2026-03-01T00:00:00Z") == 1_772_323_200_000)
        #expect(parseISO8601("2026-03-01T01:30+01:30") == 1_772_323_200_000)
        #expect(parseISO8601("2026-03-01 00:00:00.5Z") == 1_772_323_200_500)
        #expect(parseISO8601("2026-03-01T00:00:00.123456Z") == 1_772_323_200_123)
        #expect(parseISO8601("2024-02-29T23:59:59.999Z") == 1_709_251_199_999)
        #expect(parseISO8601("1970-01-01T00:30+01:00") == 0)
    }

    @Test func anythingElseIsNoTime() {
        for bad in [
            "", "2026", "2026-3-1", "2026-13-01", "2026-00-10", "2026-01-32", "2026-03-01T", "2026-03-01T24:00Z", "2026-03-01T12:00:00.Z",
            "2026-03-01T12:00:00ZZ", "2026-03-01T12:00+0100", "1969-12-31", "１２３４-01-01", "2026-03-01T12:00:00+01:00x",
        ] {
            #expect(parseISO8601(bad) == nil, "\(bad)")
        }
    }

    @Test func pointsAreTimesOrCommits() {
        #expect(HistoryPoint.parse("2026-03-01") == .time(millis: 1_772_323_200_000))
        #expect(HistoryPoint.parse("alpha:12") == .commit(site: "alpha", seq: 12))
        #expect(HistoryPoint.parse("3f9a1c0b:1") == .commit(site: "3f9a1c0b", seq: 1))
        for bad in ["alpha", "alpha:", ":3", "alpha:0", "alpha:-1", "alpha:x", "2026-03-01T12:00:7"] {
            #expect(HistoryPoint.parse(bad) == nil, "\(bad)")
        }
        // A time includes every stamp of its millisecond, and no later one.
        let s = HistoryPoint.stamp(millis: 5)
        #expect(HLC(millis: 5, counter: 9) <= s && HLC(millis: 6, counter: 0) > s)
    }
}
