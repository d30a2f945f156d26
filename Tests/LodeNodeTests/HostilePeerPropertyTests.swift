import Foundation
import LodeCore
import LodeProtocol
import LodeStore
import LodeTestSupport
import Testing

@testable import LodeNode

/// A hostile peer generated at random (DESIGN §9): certified sites of every
/// role send well-signed and forged commits, vectors and frames built around
/// the edges (0, 1, 2^31, 2^62, 2^63, 2^64−1, far clocks, forks, unknown
/// datasets and tables, reserved names, garbage). After every session the
/// node still serves, the hostile site changed only what its role allows,
/// no dataset appeared from nowhere, memory and disk stayed within bounds;
/// at the end an honest node converges with it.
///
/// `LODE_HOSTILE_SEED` and `LODE_HOSTILE_ROUNDS` run other and longer
/// schedules (the default is bounded for CI).
@Suite(.serialized) struct HostilePeerPropertyTests {
    let scratch = TempDir("lode-hostile")

    static let edges: [UInt64] = [0, 1, 2, 3, 1 << 31, (1 << 62) - 1, 1 << 62, 1 << 63, .max - 1, .max]

    @Test func aHostilePeerAtRandomNeverStopsTheNodeNorReachesPastItsRole() async throws {
        let env = ProcessInfo.processInfo.environment
        let seed = env["LODE_HOSTILE_SEED"].flatMap(UInt64.init) ?? 20_261_202
        let rounds = env["LODE_HOSTILE_ROUNDS"].flatMap(Int.init) ?? 16
        var rng = SeededGenerator(seed: seed)
        let caDir = scratch.file("ca")
        try Identity.createCA(dir: caDir, cluster: "test")
        let berlin = try TestNode(name: "berlin", role: .editor, caDir: caDir, root: scratch.path)
        try await berlin.start()
        defer { Task { await berlin.stop() } }
        try await berlin.node.createDataset("mines", schema: clusterSchema)
        _ = try await berlin.replica("mines").exec("INSERT INTO mines(id, name) VALUES ('mp', 'Mountain Pass'), ('bo', 'Bayan Obo')")
        let baseRSS = residentBytes()
        let baseDisk = bytes(under: berlin.dir)
        var created: Set<String> = ["mines"]
        var heard = 0
        var delivered = 0

        for round in 0..<rounds {
            let role = [Role.reader, .annotator, .editor, .relay].randomElement(using: &rng)!
            let before = try await userTables(berlin)
            let notesBefore = try await berlin.dump("mines")
            let messages = Int.random(in: 4...24, using: &rng)
            var roundRNG = SeededGenerator(seed: rng.next())
            var sent: [String] = []
            do {
                try await HandRolledPeer.session(to: berlin, name: "h\(round)", role: role, caDir: caDir, root: scratch.path) { evil in
                    _ = try await evil.receive { if case .hello = $0 { true } else { false } }
                    heard += 1
                    let vector = try berlin.replica("mines").vector
                    var head = FeedHead.empty
                    for _ in 0..<messages {
                        let (label, bytes) = try Self.message(&roundRNG, evil.site, head: &head, held: vector)
                        sent.append(label)
                        if label.hasPrefix("create ") && role == .editor { created.insert(String(label.dropFirst(7))) }
                        try await evil.sendRaw(bytes)
                        delivered += 1
                    }
                    // The pong says everything before it was handled. A node
                    // waiting for the rest of a partial frame answers nothing:
                    // hang up after a while (it would close the session at its
                    // silence timeout).
                    try await evil.send(.ping(7))
                    _ = try await withThrowingTaskGroup(of: Bool.self) { group in
                        group.addTask { try await evil.receive { if case .pong = $0 { true } else { false } } != nil }
                        group.addTask {
                            try await Task.sleep(for: .seconds(5))
                            evil.hangUp()
                            return false
                        }
                        let first = try await group.next()!
                        group.cancelAll()
                        return first
                    }
                }
            } catch {
                // The node may close the session on what it was sent: allowed.
            }
            let context = "seed \(seed) round \(round) \(role.rawValue): \(sent.joined(separator: ", "))"
            // Still serving: a query, a local write, and a new session.
            #expect(try await berlin.replica("mines").rowCounts().contains { $0.table == "mines" }, "\(context)")
            // Only what the role allows.
            if role != .editor {
                #expect(try await userTables(berlin) == before, "\(context)")
            }
            if role == .reader || role == .relay {
                #expect(try await berlin.dump("mines") == notesBefore, "\(context)")
            }
            #expect(Set(berlin.node.datasetNames()).isSubset(of: created), "\(context): \(berlin.node.datasetNames())")
            // Memory and disk stay bounded (memory for the whole test process, other suites included).
            #expect(residentBytes() < baseRSS + (768 << 20), "\(context): RSS \(residentBytes() >> 20) MiB")
            #expect(bytes(under: berlin.dir) < baseDisk + (96 << 20), "\(context): \(bytes(under: berlin.dir) >> 20) MiB on disk")
        }
        // The schedule reached the node: every session got its Hello and sent.
        #expect(heard == rounds && delivered >= rounds * 3, "seed \(seed): \(heard) sessions, \(delivered) messages")
        _ = try await berlin.replica("mines").exec("UPDATE mines SET name = 'Mountain Pass CA' WHERE id = 'mp'")
        // An honest node that joins now ends with the same tables.
        let lyon = try TestNode(name: "lyon", role: .editor, caDir: caDir, root: scratch.path)
        try await lyon.start()
        defer { Task { await lyon.stop() } }
        try lyon.connect(to: berlin)
        let apart = await waitForSync([berlin, lyon], timeout: .seconds(60))
        #expect(apart.isEmpty, "seed \(seed): \(apart)")
        for name in berlin.node.datasetNames() {
            #expect(try await lyon.dump(name) == (try await berlin.dump(name)), "seed \(seed): dataset \(name)")
        }
    }

