import LodeCore
import LodeProtocol
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One configured or connected peer, as `lode status` shows it.
public struct PeerStatus: Sendable {
    public var address: String
    public var state: PeerState
    /// The peer's site name, once a session tells it.
    public var siteName: String?
    public var inSync: Bool
    /// Per dataset, how far apart this node and the peer are.
    public var lag: [String: Lag]
    public var lastError: String?
    /// True for a peer this node dials.
    public var configured: Bool
}

/// What `sync --wait` found.
public struct SyncWaitResult: Sendable {
    public var inSync: Bool
    /// Peers still apart or unreachable, with why.
    public var apart: [String]
}

/// Peer sync for a node: accepts mutual-TLS connections on the listen
/// address, dials every configured peer (redialling with exponential backoff
/// and jitter), and runs a `PeerSession` per connection. New commits, local
/// or relayed, wake every session at once, so that they reach every peer.
///
/// ```swift
/// let engine = SyncEngine(host: host, tls: tls, listen: try PeerAddress("127.0.0.1:7443"), peers: { node.peers() }, logger: logger)
/// try await ServiceGroup(services: [engine, api], …).run()
/// ```
public final class SyncEngine: Service, Sendable {
    let host: any SyncHost
    let tls: SyncTLS
    let listenAddress: PeerAddress
    let configuredPeers: @Sendable () -> [String]
    let logger: Logger
    let config: SyncStateMachine.Config

    private let sessions = Mutex<[UInt64: SessionHandle]>([:])
    private let dialers = Mutex<[String: Dialer]>([:])
    private let bound = Mutex<Int?>(nil)
    private let changed = Wakeup()
    private let reconcile = Wakeup()
    private let offline = Mutex(false)

    final class Dialer: Sendable {
        struct State {
            var state = PeerState.connecting
            var lastError: String?
            /// The peer is no longer configured: stop dialling.
            var removed = false
        }
        let address: String
        let wakeup = Wakeup()
        let state = Mutex(State())
        init(address: String) { self.address = address }
    }

    /// Creates the engine; `peers` is read again whenever `peersChanged()` is called.
    public init(
        host: any SyncHost, tls: SyncTLS, listen: PeerAddress, peers: @escaping @Sendable () -> [String], logger: Logger,
        tuning: (inout SyncStateMachine.Config) -> Void = { _ in }
    ) {
        self.host = host
        self.tls = tls
        listenAddress = listen
        configuredPeers = peers
        self.logger = logger
        var c = SyncStateMachine.Config(localSite: host.localSite, cluster: tls.cluster)
        tuning(&c)
        config = c
    }

    /// The most sessions one site (one certificate's key) may hold at once.
    public static let maxSessionsPerSite = 4

    /// The port the listener is bound to, once running.
    public var port: Int? { bound.withLock { $0 } }

