import LodeCore
import LodeProtocol
import Logging
import Metrics
import NIOCore
import Synchronization

/// Who is at the other end of a session, from its verified certificate.
public struct PeerIdentity: Sendable, Hashable {
    public var site: SiteID
    public var name: String
    public var role: Role
    public init(site: SiteID, name: String, role: Role) {
        self.site = site
        self.name = name
        self.role = role
    }
}

/// What the rest of the node can see of a running session.
final class SessionHandle: Sendable {
    enum Direction: String, Sendable { case dialled, accepted }

    struct Snapshot: Sendable {
        var established = false
        /// What the peer holds, per dataset.
        var peer: [String: VersionVector] = [:]
        /// A batch is on its way.
        var busy = false
    }

    let id = UUIDish.next()
    let direction: Direction
    let address: String
    let peer: PeerIdentity
    let wake: AsyncStream<Void>.Continuation
    let wakes: AsyncStream<Void>
    let snapshot = Mutex(Snapshot())
    let pendingCertificates = Mutex<[[UInt8]]>([])
    /// Revocation notices taken in through other sessions, to pass on.
    let pendingRevocations = Mutex<[[UInt8]]>([])
    /// Fork evidence found through other sessions, to pass on, by dataset.
    let pendingEvidence = Mutex<[(dataset: String, commits: [[UInt8]])]>([])
    /// Set to end the session (the node is going offline).
    let closeRequested = Mutex(false)
    /// Snapshots made or installed off the session's loop, for it to act on.
    let snapshotEvents = Mutex<[SnapshotEvent]>([])
    /// Set once the session is over: a snapshot made for it after that is let go.
    let ended = Atomic<Bool>(false)

    func takeSnapshotEvents() -> [SnapshotEvent] {
        snapshotEvents.withLock { p in
            defer { p = [] }
            return p
        }
    }

    enum SnapshotEvent: Sendable {
        /// The snapshot of a dataset the peer asked for is ready, this many bytes.
        case ready(String, UInt64)
        /// It could not be made.
        case unavailable(String, String)
        /// A snapshot received could not be installed.
        case failed(String, String)
    }
    /// Bytes received and not yet processed by every session of this peer's site.
    let inbound: InboundBudget

    init(direction: Direction, address: String, peer: PeerIdentity, inbound: InboundBudget = InboundBudget()) {
        self.direction = direction
        self.address = address
        self.peer = peer
        self.inbound = inbound
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }
}

/// Small unique ids for sessions, without Foundation.
enum UUIDish {
    private static let counter = Atomic<UInt64>(0)
    static func next() -> UInt64 { counter.add(1, ordering: .relaxed).newValue }
}

/// Runs one established connection: feeds the state machine with what
/// arrives, what changes locally and the passing of time, and carries out
/// its actions against the host and the socket, one event at a time.
struct PeerSession {
    let host: any SyncHost
    let handle: SessionHandle
    let config: SyncStateMachine.Config
    let logger: Logger
    /// Told when certificates arrive that other sessions should pass on.
    let onNewCertificates: @Sendable ([[UInt8]]) -> Void
    /// Told when an apply found fork evidence that other sessions should pass on.
    let onEvidence: @Sendable (String, [[UInt8]]) -> Void
    /// Told when a revocation notice was new here.
    let onRevocation: @Sendable (RevocationTaken) -> Void
    /// Told when the session's state changes (for `sync --wait`, status).
    let onStateChange: @Sendable () -> Void

    enum Event: Sendable {
        case inbound(SyncMessage)
        /// The stream cannot go on (a bad frame, a peer ignoring flow control).
        case invalid(RejectCode, String)
        case ended((any Error)?)
        case wake
        case tick
    }

    /// The most inbound bytes the sessions of one site hold before
    /// processing them: what flow control lets an honest peer have in flight
    /// in two sessions (8 MiB of batches each beyond one batch, and one frame,
    /// at most 32 MiB), plus 16 MiB of messages outside it (acks, vectors,
    /// fork evidence, revocation notices). A session that takes its site
    /// past it is cut off.
    static let maxBufferedBytes = 2 * (8 << 20) + SyncFrame.maxFrameBytes + (16 << 20)