    /// One random message as frame bytes, with a label saying what it was.
    static func message(
        _ rng: inout SeededGenerator, _ site: LocalSite, head: inout FeedHead, held: VersionVector
    ) throws -> (
        String, [UInt8]
    ) {
        func edge() -> UInt64 { edges.randomElement(using: &rng)! }
        func frame(_ m: SyncMessageV1) -> [UInt8] { SyncFrame.encode(.v1(m)) }
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        switch Int.random(in: 0..<10, using: &rng) {
        case 0...4:
            // A commit: this site's next (or a fork, or a gap), or forged.
            let dataset = ["mines", "mines", "mines", "nowhere", "_lode", "x\(rng.next() % 1000)"].randomElement(using: &rng)!
            let hlcs: [UInt64] = [now, now + 1, now + 3_600_000, now + 5 * 365 * 86_400_000, 1, now - 86_400_000]
            let hlc = HLC(rawValue: [HLC(millis: hlcs.randomElement(using: &rng)!, counter: 0).rawValue, edge()].randomElement(using: &rng)!)
            var seq = head.seq + 1
            var prev = head.hash
            switch Int.random(in: 0..<6, using: &rng) {
            case 0: seq = edge()
            case 1: prev = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 2 where head.seq > 0: seq = head.seq  // a fork of the last one
            default: break
            }
            var deps: [Dependency] = []
            if Bool.random(using: &rng) {
                deps.append(Dependency(site: try SiteID(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }), seq: edge()))
            }
            let ops = randomOps(&rng, site, hlc: hlc)
            let creating = seq == 1 && ops.contains { $0.isDefinition } && dataset != "mines"
            let content = CommitContent(dataset: dataset, author: site.site, seq: seq, hlc: hlc, prev: prev, deps: deps, ops: ops)
            guard let c = try? Commit.sign(content, with: site.writer.key) else { return ("unencodable commit", frame(.ping(1))) }
            if Int.random(in: 0..<8, using: &rng) == 0 {
                // A forgery: one bit of the signature flipped.
                var bytes = c.bytes
                bytes[bytes.count - 1 - Int.random(in: 0..<64, using: &rng)] ^= 1
                return ("forged \(dataset)#\(seq)", frame(.commits(dataset: dataset, commits: [bytes])))
            }
            if seq == head.seq + 1 && prev == head.hash { head = FeedHead(seq: seq, hash: c.hash, vector: held) }
            return (creating ? "create \(dataset)" : "commit \(dataset)#\(seq)", frame(.commits(dataset: dataset, commits: [c.bytes])))
        case 5:
            var v: [SiteID: UInt64] = [site.site: edge()]
            for _ in 0..<Int.random(in: 0...3, using: &rng) {
                v[try SiteID(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })] = edge()
            }
            let dataset = ["mines", "nowhere", "d\(rng.next() % 100)"].randomElement(using: &rng)!
            return (
                "vector \(dataset)",
                frame(
                    Bool.random(using: &rng) ? .vector(dataset: dataset, vector: VersionVector(v)) : .ack(dataset: dataset, vector: VersionVector(v)))
            )
        case 6:
            let names = (0..<Int.random(in: 1...200, using: &rng)).map { "n\($0)" }
            return (
                "hello ×\(names.count)",
                frame(
                    .hello(
                        protocolVersion: 1, cluster: [UInt8](repeating: 0, count: 32), site: site.site,
                        datasets: names.map {
                            DatasetVector(dataset: $0, vector: VersionVector([site.site: edge()]))
                        }))
            )
        case 7:
            return (
                "certificates", frame(.certificates([(0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }]))
            )
        case 8:
            return (
                "rejected",
                frame(
                    .commitRejected(
                        dataset: "mines", site: site.site, seq: edge(), code: .forkedFeed,
                        message: String(repeating: "x", count: Int.random(in: 0...5000, using: &rng))))
            )
        default:
            // Garbage: random bytes, or a length prefix far beyond the frame limit.
            if Bool.random(using: &rng) {
                return ("garbage", (0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            }
            return ("huge length", [0xFF, 0xFF, 0xFF, 0x7F, 1, 2, 3])
        }
    }

