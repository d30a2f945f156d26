import Crypto
import Foundation
import LodeCore
import LodeNode
import LodeProtocol
import LodeSQLite
import LodeStore
import LodeSync

/// The stateful target (`session`): one node, kept across inputs, and a
/// hostile peer holding a valid certificate. Each input is a session: the
/// peer's Hello, then whatever frames the input holds, fed to the node's
/// real sync code (`OfflineSession`: the state machine, `NodeSyncHost` with
/// its cut-offs, wait buffer, dataset rules and revocation intake, the
/// SQLite replicas). The first byte chooses how hostile: bit 0 re-signs
/// every commit that decodes as the peer (so it passes the signature check
/// and reaches the apply code), bit 1 also puts it at the next seq of the
/// peer's feed with the right previous hash, bit 2 makes the peer an
/// annotator instead of an editor, bit 3 ends the session with a tick far
/// in the future (timeouts).
///
/// After each session: every frame the node sent decodes; the node still
/// answers a query; the announced datasets it keeps stay within their
/// bound; and a second replica that applies, as a peer, every commit the
/// node holds of `mines` holds exactly the same rows: the node's state
/// after any hostile session is one honest replicas converge to.
final class SessionWorld: @unchecked Sendable {
    let node: Node
    let host: any SyncHost
    let editor: NodeIdentity
    let annotator: NodeIdentity
    let follower: SQLiteReplica

    init() throws {
        let dir = NSTemporaryDirectory() + "lode-fuzz-session-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "lode-fuzz-session-\(getpid())") }
        _ = try Identity.createCA(dir: dir + "/ca", cluster: "fuzz")
        func identity(_ name: String, _ role: Role) throws -> NodeIdentity {
            try Node.initialize(dataDir: dir + "/" + name, site: name, role: role, caDir: dir + "/ca")
            let n = try Node.open(dataDir: dir + "/" + name)
            defer { n.close() }
            return n.identity
        }
        editor = try identity("mallory", .editor)
        annotator = try identity("anna", .annotator)
        try Node.initialize(dataDir: dir + "/berlin", site: "berlin", role: .editor, caDir: dir + "/ca")
        node = try Node.open(dataDir: dir + "/berlin")
        let node = node
        let (editor, annotator) = (editor, annotator)
        try blocking {
            try await node.addCertificate(editor.certificate.der)
            try await node.addCertificate(annotator.certificate.der)
            let r = try await node.createDataset(
                "mines", schema: "CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', t INTEGER, grade REAL, raw BLOB);")
            _ = try await r.exec("INSERT INTO mines (id, name, t, grade) VALUES ('mp', 'Mountain Pass', 40000, 6.5), ('bo', 'Bayan Obo', NULL, 3.1)")
        }.get()
        host = node.makeSyncHost()
        follower = try SQLiteCatalog(
            directory: dir + "/follower",
            local: LocalSite(
                writer: FeedWriter(key: Curve25519.Signing.PrivateKey()), name: "follower", role: .reader, certificate: [])
        ).openOrCreate("mines").replica
    }

    /// The head of `author`'s feed in `dataset` at the node: seq and hash.
    func head(_ dataset: String, _ author: SiteID) async throws -> FeedHead {
        guard let r = try? node.replica(dataset) else { return .empty }
        let held = r.vector[author]
        guard held > 0 else { return .empty }
        var before = r.vector
        before[author] = held - 1
        let last = try await r.commits(missingFrom: before, limit: 10_000).first { $0.author == author && $0.seq == held }
        return last.map { FeedHead(seq: $0.seq, hash: $0.hash, vector: VersionVector()) } ?? .empty
    }

