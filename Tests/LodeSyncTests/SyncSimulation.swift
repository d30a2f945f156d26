import Crypto
import LodeCore
import LodeProtocol

@testable import LodeSync

func key(_ n: UInt8) -> Curve25519.Signing.PrivateKey {
    try! Curve25519.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: n, count: 32))
}

let testCluster = [UInt8](repeating: 7, count: 32)

/// A node for protocol simulations: a reference replica per dataset, its
/// log in apply order, and one state machine per connected peer.
final class SimNode {
    let writer: FeedWriter
    var replicas: [String: ReferenceReplica] = [:]
    var logs: [String: [Commit]] = [:]
    var sessions: [SiteID: SyncStateMachine] = [:]
    var wall: UInt64 = 1_000
    /// Commits this node refuses to apply (to simulate a rejection).
    var refuse: Set<[UInt8]> = []
    /// Commits this node holds back as stamped ahead of its clock.
    var holdBack: Set<[UInt8]> = []
    var maxInFlightSeen = 0

    init(_ n: UInt8) { writer = FeedWriter(key: key(n)) }
    var site: SiteID { writer.site }

    func vectors() -> [String: VersionVector] { replicas.mapValues(\.vector) }

    func write(_ dataset: String, _ ops: [Op]) throws -> Commit {
        var r = replicas[dataset] ?? ReferenceReplica(dataset: dataset)
        wall += 1
        let c = try writer.commit(dataset: dataset, ops: ops, hlc: r.clock.tick(wallMillis: wall), head: r.head(of: site), held: r.vector)
        try r.apply(c)
        replicas[dataset] = r
        logs[dataset, default: []].append(c)
        return c
    }

    func missing(_ dataset: String, after: VersionVector, limit: Int = 3) -> [Commit] {
        Array((logs[dataset] ?? []).filter { after[$0.author] < $0.seq }.prefix(limit))
    }

    /// Applies what can be applied; returns rejections.
    func apply(_ dataset: String, _ bytes: [[UInt8]]) -> [CommitRejection] {
        var r = replicas[dataset] ?? ReferenceReplica(dataset: dataset)
        var rejected: [CommitRejection] = []
        for b in bytes {
            guard let c = try? Commit(decoding: b) else { continue }
            if refuse.contains(c.hash) || !c.hasValidSignature {
                rejected.append(CommitRejection(site: c.author, seq: c.seq, code: .badSignature, reason: "refused"))
                continue
            }
            if holdBack.contains(c.hash) {
                rejected.append(CommitRejection(site: c.author, seq: c.seq, code: .clockAhead, reason: "held back"))
                continue
            }
            if (try? r.apply(c)) != nil { logs[dataset, default: []].append(c) }
        }
        replicas[dataset] = r
        return rejected
    }
}

/// Two or more SimNodes joined by in-order message queues, driven until
/// nothing more happens.
struct SimNetwork {
    var nodes: [SimNode]
    /// In-flight messages: (from, to, message).
    var wire: [(Int, Int, SyncMessage)] = []
    var links: [(Int, Int)] = []
    let now = ContinuousClock.now
    var messagesSent = 0
    var closed: [(Int, Int, RejectCode?, String)] = []

    init(_ nodes: [SimNode]) { self.nodes = nodes }

    mutating func connect(_ a: Int, _ b: Int) {
        links.append((a, b))
        for (x, y) in [(a, b), (b, a)] {
            var sm = SyncStateMachine(config: .init(localSite: nodes[x].site, cluster: testCluster), peerSite: nodes[y].site)
            let actions = sm.start(local: nodes[x].vectors(), certificates: [], now: now)
            nodes[x].sessions[nodes[y].site] = sm
            perform(x, y, actions)
        }
    }

    func index(of site: SiteID) -> Int { nodes.firstIndex { $0.site == site }! }

