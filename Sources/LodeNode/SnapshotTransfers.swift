import Foundation
import Glibc
import LodeCore
import LodeProtocol
import LodeSQLite
import LodeStore
import Synchronization

/// Snapshots handed over by sync (DESIGN §12), both ways, as files in the
/// node's `tmp` folder.
///
/// - **Sending.** A snapshot is a compacted backup (`Node.backup`), made
///   when a peer asks for one and shared by every session that asks within
///   `reuseFor`; it is deleted once no session reads it and a newer one
///   replaced it, or it aged out.
/// - **Receiving.** One peer at a time sends a dataset's snapshot. It goes
///   to a file created 0600, bounded by `maxBytes` and the free disk, and is
///   installed as `lode restore` installs a backup: every signature, the
///   checkpoint's quorum and its digest checked here.
final class SnapshotTransfers: Sendable {
    /// The largest snapshot this node takes.
    static let maxBytes: UInt64 = 64 << 30
    /// What a snapshot leaves free on the disk.
    static let diskReserve: UInt64 = 256 << 20
    /// The most snapshots coming in at once (one per session).
    static let maxReceiving = 4
    /// How long a snapshot made for one peer is offered to others.
    static let reuseFor: Duration = .seconds(600)
    /// How long a snapshot this node refused is not taken again from the
    /// same peer at the same vector: its checks would fail the same way.
    /// (Another peer's is taken: a peer cannot bar an honest one's.)
    static let refuseAgainFor: Duration = .seconds(1800)

    private struct Made {
        var path: String
        var bytes: UInt64
        var at: ContinuousClock.Instant
        /// The sessions reading it.
        var readers: Set<UInt64>
        /// A newer one replaced it: deleted once no session reads it.
        var stale = false
    }

    private struct Receiving {
        var dataset: String
        var vector: VersionVector
        var peer: SiteID
        var session: UInt64
        var path: String
        var handle: FileHandle
        /// Its exact size, once its first bytes said it.
        var total: UInt64?
        var stored: UInt64
        /// The size offered.
        var claimed: UInt64
        /// The disk it will take.
        var room: UInt64 { total ?? claimed }
    }

    private struct State {
        /// Snapshots made here, by id.
        var made: [UInt64: Made] = [:]
        /// The newest one per dataset.
        var newest: [String: UInt64] = [:]
        /// What each session reads: (session, dataset) → id.
        var reading: [SessionDataset: UInt64] = [:]
        /// Snapshots coming in, by dataset.
        var receiving: [String: Receiving] = [:]
        /// The snapshots refused lately, by what they were offered as.
        var refused: [Refused: (reason: String, at: ContinuousClock.Instant)] = [:]
        var nextID: UInt64 = 1
    }

    private struct Refused: Hashable {
        var dataset: String
        var vector: VersionVector
        var peer: SiteID
    }

    private struct SessionDataset: Hashable {
        var session: UInt64
        var dataset: String
    }

    private let node: Node
    private let state = Mutex(State())
    private let folder: String

