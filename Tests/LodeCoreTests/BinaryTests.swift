import Testing

@testable import LodeCore

@Suite struct BinaryTests {
    @Test(arguments: [UInt64(0), 1, 127, 128, 300, 16_383, 16_384, UInt64(UInt32.max), UInt64.max])
    func varintRoundTrips(_ v: UInt64) throws {
        var w = ByteWriter()
        w.writeVarint(v)
        let bytes = w.bytes
        let back = try bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            let x = try r.readVarint()
            #expect(r.isAtEnd)
            return x
        }
        #expect(back == v)
    }

    @Test func nonMinimalVarintIsRefused() {
        // 0x80 0x00 is a two-byte encoding of 0.
        let bytes: [UInt8] = [0x80, 0x00]
        bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            #expect(throws: BinaryDecodingError.self) { try r.readVarint() }
        }
    }

    @Test func overlongVarintIsRefused() {
        let bytes = [UInt8](repeating: 0xFF, count: 10) + [0x01]
        bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            do throws(BinaryDecodingError) {
                _ = try r.readVarint()
                Issue.record("accepted an 11-byte varint")
            } catch {
                #expect(error.rule == .varintOverflow)
            }
        }
    }

    @Test(arguments: [Int64(0), 1, -1, 63, -64, Int64.max, Int64.min])
    func zigzagRoundTrips(_ v: Int64) throws {
        var w = ByteWriter()
        w.writeSignedVarint(v)
        let back = try w.bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            return try r.readSignedVarint()
        }
        #expect(back == v)
    }

    @Test func invalidUTF8IsRefused() {
        let bytes: [UInt8] = [2, 0xC3, 0x28]
        bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            do throws(BinaryDecodingError) {
                _ = try r.readString()
                Issue.record("accepted invalid UTF-8")
            } catch {
                #expect(error.rule == .invalidUTF8)
            }
        }
    }

    @Test func hugeLengthDoesNotAllocate() {
        // A length of 2^40 with 1 byte behind it must fail before allocating.
        var w = ByteWriter()
        w.writeVarint(1 << 40)
        w.writeByte(0x41)
        w.bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            #expect(throws: BinaryDecodingError.self) { try r.readString() }
        }
    }

    @Test func hexRoundTrips() {
        let b: [UInt8] = [0, 1, 0xab, 0xff]
        #expect(b.hexString == "0001abff")
        #expect([UInt8](hex: "0001ABff") == b)
        #expect([UInt8](hex: "abc") == nil)
        #expect([UInt8](hex: "zz") == nil)
    }
}

@Suite struct ClockTests {
    @Test func tickIsStrictlyIncreasingEvenWhenWallClockStalls() {
        var c = HybridLogicalClock()
        let a = c.tick(wallMillis: 1000)
        let b = c.tick(wallMillis: 1000)
        let d = c.tick(wallMillis: 999)
        #expect(a < b && b < d)
        #expect(a.millis == 1000 && a.counter == 0 && b.counter == 1)
    }

    @Test func observingARemoteStampFromTheFutureRaisesLocalStamps() {
        var c = HybridLogicalClock()
        c.observe(HLC(millis: 5000, counter: 7))
        let s = c.tick(wallMillis: 1000)
        #expect(s > HLC(millis: 5000, counter: 7))
    }

    @Test func iso8601() {
        #expect(formatISO8601(millis: 0) == "1970-01-01T00:00:00.000Z")
        #expect(formatISO8601(millis: 1_764_374_400_123) == "2025-11-29T00:00:00.123Z")
        #expect(formatISO8601(millis: 951_782_400_000) == "2000-02-29T00:00:00.000Z")
    }

    @Test func seededGeneratorIsReproducible() {
        var a = SeededGenerator(seed: 7)
        var b = SeededGenerator(seed: 7)
        #expect((0..<5).map { _ in a.next() } == (0..<5).map { _ in b.next() })
    }
}
