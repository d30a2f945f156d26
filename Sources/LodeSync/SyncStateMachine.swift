import LodeCore
import LodeProtocol

/// The logic of one sync session, as a value: it is fed what happens
/// (a message arrived, the local replica changed, a batch was sent or
/// applied, time passed) and answers with what to do. It does no I/O, so it
/// is tested without sockets; `PeerSession` carries its actions out.
///
/// ```swift
/// var sm = SyncStateMachine(config: config, peerSite: siteFromCertificate)
/// for action in sm.start(local: vectors, certificates: certs, now: now) { perform(action) }
/// for action in sm.receive(message, now: now) { perform(action) }
/// ```
public struct SyncStateMachine: Sendable {
    /// Fixed settings of a session.
    public struct Config: Sendable {
        /// This node's site.
        public var localSite: SiteID
        /// This node's cluster: SHA-256 of the CA certificate.
        public var cluster: [UInt8]
        /// Batches sent and not yet acknowledged, in the whole session.
        public var maxInFlight = 4
        /// Bytes of batches sent and not yet acknowledged, in the whole
        /// session: no batch starts beyond this (one always may when none
        /// is out), so a peer holds at most this plus one frame of ours.
        public var maxInFlightBytes = 8 << 20
        /// Close the session when batches are out and none has been
        /// acknowledged for this long. Within a session nothing is lost
        /// (TCP), so nothing is resent on a timer: a slow receiver gets no
        /// duplicates; a new session starts from the peer's Hello.
        public var ackTimeout: Duration = .seconds(300)
        /// Send a ping after this long without sending anything.
        public var keepalive: Duration = .seconds(10)
        /// Close after this long without hearing anything.
        public var silenceTimeout: Duration = .seconds(45)
        /// Re-announce every vector this often, to repair a missed push.
        public var vectorInterval: Duration = .seconds(30)

        public init(localSite: SiteID, cluster: [UInt8]) {
            self.localSite = localSite
            self.cluster = cluster
        }
    }

    /// What the session must do.
    public enum Action: Equatable, Sendable {
        /// Send a message.
        case send(SyncMessageV1)
        /// Read (at most one batch of) the commits a replica holding `after`
        /// lacks, send them in one `commits` message, then call
        /// `sent(dataset:commits:through:)` with `after` raised by what was sent.
        case sendMissing(dataset: String, after: VersionVector)
        /// Verify and apply the commits, then call `applied(...)`. For a
        /// dataset this node does not hold, only a commit that may bring it
        /// into being creates it (DESIGN §9).
        case apply(dataset: String, commits: [[UInt8]])
        /// Verify certificates against the CA and remember them.
        case addCertificates([[UInt8]])
        /// Check a revocation notice, take it in, and pass it on if it is new.
        case takeRevocation([UInt8])
        /// Decide whether to take the snapshot a peer offers (the node's
        /// bounds, this node's store); then call `snapshotAccepted` or
        /// send the refusal.
        case considerSnapshot(dataset: String, vector: VersionVector, bytes: UInt64)
        /// Store these bytes of the snapshot being received, at `offset`,
        /// of `total`; `complete` when they are its last: then install it.
        case storeSnapshot(dataset: String, offset: UInt64, total: UInt64, bytes: [UInt8], complete: Bool)
        /// The snapshot being received is not coming: drop what was stored.
        case abandonSnapshot(dataset: String, reason: String)
        /// Make the snapshot the peer asked for; then call `snapshotReady`
        /// (or `snapshotUnavailable`).
        case prepareSnapshot(dataset: String)
        /// Read `count` bytes of our snapshot at `offset` and send them in a
        /// `snapshotChunk` of `total`.
        case sendSnapshotChunk(dataset: String, offset: UInt64, count: Int, total: UInt64)
        /// Our snapshot has been sent whole: let go of it.
        case releaseSnapshot(dataset: String)
        /// Something worth logging.
        case log(String)
        /// Close the session, first sending a rejection when `code` is set.
        case close(RejectCode?, String)
    }

    enum Phase: Equatable { case idle, awaitingHello, established, closed }