    public func run() async throws {
        let serverContext = try tls.serverContext()
        let clientContext = try tls.clientContext()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .bind(host: listenAddress.host, port: listenAddress.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try SyncEngine.configure(channel, tls: NIOSSLServerHandler(context: serverContext))
                }
            }
        bound.withLock { $0 = server.channel.localAddress?.port }
        logger.info("sync listening", metadata: ["address": "\(server.channel.localAddress.map { "\($0)" } ?? "?")"])
        do {
            try await runServing(server, clientContext)
        } catch {
            // Shutting down (SIGTERM, or the node's task cancelled) is not a failure.
            if Task.isCancelled || error is CancellationError { return }
            throw error
        }
    }

    private func runServing(
        _ server: NIOAsyncChannel<PendingConnection, Never>,
        _ clientContext: NIOSSLContext
    ) async throws {
        try await cancelWhenGracefulShutdown {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { await self.superviseDialers(clientContext) }
                try await server.executeThenClose { inbound in
                    for try await pending in inbound {
                        let (connection, handshake) = pending.take()
                        let remote = connection.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
                        group.addTask { try? await self.serve(connection, handshake, .accepted, address: remote) }
                    }
                }
            }
        }
    }

    static func configure(_ channel: Channel, tls: ChannelHandler) throws -> PendingConnection {
        let promise = channel.eventLoop.makePromise(of: NIOSSLCertificate.self)
        try channel.pipeline.syncOperations.addHandler(tls)
        try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(promise: promise))
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(SyncFrameDecoder()))
        return PendingConnection(try NIOAsyncChannel<SyncMessage, ByteBuffer>(wrappingChannelSynchronously: channel), promise.futureResult)
    }

    /// Waits for the TLS handshake (10 s at most), identifies the peer from
    /// its certificate, and runs the session until it ends.
    func serve(
        _ connection: NIOAsyncChannel<SyncMessage, ByteBuffer>, _ handshake: EventLoopFuture<NIOSSLCertificate>,
        _ direction: SessionHandle.Direction, address: String
    ) async throws {
        let certificate: NIOSSLCertificate
        // A connection that never completes its handshake (a silent TCP
        // client, a slow-loris) is closed after 10 s; closing fails the
        // handshake future, which nothing else would.
        let channel = connection.channel
        let timedOut = Mutex(false)
        let timer = channel.eventLoop.scheduleTask(in: .seconds(10)) {
            timedOut.withLock { $0 = true }
            channel.close(promise: nil)
        }
        do {
            // The future ignores task cancellation: a node stopping closes
            // the channel, or it would wait out the 10 s.
            certificate = try await withTaskCancellationHandler {
                try await handshake.get()
            } onCancel: {
                channel.close(promise: nil)
            }
            timer.cancel()
        } catch {
            timer.cancel()
            let reason: Error = timedOut.withLock { $0 } ? SyncError.handshakeTimeout : error
            if Task.isCancelled {
                logger.debug("closed a sync connection in its handshake: stopping", metadata: ["address": "\(address)"])
            } else if direction == .accepted {
                logger.info("refused a sync connection", metadata: ["address": "\(address)", "error": "\(reason)"])
            } else {
                logger.info("could not open a sync session with a peer", metadata: ["peer": "\(address)", "error": "\(reason)"])
            }
            await SyncEngine.discard(connection)
            throw reason
        }
        let peer: PeerIdentity
        do {
            peer = try host.identifyPeer(try certificate.toDERBytes())
        } catch {
            // A revoked site redials with backoff: one line per attempt.
            logger.notice("refused a peer after the handshake", metadata: ["address": "\(address)", "reason": "\(error)"])
            await SyncEngine.discard(connection)
            throw error
        }
        guard peer.site != host.localSite, !isOffline else {
            await SyncEngine.discard(connection)
            return
        }
        // One certificate may hold a few sessions at once (a dialled and an
        // accepted one, a reconnect racing the old session's end), not
        // hundreds: each costs a task; their inbound buffers share one
        // budget (DESIGN §9).
        let admitted = sessions.withLock { all -> SessionHandle? in
            let same = all.values.filter { $0.peer.site == peer.site }
            guard same.count < SyncEngine.maxSessionsPerSite else { return nil }
            let handle = SessionHandle(direction: direction, address: address, peer: peer, inbound: same.first?.inbound ?? InboundBudget())
            all[handle.id] = handle
            return handle
        }
        guard let handle = admitted else {
            logger.info(
                "refused a sync session: the site already holds the most sessions allowed",
                metadata: ["peer": "\(peer.name)", "address": "\(address)", "limit": "\(SyncEngine.maxSessionsPerSite)"])
            await SyncEngine.discard(connection)
            return
        }
        changed.signal()
        logger.info("sync session started", metadata: ["peer": "\(peer.name)", "address": "\(address)", "direction": "\(direction.rawValue)"])
        defer {
            sessions.withLock { _ = $0.removeValue(forKey: handle.id) }
            changed.signal()
        }
        let session = PeerSession(
            host: host, handle: handle, config: config, logger: logger,
            onNewCertificates: { [weak self] certs in self?.broadcast(certificates: certs, except: handle.id) },
            onEvidence: { [weak self] dataset, commits in self?.broadcast(evidence: commits, of: dataset, except: handle.id) },
            onRevocation: { [weak self] taken in
                self?.broadcast(revocations: taken.forward, except: handle.id)
                if let site = taken.site { self?.closeSessions { $0.name == site } }
            },
            onStateChange: { [weak self] in self?.changed.signal() })
        try await session.run(connection)
    }

    /// Closes a connection that will not run a session. An async channel
    /// must be closed through `executeThenClose`, which finishes its writer.
    static func discard(_ connection: NIOAsyncChannel<SyncMessage, ByteBuffer>) async {
        try? await connection.executeThenClose { _, _ in }
    }

    // MARK: Dialling

    /// Keeps one dialler per configured peer, adding and removing them as
    /// the configuration changes.
    func superviseDialers(_ context: NIOSSLContext) async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let wanted = Set(configuredPeers())
                let (added, removed) = dialers.withLock { d -> ([Dialer], [Dialer]) in
                    let add = wanted.subtracting(d.keys).map { Dialer(address: $0) }
                    for a in add { d[a.address] = a }
                    let gone = d.keys.filter { !wanted.contains($0) }.compactMap { d.removeValue(forKey: $0) }
                    return (add, gone)
                }
                for r in removed {
                    r.state.withLock { $0.removed = true }
                    r.wakeup.signal()
                    // A peer no longer configured is no longer dialled: end its session.
                    for s in sessions.withLock({ Array($0.values) }) where s.direction == .dialled && s.address == r.address {
                        s.closeRequested.withLock { $0 = true }
                        s.wake.yield()
                    }
                }
                for a in added { group.addTask { await self.dial(a, context) } }
                await reconcile.wait(for: .seconds(5))
            }
        }
    }

    func dial(_ dialer: Dialer, _ context: NIOSSLContext) async {
        var backoff: Duration = .milliseconds(250)
        while !Task.isCancelled && !dialer.state.withLock({ $0.removed }) {
            if isOffline {
                dialer.state.withLock {
                    $0.state = .offline
                    $0.lastError = nil
                }
                await dialer.wakeup.wait(for: .seconds(3600))
                continue
            }
            dialer.state.withLock { $0.state = .connecting }
            let started = ContinuousClock.now
            do {
                let address = try PeerAddress(dialer.address)
                let (connection, handshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connectTimeout(.seconds(5))
                    .channelOption(.socketOption(.so_keepalive), value: 1)
                    .connect(host: address.host, port: address.port) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try SyncEngine.configure(channel, tls: try NIOSSLClientHandler(context: context, serverHostname: nil))
                        }
                    }
                    .take()
                // TCP is up; TLS and the peer's certificate are not checked
                // yet (in TLS 1.3 the client finishes before the server has
                // judged its certificate). The session, once registered,
                // reports "connected".
                dialer.state.withLock {
                    $0.state = .handshake
                    $0.lastError = nil
                }
                try await serve(connection, handshake, .dialled, address: dialer.address)
                dialer.state.withLock { $0.lastError = "session ended" }
            } catch {
                dialer.state.withLock { $0.lastError = SyncEngine.describe(error) }
                logger.debug("dial failed", metadata: ["peer": "\(dialer.address)", "error": "\(error)"])
            }
            if ContinuousClock.now - started > .seconds(30) { backoff = .milliseconds(250) }
            dialer.state.withLock { $0.state = .backoff }
            changed.signal()
            let jittered = backoff * Double.random(in: 0.5...1.5)
            await dialer.wakeup.wait(for: jittered)
            backoff = min(backoff * 2, .seconds(30))
        }
    }

    /// A connection error in a few words.
    static func describe(_ error: any Error) -> String {
        if let e = error as? NIOConnectionError {
            if let first = e.connectionErrors.first { return describe(first.error) }
            if let dns = e.dnsAAAAError ?? e.dnsAError { return "cannot resolve \(e.host): \(dns)" }
            return "cannot connect to \(e.host):\(e.port)"
        }
        if let e = error as? IOError { return String(cString: strerror(e.errnoCode)).lowercased() }
        if let e = error as? NIOSSLError { return "TLS: \(e)" }
        if let e = error as? BoringSSLError { return "TLS handshake refused (\(e))" }
        if error is ChannelError { return "connection closed" }
        return "\(error)"
    }

    // MARK: Control

    /// Something changed locally (a commit, a new dataset): every session
    /// checks what its peer now lacks.
    public func localChanged() {
        for s in sessions.withLock({ Array($0.values) }) { s.wake.yield() }
    }

    /// True while the node is offline (see `setOffline`).
    public var isOffline: Bool { offline.withLock { $0 } }

    /// Takes the node off the network (it keeps working locally: a laptop on
    /// a plane) or back on it. Going offline closes every session and stops
    /// dialling; coming back dials every peer at once.
    public func setOffline(_ value: Bool) {
        offline.withLock { $0 = value }
        if value { closeSessions { _ in true } }
        syncNow()
    }

    /// Closes the sessions whose peer matches (a revoked site's).
    public func closeSessions(where matches: (PeerIdentity) -> Bool) {
        for s in sessions.withLock({ Array($0.values) }) where matches(s.peer) {
            s.closeRequested.withLock { $0 = true }
            s.wake.yield()
        }
    }

    /// The configured peers changed: start or stop diallers.
    public func peersChanged() { reconcile.signal() }

    /// Dial every configured peer now, without waiting out the backoff.
    public func syncNow() {
        reconcile.signal()
        for d in dialers.withLock({ Array($0.values) }) { d.wakeup.signal() }
        localChanged()
    }

    /// Passes certificates this node came to know outside a session (a
    /// relay sharing a database with others) to every session.
    public func share(certificates: [[UInt8]]) {
        guard !certificates.isEmpty else { return }
        broadcast(certificates: certificates, except: 0)
    }

    func broadcast(certificates: [[UInt8]], except id: UInt64) {
        for s in sessions.withLock({ Array($0.values) }) where s.id != id {
            s.pendingCertificates.withLock { $0 += certificates }
            s.wake.yield()
        }
    }

    /// Passes revocation notices to every session but `id` (0: every one).
    public func broadcast(revocations: [[UInt8]], except id: UInt64 = 0) {
        guard !revocations.isEmpty else { return }
        for s in sessions.withLock({ Array($0.values) }) where s.id != id {
            s.pendingRevocations.withLock { $0 += revocations }
            s.wake.yield()
        }
    }

    /// Passes fork evidence to every other session.
    func broadcast(evidence: [[UInt8]], of dataset: String, except id: UInt64) {
        for s in sessions.withLock({ Array($0.values) }) where s.id != id {
            s.pendingEvidence.withLock { $0.append((dataset, evidence)) }
            s.wake.yield()
        }
    }

    /// Configured peers and connected sessions, compared with what this
    /// node holds now (`local`, from the host).
    public func status() async -> [PeerStatus] {
        let local = (try? await host.datasetVectors()) ?? [:]
        return status(local: local)
    }

    func status(local: [String: VersionVector]) -> [PeerStatus] {
        let live = sessions.withLock { Array($0.values) }
        func view(_ s: SessionHandle, address: String, state: PeerState, configured: Bool) -> PeerStatus {
            let snap = s.snapshot.withLock { $0 }
            var lag: [String: Lag] = [:]
            for name in Set(local.keys).union(snap.peer.keys) {
                lag[name] = Lag(local: local[name] ?? VersionVector(), peer: snap.peer[name] ?? VersionVector())
            }
            let inSync = snap.established && !snap.busy && Set(local.keys).isSubset(of: snap.peer.keys) && lag.values.allSatisfy(\.isZero)
            return PeerStatus(
                address: address, state: snap.established ? state : .handshake, siteName: s.peer.name, inSync: inSync, lag: lag,
                lastError: nil, configured: configured)
        }
        var out: [PeerStatus] = []
        var matched = Set<UInt64>()
        let known = dialers.withLock { $0 }
        for address in Set(configuredPeers()).union(known.keys).sorted() {
            guard let d = known[address] else {
                // Configured a moment ago; its dialler is starting.
                out.append(
                    PeerStatus(address: address, state: .connecting, siteName: nil, inSync: false, lag: [:], lastError: nil, configured: true))
                continue
            }
            if let s = live.first(where: { $0.direction == .dialled && $0.address == address }) {
                matched.insert(s.id)
                out.append(view(s, address: address, state: .connected, configured: true))
            } else {
                let st = d.state.withLock { $0 }
                out.append(
                    PeerStatus(
                        address: address, state: st.state, siteName: nil, inSync: false, lag: [:], lastError: st.lastError, configured: true))
            }
        }
        for s in live where !matched.contains(s.id) {
            out.append(view(s, address: s.address, state: .accepted, configured: false))
        }
        return out
    }

    /// Waits until every configured peer is connected and every connected
    /// peer holds the same commits as this node, or until `timeout`.
    public func waitUntilInSync(timeout: Duration) async -> SyncWaitResult {
        let deadline = ContinuousClock.now + timeout
        while true {
            let apart = await status().compactMap { p -> String? in
                if p.inSync { return nil }
                let who = p.siteName.map { "\($0) (\(p.address))" } ?? p.address
                if p.state.isConnected {
                    let lag = p.lag.filter { !$0.value.isZero }
                        .map { "\($0.key): \($0.value.ahead) ahead, \($0.value.behind) behind" }.sorted()
                    return "\(who) is apart" + (lag.isEmpty ? "" : " (\(lag.joined(separator: "; ")))")
                }
                return "\(who) is unreachable" + (p.lastError.map { ": \($0)" } ?? "")
            }
            if apart.isEmpty { return SyncWaitResult(inSync: true, apart: []) }
            let left = deadline - ContinuousClock.now
            if left <= .zero || Task.isCancelled || Task.isShuttingDownGracefully { return SyncWaitResult(inSync: false, apart: apart) }
            await changed.wait(for: min(left, .seconds(1)))
        }
    }
}

