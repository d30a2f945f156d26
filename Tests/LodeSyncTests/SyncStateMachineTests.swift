import LodeCore
import LodeProtocol
import Testing

@testable import LodeSync

@Suite struct SyncStateMachineTests {
    let a = SimNode(1)
    let b = SimNode(2)

    @Test func helloChecksVersionClusterAndSite() {
        let now = ContinuousClock.now
        func first(_ hello: SyncMessageV1) -> SyncStateMachine.Action? {
            var sm = SyncStateMachine(config: .init(localSite: a.site, cluster: testCluster), peerSite: b.site)
            _ = sm.start(local: [:], certificates: [], now: now)
            return sm.receive(.v1(hello), now: now).first
        }
        #expect(
            first(.hello(protocolVersion: 2, cluster: testCluster, site: b.site, datasets: []))
                == .close(.protocolVersion, "peer speaks protocol version 2; this node speaks 1"))
        if case .close(let code, _)? = first(.hello(protocolVersion: 1, cluster: [UInt8](repeating: 9, count: 32), site: b.site, datasets: [])) {
            #expect(code == .differentCluster)
        } else {
            Issue.record("another cluster was accepted")
        }
        if case .close(let code, _)? = first(.hello(protocolVersion: 1, cluster: testCluster, site: SimNode(3).site, datasets: [])) {
            #expect(code == .siteMismatch)
        } else {
            Issue.record("a Hello naming another site was accepted")
        }
        if case .close(let code, _)? = first(.commits(dataset: "d", commits: [])) {
            #expect(code == .malformed)
        } else {
            Issue.record("commits before Hello were accepted")
        }
    }

    @Test func twoNodesCatchUpBothWaysAndAreInSync() throws {
        _ = try a.write("d", [defineOp()])
        for i in 0..<20 { _ = try a.write("d", [putOp("a\(i)", Int64(i))]) }
        _ = try b.write("e", [defineOp()])
        for i in 0..<7 { _ = try b.write("e", [putOp("b\(i)", Int64(i))]) }
        var net = SimNetwork([a, b])
        net.connect(0, 1)
        net.run()
        #expect(a.vectors() == b.vectors())
        #expect(a.replicas["d"]!.rows(of: "t") == b.replicas["d"]!.rows(of: "t"))
        #expect(a.sessions[b.site]!.isInSync && b.sessions[a.site]!.isInSync)
        #expect(a.maxInFlightSeen <= 4)
        // Then a new commit is pushed at once.
        try net.write(0, "d", [putOp("late", 1)])
        net.run()
        #expect(b.replicas["d"]!.rows(of: "t")["late"] != nil)
        #expect(a.sessions[b.site]!.isInSync)
    }

    @Test func aRelayCarriesCommitsBetweenSitesThatNeverMeet() throws {
        let relay = SimNode(3)
        var net = SimNetwork([a, relay, b])
        net.connect(0, 1)
        net.connect(1, 2)
        try net.write(0, "d", [defineOp()])
        net.run()
        try net.write(0, "d", [putOp("x", 1)])
        try net.write(2, "d", [putOp("y", 2)])
        net.run()
        for n in [a, relay, b] { #expect(n.replicas["d"]?.rows(of: "t").count == 2) }
    }

    @Test func aRefusedCommitIsNotResentForeverAndTheRestStillFlows() throws {
        _ = try a.write("d", [defineOp()])
        let bad = try a.write("d", [putOp("x", 1)])
        b.refuse = [bad.hash]
        _ = try a.write("d", [putOp("y", 2)])
        var net = SimNetwork([a, b])
        net.connect(0, 1)
        net.run()
        let sent = net.messagesSent
        #expect(b.replicas["d"]?.vector[a.site] == 1)
        // More ticks and vector exchanges do not start a resend loop.
        for _ in 0..<5 {
            net.perform(0, 1, net.nodes[0].sessions[b.site]!.receive(.v1(.vector(dataset: "d", vector: b.replicas["d"]!.vector)), now: net.now))
            net.run()
        }
        #expect(net.messagesSent - sent < 12, "resend loop: \(net.messagesSent - sent) messages")
    }

    /// A commit the peer holds back for its clock is not resent at once
    /// (no loop), but is offered again at the next vector round, and then
    /// the feed flows on.
    @Test func aCommitHeldBackForTheClockIsOfferedAgainAtTheNextVectorRound() throws {
        _ = try a.write("d", [defineOp()])
        let early = try a.write("d", [putOp("x", 1)])
        _ = try a.write("d", [putOp("y", 2)])
        b.holdBack = [early.hash]
        var net = SimNetwork([a, b])
        net.connect(0, 1)
        net.run()
        #expect(b.replicas["d"]?.vector[a.site] == 1)
        let sent = net.messagesSent
        for _ in 0..<5 {
            net.perform(0, 1, net.nodes[0].sessions[b.site]!.receive(.v1(.vector(dataset: "d", vector: b.replicas["d"]!.vector)), now: net.now))
            net.run()
        }
        #expect(net.messagesSent - sent < 12, "resend loop: \(net.messagesSent - sent) messages")
        #expect(b.replicas["d"]?.vector[a.site] == 1)
        // The clock has caught up; at the next vector round a offers the feed again.
        b.holdBack = []
        net.perform(0, 1, net.nodes[0].sessions[b.site]!.tick(now: net.now + .seconds(31)))
        net.run()
        #expect(b.replicas["d"]?.vector[a.site] == 3)
        #expect(b.replicas["d"]!.rows(of: "t") == a.replicas["d"]!.rows(of: "t"))
    }

    @Test func randomDeliveryOrderAcrossThreeNodesConverges() throws {
        for seed in 0..<25 as Range<UInt64> {
            var rng = SeededGenerator(seed: seed)
            let nodes = [SimNode(1), SimNode(2), SimNode(3)]
            var net = SimNetwork(nodes)
            try net.write(0, "d", [defineOp()])
            net.connect(0, 1)
            net.connect(1, 2)
            if Bool.random(using: &rng) { net.connect(0, 2) }
            for step in 0..<40 {
                let x = Int.random(in: 0..<3, using: &rng)
                if nodes[x].replicas["d"]?.schemas["t"] != nil, Bool.random(using: &rng) {
                    let k = "k\(Int.random(in: 0..<5, using: &rng))"
                    let len = Merge.lengthForLocalWrite(nodes[x].replicas["d"]!.length(of: "t", key: k))
                    try net.write(x, "d", [putOp(k, Int64(step), length: len)])
                }
                // Deliver a few messages, not always the oldest first between different links.
                for _ in 0..<Int.random(in: 0..<6, using: &rng) where !net.wire.isEmpty {
                    net.run(steps: 1) { count in Int.random(in: 0..<count, using: &rng) }
                }
            }
            net.run()
            #expect(nodes[0].vectors() == nodes[1].vectors() && nodes[1].vectors() == nodes[2].vectors(), "seed \(seed)")
            #expect(nodes[0].replicas["d"]!.rows(of: "t") == nodes[2].replicas["d"]!.rows(of: "t"), "seed \(seed)")
        }
    }

    /// Announcements create nothing: a dataset named in a Hello or a vector
    /// that this node does not hold is only remembered, within a bound, so
    /// that once it comes into being here the session starts from what the
    /// peer holds instead of pushing it back.
    @Test func announcedDatasetsAreRememberedWithinABoundAndCreateNothing() throws {
        let now = ContinuousClock.now
        var sm = SyncStateMachine(config: .init(localSite: a.site, cluster: testCluster), peerSite: b.site)
        _ = sm.start(local: [:], certificates: [], now: now)
        let peerHolds = VersionVector([b.site: 5])
        var big = VersionVector()
        for i in 0..<40_000 { big[try SiteID(bytes: (0..<32).map { UInt8(truncatingIfNeeded: $0 == 0 ? i : ($0 == 1 ? i >> 8 : 3)) })] = 1 }
        let hello = SyncMessageV1.hello(
            protocolVersion: 1, cluster: testCluster, site: b.site,
            datasets: [
                DatasetVector(dataset: "d", vector: peerHolds), DatasetVector(dataset: "big1", vector: big),
                DatasetVector(dataset: "big2", vector: big),
            ])
        let actions = sm.receive(.v1(hello), now: now)
        #expect(!actions.contains { if case .apply = $0 { true } else { false } })
        #expect(sm.datasets.isEmpty, "an announcement made the session hold \(sm.datasets.keys.sorted())")
        #expect(sm.unheld.values.reduce(0) { $0 + $1.count } <= SyncStateMachine.maxUnheldEntries)
        #expect(sm.unheld["d"] == peerHolds && sm.unheld["big1"] != nil && sm.unheld["big2"] == nil)
        #expect(sm.receive(.v1(.vector(dataset: "e", vector: peerHolds)), now: now).isEmpty)
        // "d" comes into being here holding what the peer holds: nothing to send.
        let after = sm.localChanged(dataset: "d", vector: peerHolds)
        #expect(after == [.send(.vector(dataset: "d", vector: peerHolds))], "\(after)")
        #expect(sm.unheld["d"] == nil && sm.datasets["d"]?.peer == peerHolds)
    }

    /// Flow control is the session's: at most 4 batches and about 8 MiB
    /// out at once over every dataset (so a peer buffers tens of megabytes
    /// at most), a freed slot goes to any dataset, and nothing is sent
    /// again while the peer is alive and acknowledging slowly (it used to be
    /// resent every vector round, 30 s, duplicates for a slow receiver).
    /// Batches unacknowledged for 5 minutes close the session instead.
    @Test func theWindowIsTheSessionsAndNothingIsResentToASlowPeer() {
        var v = VersionVector()
        v[a.site] = 1000
        func drive(_ sm: inout SyncStateMachine, _ actions: [SyncStateMachine.Action], bytes: Int, now: ContinuousClock.Instant) -> [String] {
            var queue = actions[...]
            var sent: [String] = []
            while let action = queue.popFirst() {
                guard case .sendMissing(let ds, let after) = action else { continue }
                var through = after
                through[a.site] = after[a.site] + 10
                sent.append(ds)
                queue += sm.sent(dataset: ds, commits: 10, bytes: bytes, through: through, now: now)
            }
            return sent
        }
        for (bytes, expected) in [(1 << 20, 4), (5 << 20, 2), (40 << 20, 1)] {
            var now = ContinuousClock.now
            var sm = SyncStateMachine(config: .init(localSite: a.site, cluster: testCluster), peerSite: b.site)
            _ = sm.start(local: ["d1": v, "d2": v, "d3": v], certificates: [], now: now)
            let hello = SyncMessageV1.hello(
                protocolVersion: 1, cluster: testCluster, site: b.site,
                datasets: ["d1", "d2", "d3"].map { DatasetVector(dataset: $0, vector: VersionVector()) })
            var sent = drive(&sm, sm.receive(.v1(hello), now: now), bytes: bytes, now: now)
            #expect(sent.count == expected, "\(bytes) bytes a batch: \(sent)")
            // The peer is slow: vector rounds and pings pass, nothing more is sent.
            for _ in 0..<9 {
                now += .seconds(31)
                _ = sm.receive(.v1(.pong(1)), now: now)
                #expect(drive(&sm, sm.tick(now: now), bytes: bytes, now: now).isEmpty)
            }
            // An acknowledgement frees room, for whichever dataset may use it.
            var acked = VersionVector()
            acked[a.site] = 10
            sent = drive(&sm, sm.receive(.v1(.ack(dataset: sent[0], vector: acked)), now: now), bytes: bytes, now: now)
            #expect(sent.count == 1, "\(sent)")
            // Five minutes more without an acknowledgement: the session closes.
            now += .seconds(301)
            _ = sm.receive(.v1(.pong(2)), now: now)
            guard case .close(.timeout, _)? = sm.tick(now: now).first else {
                Issue.record("batches unacknowledged for 5 minutes did not close the session")
                continue
            }
        }
    }

    @Test func keepaliveAndSilence() {
        let start = ContinuousClock.now
        var sm = SyncStateMachine(config: .init(localSite: a.site, cluster: testCluster), peerSite: b.site)
        _ = sm.start(local: [:], certificates: [], now: start)
        _ = sm.receive(.v1(.hello(protocolVersion: 1, cluster: testCluster, site: b.site, datasets: [])), now: start)
        #expect(sm.tick(now: start + .seconds(11)).contains(.send(.ping(1))))
        #expect(sm.receive(.v1(.ping(9)), now: start + .seconds(12)) == [.send(.pong(9))])
        let late = sm.tick(now: start + .seconds(60))
        guard case .close(let code, _)? = late.first else {
            Issue.record("a silent peer was not closed")
            return
        }
        #expect(code == .timeout)
        #expect(sm.isClosed)
    }
}