    struct Dataset: Sendable {
        var local = VersionVector()
        /// What the peer is known to hold.
        var peer = VersionVector()
        /// What has been sent to the peer (at least `peer`).
        var sent = VersionVector()
        var inFlight = 0
        /// The sizes of the batches in flight, oldest first.
        var inFlightBytes: [Int] = []
        var sending = false
        /// True once the peer has said what it holds.
        var peerKnown = false
        /// Feeds the peer refused a commit of: never send beyond this seq.
        var blocked: [SiteID: UInt64] = [:]
        /// Feeds the peer holds back at a commit stamped ahead of its clock:
        /// not sent beyond this seq until the next vector round, when they
        /// are offered again.
        var paused: [SiteID: UInt64] = [:]
        /// The seq beyond which each stopped feed is not sent.
        var stops: [SiteID: UInt64] { blocked.merging(paused, uniquingKeysWith: min) }
        /// True once the peer has been told our vector (in Hello or since).
        var announced = false
        /// A snapshot offered to the peer, which lacks commits this node
        /// compacted away.
        var snapshot = SnapshotOut.none
        /// The vector of the snapshot offered: once the peer holds it, the
        /// snapshot is in and commits go again.
        var snapshotVector = VersionVector()
    }

    /// Where a snapshot this side offered stands.
    enum SnapshotOut: Equatable {
        /// None offered: one may be, while the peer lacks compacted commits.
        case none
        /// Offered; the peer has not answered.
        case offered
        /// The peer asked for it; it is being made.
        case preparing
        /// Being sent: `next` is the first byte not yet sent, `acked` the
        /// bytes the peer has stored.
        case serving(total: UInt64, next: UInt64, acked: UInt64)
        /// Sent whole; the peer is installing it and will announce its vector.
        case sent
        /// Nothing more is offered in this session (declined, failed, or done):
        /// commits are sent as usual.
        case over

        /// No commits of the dataset go while the peer is starting from a snapshot.
        var holdsCommits: Bool {
            switch self {
            case .offered, .preparing, .serving, .sent: true
            case .none, .over: false
            }
        }
    }

    /// A snapshot this side is receiving.
    struct SnapshotIn: Equatable {
        /// Its exact size, from its first chunk (the offer's is a guess).
        var total: UInt64?
        var received: UInt64
    }

    /// The most snapshot bytes sent and not yet stored by the peer.
    static let snapshotWindow: UInt64 = 4 << 20
    public let config: Config
    /// The peer's site, from its verified certificate.
    public let peerSite: SiteID
    private(set) var phase = Phase.idle
    private(set) var datasets: [String: Dataset] = [:]
    /// What the peer announced of datasets this node does not hold: kept
    /// (up to `maxUnheldEntries` vector entries in all) so that a dataset
    /// that comes into being here later starts from what the peer holds.
    /// Nothing is created from an announcement.
    private(set) var unheld: [String: VersionVector] = [:]
    private var unheldEntries = 0
    /// Snapshots being received, by dataset.
    private(set) var incoming: [String: SnapshotIn] = [:]
    /// Datasets whose snapshot this side gave up on in this session: its
    /// chunks still on their way are dropped, and no other offer is taken.
    private var abandoned: Set<String> = []
    /// The most vector entries kept for datasets not held: a peer's
    /// announcements cost this session at most a few megabytes.
    static let maxUnheldEntries = 65_536
    private var lastReceived: ContinuousClock.Instant?
    private var lastSent: ContinuousClock.Instant?
    private var lastVectors: ContinuousClock.Instant?
    private var nextPing: UInt64 = 1
    /// Since when batches have been out with no acknowledgement.
    private var awaitingAckSince: ContinuousClock.Instant?

    /// Creates the session state for a peer whose certificate names `peerSite`.
    public init(config: Config, peerSite: SiteID) {
        self.config = config
        self.peerSite = peerSite
    }

    /// True once both Hellos have been exchanged.
    public var isEstablished: Bool { phase == .established }
    /// True once the session is over.
    public var isClosed: Bool { phase == .closed }