    func run(_ bytes: [UInt8]) {
        guard let flags = bytes.first else { return }
        let peer = flags & 4 == 0 ? editor : annotator
        let splitter = SyncFrameSplitter(maxFrameBytes: 1 << 20)
        var messages: [SyncMessage] = []
        let rest = bytes.dropFirst()
        let cut = rest.isEmpty ? 0 : Int(flags >> 4) * rest.count / 16
        do {
            messages += try splitter.feed(rest.prefix(cut))
            messages += try splitter.feed(rest.dropFirst(cut))
        } catch {}
        let sent = Frames()
        let inbound = messages
        let outcome = blocking { [self] in
            let session = OfflineSession(
                host: host, peer: PeerIdentity(site: peer.local.site, name: peer.local.name, role: peer.local.role),
                localSite: node.identity.local.site, cluster: node.cluster
            ) { sent.add($0) }
            try await session.start()
            let hello = SyncMessageV1.hello(protocolVersion: 1, cluster: node.cluster, site: peer.local.site, datasets: [])
            if try await session.receive(.v1(hello)) { return }
            var heads: [String: FeedHead] = [:]
            for m in inbound {
                var message = m
                if flags & 1 != 0, case .v1(.commits(let dataset, let raw)) = m {
                    var out: [[UInt8]] = []
                    for bytes in raw {
                        guard var content = try? Commit(decoding: bytes).content else {
                            out.append(bytes)
                            continue
                        }
                        content.author = peer.local.site
                        if flags & 2 != 0 {
                            var head = heads[content.dataset] ?? .empty
                            if heads[content.dataset] == nil { head = try await self.head(content.dataset, peer.local.site) }
                            content.seq = head.seq + 1
                            content.prev = head.hash
                        }
                        guard let signed = try? Commit.sign(content, with: peer.key) else { continue }
                        heads[content.dataset] = FeedHead(seq: signed.seq, hash: signed.hash, vector: VersionVector())
                        out.append(signed.bytes)
                    }
                    message = .v1(.commits(dataset: dataset, commits: out))
                }
                if try await session.receive(message) { return }
            }
            check(session.unheldEntries <= 65_536, "a session kept \(session.unheldEntries) announced vector entries")
            if flags & 8 != 0 { try await session.tick(at: .now + .seconds(3600)) }
        }
        if case .failure(let e) = outcome {
            // A session may end in an error (as a connection would); the node must not be harmed.
            _ = e
        }
        // Every frame the node sent decodes.
        let reader = SyncFrameSplitter()
        for f in sent.all { check((try? reader.feed(f))?.count == 1, "the node sent a frame that does not decode") }
        // The node answers, and an honest replica of what it holds ends the same.
        let verdict = blocking { [self] () async throws -> String? in
            let r = try node.replica("mines")
            try await r.query("SELECT count(*) FROM mines") { _ in }
            for s in try await r.sites() { try await follower.registerSite(s) }
            var missing = try await r.commits(missingFrom: follower.vector, limit: 100_000)
            while !missing.isEmpty {
                let o = try await follower.apply(missing)
                guard !o.applied.isEmpty else { break }
                missing = o.waiting
            }
            guard follower.vector == r.vector else { return "the follower holds \(follower.vector), the node \(r.vector)" }
            let a = try await exportAll(r), b = try await exportAll(follower)
            return a == b ? nil : "the follower's tables differ from the node's:\n\(a)\n---\n\(b)"
        }
        switch verdict {
        case .success(let problem?): fatalError(problem)
        case .success(nil): break
        case .failure(let e): fatalError("the node no longer serves: \(e)")
        }
    }

    func exportAll(_ r: any ReplicaStore) async throws -> String {
        let lines = Lines()
        for t in try await r.schema() {
            lines.add("-- \(t.name)")
            try await r.export(table: t.name) { e in lines.add("\(e)") }
        }
        for a in try await r.annotations() { lines.add("note \(a)") }
        return lines.joined
    }
}

final class Frames: @unchecked Sendable {
    private let lock = NSLock()
    private var frames: [[UInt8]] = []
    func add(_ f: [UInt8]) { lock.withLock { frames.append(f) } }
    var all: [[UInt8]] { lock.withLock { frames } }
}

let sessionWorld: SessionWorld? = target == "session" ? try! SessionWorld() : nil

/// Seeds for the session target that libFuzzer would take long to find:
/// frames of real commits (rows, deletes, a new table, an annotation, a
/// causal length at the bound), each after a flags byte.
func writeSessionSeeds(to dir: String) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let key = try Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 3, count: 32))
    let writer = FeedWriter(key: key)
    let now = HLC(millis: UInt64(Date().timeIntervalSince1970 * 1000), counter: 0)
    var put = PutRows(table: "mines", columns: ["name", "t", "grade"])
    put.append(key: "mp", length: 1, values: [.text("Mountain Pass (fuzz)"), .integer(1), .real(0.5)])
    put.append(key: "new", length: 1, values: [.text("x"), .null, .real(-1)])
    var high = PutRows(table: "mines", columns: ["name"])
    high.append(key: "bo", length: Limits.maxCausalLength, values: [.text("last life")])
    var del = DeleteRows(table: "mines")
    del.append(key: "mp", length: 2)
    var note = PutRows(table: "_annotations", columns: ["target_table", "target_pk", "body", "author", "status"])
    note.append(key: "0-0", length: 1, values: [.text("mines"), .text("mp"), .text("check"), .text("mallory"), .text("open")])
    let table = TableDef(name: "extra", primaryKey: "id", columns: [ColumnDef(name: "v", type: .integer)])
    let bodies: [(String, [Op])] = [
        ("put", [.put(put)]), ("high", [.put(high)]), ("delete", [.delete(del)]), ("note", [.put(note)]),
        ("define", [.defineTable(table)]),
    ]
    var all: [[UInt8]] = []
    for (name, ops) in bodies {
        let c = try writer.commit(dataset: "mines", ops: ops, hlc: now, head: .empty, held: VersionVector())
        all.append(c.bytes)
        let frame = SyncFrame.encode(.v1(.commits(dataset: "mines", commits: [c.bytes])))
        for flags: UInt8 in [0x03, 0x07, 0x0B] {
            try Data([flags] + frame).write(to: URL(fileURLWithPath: "\(dir)/\(name)-\(flags)"))
        }
    }
    let many = SyncFrame.encode(.v1(.commits(dataset: "mines", commits: all)))
    try Data([0x03] + many).write(to: URL(fileURLWithPath: "\(dir)/all"))
    // A new dataset, then a vector naming it.
    let fresh = try writer.commit(dataset: "other", ops: [.defineTable(table)], hlc: now, head: .empty, held: VersionVector())
    var v = VersionVector()
    v[writer.site] = 1
    try Data(
        [0x03] + SyncFrame.encode(.v1(.commits(dataset: "other", commits: [fresh.bytes])))
            + SyncFrame.encode(.v1(.vector(dataset: "other", vector: v)))
    )
    .write(to: URL(fileURLWithPath: "\(dir)/new-dataset"))
}
