import Foundation
import GRDB
import LodeCore

/// An annotation on a row or one cell.
public struct Annotation: Sendable, Codable, Hashable {
    public var id: String
    public var table: String
    public var key: String
    public var column: String?
    public var text: String
    public var author: String
    public var status: String
    public var replyTo: String?
    public var created: String
    public var tags: [String]
    /// False when the row it points at has since been deleted.
    public var targetExists: Bool
}

/// Which annotations to list.
public struct AnnotationFilter: Sendable, Codable {
    public var table: String?
    public var key: String?
    public var tag: String?
    /// Full-text search words (FTS5 syntax; plain words are ANDed).
    public var search: String?
    public var limit: Int?

    public init(table: String? = nil, key: String? = nil, tag: String? = nil, search: String? = nil, limit: Int? = nil) {
        self.table = table
        self.key = key
        self.tag = tag
        self.search = search
        self.limit = limit
    }
}

extension Replica {
    /// Adds an annotation to a row (or one of its cells), with tags, perhaps
    /// as a reply to another. Returns its id.
    ///
    /// ```swift
    /// let id = try await replica.annotate(table: "facilities", key: "mp-10x", text: "capacity unconfirmed", tags: ["check"])
    /// ```
    public func annotate(
        table: String, key: String, column: String? = nil, text: String,
        tags: [String] = [], replyTo: String? = nil
    ) async throws -> String {
        guard local.role.canAnnotate else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only editors and annotators may annotate")
        }
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw StoreError.badInput("the annotation text is empty")
        }
        let cleanTags = Array(Set(tags.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })).sorted()
        return try await write { [self] db, state in
            let batch = try LocalBatch(self, db, state)
            guard !Identifier.isReserved(table) else { throw StoreError.badInput("annotate rows of user tables, not \(table)") }
            let t = try batch.table(table)
            if let column, t.slots[column] == nil && column != t.primaryKey {
                throw StoreError.notFound("no column \(column) in table \(table)")
            }
            guard Merge.isPresent(try state.readRow(db, t, key).length) else {
                throw StoreError.notFound("no row \(key) in table \(table)")
            }
            let notes = try batch.table("_annotations")
            if let replyTo, !Merge.isPresent(try state.readRow(db, notes, replyTo).length) {
                throw StoreError.notFound("no annotation \(replyTo) to reply to")
            }
            let ctx = batch.context
            let id = String(ctx.hlc.rawValue, radix: 16) + local.site.hex.prefix(4)
            let fields: [(String, Value)] = [
                ("target_table", .text(table)), ("target_pk", .text(key)), ("target_column", column.map(Value.text) ?? .null),
                ("body", .text(text)), ("author", .text(local.name)), ("status", .text("open")),
                ("reply_to", replyTo.map(Value.text) ?? .null), ("created", .text(ctx.hlc.iso8601)),
            ]
            try batch.put(
                notes, key: id, columns: fields.map(\.0), slots: fields.map { notes.slots[$0.0]! },
                values: fields.map(\.1), onlyChanges: false)
            let tagTable = try batch.table("_annotation_tags")
            for tag in cleanTags {
                try batch.put(
                    tagTable, key: "\(id):\(tag)", columns: ["annotation_id", "tag"],
                    slots: [tagTable.slots["annotation_id"]!, tagTable.slots["tag"]!],
                    values: [.text(id), .text(tag)], onlyChanges: false)
            }
            _ = try batch.finish()
            return id
        }
    }

    /// Lists annotations, newest first.
    public func annotations(_ f: AnnotationFilter = AnnotationFilter()) async throws -> [Annotation] {
        try await read { db in
            var conditions: [String] = []
            var args: [DatabaseValueConvertible?] = []
            if let t = f.table { conditions.append("a.target_table = ?"); args.append(t) }
            if let k = f.key { conditions.append("a.target_pk = ?"); args.append(k) }
            if let tag = f.tag {
                conditions.append("EXISTS (SELECT 1 FROM _annotation_tags g WHERE g.annotation_id = a.id AND g.tag = ?)")
                args.append(tag)
            }
            if let s = f.search, !s.trimmingCharacters(in: .whitespaces).isEmpty {
                conditions.append("a.id IN (SELECT id FROM _lode_annotations_fts WHERE _lode_annotations_fts MATCH ?)")
                args.append(try Replica.ftsQuery(db, s))
            }
            let sql = """
                SELECT a.id, a.target_table, a.target_pk, a.target_column, a.body, a.author, a.status, a.reply_to, a.created,
                       (SELECT group_concat(tag, char(31)) FROM (SELECT tag FROM _annotation_tags g WHERE g.annotation_id = a.id ORDER BY tag)) AS tags,
                       EXISTS (SELECT 1 FROM _lode_rows r JOIN _lode_tables t ON r.tbl = t.id
                               WHERE t.name = a.target_table AND r.pk = a.target_pk AND r.cl % 2 = 1) AS target_exists
                FROM _annotations a
                \(conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "))
                ORDER BY a.created DESC, a.id DESC
                LIMIT ?
                """
            args.append(f.limit ?? -1)
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)).map { r in
                Annotation(
                    id: r["id"], table: r["target_table"] ?? "", key: r["target_pk"] ?? "", column: r["target_column"],
                    text: r["body"], author: r["author"] ?? "", status: r["status"], replyTo: r["reply_to"],
                    created: r["created"] ?? "", tags: (r["tags"] as String?)?.split(separator: "\u{1F}").map(String.init) ?? [],
                    targetExists: r["target_exists"])
            }
        }
    }

    /// Uses the words as FTS5 syntax when that parses, else as plain words
    /// (each quoted), so that a stray quote or dash is not an error.
    static func ftsQuery(_ db: Database, _ words: String) throws -> String {
        do {
            _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_annotations_fts WHERE _lode_annotations_fts MATCH ?", arguments: [words])
            return words
        } catch {
            return words.split(whereSeparator: { $0.isWhitespace })
                .map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
                .joined(separator: " ")
        }
    }
}