    /// Starts the session: our Hello, then the certificates and the
    /// revocation notices we know.
    public mutating func start(
        local: [String: VersionVector], certificates: [[UInt8]], revocations: [[UInt8]] = [], now: ContinuousClock.Instant
    ) -> [Action] {
        phase = .awaitingHello
        lastReceived = now
        lastSent = now
        lastVectors = now
        for (name, v) in local {
            datasets[name, default: Dataset()].local = v
            datasets[name]!.announced = true
        }
        let hello = SyncMessageV1.hello(
            protocolVersion: SyncFrame.version, cluster: config.cluster, site: config.localSite,
            datasets: local.sorted { $0.key < $1.key }.map { DatasetVector(dataset: $0.key, vector: $0.value) })
        var out: [Action] = [.send(hello)]
        if !certificates.isEmpty { out.append(.send(.certificates(certificates))) }
        out += revocations.map { .send(.revocation($0)) }
        return out
    }

    /// A message arrived.
    public mutating func receive(_ message: SyncMessage, now: ContinuousClock.Instant) -> [Action] {
        guard phase != .closed else { return [] }
        lastReceived = now
        guard case .v1(let m) = message else { return close(.protocolVersion, "unknown message version") }
        if phase != .established {
            switch m {
            case .hello, .certificates, .revocation, .reject: break
            default: return close(.malformed, "a message before Hello")
            }
        }
        switch m {
        case .hello(let pv, let cluster, let site, let remote):
            guard phase == .awaitingHello else { return close(.malformed, "a second Hello") }
            guard pv == SyncFrame.version else {
                return close(.protocolVersion, "peer speaks protocol version \(pv); this node speaks \(SyncFrame.version)")
            }
            guard cluster == config.cluster else { return close(.differentCluster, "peer belongs to another cluster") }
            guard site == peerSite else {
                return close(.siteMismatch, "Hello names site \(site.short) but the certificate is for \(peerSite.short)")
            }
            phase = .established
            var out: [Action] = []
            for d in remote {
                guard datasets[d.dataset] != nil else {
                    noteUnheld(d.dataset, d.vector)
                    continue
                }
                datasets[d.dataset]!.peer = d.vector
                datasets[d.dataset]!.sent = d.vector
                datasets[d.dataset]!.peerKnown = true
            }
            let announced = Set(remote.map(\.dataset))
            for name in datasets.keys where !announced.contains(name) {
                // The peer will open it on our Hello; it holds nothing yet.
                datasets[name]!.peerKnown = true
            }
            for name in datasets.keys.sorted() { out += maybeSend(name) }
            return out
        case .certificates(let certs):
            return [.addCertificates(certs)]
        case .revocation(let notice):
            return [.takeRevocation(notice)]
        case .commits(let dataset, let commits):
            if datasets[dataset] == nil {
                // Not held here: `applied` keeps the entry only if the
                // commits bring the dataset into being.
                datasets[dataset] = adopting(dataset)
            }
            return [.apply(dataset: dataset, commits: commits)]
        case .ack(let dataset, let v):
            guard datasets[dataset] != nil else { return [] }
            if datasets[dataset]!.inFlight > 0 {
                datasets[dataset]!.inFlight -= 1
                if !datasets[dataset]!.inFlightBytes.isEmpty { datasets[dataset]!.inFlightBytes.removeFirst() }
            }
            awaitingAckSince = totalInFlight.batches > 0 ? now : nil
            // A freed slot may go to any dataset, not only this one.
            return learned(dataset, v) + maybeSendAny()
        case .vector(let dataset, let v):
            guard datasets[dataset] != nil else {
                noteUnheld(dataset, v)
                return []
            }
            return learned(dataset, v)
        case .ping(let n):
            lastSent = now
            return [.send(.pong(n))]
        case .pong:
            return []
        case .commitRejected(let dataset, let site, let seq, let code, let message):
            guard datasets[dataset] != nil else { return [] }
            let limit = seq > 0 ? seq - 1 : 0
            if code == .clockAhead {
                datasets[dataset]!.paused[site] = min(datasets[dataset]!.paused[site] ?? limit, limit)
                return [.log("peer holds back commit \(site.short):\(seq) of \(dataset) until its clock catches up: \(message)")]
            }
            datasets[dataset]!.blocked[site] = min(datasets[dataset]!.blocked[site] ?? limit, limit)
            return [.log("peer refused commit \(site.short):\(seq) of \(dataset) (\(code)): \(message)")]
        case .reject(let code, let message):
            phase = .closed
            return [.close(nil, "peer refused the session (\(code)): \(message)")]
        case .snapshotOffer(let dataset, let vector, let bytes):
            guard incoming[dataset] == nil else { return [] }
            let why: String? =
                if abandoned.contains(dataset) {
                    "a snapshot of \(dataset) failed here in this session"
                } else if let d = datasets[dataset], d.local.dominates(vector) {
                    "this node holds every commit of \(dataset) the snapshot covers"
                } else {
                    nil
                }
            if let why { return [.send(.snapshotAnswer(dataset: dataset, accept: false, message: why))] }
            // Not held, or held but lacking commits of the snapshot's
            // vector: the host decides (its bounds, its store).
            return [.considerSnapshot(dataset: dataset, vector: vector, bytes: bytes)]
        case .snapshotAnswer(let dataset, let accept, let message):
            guard let d = datasets[dataset] else { return [] }
            switch d.snapshot {
            case .offered where accept:
                datasets[dataset]!.snapshot = .preparing
                return [.prepareSnapshot(dataset: dataset)]
            case .offered, .preparing, .serving, .sent:
                guard !accept else { return close(.malformed, "a second answer to the snapshot of \(dataset)") }
                let release: [Action] = d.snapshot == .offered ? [] : [.releaseSnapshot(dataset: dataset)]
                datasets[dataset]!.snapshot = .over
                return release + [.log("peer did not take the snapshot of \(dataset): \(message)")] + maybeSendAny()
            case .none, .over:
                return accept ? close(.malformed, "a snapshot of \(dataset) was asked for but not offered") : []
            }
        case .snapshotChunk(let dataset, let offset, let total, let bytes):
            guard var s = incoming[dataset] else {
                if abandoned.contains(dataset) { return [] }
                return close(.malformed, "a snapshot of \(dataset) was sent but not asked for")
            }
            guard total != 0 else {
                incoming[dataset] = nil
                abandoned.insert(dataset)
                return [.abandonSnapshot(dataset: dataset, reason: "the peer could not make it")]
            }
            guard total == s.total ?? total, offset == s.received else {
                return close(
                    .malformed, "a snapshot chunk of \(dataset) at \(offset) of \(total), where \(s.received) of \(s.total ?? total) was next")
            }
            s.total = total
            s.received += UInt64(bytes.count)
            let complete = s.received == total
            incoming[dataset] = complete ? nil : s
            return [.storeSnapshot(dataset: dataset, offset: offset, total: total, bytes: bytes, complete: complete)]
        case .snapshotAck(let dataset, let received):
            guard case .serving(let total, let next, let acked) = datasets[dataset]?.snapshot else { return [] }
            guard received > acked, received <= next else {
                return close(.malformed, "a snapshot acknowledgement of \(received) bytes of \(dataset), where \(acked)–\(next) were out")
            }
            guard received < total else {
                datasets[dataset]!.snapshot = .sent
                return [.releaseSnapshot(dataset: dataset)]
            }
            datasets[dataset]!.snapshot = .serving(total: total, next: next, acked: received)
            return sendSnapshotChunks(dataset)
        }
    }

