import AsyncHTTPClient
import CLodeSQLite
import Foundation
import LodeCore
import LodeNode
import LodeStore
import NIOCore
import NIOHTTP1

extension Suite {
    // MARK: W10 workspace pages

    /// The workspace's pages on W1's table (a million rows by default), as
    /// a browser asks for them over loopback: the time from request to the
    /// whole page, p50 and p99 of `samples` requests each.
    /// - key order: 100 rows after a random key (the pager's `after=`);
    /// - filtered: `country = Burma` (1 row in 16), and `tonnes = N` that
    ///   matches almost nothing, so the whole table is scanned;
    /// - an annotated row's page: values, 3 threads with replies, history.
    /// Baseline: the same key-order and full-scan SELECTs on the plain
    /// SQLite table W1's baseline filled, in this process.
    func w10(samples: Int = 200) async throws -> Result {
        guard let source, let rawSource else { throw BenchError("W10 needs W1") }
        let launched = try await ws.launch(source)
        let node = launched.running.node
        guard let web = node.workspaceURL else { throw BenchError("the workspace is not listening") }
        let client = HTTPClient(configuration: .init(redirectConfiguration: .disallow))
        // Sign in as a browser does.
        let link = try node.signInLink(for: "bench", role: .editor)
        var press = HTTPClientRequest(url: web + "/signin")
        press.method = .POST
        press.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        press.body = .bytes(ByteBuffer(string: URL(string: link)?.query ?? ""))
        let signIn = try await client.execute(press, timeout: .seconds(30))
        _ = try await signIn.body.collect(upTo: 1 << 20)
        guard let cookie = signIn.headers["Set-Cookie"].first?.split(separator: ";").first.map(String.init) else {
            throw BenchError("sign-in set no cookie (\(signIn.status))")
        }
        // An annotated row: three notes, each with two replies.
        let replica = try node.replica("bench")
        let row = Rows.key(4242)
        for i in 0..<3 {
            let id = try await replica.annotate(
                NewAnnotation(table: "sites", pk: row, column: i == 0 ? nil : "tonnes", text: "check \(i)", tags: ["t\(i)"]))
            for j in 0..<2 { _ = try await replica.annotate(NewAnnotation(table: "sites", pk: row, text: "reply \(j)", tags: [], replyTo: id)) }
        }
        func get(_ path: String) async throws -> Double {
            var req = HTTPClientRequest(url: web + path)
            req.headers.add(name: "Cookie", value: cookie)
            let start = ContinuousClock.now
            let res = try await client.execute(req, timeout: .seconds(60))
            let body = try await res.body.collect(upTo: 64 << 20)
            let ms = seconds(since: start) * 1000
            guard res.status == .ok, body.readableBytes > 1000 else { throw BenchError("\(path): \(res.status) \(body.readableBytes) bytes") }
            return ms
        }
        var rng = SeededGenerator(seed: 10)
        func randomKey() -> String { String(UInt64.random(in: 0...UInt64.max, using: &rng), radix: 16) }
        resetPeakMemory()
        var keyOrder: [Double] = [], common: [Double] = [], scan: [Double] = [], rowPage: [Double] = []
        for _ in 0..<3 { _ = try await get("/d/bench/t/sites") }  // warm
        for _ in 0..<samples { keyOrder.append(try await get("/d/bench/t/sites?sort=id&after=\(randomKey())")) }
        for _ in 0..<samples { common.append(try await get("/d/bench/t/sites?f.country=Burma&after=\(randomKey())")) }
        for _ in 0..<max(10, samples / 10) {
            scan.append(try await get("/d/bench/t/sites?f.tonnes=\(Int.random(in: 600_000...700_000, using: &rng))"))
        }
        for _ in 0..<samples { rowPage.append(try await get("/d/bench/t/sites/r/\(row)")) }
        let mem = peakMemoryMB()
        try await client.shutdown()
        await launched.stop()
        // The same SELECTs on the plain table.
        let db = try Raw.open(rawSource, fresh: false)
        defer { sqlite3_close(db) }
        func raw(_ sql: String, _ bind: (OpaquePointer) -> Void) throws -> Double {
            let st = try Raw.prepare(db, sql)
            defer { sqlite3_finalize(st) }
            bind(st)
            let start = ContinuousClock.now
            while sqlite3_step(st) == SQLITE_ROW {
                for c in 0..<sqlite3_column_count(st) { _ = sqlite3_column_text(st, c) }
            }
            return seconds(since: start) * 1000
        }
        var rawKey: [Double] = [], rawScan: [Double] = []
        for _ in 0..<samples {
            let k = randomKey()
            rawKey.append(
                try raw("SELECT * FROM sites WHERE id > ? ORDER BY id LIMIT 101") {
                    _ = sqlite3_bind_text($0, 1, k, -1, unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self))
                })
        }
        for _ in 0..<max(10, samples / 10) {
            let n = Int64.random(in: 600_000...700_000, using: &rng)
            rawScan.append(try raw("SELECT * FROM sites WHERE tonnes = ? ORDER BY id LIMIT 101") { _ = sqlite3_bind_int64($0, 1, n) })
        }
        func pct(_ xs: [Double], _ p: Double) -> Double {
            let s = xs.sorted()
            return s[min(s.count - 1, Int(Double(s.count) * p))]
        }
        let p99 = pct(keyOrder, 0.99)
        let filteredWorst = max(pct(common, 0.99), pct(scan, 0.99))
        return Result(
            workload: "W10", what: "workspace pages on the \(rows)-row table (\(samples) requests each, loopback)", value: p99, unit: "ms p99",
            baseline: pct(rawKey, 0.5), baselineUnit: "ms p50 (raw SELECT of the page)", ratio: pct(keyOrder, 0.5) / pct(rawKey, 0.5),
            target: "key p99 < 50 ms, filtered < 500 ms", met: p99 < 50 && filteredWorst < 500, peakMemoryMB: mem, runs: 1,
            notes: String(
                format:
                    "key-order page p50 %.1f p99 %.1f ms; filtered (1 in 16) p50 %.1f p99 %.1f ms; filtered, whole-table scan p50 %.0f p99 %.0f ms (raw scan p50 %.0f ms); annotated row page p50 %.1f p99 %.1f ms; ratio is the key-order page's p50 over the raw SELECT's",
                pct(keyOrder, 0.5), p99, pct(common, 0.5), pct(common, 0.99), pct(scan, 0.5), pct(scan, 0.99), pct(rawScan, 0.5),
                pct(rowPage, 0.5), pct(rowPage, 0.99)))
    }
}