    /// Counters of this session, labelled with the peer (and this node's
    /// site: several nodes may share a process in tests and benchmarks).
    private func counter(_ label: String) -> Counter {
        Counter(label: label, dimensions: [("site", config.localSite.short), ("peer", handle.peer.name)])
    }
    var sentCommits: Counter { counter("lode_sync_commits_sent_total") }
    var receivedCommits: Counter { counter("lode_sync_commits_received_total") }
    var sentBytes: Counter { counter("lode_sync_bytes_sent_total") }
    var receivedBytes: Counter { counter("lode_sync_commit_bytes_received_total") }
    /// Snapshots (DESIGN §12): offered to peers, and taken from them by outcome.
    var snapshotsOffered: Counter { counter("lode_sync_snapshots_offered_total") }
    func snapshotsTaken(_ outcome: String) -> Counter {
        Counter(label: "lode_sync_snapshots_taken_total", dimensions: [("site", config.localSite.short), ("outcome", outcome)])
    }

    func run(_ channel: NIOAsyncChannel<SyncMessage, ByteBuffer>) async throws {
        try await channel.executeThenClose { inbound, outbound in
            // Reading never waits for processing: a side blocked writing to
            // its peer must still read what the peer writes, or two sides
            // pushing at once would deadlock on full socket buffers. The
            // protocol's flow control bounds what a peer may have in flight;
            // a peer that ignores it is cut off at `maxBufferedBytes`.
            let (events, continuation) = AsyncStream.makeStream(of: Event.self)
            // This session's share of its site's budget, given back at the end.
            let buffered = InboundBudget()
            let site = handle.inbound
            defer { _ = site.add(-buffered.add(0)) }
            defer {
                // Ended first, then released: a snapshot made for this
                // session after either lets itself go (`prepareSnapshot`).
                handle.ended.store(true, ordering: .sequentiallyConsistent)
                host.releaseSnapshots(session: handle.id, dataset: nil)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        for try await message in inbound {
                            _ = buffered.add(message.weight)
                            let held = site.add(message.weight)
                            if held > PeerSession.maxBufferedBytes {
                                continuation.yield(
                                    .invalid(
                                        .malformed,
                                        "the peer sent more than flow control allows: \(held >> 20) MiB received and not yet processed, over \(PeerSession.maxBufferedBytes >> 20) MiB"
                                    ))
                                break
                            }
                            continuation.yield(.inbound(message))
                        }
                        continuation.yield(.ended(nil))
                    } catch let failure as SyncFrameDecoder.Failure {
                        continuation.yield(.invalid(failure.code, failure.description))
                    } catch {
                        continuation.yield(.ended(error))
                    }
                }
                group.addTask {
                    for await _ in handle.wakes { continuation.yield(.wake) }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try await Task.sleep(for: .seconds(1))
                        continuation.yield(.tick)
                    }
                }
                defer {
                    group.cancelAll()
                    continuation.finish()
                }
                // The forks found here go, once the Hellos are exchanged, to a
                // peer that holds a forked feed past the fork (it was away when
                // the fork was found), and to no other: evidence is not resent
                // between nodes that both know.
                var known = try await host.forkEvidence()
                var sm = SyncStateMachine(config: config, peerSite: handle.peer.site)
                let start = sm.start(
                    local: try await host.datasetVectors(), certificates: try await host.knownCertificates(),
                    revocations: try await host.revocationNotices(), now: .now)
                if try await perform(start, &sm, { try await outbound.write(ByteBuffer(bytes: $0)) }) { return }
                for await event in events {
                    if case .inbound(let message) = event {
                        _ = buffered.add(-message.weight)
                        _ = site.add(-message.weight)
                    }
                    let actions: [SyncStateMachine.Action]
                    switch event {
                    case .inbound(let m):
                        actions = sm.receive(m, now: .now)
                        if sm.isEstablished && !known.isEmpty {
                            let needed = known.filter { e in
                                guard let first = e.commits.first, let c = try? Commit(decoding: first) else { return false }
                                return (sm.peerVectors[e.dataset]?[c.author] ?? 0) >= c.seq
                            }
                            known = []
                            if !needed.isEmpty { handle.pendingEvidence.withLock { $0 += needed } }
                        }
                        // Evidence that came while the Hellos were exchanged goes now.
                        if sm.isEstablished && !handle.pendingEvidence.withLock({ $0.isEmpty }) { handle.wake.yield() }
                    case .invalid(let code, let message):
                        actions = [.close(code, message)]
                    case .ended(let error):
                        logger.info("sync session ended", metadata: ["peer": "\(handle.peer.name)", "error": "\(error.map { "\($0)" } ?? "closed")"])
                        return
                    case .wake:
                        if handle.closeRequested.withLock({ $0 }) { return }
                        var a: [SyncStateMachine.Action] = []
                        let certs = handle.pendingCertificates.withLock { p in
                            defer { p = [] }
                            return p
                        }
                        // Certificates and revocations may go before the Hello is
                        // answered; commits never before them.
                        if !certs.isEmpty { a.append(.send(.certificates(certs))) }
                        for n in handle.pendingRevocations.withLock({ p in
                            defer { p = [] }
                            return p
                        }) {
                            a.append(.send(.revocation(n)))
                        }
                        // Sent as commits, so only once the Hellos are exchanged (until
                        // then it waits): the peer applies or refuses them as any other.
                        if sm.isEstablished {
                            for e in handle.pendingEvidence.withLock({ p in
                                defer { p = [] }
                                return p
                            }) {
                                a.append(.send(.commits(dataset: e.dataset, commits: e.commits)))
                            }
                        }
                        for event in handle.takeSnapshotEvents() { a += sm.apply(event) }
                        for (name, v) in try await host.datasetVectors().sorted(by: { $0.key < $1.key }) {
                            a += sm.localChanged(dataset: name, vector: v)
                        }
                        actions = a
                    case .tick:
                        actions = sm.tick(now: .now)
                    }
                    if try await perform(actions, &sm, { try await outbound.write(ByteBuffer(bytes: $0)) }) { return }
                }
            }
        }
    }

    /// Carries out actions (and the actions they lead to). Returns true
    /// when the session is to close.
    func perform(
        _ initial: [SyncStateMachine.Action], _ sm: inout SyncStateMachine,
        _ write: ([UInt8]) async throws -> Void
    ) async throws -> Bool {
        var queue = initial[...]
        var closing = false
        while let action = queue.popFirst() {
            switch action {
            case .send(let m):
                let bytes = SyncFrame.encode(.v1(m))
                try await write(bytes)
                sentBytes.increment(by: bytes.count)
            case .sendMissing(let dataset, let after):
                // A peer lacking commits of a dataset this node compacted
                // away is offered a snapshot instead of the commits that are left.
                if let holds = sm.snapshotCandidate(dataset),
                    let offer = try await host.snapshotOffer(dataset: dataset, peerHolds: holds, for: handle.peer)
                {
                    logger.notice(
                        "offering a snapshot", metadata: ["dataset": "\(dataset)", "peer": "\(handle.peer.name)", "bytes": "\(offer.bytes)"])
                    snapshotsOffered.increment()
                    queue += sm.offerSnapshot(dataset: dataset, vector: offer.vector, bytes: offer.bytes)
                    continue
                }
                let batch = try await host.missingCommits(dataset: dataset, after: after, maxBytes: SyncFrame.targetBatchBytes, for: handle.peer)
                let through = after.merged(with: VersionVector(highest: batch.lazy.map { ($0.site, $0.seq) }))
                if !batch.isEmpty {
                    let bytes = SyncFrame.encode(.v1(.commits(dataset: dataset, commits: batch.map(\.bytes))))
                    try await write(bytes)
                    sentCommits.increment(by: batch.count)
                    sentBytes.increment(by: bytes.count)
                }
                queue += sm.sent(dataset: dataset, commits: batch.count, bytes: batch.reduce(0) { $0 + $1.bytes.count }, through: through, now: .now)
            case .apply(let dataset, let raw):
                var commits: [Commit] = []
                commits.reserveCapacity(raw.count)
                for bytes in raw {
                    guard let c = try? Commit(decoding: bytes) else {
                        queue = [.close(.malformed, "a commit in \(dataset) does not decode")][...]
                        commits = []
                        break
                    }
                    guard c.dataset == dataset else {
                        queue = [.close(.invalidCommit, "a commit of \(c.dataset) was sent as \(dataset)")][...]
                        commits = []
                        break
                    }
                    commits.append(c)
                }
                guard !commits.isEmpty else { continue }
                // The highest seq per author: a hostile peer's frame may name
                // hundreds of thousands of authors.
                let batch = VersionVector(highest: commits.lazy.map { ($0.author, $0.seq) })
                receivedCommits.increment(by: commits.count)
                receivedBytes.increment(by: raw.reduce(0) { $0 + $1.count })
                let started = ContinuousClock.now
                let result = try await host.apply(dataset: dataset, commits: commits, from: handle.peer.site)
                Timer(label: "lode_sync_apply_seconds", dimensions: [("dataset", dataset)], preferredDisplayUnit: .seconds).recordNanoseconds(
                    (ContinuousClock.now - started).nanoseconds)
                Gauge(label: "lode_sync_commits_waiting", dimensions: [("dataset", dataset), ("peer", handle.peer.name)]).record(result.waiting)
                for r in result.rejected { Counter(label: "lode_sync_commits_refused_total", dimensions: [("reason", "\(r.code)")]).increment() }
                for r in result.rejected {
                    logger.warning(
                        "refused a commit",
                        metadata: [
                            "dataset": "\(dataset)", "author": "\(r.site.short)", "seq": "\(r.seq)", "code": "\(r.code)", "reason": "\(r.reason)",
                            "from": "\(handle.peer.name)",
                        ])
                }
                if !result.evidence.isEmpty { onEvidence(dataset, result.evidence) }
                for h in result.aheadOfClock {
                    logger.notice(
                        "held back commits stamped ahead of this node's clock",
                        metadata: ["dataset": "\(dataset)", "author": "\(h.site.short)", "from-seq": "\(h.seq)", "from": "\(handle.peer.name)"])
                }
                queue += sm.applied(
                    dataset: dataset, vector: result.vector, batch: batch, rejected: result.rejected + result.aheadOfClock, held: result.held,
                    now: .now)
            case .addCertificates(let certs):
                let intake = try await host.addCertificates(certs)
                for r in intake.refused { logger.warning("refused a certificate", metadata: ["from": "\(handle.peer.name)", "reason": "\(r)"]) }
                if !intake.added.isEmpty {
                    onNewCertificates(intake.added)
                    // Commits waiting for these authors may apply now.
                    for (name, v) in try await host.datasetVectors() { queue += sm.localChanged(dataset: name, vector: v) }
                }
            case .takeRevocation(let notice):
                do {
                    let taken = try await host.takeRevocation(notice)
                    if !taken.forward.isEmpty || taken.site != nil {
                        logger.notice("took in a revocation", metadata: ["site": "\(taken.site ?? "")", "from": "\(handle.peer.name)"])
                        onRevocation(taken)
                    }
                } catch {
                    // A notice that does not check out changes nothing; the session goes on.
                    logger.warning("refused a revocation notice", metadata: ["from": "\(handle.peer.name)", "reason": "\(error)"])
                }
            case .considerSnapshot(let dataset, let vector, let bytes):
                do {
                    try await host.beginSnapshot(dataset: dataset, vector: vector, bytes: bytes, from: handle.peer, session: handle.id)
                    logger.notice("taking a snapshot", metadata: ["dataset": "\(dataset)", "from": "\(handle.peer.name)", "bytes": "\(bytes)"])
                    queue += sm.snapshotAccepted(dataset: dataset)
                } catch {
                    logger.warning("declined a snapshot", metadata: ["dataset": "\(dataset)", "from": "\(handle.peer.name)", "reason": "\(error)"])
                    snapshotsTaken("declined").increment()
                    queue += [.send(.snapshotAnswer(dataset: dataset, accept: false, message: "\(error)"))]
                }
            case .storeSnapshot(let dataset, let offset, let total, let bytes, let complete):
                do {
                    try await host.storeSnapshot(dataset: dataset, offset: offset, total: total, bytes: bytes, session: handle.id)
                } catch {
                    host.releaseSnapshots(session: handle.id, dataset: dataset)
                    logger.warning("could not store a snapshot", metadata: ["dataset": "\(dataset)", "reason": "\(error)"])
                    snapshotsTaken("failed").increment()
                    queue += sm.snapshotFailed(dataset: dataset, reason: "\(error)")
                    continue
                }
                queue += [.send(.snapshotAck(dataset: dataset, received: offset + UInt64(bytes.count)))]
                if complete {
                    // Checking and installing takes as long as reading the
                    // whole dataset: off the session's loop, which goes on
                    // answering pings; the new dataset wakes every session.
                    let (host, handle, logger) = (host, handle, logger)
                    let (installed, refused) = (snapshotsTaken("installed"), snapshotsTaken("refused"))
                    Task {
                        do {
                            let outcome = try await host.installSnapshot(dataset: dataset, session: handle.id)
                            installed.increment()
                            logger.notice(
                                "installed a peer's snapshot",
                                metadata: ["dataset": "\(dataset)", "from": "\(handle.peer.name)", "detail": "\(outcome)"])
                        } catch {
                            logger.warning(
                                "refused a peer's snapshot", metadata: ["dataset": "\(dataset)", "from": "\(handle.peer.name)", "reason": "\(error)"])
                            refused.increment()
                            handle.snapshotEvents.withLock { $0.append(.failed(dataset, "\(error)")) }
                        }
                        handle.wake.yield()
                    }
                }
            case .abandonSnapshot(let dataset, let reason):
                host.releaseSnapshots(session: handle.id, dataset: dataset)
                logger.notice("a snapshot is not coming", metadata: ["dataset": "\(dataset)", "from": "\(handle.peer.name)", "reason": "\(reason)"])
            case .prepareSnapshot(let dataset):
                // A backup of the dataset: off the session's loop too.
                let (host, handle) = (host, handle)
                Task {
                    let event: SessionHandle.SnapshotEvent
                    do {
                        event = .ready(dataset, try await host.openSnapshot(dataset: dataset, session: handle.id))
                    } catch {
                        event = .unavailable(dataset, "\(error)")
                    }
                    if handle.ended.load(ordering: .sequentiallyConsistent) {
                        host.releaseSnapshots(session: handle.id, dataset: dataset)
                        return
                    }
                    handle.snapshotEvents.withLock { $0.append(event) }
                    handle.wake.yield()
                }
            case .sendSnapshotChunk(let dataset, let offset, let count, let total):
                let bytes = try await host.readSnapshot(dataset: dataset, session: handle.id, offset: offset, count: count)
                let frame = SyncFrame.encode(.v1(.snapshotChunk(dataset: dataset, offset: offset, total: total, bytes: bytes)))
                try await write(frame)
                sentBytes.increment(by: frame.count)
            case .releaseSnapshot(let dataset):
                host.releaseSnapshots(session: handle.id, dataset: dataset)
            case .log(let message):
                logger.notice("\(message)", metadata: ["peer": "\(handle.peer.name)"])
            case .close(let code, let message):
                if let code {
                    try? await write(SyncFrame.encode(.v1(.reject(code: code, message: message))))
                    logger.warning("closing sync session", metadata: ["peer": "\(handle.peer.name)", "code": "\(code)", "reason": "\(message)"])
                } else {
                    logger.notice("sync session closed by peer", metadata: ["peer": "\(handle.peer.name)", "reason": "\(message)"])
                }
                closing = true
                queue = []
            }
        }
        let snapshot = SessionHandle.Snapshot(established: sm.isEstablished, peer: sm.peerVectors, busy: sm.isBusy)
        handle.snapshot.withLock { $0 = snapshot }
        onStateChange()
        return closing || sm.isClosed
    }
}