    // MARK: Snapshots (DESIGN §12)

    /// What the peer holds of `dataset` when a snapshot may be offered
    /// for it: the peer said what it holds, and none has been offered in
    /// this session. The host offers one when the peer lacks commits it
    /// compacted away.
    public func snapshotCandidate(_ dataset: String) -> VersionVector? {
        guard let d = datasets[dataset], d.peerKnown, d.snapshot == .none else { return nil }
        return d.peer
    }

    /// A `sendMissing` is answered with an offer of a snapshot instead
    /// (`mayOfferSnapshot`): no commits of the dataset go until the peer
    /// declines it or, having installed it, says what it holds.
    public mutating func offerSnapshot(dataset: String, vector: VersionVector, bytes: UInt64) -> [Action] {
        guard phase == .established, datasets[dataset] != nil else { return [] }
        datasets[dataset]!.sending = false
        datasets[dataset]!.snapshot = .offered
        datasets[dataset]!.snapshotVector = vector
        return [.send(.snapshotOffer(dataset: dataset, vector: vector, bytes: bytes))] + maybeSendAny(after: dataset)
    }

    /// Our snapshot of `dataset`, `total` bytes, is ready to send.
    public mutating func snapshotReady(dataset: String, total: UInt64) -> [Action] {
        guard phase == .established, datasets[dataset]?.snapshot == .preparing else { return [.releaseSnapshot(dataset: dataset)] }
        guard total > 0 else { return snapshotUnavailable(dataset: dataset, reason: "it is empty") }
        datasets[dataset]!.snapshot = .serving(total: total, next: 0, acked: 0)
        return sendSnapshotChunks(dataset)
    }

