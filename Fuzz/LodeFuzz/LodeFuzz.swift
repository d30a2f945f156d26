// libFuzzer targets for the parsers that read what other people send us.
// Built only by Fuzz/run.sh (LODE_FUZZ=1 swift build -Xswiftc -sanitize=fuzzer),
// which links libFuzzer; the target is chosen with LODE_FUZZ_TARGET:
//
//   commit  Commit(decoding:): anything accepted re-encodes to the same bytes,
//           and checking its signature never traps.
//   frame   SyncFrameDecoder (the one the connection pipeline runs), fed in
//           two pieces: every message decoded encodes to a frame that
//           decodes to the same message.
//   csv     CSVReader and SQLiteReplica.importCSV into a 5-column table: an import
//           that fails leaves the tables exactly as they were; one that
//           succeeds makes only commits that a peer's decoder accepts, and
//           a second replica applying them ends up with the same rows.
//   exec    SQLiteReplica.exec on tables with rows: the same two rules.
//   session a whole sync session from a hostile peer with a valid
//           certificate, against one node kept across inputs
//           (SessionTarget.swift): the node never stops, keeps its bounds,
//           and an honest replica of what it holds ends the same.
import Crypto
import Foundation
import LodeCore
import LodeProtocol
import LodeSQLite
import LodeStore
import LodeSync

let target = ProcessInfo.processInfo.environment["LODE_FUZZ_TARGET"] ?? ""

/// Runs async work to completion from libFuzzer's synchronous callback.
func blocking<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) -> Result<T, Error> {
    let done = DispatchSemaphore(value: 0)
    let box = ResultBox<T>()
    Task {
        do { box.result = .success(try await work()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return box.result!
}

/// A fuzzing check that says what failed in every build (a release
/// build drops `precondition`'s message, and libFuzzer's log is then all
/// there is to go on).
func check(_ ok: Bool, _ message: @autoclosure () -> String) {
    if !ok { fatalError(message()) }
}

final class ResultBox<T>: @unchecked Sendable { var result: Result<T, Error>? }

/// A replica in a temporary directory, made once per fuzzing process.
let replica: SQLiteReplica? = {
    guard target == "csv" || target == "exec" else { return nil }
    let dir = NSTemporaryDirectory() + "lode-fuzz-\(getpid())"
    try? FileManager.default.removeItem(atPath: dir)
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "lode-fuzz-\(getpid())") }
    let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 7, count: 32))
    let local = LocalSite(writer: FeedWriter(key: key), name: "fuzz", role: .editor, certificate: [])
    let tables = try! SchemaParser.parse(
        """
        CREATE TABLE t (k TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', n INTEGER, x REAL, b BLOB);
        CREATE TABLE u (id TEXT PRIMARY KEY, t_k TEXT, note TEXT);
        """)
    let r = try! blocking { try await SQLiteCatalog(directory: dir, local: local).create("fuzz", tables: tables) }.get()
    _ = try! blocking { try await r.exec("INSERT INTO t (k, name, n, x) VALUES ('a', 'one', 1, 1.5), ('b', 'two', 2, NULL), ('c', '', NULL, 0.25)") }
        .get()
    return r
}()

/// A second replica that applies every commit the first one makes, as a
/// peer would: after each successful write both must hold the same rows.
let follower: SQLiteReplica? = {
    guard let r = replica else { return nil }
    let key = try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 8, count: 32))
    let local = LocalSite(writer: FeedWriter(key: key), name: "peer", role: .editor, certificate: [])
    let dir = NSTemporaryDirectory() + "lode-fuzz-\(getpid())"
    let f = try! SQLiteCatalog(directory: dir + "/peer", local: local).openOrCreate("fuzz").replica
    _ = try! blocking {
        try await f.registerSite(SiteRecord(site: r.local.site, name: r.local.name, role: .editor, certificate: nil))
        let all = try await r.commits(missingFrom: VersionVector())
        return try await f.apply(all.map { try Commit(decoding: $0.bytes) }).applied.count
    }.get()
    return f
}()

let csvPath = NSTemporaryDirectory() + "lode-fuzz-\(getpid()).csv"

