import Foundation
import LodeCore
import LodeTestSupport
import Testing

@testable import LodeStore

@Suite struct CSVReaderTests {
    func records(_ text: String, chunk: Int = 7) throws -> [[String]] {
        let d = TempDir()
        let csv = try CSVReader(path: d.write("x.csv", text), chunkSize: chunk)
        var out: [[String]] = []
        while let r = try csv.next() { out.append(r) }
        return out
    }

    @Test func quotesNewlinesAndCRLF() throws {
        let text = "\u{FEFF}a,b,c\r\n1,\"x, y\",\"he said \"\"hi\"\"\"\r\n2,\"two\nlines\",\r\n\r\n3,,last"
        #expect(try records(text) == [["a", "b", "c"], ["1", "x, y", "he said \"hi\""], ["2", "two\nlines", ""], ["3", "", "last"]])
    }

    @Test(arguments: [1, 2, 3, 5, 64, 65536])
    func chunkBoundariesDoNotMatter(chunk: Int) throws {
        let text = "id,v\n\"a\"\"b\",\"c\r\nd\"\r\nx,y\n"
        #expect(try records(text, chunk: chunk) == [["id", "v"], ["a\"b", "c\r\nd"], ["x", "y"]])
    }

    /// Random fields (commas, quotes, CR, LF, non-ASCII, empty), written as
    /// RFC 4180 and read back in random chunk sizes, come back unchanged.
    @Test(arguments: 0..<40)
    func randomRecordsRoundTrip(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        let alphabet: [String] = ["a", "Z", "7", ",", "\"", "\n", "\r\n", " ", "é", "∑", ";"]
        let width = Int.random(in: 1...5, using: &rng)
        var records: [[String]] = []
        for _ in 0..<Int.random(in: 1...30, using: &rng) {
            records.append(
                (0..<width).map { _ in (0..<Int.random(in: 0...6, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }.joined() })
        }
        func quoted(_ f: String) -> String {
            f.unicodeScalars.contains { ",\"\r\n".unicodeScalars.contains($0) } ? "\"" + f.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : f
        }
        // A record of one empty field would be a blank line, which is skipped.
        records = records.filter { !($0.count == 1 && $0[0].isEmpty) }
        let text = records.map { $0.map(quoted).joined(separator: ",") }.joined(separator: Bool.random(using: &rng) ? "\r\n" : "\n")
        let d = TempDir()
        let csv = try CSVReader(path: d.write("r.csv", text), chunkSize: Int.random(in: 4...64, using: &rng))
        var back: [[String]] = []
        while let r = try csv.next() { back.append(r) }
        #expect(back == records, "seed \(seed)")
    }

    @Test func lineNumbersCountEmbeddedNewlines() throws {
        let d = TempDir()
        let csv = try CSVReader(path: d.write("x.csv", "h\n\"a\nb\"\nc\n"))
        _ = try csv.next()
        #expect(csv.line == 1)
        _ = try csv.next()
        #expect(csv.line == 2)
        _ = try csv.next()
        #expect(csv.line == 4)
    }

    @Test func errorsNameTheLine() throws {
        func error(_ text: String) -> CSVError? {
            do {
                _ = try records(text)
                return nil
            } catch let e as CSVError {
                return e
            } catch { return nil }
        }
        #expect(error("a\n\"unterminated\n")?.line == 2)
        #expect(error("a\nb\n\"x\"y\n")?.line == 3)
        #expect(error("a\nb\n\"x\"y\n")?.message.contains("after its closing quote") == true)
        #expect(error("a\nb\"c\n")?.line == 2)
        #expect(error("a\nb\"c\n")?.message.contains("quote inside an unquoted field") == true)
        var bad = "a\nok\n"
        bad += String(decoding: [0x66, 0xFF, 0x0A], as: UTF8.self)
        let d = TempDir()
        let p = d.file("bin.csv")
        try! Data([0x61, 0x0A, 0x6F, 0x6B, 0x0A, 0x66, 0xFF, 0x0A]).write(to: URL(fileURLWithPath: p))
        let csv = try CSVReader(path: p)
        _ = try csv.next()
        _ = try csv.next()
        #expect(throws: CSVError.self) { try csv.next() }
    }

    @Test func aRecordLongerThanTheLimitIsRefusedNamingItsLine() throws {
        let d = TempDir()
        // An unterminated quote on line 3 swallows the rest of a 3 MB file.
        let text = "a,b\nx,1\ny,\"" + String(repeating: "z,9\n", count: 800_000)
        let csv = try CSVReader(path: d.write("long.csv", text), maxRecordBytes: 1 << 20)
        #expect(try csv.next() == ["a", "b"])
        #expect(try csv.next() == ["x", "1"])
        do {
            _ = try csv.next()
            Issue.record("an over-long record was read")
        } catch let e as CSVError {
            #expect(e.line == 3, "\(e)")
            #expect(e.message.contains("longer than 1 MiB"), "\(e)")
        }
    }
}
