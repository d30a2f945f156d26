import LodeCore
import LodeProtocol
import Testing

@testable import LodeSync

/// Snapshots over a session (DESIGN §12), both state machines driven by
/// hand: a node that compacted offers a peer lacking what it dropped a snapshot,
/// sends it within its window as the peer stores it, holds the dataset's
/// commits meanwhile, and sends what follows once the peer says what it
/// holds; a refusal or failure falls back to commits; the peer refuses
/// bytes it did not ask for or that come out of order.
@Suite struct SnapshotSessionTests {
    let sender = SimNode(1).site
    let taker = SimNode(2).site
    let now = ContinuousClock.now
    let held = VersionVector([SimNode(1).site: 5])

    /// Both sides past the Hellos: the sender holds dataset d at `held`, the taker nothing.
    func established(takerHolds: [String: VersionVector] = [:]) -> (SyncStateMachine, SyncStateMachine, [SyncStateMachine.Action]) {
        var s = SyncStateMachine(config: .init(localSite: sender, cluster: testCluster), peerSite: taker)
        var t = SyncStateMachine(config: .init(localSite: taker, cluster: testCluster), peerSite: sender)
        let sh = s.start(local: ["d": held], certificates: [], now: now)
        let th = t.start(local: takerHolds, certificates: [], now: now)
        guard case .send(let helloS) = sh[0], case .send(let helloT) = th[0] else { fatalError("no Hello") }
        let toSender = s.receive(.v1(helloT), now: now)
        _ = t.receive(.v1(helloS), now: now)
        return (s, t, toSender)
    }

    func sent(_ actions: [SyncStateMachine.Action]) -> [SyncMessageV1] {
        actions.compactMap { if case .send(let m) = $0 { m } else { nil } }
    }

    @Test func aSnapshotIsOfferedSentInItsWindowAndThenCommitsFollow() throws {
        var (s, t, first) = established()
        #expect(first == [.sendMissing(dataset: "d", after: VersionVector())])
        #expect(s.snapshotCandidate("d") == VersionVector())
        let total: UInt64 = 5 << 20 + 5
        // The offer's size is the dataset file's, a guess: the snapshot made says its own.
        let offer = s.offerSnapshot(dataset: "d", vector: held, bytes: total + 4096)
        #expect(sent(offer) == [.snapshotOffer(dataset: "d", vector: held, bytes: total + 4096)])
        #expect(s.snapshotCandidate("d") == nil, "offered once")
        // While it is out, no commit of d goes, however the vector moves.
        var more = held
        more[sender] = 6
        #expect(s.localChanged(dataset: "d", vector: more) == [.send(.vector(dataset: "d", vector: more))])
        #expect(t.receive(.v1(sent(offer)[0]), now: now) == [.considerSnapshot(dataset: "d", vector: held, bytes: total + 4096)])
        let answer = sent(t.snapshotAccepted(dataset: "d"))
        #expect(answer == [.snapshotAnswer(dataset: "d", accept: true, message: "")])
        #expect(s.receive(.v1(answer[0]), now: now) == [.prepareSnapshot(dataset: "d")])
        // Made: four chunks go (the 4 MiB window), one more per chunk stored.
        var out = s.snapshotReady(dataset: "d", total: total)
        #expect(out.count == 4)
        var stored: UInt64 = 0
        var installs = 0
        var maxAhead: UInt64 = 0
        while !out.isEmpty {
            var next: [SyncStateMachine.Action] = []
            for action in out {
                switch action {
                case .sendSnapshotChunk(let ds, let offset, let count, let size):
                    #expect(ds == "d" && size == total && count <= SyncFrame.maxSnapshotChunkBytes)
                    maxAhead = max(maxAhead, offset + UInt64(count) - stored)
                    let chunk = SyncMessageV1.snapshotChunk(dataset: "d", offset: offset, total: total, bytes: [UInt8](repeating: 1, count: count))
                    for a in t.receive(.v1(chunk), now: now) {
                        guard case .storeSnapshot(_, let at, total, let bytes, let complete) = a else {
                            Issue.record("the taker did \(a)")
                            continue
                        }
                        #expect(at == stored)
                        stored += UInt64(bytes.count)
                        if complete { installs += 1 }
                        next += s.receive(.v1(.snapshotAck(dataset: "d", received: stored)), now: now)
                    }
                case .releaseSnapshot: break
                default: Issue.record("the sender did \(action)")
                }
            }
            out = next
        }
        #expect(stored == total && installs == 1)
        #expect(maxAhead <= SyncStateMachine.snapshotWindow)
        #expect(s.isBusy && t.incoming.isEmpty)
        // The dataset coming into being there (empty) changes nothing yet.
        #expect(s.receive(.v1(.vector(dataset: "d", vector: VersionVector())), now: now) == [])
        // Installed, the taker holds d and says so; then what follows goes.
        let announced = t.localChanged(dataset: "d", vector: held)
        #expect(sent(announced) == [.vector(dataset: "d", vector: held)])
        #expect(s.receive(.v1(sent(announced)[0]), now: now) == [.sendMissing(dataset: "d", after: held)])
        #expect(s.snapshotCandidate("d") == nil)
    }