/// Every row of both tables, byte for byte with each value's storage class,
/// and the version vector: what must not change when an operation fails,
/// and what a peer applying the same commits must hold.
func snapshot(_ r: SQLiteReplica) -> String {
    let text = blocking { () async throws -> String in
        let rows = Lines()
        for (table, columns) in [("t", ["k", "name", "n", "x", "b"]), ("u", ["id", "t_k", "note"])] {
            let exact = columns.map { "typeof(\($0)) || ':' || coalesce(hex(CAST(\($0) AS BLOB)), '')" }.joined(separator: ", ")
            try await r.query("SELECT \(exact) FROM \(table) ORDER BY \(columns[0])") { row in rows.add("\(row)") }
        }
        return rows.joined + "\n\(r.vector)"
    }
    return (try? text.get()) ?? "query failed: \(text)"
}

final class Lines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ s: String) { lock.withLock { lines.append(s) } }
    var joined: String { lock.withLock { lines.joined(separator: "\n") } }
}

/// Runs a local write; if it fails the replica must be exactly as before,
/// and if it succeeds every commit it made must be one a peer accepts.
func checkWrite(_ r: SQLiteReplica, _ what: String, _ write: @escaping @Sendable () async throws -> Void) {
    let f = follower  // made (and caught up) before this write
    let before = snapshot(r)
    let vector = r.vector
    switch blocking(write) {
    case .failure:
        check(snapshot(r) == before, "a failed \(what) changed the tables")
    case .success:
        // What the write made, read back as a peer would be sent it: a
        // log that cannot be read back (or a commit that does not decode)
        // is a failure, never "nothing to check".
        let made: [StoredCommit]
        switch blocking({ try await r.missingCommits(after: vector, maxBytes: .max, maxCount: .max) }) {
        case .success(let m): made = m
        case .failure(let e): fatalError("after a successful \(what), its commits cannot be read back: \(e)")
        }
        let decoded = made.map { c -> Commit in
            do { return try Commit(decoding: c.bytes) } catch {
                fatalError("\(what) made a commit that peers would refuse: \(error), bytes \(c.bytes)")
            }
        }
        guard let f, !decoded.isEmpty else { return }
        let outcome = blocking { try await f.apply(decoded) }
        guard case .success(let o) = outcome, o.applied.count == decoded.count else {
            fatalError("a peer did not apply the commits of a successful \(what): \(outcome)")
        }
        check(snapshot(f) == snapshot(r), "after a successful \(what), a peer applying its commits holds different rows")
    }
}

/// libFuzzer's entry for a program with its own main.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// SwiftPM names an executable's entry point `<module>_main` and links
/// `main` to it, so libFuzzer's own main is never used: run its driver.
@_cdecl("lode_fuzz_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    if let dir = ProcessInfo.processInfo.environment["LODE_FUZZ_SESSION_SEEDS"] {
        do {
            try writeSessionSeeds(to: dir)
            return 0
        } catch {
            print("cannot write the session seeds: \(error)")
            return 1
        }
    }
    var count = argc
    var vector: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return LLVMFuzzerRunDriver(&count, &vector, fuzz)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    switch target {
    case "commit":
        if let c = try? Commit(decoding: bytes) {
            check(c.bytes == bytes, "a decoded commit must be its own canonical encoding")
            _ = c.hasValidSignature
            let again = try? Commit(decoding: c.bytes)
            check(again?.bytes == c.bytes, "a commit re-decoded must keep its bytes")
        }
    case "frame":
        guard let first = bytes.first else { return 0 }
        let cut = bytes.count > 1 ? Int(first) % bytes.count : 0
        let decoder = SyncFrameSplitter(maxFrameBytes: 1 << 20)
        var messages: [SyncMessage] = []
        do {
            messages += try decoder.feed(bytes[1..<max(1, cut)])
            messages += try decoder.feed(bytes[max(1, cut)...])
        } catch {}
        for m in messages {
            let again = SyncFrameSplitter(maxFrameBytes: 64 << 20)
            let back = try? again.feed(SyncFrame.encode(m))
            check(back == [m], "a decoded message must survive encoding: \(m)")
        }
    case "csv":
        guard let r = replica else { return 0 }
        _ = FileManager.default.createFile(atPath: csvPath, contents: Data(bytes))
        if let reader = try? CSVReader(path: csvPath, maxRecordBytes: 1 << 16) {
            while let record = try? reader.next() { _ = record }
        }
        checkWrite(r, "import") { _ = try await r.importCSV(table: "t", path: csvPath) }
    case "exec":
        guard let r = replica else { return 0 }
        let sql = String(decoding: bytes, as: UTF8.self)
        checkWrite(r, "exec") { _ = try await r.exec(sql) }
    case "session":
        sessionWorld?.run(bytes)
    default:
        fatalError("set LODE_FUZZ_TARGET to commit, frame, csv, exec or session")
    }
    return 0
}
