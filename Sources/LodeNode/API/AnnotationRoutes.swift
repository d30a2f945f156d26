import Hummingbird
import LodeProtocol
import LodeStore

/// `/v1/datasets/{ds}/annotations`: writing and listing annotations.
struct AnnotationRoutes: Sendable {
    func add(to group: RouterGroup<DatasetRequestContext>) {
        group.on(.post, "annotations", needs: .annotate) { req, ctx in
            let a = try await req.decodeJSON(as: API.AnnotateRequest.self)
            let id = try await ctx.dataset.annotate(
                NewAnnotation(table: a.table, pk: a.pk, column: a.column, text: a.text, tags: a.tags, replyTo: a.replyTo))
            return try json(["id": id], status: .created)
        }
        group.on(.post, "annotations/:id/status", needs: .annotate) { req, ctx in
            let body = try await req.decodeJSON(as: API.AnnotationStatusRequest.self)
            let id = try ctx.parameters.decoded("id")
            let changed = try await ctx.dataset.setAnnotationStatus(id, status: body.status)
            return try json(["id": id, "status": body.status, "changed": changed ? "yes" : "no"])
        }
        group.on(.get, "annotations", needs: .read) { req, ctx in
            let filter = AnnotationFilter(
                table: req.query("table"), pk: req.query("pk"), tag: req.query("tag"), search: req.query("search"),
                limit: try req.query("limit", in: 1...100_000))
            return try json(try await ctx.dataset.annotations(filter))
        }
    }
}