    /// Our snapshot of `dataset` could not be made: the offer is withdrawn.
    public mutating func snapshotUnavailable(dataset: String, reason: String) -> [Action] {
        guard phase == .established, datasets[dataset]?.snapshot == .preparing else { return [] }
        datasets[dataset]!.snapshot = .over
        return [
            .send(.snapshotChunk(dataset: dataset, offset: 0, total: 0, bytes: [])),
            .log("could not make a snapshot of \(dataset) for the peer: \(reason)"),
        ] + maybeSend(dataset)
    }

    private mutating func sendSnapshotChunks(_ dataset: String) -> [Action] {
        guard case .serving(let total, var next, let acked) = datasets[dataset]?.snapshot else { return [] }
        var out: [Action] = []
        while next < total, next - acked < Self.snapshotWindow {
            let count = Int(min(UInt64(SyncFrame.maxSnapshotChunkBytes), total - next))
            out.append(.sendSnapshotChunk(dataset: dataset, offset: next, count: count, total: total))
            next += UInt64(count)
        }
        datasets[dataset]!.snapshot = .serving(total: total, next: next, acked: acked)
        return out
    }

    /// This node will take the snapshot of `dataset` it was offered.
    public mutating func snapshotAccepted(dataset: String) -> [Action] {
        guard phase == .established, incoming[dataset] == nil else { return [] }
        incoming[dataset] = SnapshotIn(total: nil, received: 0)
        return [.send(.snapshotAnswer(dataset: dataset, accept: true, message: ""))]
    }

    /// Storing or installing the snapshot of `dataset` failed: the peer is
    /// told, and sends commits as usual again.
    public mutating func snapshotFailed(dataset: String, reason: String) -> [Action] {
        guard phase == .established else { return [] }
        incoming[dataset] = nil
        abandoned.insert(dataset)
        return [.send(.snapshotAnswer(dataset: dataset, accept: false, message: reason))]
    }

    /// The peer holds (at least) `v`: raise what we know, and resend from
    /// there if a batch we sent did not arrive whole.
    private mutating func learned(_ dataset: String, _ v: VersionVector) -> [Action] {
        var d = datasets[dataset]!
        // A peer that took our snapshot says it holds its vector now (what
        // it says before, its own writes or the dataset coming into being
        // there, changes nothing). A peer offered one answers the offer.
        if d.snapshot == .sent, v.dominates(d.snapshotVector) { d.snapshot = .over }
        // The peer's whole vector when it sent this, and messages arrive in
        // order: it replaces what was known, also where it is lower (the
        // peer dropped commits of a feed cut off, DESIGN §9).
        d.peer = v
        d.peerKnown = true
        if d.inFlight == 0 && !d.sending && !d.peer.dominates(d.sent) {
            // Everything sent has been acknowledged, yet the peer lacks some
            // of it (it could not apply it yet): send again from its vector.
            d.sent = d.peer
        } else {
            d.sent = d.sent.merged(with: d.peer)
        }
        datasets[dataset] = d
        return maybeSend(dataset)
    }