/// A connection's async channel and TLS handshake, on their way from the
/// event loop to the accept loop or a dialler. NIO drops one that is never
/// taken (connections still queued when the accept loop stops, a connect
/// that fails after the channel was made), and an `NIOAsyncChannel` dropped
/// before `executeThenClose` traps the process ("Deinited NIOAsyncWriter
/// without calling finish()", swift-nio #2813 and #2637). One never taken
/// is closed properly instead.
final class PendingConnection: Sendable {
    private let connection: NIOAsyncChannel<SyncMessage, ByteBuffer>
    private let handshake: EventLoopFuture<NIOSSLCertificate>
    private let taken = Atomic(false)

    init(_ connection: NIOAsyncChannel<SyncMessage, ByteBuffer>, _ handshake: EventLoopFuture<NIOSSLCertificate>) {
        self.connection = connection
        self.handshake = handshake
    }

    /// The connection, now the caller's to run and close.
    func take() -> (NIOAsyncChannel<SyncMessage, ByteBuffer>, EventLoopFuture<NIOSSLCertificate>) {
        taken.store(true, ordering: .sequentiallyConsistent)
        return (connection, handshake)
    }

    deinit {
        guard !taken.load(ordering: .sequentiallyConsistent) else { return }
        let connection = connection
        Task { try? await connection.executeThenClose { _, _ in } }
    }
}