extension SyncStateMachine {
    /// What a snapshot made or installed off the session's loop leads to.
    fileprivate mutating func apply(_ event: SessionHandle.SnapshotEvent) -> [Action] {
        switch event {
        case .ready(let dataset, let bytes): snapshotReady(dataset: dataset, total: bytes)
        case .unavailable(let dataset, let reason): snapshotUnavailable(dataset: dataset, reason: reason)
        case .failed(let dataset, let reason): snapshotFailed(dataset: dataset, reason: reason)
        }
    }
}

extension SyncMessage {
    /// Roughly the memory an inbound message holds while it waits.
    var weight: Int {
        switch self {
        case .v1(.commits(_, let commits)), .v1(.certificates(let commits)): commits.reduce(64) { $0 + $1.count }
        case .v1(.revocation(let notice)): 64 + notice.count
        case .v1(.snapshotChunk(_, _, _, let bytes)): 64 + bytes.count
        default: 64
        }
    }
}

/// Bytes received and not yet processed by a session.
final class InboundBudget: Sendable {
    private let bytes = Atomic<Int>(0)
    /// Adds `n` (negative to release) and returns the new total.
    func add(_ n: Int) -> Int { bytes.add(n, ordering: .relaxed).newValue }
}

/// One session run without a socket: the state machine and the host, as a
/// connection would drive them, fed messages one at a time, its frames
/// handed to `sent`. For the stateful fuzz target and tests.
///
/// ```swift
/// let s = OfflineSession(host: host, peer: who, localSite: me, cluster: cluster) { frame in … }
/// try await s.start()
/// let over = try await s.receive(message)
/// ```
public final class OfflineSession: @unchecked Sendable {
    private let session: PeerSession
    private var sm: SyncStateMachine
    private let sent: ([UInt8]) -> Void
    private var closed = false