    /// Remembers what the peer holds of a dataset this node does not, while
    /// the bound allows.
    private mutating func noteUnheld(_ name: String, _ v: VersionVector) {
        let old = unheld[name]?.count ?? 0
        guard unheldEntries - old + v.count <= Self.maxUnheldEntries else { return }
        unheldEntries += v.count - old
        unheld[name] = v
    }

    /// A new entry for a dataset that has just come to be held here: the
    /// peer holds what it announced of it, or (after the Hellos) nothing.
    private mutating func adopting(_ name: String) -> Dataset {
        var d = Dataset()
        if let v = unheld.removeValue(forKey: name) {
            unheldEntries -= v.count
            d.peer = v
            d.sent = v
            d.peerKnown = true
        } else {
            d.peerKnown = phase == .established
        }
        return d
    }

    /// The local replica of `dataset` now holds `vector`.
    public mutating func localChanged(dataset: String, vector: VersionVector) -> [Action] {
        guard phase != .closed else { return [] }
        if datasets[dataset] == nil {
            // A dataset that came to be held here after the Hellos (created,
            // or brought into being by another peer's commits).
            datasets[dataset] = adopting(dataset)
        }
        guard datasets[dataset]!.local != vector || !datasets[dataset]!.announced else { return [] }
        datasets[dataset]!.local = vector
        guard phase == .established else { return [] }
        datasets[dataset]!.announced = true
        return [.send(.vector(dataset: dataset, vector: vector))] + maybeSend(dataset)
    }

    /// A `sendMissing` finished: `commits` were sent (`bytes` of them), and
    /// `through` is what the peer will hold once they arrive.
    public mutating func sent(
        dataset: String, commits: Int, bytes: Int = 0, through: VersionVector, now: ContinuousClock.Instant
    ) -> [Action] {
        guard var d = datasets[dataset] else { return [] }
        d.sending = false
        guard commits > 0 else {
            datasets[dataset] = d
            return maybeSendAny(after: dataset, skipping: dataset)
        }
        let stops = d.stops
        for e in through.sorted {
            // A refused or held-back feed counts as sent only up to that commit.
            let capped = stops[e.site].map { min(e.seq, $0) } ?? e.seq
            if capped > d.sent[e.site] { d.sent[e.site] = capped }
        }
        d.inFlight += 1
        d.inFlightBytes.append(bytes)
        if awaitingAckSince == nil { awaitingAckSince = now }
        lastSent = now
        datasets[dataset] = d
        return maybeSendAny(after: dataset)
    }

    /// An `apply` finished. `vector` is what the replica holds now, `batch`
    /// the highest seq per site among the commits received (the peer holds
    /// them), and `rejected` the commits refused. `held` is false when the
    /// dataset is not held here (the commits did not bring it into being):
    /// the session forgets it again.
    public mutating func applied(
        dataset: String, vector: VersionVector, batch: VersionVector,
        rejected: [CommitRejection], held: Bool = true,
        now: ContinuousClock.Instant
    ) -> [Action] {
        guard phase != .closed, var d = datasets[dataset] else { return [] }
        let refusals: [Action] = rejected.map { r in
            .send(.commitRejected(dataset: dataset, site: r.site, seq: r.seq, code: r.code, message: r.reason))
        }
        guard held else {
            datasets[dataset] = nil
            lastSent = now
            return refusals + [.send(.ack(dataset: dataset, vector: VersionVector()))]
        }
        d.local = vector
        d.peer = d.peer.merged(with: batch)
        d.sent = d.sent.merged(with: d.peer)
        datasets[dataset] = d
        lastSent = now
        // Refusals go before the ack, so that the sender stops those feeds
        // before the ack would have it resend them.
        return refusals + [.send(.ack(dataset: dataset, vector: vector))] + maybeSend(dataset)
    }