    @Test func aDeclinedOrFailedSnapshotFallsBackToCommits() {
        var (s, t, _) = established()
        _ = s.offerSnapshot(dataset: "d", vector: held, bytes: 100)
        #expect(
            s.receive(.v1(.snapshotAnswer(dataset: "d", accept: false, message: "too big")), now: now)
                == [.log("peer did not take the snapshot of d: too big"), .sendMissing(dataset: "d", after: VersionVector())])
        #expect(s.snapshotCandidate("d") == nil, "not offered again in the session")
        // Failed after it came whole: the sender is told and lets it go.
        (s, t, _) = established()
        _ = s.offerSnapshot(dataset: "d", vector: held, bytes: 10)
        _ = t.receive(.v1(.snapshotOffer(dataset: "d", vector: held, bytes: 10)), now: now)
        _ = t.snapshotAccepted(dataset: "d")
        _ = s.receive(.v1(.snapshotAnswer(dataset: "d", accept: true, message: "")), now: now)
        #expect(s.snapshotReady(dataset: "d", total: 10) == [.sendSnapshotChunk(dataset: "d", offset: 0, count: 10, total: 10)])
        let store = t.receive(.v1(.snapshotChunk(dataset: "d", offset: 0, total: 10, bytes: [UInt8](repeating: 0, count: 10))), now: now)
        #expect(store == [.storeSnapshot(dataset: "d", offset: 0, total: 10, bytes: [UInt8](repeating: 0, count: 10), complete: true)])
        #expect(s.receive(.v1(.snapshotAck(dataset: "d", received: 10)), now: now) == [.releaseSnapshot(dataset: "d")])
        let failed = sent(t.snapshotFailed(dataset: "d", reason: "digest differs"))
        #expect(failed == [.snapshotAnswer(dataset: "d", accept: false, message: "digest differs")])
        let back = s.receive(.v1(failed[0]), now: now)
        #expect(back.contains(.sendMissing(dataset: "d", after: VersionVector())))
        // The taker takes no other offer of it in this session.
        #expect(sent(t.receive(.v1(.snapshotOffer(dataset: "d", vector: held, bytes: 10)), now: now)).count == 1)
        // A snapshot that could not be made is withdrawn; the taker drops its part.
        (s, t, _) = established()
        _ = s.offerSnapshot(dataset: "d", vector: held, bytes: 10)
        _ = t.receive(.v1(.snapshotOffer(dataset: "d", vector: held, bytes: 10)), now: now)
        _ = t.snapshotAccepted(dataset: "d")
        _ = s.receive(.v1(.snapshotAnswer(dataset: "d", accept: true, message: "")), now: now)
        let withdrawn = s.snapshotUnavailable(dataset: "d", reason: "disk full")
        #expect(sent(withdrawn) == [.snapshotChunk(dataset: "d", offset: 0, total: 0, bytes: [])])
        #expect(withdrawn.contains(.sendMissing(dataset: "d", after: VersionVector())))
        #expect(t.receive(.v1(sent(withdrawn)[0]), now: now) == [.abandonSnapshot(dataset: "d", reason: "the peer could not make it")])
        // Chunks still on their way after a failure are dropped, not fatal.
        #expect(t.receive(.v1(.snapshotChunk(dataset: "d", offset: 0, total: 10, bytes: [1])), now: now) == [])
        #expect(!t.isClosed)
    }

    /// A peer that holds the dataset but lacks commits the sender
    /// compacted away (a site offline across a compaction) takes a
    /// snapshot to merge in: the sender names what it holds for the host to
    /// judge, the taker declines an offer it holds all of, and the sender
    /// holds commits until the taker holds the snapshot's vector, whatever
    /// it says meanwhile.
    @Test func aPeerHoldingTheDatasetTakesASnapshotOnlyOfWhatItLacks() {
        let own = VersionVector([SimNode(2).site: 1])
        var (s, t, first) = established(takerHolds: ["d": own])
        #expect(first == [.sendMissing(dataset: "d", after: own)])
        #expect(s.snapshotCandidate("d") == own)
        // An offer of what it holds already is declined at once.
        let covered = sent(t.receive(.v1(.snapshotOffer(dataset: "d", vector: own, bytes: 10)), now: now))
        #expect(covered == [.snapshotAnswer(dataset: "d", accept: false, message: "this node holds every commit of d the snapshot covers")])
        // One of commits it lacks goes to the host.
        #expect(
            t.receive(.v1(.snapshotOffer(dataset: "d", vector: held, bytes: 10)), now: now) == [
                .considerSnapshot(dataset: "d", vector: held, bytes: 10)
            ])
        _ = s.offerSnapshot(dataset: "d", vector: held, bytes: 10)
        // The taker writes meanwhile: nothing goes, offered or sent.
        let wrote = VersionVector([SimNode(2).site: 2])
        #expect(s.receive(.v1(.vector(dataset: "d", vector: wrote)), now: now) == [])
        _ = s.receive(.v1(.snapshotAnswer(dataset: "d", accept: true, message: "")), now: now)
        _ = s.snapshotReady(dataset: "d", total: 10)
        #expect(s.receive(.v1(.snapshotAck(dataset: "d", received: 10)), now: now) == [.releaseSnapshot(dataset: "d")])
        #expect(s.receive(.v1(.vector(dataset: "d", vector: wrote)), now: now) == [])
        var more = held
        more[sender] = 6
        #expect(s.localChanged(dataset: "d", vector: more) == [.send(.vector(dataset: "d", vector: more))])
        // Merged: it holds the snapshot's vector and its own; what follows goes.
        let merged = wrote.merged(with: held)
        #expect(s.receive(.v1(.vector(dataset: "d", vector: merged)), now: now) == [.sendMissing(dataset: "d", after: merged)])
    }

    @Test func snapshotBytesOutOfTurnCloseTheSession() {
        func closes(_ m: SyncMessageV1, setUp: (inout SyncStateMachine, inout SyncStateMachine) -> Void = { _, _ in }, atSender: Bool = false) -> Bool
        {
            var (s, t, _) = established()
            setUp(&s, &t)
            let out = atSender ? s.receive(.v1(m), now: now) : t.receive(.v1(m), now: now)
            guard case .close(.malformed, _)? = out.first else { return false }
            return atSender ? s.isClosed : t.isClosed
        }
        // Not asked for.
        #expect(closes(.snapshotChunk(dataset: "d", offset: 0, total: 10, bytes: [1])))
        // Asked for, but not from its start, or with another size.
        let accepted: (inout SyncStateMachine, inout SyncStateMachine) -> Void = { s, t in
            _ = t.receive(.v1(.snapshotOffer(dataset: "d", vector: held, bytes: 10)), now: now)
            _ = t.snapshotAccepted(dataset: "d")
        }
        #expect(closes(.snapshotChunk(dataset: "d", offset: 1, total: 10, bytes: [1]), setUp: accepted))
        let begun: (inout SyncStateMachine, inout SyncStateMachine) -> Void = { s, t in
            accepted(&s, &t)
            _ = t.receive(.v1(.snapshotChunk(dataset: "d", offset: 0, total: 10, bytes: [1])), now: now)
        }
        #expect(closes(.snapshotChunk(dataset: "d", offset: 1, total: 11, bytes: [1]), setUp: begun))
        // The sender: an acceptance of nothing offered, a second one, an
        // acknowledgement of bytes not sent.
        #expect(closes(.snapshotAnswer(dataset: "d", accept: true, message: ""), atSender: true))
        let offered: (inout SyncStateMachine, inout SyncStateMachine) -> Void = { s, _ in
            _ = s.offerSnapshot(dataset: "d", vector: held, bytes: 10)
            _ = s.receive(.v1(.snapshotAnswer(dataset: "d", accept: true, message: "")), now: now)
        }
        #expect(closes(.snapshotAnswer(dataset: "d", accept: true, message: ""), setUp: offered, atSender: true))
        let serving: (inout SyncStateMachine, inout SyncStateMachine) -> Void = { s, t in
            offered(&s, &t)
            _ = s.snapshotReady(dataset: "d", total: 10)
        }
        #expect(closes(.snapshotAck(dataset: "d", received: 11), setUp: serving, atSender: true))
    }
}