    public init(host: any SyncHost, peer: PeerIdentity, localSite: SiteID, cluster: [UInt8], sent: @escaping ([UInt8]) -> Void) {
        let config = SyncStateMachine.Config(localSite: localSite, cluster: cluster)
        session = PeerSession(
            host: host, handle: SessionHandle(direction: .accepted, address: "offline", peer: peer), config: config,
            logger: Logger(label: "offline", factory: { _ in SwiftLogNoOpLogHandler() }), onNewCertificates: { _ in },
            onEvidence: { _, _ in }, onRevocation: { _ in }, onStateChange: {})
        sm = SyncStateMachine(config: config, peerSite: peer.site)
        self.sent = sent
    }

    /// As a connection's end would: snapshots half sent or received are let go.
    deinit {
        session.handle.ended.store(true, ordering: .sequentiallyConsistent)
        session.host.releaseSnapshots(session: session.handle.id, dataset: nil)
    }

    /// Sends this side's Hello, certificates and revocation notices.
    public func start() async throws {
        let host = session.host
        let actions = sm.start(
            local: try await host.datasetVectors(), certificates: try await host.knownCertificates(),
            revocations: try await host.revocationNotices(), now: .now)
        closed = try await session.perform(actions, &sm) { sent($0) }
    }

    /// Takes one message from the peer and does all it leads to. Returns
    /// true once the session is over.
    @discardableResult
    public func receive(_ message: SyncMessage) async throws -> Bool {
        guard !closed else { return true }
        closed = try await session.perform(sm.receive(message, now: .now), &sm) { sent($0) }
        return closed
    }

    /// The passing of time: keepalives, vector rounds, timeouts.
    @discardableResult
    public func tick(at now: ContinuousClock.Instant) async throws -> Bool {
        guard !closed else { return true }
        closed = try await session.perform(sm.tick(now: now), &sm) { sent($0) }
        return closed
    }

    /// Vector entries kept for datasets the peer announced and this node does not hold.
    public var unheldEntries: Int { sm.unheld.values.reduce(0) { $0 + $1.count } }
}
