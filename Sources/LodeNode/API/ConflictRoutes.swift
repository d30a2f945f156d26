import Hummingbird
import LodeProtocol
import LodeStore

/// `/v1/datasets/{ds}/conflicts`: concurrent writes to one cell.
struct ConflictRoutes: Sendable {
    func add(to group: RouterGroup<DatasetRequestContext>) {
        group.on(.get, "conflicts", needs: .read) { req, ctx in
            let all = try req.flag("all") ?? false
            return try json(try await ctx.dataset.conflicts(includeResolved: all))
        }
        group.on(.post, "conflicts/resolve", needs: .edit) { req, ctx in
            let body = try await req.decodeJSON(as: API.ResolveRequest.self)
            let report = try await ctx.dataset.write([.put(table: body.table, pk: body.pk, columns: [body.column], values: [body.value])])
            return try json(report)
        }
    }
}