    init(node: Node) {
        self.node = node
        folder = node.paths.tmp
        // Files left by a node that stopped mid-transfer.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] where name.hasPrefix("snapshot-") {
            try? FileManager.default.removeItem(atPath: folder + "/" + name)
        }
    }

    // MARK: Sending

    /// A snapshot of `dataset` for `session`: the newest made within
    /// `reuseFor`, or a new one. Returns its size.
    func open(dataset: String, session: UInt64) async throws -> UInt64 {
        let now = ContinuousClock.now
        if let bytes = state.withLock({ s -> UInt64? in
            guard let id = s.newest[dataset], var m = s.made[id], now - m.at < Self.reuseFor else { return nil }
            m.readers.insert(session)
            s.made[id] = m
            s.reading[SessionDataset(session: session, dataset: dataset)] = id
            return m.bytes
        }) {
            return bytes
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let path = folder + "/snapshot-out-\(UUID().uuidString).db"
        do {
            try await node.backup(dataset, to: path)
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
        let bytes = UInt64((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0)
        var obsolete: [String] = []
        state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            if let old = s.newest[dataset] {
                s.made[old]?.stale = true
                obsolete += Self.dropUnread(old, &s)
            }
            s.made[id] = Made(path: path, bytes: bytes, at: .now, readers: [session])
            s.newest[dataset] = id
            s.reading[SessionDataset(session: session, dataset: dataset)] = id
        }
        for p in obsolete { try? FileManager.default.removeItem(atPath: p) }
        return bytes
    }

    /// `count` bytes at `offset` of the snapshot `session` reads.
    func read(dataset: String, session: UInt64, offset: UInt64, count: Int) throws -> [UInt8] {
        guard let path = state.withLock({ s in s.reading[SessionDataset(session: session, dataset: dataset)].flatMap { s.made[$0]?.path } }) else {
            throw NodeError(.notFound, "no snapshot of \(dataset) is open for this session")
        }
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        let data = try handle.read(upToCount: count) ?? Data()
        guard data.count == count else { throw NodeError(.storage, "the snapshot of \(dataset) ended before byte \(offset + UInt64(count))") }
        return [UInt8](data)
    }

    /// Removes snapshot `id` when no session reads it and it is stale or
    /// aged out; returns the file to delete.
    private static func dropUnread(_ id: UInt64, _ s: inout State) -> [String] {
        guard let m = s.made[id], m.readers.isEmpty, m.stale || ContinuousClock.now - m.at >= reuseFor else { return [] }
        s.made[id] = nil
        for (name, newest) in s.newest where newest == id { s.newest[name] = nil }
        return [m.path]
    }

    // MARK: Receiving

    /// Starts taking a snapshot of `dataset` at `vector`, about `total`
    /// bytes, from `peer` in `session`. Refused when this node holds every
    /// commit `vector` covers (or keeps its datasets in PostgreSQL), refused
    /// that peer's snapshot at `vector` lately, another peer is sending
    /// it, or it would not fit. A node that holds the dataset but lacks some of those
    /// commits takes it to merge it in (`Node.restore`).
    func begin(dataset: String, vector: VersionVector, total: UInt64, from peer: SiteID, session: UInt64) throws {
        guard node.postgres == nil else {
            throw NodeError(.badInput, "this node keeps its datasets in PostgreSQL: it does not take snapshots")
        }
        if let held = try node.heldReplica(dataset)?.vector, held.dominates(vector) {
            throw NodeError(.alreadyExists, "this node holds every commit of \(dataset) the snapshot covers")
        }
        let key = Refused(dataset: dataset, vector: vector, peer: peer)
        if let r = state.withLock({ s in
            s.refused = s.refused.filter { ContinuousClock.now - $0.value.at < Self.refuseAgainFor }
            return s.refused[key]
        }) {
            throw NodeError(.rejected, "this node refused this peer's snapshot of \(dataset) at this vector lately: \(r.reason)")
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try checkRoom(total, besides: dataset)
        let path = folder + "/snapshot-in-\(UUID().uuidString).db"
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = FileHandle(forWritingAtPath: path)
        else {
            throw NodeError(.storage, "cannot create a file in \(folder) for the snapshot")
        }
        let refusal = state.withLock { s -> String? in
            guard s.receiving[dataset] == nil else { return "another peer is sending a snapshot of \(dataset)" }
            guard !s.receiving.values.contains(where: { $0.session == session }) else {
                return "this session is sending another snapshot already"
            }
            guard s.receiving.count < Self.maxReceiving else { return "\(Self.maxReceiving) snapshots are coming in already" }
            s.receiving[dataset] = Receiving(
                dataset: dataset, vector: vector, peer: peer, session: session, path: path, handle: handle, total: nil, stored: 0, claimed: total)
            return nil
        }
        if let refusal {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: path)
            throw NodeError(.unavailable, refusal)
        }
    }

    /// Refuses a snapshot of `total` bytes over `maxBytes`, or one that,
    /// with the rest of the others coming in, would leave less than
    /// `diskReserve` free.
    private func checkRoom(_ total: UInt64, besides dataset: String) throws {
        guard total > 0, total <= Self.maxBytes else {
            throw NodeError(.badInput, "a snapshot of \(total) bytes is over the \(Self.maxBytes >> 30) GiB this node takes")
        }
        let others = state.withLock { s in s.receiving.values.filter { $0.dataset != dataset }.reduce(0) { $0 + ($1.room - min($1.room, $1.stored)) }
        }
        let free = Self.freeBytes(folder)
        guard total + others + Self.diskReserve <= free else {
            throw NodeError(
                .storage,
                "a snapshot of \(total >> 20) MiB would not leave \(Self.diskReserve >> 20) MiB free on the disk (\(free >> 20) MiB free, \(others >> 20) MiB promised to other snapshots)"
            )
        }
    }

    /// Stores `bytes` at `offset` of the snapshot `session` sends, `total`
    /// bytes long (checked against the bounds with its first bytes).
    func store(dataset: String, offset: UInt64, total: UInt64, bytes: [UInt8], session: UInt64) throws {
        guard let r = state.withLock({ $0.receiving[dataset] }), r.session == session, r.stored == offset, r.total ?? total == total,
            offset + UInt64(bytes.count) <= total
        else {
            throw NodeError(.badInput, "snapshot bytes of \(dataset) at \(offset) were not expected")
        }
        if r.total == nil { try checkRoom(total, besides: dataset) }
        do {
            try r.handle.write(contentsOf: bytes)
        } catch {
            throw NodeError(.storage, "cannot store the snapshot of \(dataset): \(error)")
        }
        state.withLock { s in
            s.receiving[dataset]?.total = total
            s.receiving[dataset]?.stored = offset + UInt64(bytes.count)
        }
    }

    /// Installs the snapshot of `dataset` received whole from `session`
    /// (`Node.restore`), then deletes its file. Returns the restore's report.
    func install(dataset: String, session: UInt64) async throws -> API.RestoreReport {
        guard
            let r = state.withLock({ s -> Receiving? in
                guard let r = s.receiving[dataset], r.session == session, r.stored == r.total else { return nil }
                s.receiving[dataset] = nil
                return r
            })
        else {
            throw NodeError(.badInput, "no whole snapshot of \(dataset) was received in this session")
        }
        defer { try? FileManager.default.removeItem(atPath: r.path) }
        try r.handle.synchronize()
        try r.handle.close()
        do {
            return try await node.restore(from: r.path, expecting: dataset)
        } catch {
            // Refused on its contents (a check failed, not the disk): not
            // taken again at this vector for a while.
            if (error as? NodeError)?.code == .rejected || (error as? StoreError)?.code == .rejected {
                state.withLock { $0.refused[Refused(dataset: dataset, vector: r.vector, peer: r.peer)] = ("\(error)", .now) }
            }
            throw error
        }
    }

    // MARK: Both

    /// Lets go of what `session` sends or receives of `dataset` (of every
    /// dataset when nil): files no one reads any more are deleted.
    func release(session: UInt64, dataset: String?) {
        var delete: [String] = []
        state.withLock { s in
            for (key, id) in s.reading where key.session == session && (dataset == nil || key.dataset == dataset) {
                s.reading[key] = nil
                s.made[id]?.readers.remove(session)
                delete += Self.dropUnread(id, &s)
            }
            for (name, r) in s.receiving where r.session == session && (dataset == nil || name == dataset) {
                s.receiving[name] = nil
                try? r.handle.close()
                delete.append(r.path)
            }
            // Snapshots that aged out while no session read them.
            for id in Array(s.made.keys) { delete += Self.dropUnread(id, &s) }
        }
        for p in delete { try? FileManager.default.removeItem(atPath: p) }
    }

    /// The bytes free to this process on the disk holding `path`.
    static func freeBytes(_ path: String) -> UInt64 {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return 0 }
        return UInt64(s.f_bavail) * UInt64(s.f_frsize)
    }
}
