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
        group.on(.get, "annotations", needs: .read) { req, ctx in
            let filter = AnnotationFilter(
                table: req.query("table"), pk: req.query("pk"), tag: req.query("tag"), search: req.query("search"),
                limit: req.query("limit").flatMap { Int($0) })
            return try json(try await ctx.dataset.annotations(filter).map(API.Annotation.init))
        }
    }
}

extension API.Annotation {
    /// An annotation as listed.
    init(_ a: Annotation) {
        self.init(
            id: a.id, table: a.table, pk: a.pk, column: a.column, text: a.text, author: a.author, status: a.status, replyTo: a.replyTo,
            created: a.created, tags: a.tags, targetExists: a.targetExists)
    }
}
