import Foundation
import GRDB
import LodeCore
import LodeStore

extension SQLiteReplica {
    /// Adds an annotation to a row (or one of its cells), with tags, perhaps
    /// as a reply to another. Returns its id.
    ///
    /// ```swift
    /// let id = try await replica.annotate(NewAnnotation(table: "facilities", pk: "mp-10x", text: "capacity unconfirmed", tags: ["check"]))
    /// ```
    public func annotate(_ note: NewAnnotation) async throws -> String {
        let tags = try AnnotationRows.check(note, by: local)
        return try await edit { [self] batch in
            let t = try batch.table(note.table)
            let rowPresent = Merge.isPresent(try batch.state.rows.readRow(batch.db, t, note.pk).length)
            let notes = try batch.table(AnnotationRows.notes)
            let replyPresent = try note.replyTo.map { Merge.isPresent(try batch.state.rows.readRow(batch.db, notes, $0).length) } ?? true
            try AnnotationRows.checkTarget(note, table: t.schema, rowPresent: rowPresent, replyPresent: replyPresent)
            let id = AnnotationRows.id(hlc: batch.hlc, site: local.site)
            for row in AnnotationRows.rows(note, id: id, author: local.name, hlc: batch.hlc, tags: tags) { try batch.apply(row) }
            return id
        }
    }

    public func setAnnotationStatus(_ id: String, status: String) async throws -> Bool {
        let change = try AnnotationRows.statusEdit(id, status: status, by: local)
        return try await edit { [self] batch in
            let notes = try batch.table(AnnotationRows.notes)
            guard Merge.isPresent(try batch.state.rows.readRow(batch.db, notes, id).length) else {
                throw StoreError.notFound("no annotation \(id) in dataset \(dataset)")
            }
            return try batch.apply(change, onlyChanges: true)
        }
    }

    /// Lists annotations, newest first.
    public func annotations(_ f: AnnotationFilter) async throws -> [Annotation] {
        try await read { db in
            var conditions: [String] = []
            var args: [DatabaseValueConvertible?] = []
            if let t = f.table { conditions.append("a.target_table = ?"); args.append(t) }
            if let k = f.pk { conditions.append("a.target_pk = ?"); args.append(k) }
            if let tag = f.tag {
                conditions.append("EXISTS (SELECT 1 FROM _annotation_tags g WHERE g.annotation_id = a.id AND g.tag = ?)")
                args.append(tag)
            }
            if let s = f.search, let match = try SQLiteReplica.ftsQuery(db, s) {
                conditions.append("a.id IN (SELECT id FROM _lode_annotations_fts WHERE _lode_annotations_fts MATCH ?)")
                args.append(match)
            }
            let sql = """
                SELECT a.id, a.target_table, a.target_pk, a.target_column, a.body, a.author, a.status, a.reply_to, a.created,
                       (SELECT group_concat(tag, char(31)) FROM (SELECT tag FROM _annotation_tags g WHERE g.annotation_id = a.id ORDER BY tag)) AS tags,
                       EXISTS (SELECT 1 FROM _lode_rows r JOIN _lode_tables t ON r.tbl = t.id
                               WHERE t.name = a.target_table AND r.pk = a.target_pk AND r.cl % 2 = 1) AS target_exists,
                       (SELECT l.person FROM _lode_rows r JOIN _lode_tables t ON r.tbl = t.id JOIN _lode_log l ON l.id = r.first_log
                        WHERE t.name = '_annotations' AND r.pk = a.id) AS person
                FROM _annotations a
                \(conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND "))
                ORDER BY a.created DESC, a.id DESC
                LIMIT ?
                """
            args.append(f.limit ?? -1)
            return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)).map { r in
                Annotation(
                    id: r["id"], table: r["target_table"] ?? "", pk: r["target_pk"] ?? "", column: r["target_column"],
                    text: r["body"], author: r["author"] ?? "", status: r["status"], replyTo: r["reply_to"],
                    created: r["created"] ?? "", tags: (r["tags"] as String?)?.split(separator: "\u{1F}").map(String.init) ?? [],
                    targetExists: r["target_exists"], person: r["person"])
            }
        }
    }

    /// The search as FTS5 takes it: the text as typed when it parses as
    /// FTS5 syntax (`capacity*`, `a OR b`, `"an exact phrase"`), else each
    /// word quoted, so that a stray quote or dash is not an error; nil when
    /// nothing searchable is left. Control characters (a newline, NUL) are
    /// spaces first: FTS5 would take NUL for the end of the query.
    static func ftsQuery(_ db: Database, _ text: String) throws -> String? {
        let cleaned = String(String.UnicodeScalarView(text.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : $0 }))
        let words = cleaned.split(whereSeparator: { $0.isWhitespace })
        guard !words.isEmpty else { return nil }
        let typed = words.joined(separator: " ")
        if (try? Int.fetchOne(db, sql: "SELECT count(*) FROM _lode_annotations_fts WHERE _lode_annotations_fts MATCH ?", arguments: [typed])) != nil {
            return typed
        }
        return words.map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }.joined(separator: " ")
    }
}
