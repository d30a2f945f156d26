import Foundation
import Hummingbird
import LodeCore
import LodeProtocol
import LodeSQLite
import LodeSync

/// `/v1/peers` and `/v1/sync`: the peers this node dials, and syncing now.
struct PeerRoutes: Sendable {
    let node: Node
    let sync: SyncEngine
    let status: StatusRoutes

    func add(to group: RouterGroup<APIRequestContext>) {
        group.on(.get, "peers", needs: .read) { _, _ in try json(await status.peers()) }
        group.on(.post, "peers", needs: .operate) { req, _ in
            let body = try await req.decodeJSON(as: API.PeerRequest.self)
            let added = try node.addPeer(body.address)
            sync.peersChanged()
            return try json(["address": body.address, "added": added ? "yes" : "already there"], status: added ? .created : .ok)
        }
        group.on(.delete, "peers/:address", needs: .operate) { _, ctx in
            let address = try ctx.parameters.decoded("address")
            guard try node.removePeer(address) else { throw NodeError(.notFound, "\(address) is not a peer of this node") }
            sync.peersChanged()
            return Response(status: .noContent)
        }
        group.on(.get, "revocations", needs: .read) { _, _ in
            try json(node.revocations().map { r in PeerRoutes.info(r, node.revocationCutoffs(of: r)) })
        }
        group.on(.post, "revocations", needs: .operate) { req, _ in
            let body = try await req.body.collect(upTo: 16 << 10)
            let r = try Revocation.decode(Data(buffer: body))
            try await node.revoke(r)
            sync.closeSessions { peer in peer.name == r.site }
            sync.broadcast(revocations: try node.revocationNotices())
            return try json(PeerRoutes.info(r, node.revocationCutoffs(of: r)), status: .created)
        }
        group.on(.post, "sync", needs: .operate) { req, _ in
            let body = try await req.decodeJSON(as: API.SyncRequest.self)
            let timeout = body.timeout ?? 60
            guard (0...86_400).contains(timeout) else { throw NodeError(.badInput, "timeout must be from 0 to 86400 seconds, not \(timeout)") }
            sync.syncNow()
            guard body.wait ?? false else { return try json(API.SyncResult(inSync: false, apart: [], waited: false)) }
            let result = await sync.waitUntilInSync(timeout: .milliseconds(Int(timeout * 1000)))
            return try json(API.SyncResult(inSync: result.inSync, apart: result.apart, waited: true))
        }
    }

    static func info(_ r: Revocation, _ cutoffs: [NodeFile.Cutoff]) -> API.RevocationInfo {
        API.RevocationInfo(
            site: r.site, reason: r.reason, revoked: HLC(millis: r.revoked, counter: 0).iso8601,
            cutoffs: cutoffs.map { API.RevocationInfo.Cutoff(dataset: $0.dataset, key: $0.author.hex, seq: $0.seq) })
    }
}