    /// Time passed: keepalive, silence, periodic vector exchange.
    public mutating func tick(now: ContinuousClock.Instant) -> [Action] {
        guard phase != .closed else { return [] }
        if let r = lastReceived, now - r > config.silenceTimeout {
            return close(.timeout, "nothing heard for \(config.silenceTimeout)")
        }
        guard phase == .established else { return [] }
        if let since = awaitingAckSince, now - since > config.ackTimeout {
            return close(.timeout, "batches sent were not acknowledged for \(config.ackTimeout)")
        }
        var out: [Action] = []
        if let s = lastSent, now - s >= config.keepalive {
            lastSent = now
            out.append(.send(.ping(nextPing)))
            nextPing &+= 1
        }
        if let v = lastVectors, now - v >= config.vectorInterval {
            lastVectors = now
            for name in datasets.keys.sorted() {
                out.append(.send(.vector(dataset: name, vector: datasets[name]!.local)))
                // Offer again what the peer held back for its clock.
                if !datasets[name]!.paused.isEmpty {
                    for site in datasets[name]!.paused.keys { datasets[name]!.sent[site] = datasets[name]!.peer[site] }
                    datasets[name]!.paused = [:]
                    out += maybeSend(name)
                }
            }
        }
        return out
    }

    /// Sends the next batch when the peer lacks something and the window allows.
    /// Batches out (in flight or being read) and their bytes, in the session.
    private var totalInFlight: (batches: Int, bytes: Int) {
        datasets.values.reduce((0, 0)) { t, d in (t.0 + d.inFlight + (d.sending ? 1 : 0), t.1 + d.inFlightBytes.reduce(0, +)) }
    }

    /// Offers the window's free room to the datasets in name order, from
    /// the one after `last` round to it (so no dataset starves the others).
    /// `skipping` is left out (its read just found nothing).
    private mutating func maybeSendAny(after last: String? = nil, skipping: String? = nil) -> [Action] {
        let names = datasets.keys.sorted()
        let start = last.flatMap { l in names.firstIndex { $0 > l } } ?? 0
        var out: [Action] = []
        for name in names[start...] + names[..<start] where name != skipping { out += maybeSend(name) }
        return out
    }

    private mutating func maybeSend(_ name: String) -> [Action] {
        // One batch is read at a time, so that the window knows its size
        // before the next starts.
        guard phase == .established, var d = datasets[name], d.peerKnown, !d.snapshot.holdsCommits, !datasets.values.contains(where: \.sending)
        else { return [] }
        let out = totalInFlight
        guard out.batches < config.maxInFlight, out.batches == 0 || out.bytes < config.maxInFlightBytes else { return [] }
        var after = d.sent
        for (site, limit) in d.stops where after[site] < UInt64(Int64.max) && d.local[site] > limit {
            // Pretend the stopped feed was sent in full, so it is skipped.
            after[site] = max(after[site], d.local[site])
        }
        guard !after.dominates(d.local) else { return [] }
        d.sending = true
        datasets[name] = d
        return [.sendMissing(dataset: name, after: after)]
    }

    private mutating func close(_ code: RejectCode, _ message: String) -> [Action] {
        phase = .closed
        return [.close(code, message)]
    }

    /// True when, for every dataset either side holds, the peer holds the
    /// same commits as this node and nothing is in flight.
    public var isInSync: Bool {
        phase == .established && datasets.values.allSatisfy { $0.peerKnown && $0.peer == $0.local && $0.inFlight == 0 && !$0.sending }
    }

    /// What the peer is known to hold, per dataset (for datasets whose peer
    /// vector is known).
    public var peerVectors: [String: VersionVector] {
        datasets.filter { $0.value.peerKnown }.mapValues(\.peer)
    }

    /// True while a batch is being sent or awaits its acknowledgement.
    public var isBusy: Bool { datasets.values.contains { $0.inFlight > 0 || $0.sending || $0.snapshot.holdsCommits } || !incoming.isEmpty }

    /// Per dataset: commits the peer lacks (ahead) and commits it has that
    /// this node lacks (behind).
    public var lag: [String: Lag] {
        datasets.mapValues { Lag(local: $0.local, peer: $0.peer) }
    }
}