    mutating func perform(_ x: Int, _ y: Int, _ actions: [SyncStateMachine.Action]) {
        var queue = actions
        while !queue.isEmpty {
            let action = queue.removeFirst()
            let peer = nodes[y].site
            switch action {
            case .send(let m):
                // Round-trip through the wire encoding, as a socket would.
                let frame = SyncFrame.encode(.v1(m))
                let dec = SyncFrameSplitter()
                let decoded = try! dec.feed(frame)
                wire.append((x, y, decoded[0]))
                messagesSent += 1
            case .sendMissing(let ds, let after):
                let commits = nodes[x].missing(ds, after: after)
                var through = after
                for c in commits where c.seq > through[c.author] { through[c.author] = c.seq }
                if !commits.isEmpty {
                    queue.append(.send(.commits(dataset: ds, commits: commits.map(\.bytes))))
                }
                queue += nodes[x].sessions[peer]!.sent(dataset: ds, commits: commits.count, through: through, now: now)
                let inFlight = nodes[x].sessions[peer]!.datasets[ds]!.inFlight
                nodes[x].maxInFlightSeen = max(nodes[x].maxInFlightSeen, inFlight)
            case .apply(let ds, let bytes):
                let before = nodes[x].replicas[ds]?.vector ?? VersionVector()
                let rejected = nodes[x].apply(ds, bytes)
                var batch = VersionVector()
                for b in bytes { if let c = try? Commit(decoding: b), c.seq > batch[c.author] { batch[c.author] = c.seq } }
                let after = nodes[x].replicas[ds]?.vector ?? VersionVector()
                queue += nodes[x].sessions[peer]!.applied(dataset: ds, vector: after, batch: batch, rejected: rejected, now: now)
                if after != before { notifyOthers(x, except: y, ds, after) }
            case .addCertificates, .takeRevocation, .log:
                // The simulation's sites know each other and revoke none.
                break
            case .considerSnapshot, .storeSnapshot, .abandonSnapshot, .prepareSnapshot, .sendSnapshotChunk, .releaseSnapshot:
                // Its sites never compact, so none offers a snapshot
                // (SyncStateMachineTests drive snapshots).
                preconditionFailure("a snapshot action in the simulation: \(action)")
            case .close(let code, let message):
                closed.append((x, y, code, message))
                if let code { wire.append((x, y, .v1(.reject(code: code, message: message)))) }
            }
        }
    }

    /// The local replica changed: every other session of node x hears it.
    mutating func notifyOthers(_ x: Int, except y: Int?, _ ds: String, _ v: VersionVector) {
        for (site, _) in nodes[x].sessions where y == nil || site != nodes[y!].site {
            let z = index(of: site)
            let actions = nodes[x].sessions[site]!.localChanged(dataset: ds, vector: v)
            perform(x, z, actions)
        }
    }

    /// A local write at node x, pushed to its sessions.
    mutating func write(_ x: Int, _ ds: String, _ ops: [Op]) throws {
        _ = try nodes[x].write(ds, ops)
        notifyOthers(x, except: nil, ds, nodes[x].replicas[ds]!.vector)
    }

    /// Delivers messages until none are left (or a step budget runs out).
    mutating func run(steps: Int = 100_000, pick: (Int) -> Int = { _ in 0 }) {
        var n = 0
        while !wire.isEmpty && n < steps {
            // Any link may go next, but each link delivers in order (TCP).
            var heads: [Int] = []
            var seen = Set<[Int]>()
            for (i, w) in wire.enumerated() where seen.insert([w.0, w.1]).inserted { heads.append(i) }
            let i = heads[pick(heads.count)]
            let (from, to, m) = wire.remove(at: i)
            let sender = nodes[from].site
            guard nodes[to].sessions[sender] != nil else { continue }
            let actions = nodes[to].sessions[sender]!.receive(m, now: now)
            perform(to, from, actions)
            n += 1
        }
    }
}

func defineOp() -> Op {
    .defineTable(TableDef(name: "t", primaryKey: "id", columns: [ColumnDef(name: "v", type: .integer)]))
}

func putOp(_ key: String, _ v: Int64, length: UInt64 = 1) -> Op {
    var p = PutRows(table: "t", columns: ["v"])
    p.append(key: key, length: length, values: [.integer(v)])
    return .put(p)
}