    static func randomOps(_ rng: inout SeededGenerator, _ site: LocalSite, hlc: HLC) -> [Op] {
        func edge() -> UInt64 { edges.randomElement(using: &rng)! }
        var ops: [Op] = []
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            switch Int.random(in: 0..<7, using: &rng) {
            case 0:
                var p = PutRows(table: "mines", columns: ["name"])
                p.append(key: "mp", length: [1, 3, edge() | 1].randomElement(using: &rng)!, values: [.text("hostile")])
                ops.append(.put(p))
            case 1:
                var p = PutRows(table: "_annotations", columns: ["target_table", "target_pk", "body", "author"])
                let own = AnnotationRows.id(hlc: hlc, site: site.site)
                let id = Bool.random(using: &rng) ? own : "19e7044880000003-0123456789abcdef"
                p.append(
                    key: id, length: 1, values: [.text("mines"), .text("mp"), .text("note"), .text(Bool.random(using: &rng) ? site.name : "someone")])
                ops.append(.put(p))
            case 2:
                var d = DeleteRows(table: ["mines", "_annotations", "nope"].randomElement(using: &rng)!)
                d.append(key: "mp", length: edge() & ~1)
                ops.append(.delete(d))
            case 3:
                let name = ["extra", "_lode_log", "mines", "t\(rng.next() % 10)"].randomElement(using: &rng)!
                ops.append(
                    .defineTable(
                        TableDef(name: name, primaryKey: ["id", "name"].randomElement(using: &rng)!, columns: [ColumnDef(name: "v", type: .text)])))
            case 4:
                var p = PutRows(table: "mines", columns: ["nope"])
                p.append(key: "x", length: 1, values: [.integer(1)])
                ops.append(.put(p))
            case 5:
                var p = PutRows(table: "mines", columns: ["name", "output_t"])
                for i in 0..<Int.random(in: 1...500, using: &rng) { p.append(key: "k\(i)", length: 1, values: [.text("bulk"), .integer(Int64(i))]) }
                ops.append(.put(p))
            default:
                var p = PutRows(table: "mines", columns: ["output_t"])
                p.append(key: String(repeating: "k", count: Int.random(in: 1...5000, using: &rng)), length: 1, values: [.integer(.min)])
                ops.append(.put(p))
            }
        }
        return ops
    }

    /// The user tables' schema and rows (annotations aside).
    func userTables(_ n: TestNode) async throws -> [String] {
        let r = try n.replica("mines")
        var out = [try await r.schemaSQL()]
        for t in try await r.schema() {
            let rows = Lines()
            try await r.query("SELECT * FROM \"\(t.name)\" ORDER BY 1") { e in rows.add("\(e)") }
            out += rows.all
        }
        return out
    }
}

/// The process's resident memory, in bytes.
func residentBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8), let pages = Int(s.split(separator: " ")[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// The bytes of the files under a directory.
func bytes(under dir: String) -> Int {
    guard let e = FileManager.default.enumerator(atPath: dir) else { return 0 }
    var total = 0
    for case let f as String in e {
        total += ((try? FileManager.default.attributesOfItem(atPath: dir + "/" + f)[.size]) as? Int) ?? 0
    }
    return total
}
