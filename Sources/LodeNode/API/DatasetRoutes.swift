import Foundation
import Hummingbird
import LodeCore
import LodeProtocol
import LodeSQLite
import LodeStore

/// `/v1/datasets`: the datasets this node holds, creating one, and one
/// dataset's summary, schema and schema changes.
struct DatasetRoutes: Sendable {
    let node: Node

    func add(to group: RouterGroup<APIRequestContext>) {
        group.on(.get, "datasets", needs: .read) { _, _ in try json(try await infos()) }
        group.on(.post, "datasets", needs: .edit) { req, _ in
            let body = try await req.decodeJSON(as: API.CreateDataset.self)
            let replica = try await node.createDataset(body.name, schema: body.schema)
            return try json(try await info(replica), status: .created)
        }
        group.on(.post, "restore", needs: .operate) { req, _ in
            let spool = try await node.spool(req.body, as: "backup", empty: "the request needs a backup file as its body (lode backup)")
            defer { try? FileManager.default.removeItem(atPath: spool) }
            return try json(try await node.restore(from: spool))
        }
    }

    func add(toDataset group: RouterGroup<DatasetRequestContext>) {
        group.on(.get, "", needs: .read) { _, ctx in try json(try await info(try ctx.dataset)) }
        group.on(.get, "schema", needs: .read) { _, ctx in text(try await ctx.dataset.schemaSQL(), contentType: "application/sql") }
        group.on(.get, "checkpoints", needs: .read) { _, ctx in try json(try await node.checkpoints(try ctx.dataset)) }
        group.on(.post, "checkpoints", needs: .edit) { _, ctx in
            try json(try await node.signCheckpoint(try ctx.dataset), status: .created)
        }
        group.on(.post, "compact", needs: .operate) { req, ctx in
            let body = try await req.decodeJSON(as: API.CompactRequest.self)
            if let keep = body.keepHistory, keep > API.CompactRequest.maxKeepHistory {
                throw NodeError(.badInput, "keepHistory is at most \(API.CompactRequest.maxKeepHistory) seconds (100 years)")
            }
            return try json(try await node.compact(try ctx.dataset, keepHistory: body.keepHistory ?? Node.defaultKeepHistory))
        }
        group.on(.get, "backup", needs: .read) { _, ctx in
            // A consistent copy in the node's temporary folder, streamed
            // and then removed.
            try FileManager.default.createDirectory(atPath: node.paths.tmp, withIntermediateDirectories: true)
            let path = node.paths.tmp + "/backup-\(UUID().uuidString).db"
            do {
                try await node.backup(try ctx.dataset, to: path)
                return try fileResponse(path, contentType: "application/vnd.sqlite3", removeAfter: true)
            } catch {
                try? FileManager.default.removeItem(atPath: path)
                throw error
            }
        }
        group.on(.post, "alter", needs: .edit) { req, ctx in
            let body = try await req.decodeJSON(as: API.AlterDataset.self)
            return try json(API.AlterResult(try await ctx.dataset.alter(try SchemaParser.parse(body.schema))))
        }
    }

    /// Every dataset's summary.
    func infos() async throws -> [API.DatasetInfo] {
        var out: [API.DatasetInfo] = []
        for name in node.datasetNames() { out.append(try await info(try node.replica(name))) }
        return out
    }

    /// One dataset's summary: its tables, size, commits, vector, refusals
    /// and alerts.
    func info(_ r: any SQLReplicaStore) async throws -> API.DatasetInfo {
        let names = try await r.sites().reduce(into: [SiteID: String]()) { $0[$1.site] = $1.displayName }
        let vector = r.vector.sorted.map { API.VectorEntry(site: names[$0.site] ?? $0.site.short, key: $0.site.hex, seq: $0.seq) }
        let forks = try await forkAlerts(r, names: names)
        return API.DatasetInfo(
            name: r.dataset, tables: try await r.rowCounts().map { API.DatasetInfo.Table(name: $0.table, rows: $0.rows) },
            bytes: r.bytesOnDisk, commits: try await r.commitCount(), vector: vector, rejected: try await r.rejectionCount(),
            alerts: node.alerts.alerts(dataset: r.dataset, names: names, now: SQLiteReplica.systemWallClock())
                + forks)
    }

    /// A site whose feed forked here, from the evidence kept (never pruned).
    func forkAlerts(_ r: any SQLReplicaStore, names: [SiteID: String]) async throws -> [API.SiteAlert] {
        var first: [SiteID: RejectionRecord] = [:]
        for f in try await r.rejections(limit: 10_000, kind: .forkedFeed) where first[f.site].map({ f.seq <= $0.seq }) ?? true {
            first[f.site] = f
        }
        return first.sorted { $0.key < $1.key }.map { site, f in
            let frozen = node.cutoff(dataset: r.dataset, author: site)
            return API.SiteAlert(
                kind: .forked, site: names[site] ?? site.short, key: site.hex, seq: f.seq, since: formatISO8601(millis: f.received),
                detail: "signed two different commits with seq \(f.seq) (kept as evidence)"
                    + (frozen.map { "; its feed is frozen here after seq \($0)" } ?? "") + "; ask the CA to revoke it")
        }
    }
}

extension API.AlterResult {
    /// What an alter added.
    init(_ c: SchemaChange) { self.init(addedTables: c.tables, addedColumns: c.columns) }
}
