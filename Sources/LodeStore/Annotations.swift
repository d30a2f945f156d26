import Foundation
import LodeCore

/// Which annotations to list.
public struct AnnotationFilter: Sendable, Codable, Hashable {
    public var table: String?
    public var pk: String?
    public var tag: String?
    /// Full-text search words (every word must appear).
    public var search: String?
    public var limit: Int?

    /// Creates a filter; nil fields match everything.
    public init(table: String? = nil, pk: String? = nil, tag: String? = nil, search: String? = nil, limit: Int? = nil) {
        self.table = table
        self.pk = pk
        self.tag = tag
        self.search = search
        self.limit = limit
    }
}

/// A new annotation as its author writes it.
public struct NewAnnotation: Sendable, Hashable {
    /// The annotated row's table and primary key.
    public var table: String
    public var pk: String
    /// The annotated cell's column, or nil for the whole row.
    public var column: String?
    /// What it says.
    public var text: String
    public var tags: [String]
    /// The annotation it answers, if any.
    public var replyTo: String?

    /// Creates an annotation to write.
    public init(table: String, pk: String, column: String? = nil, text: String, tags: [String] = [], replyTo: String? = nil) {
        self.table = table
        self.pk = pk
        self.column = column
        self.text = text
        self.tags = tags
        self.replyTo = replyTo
    }
}

/// How annotations are kept: rows of two system tables, written with the
/// same CRDT as user rows (DESIGN §2). Every store writes them through
/// these functions.
public enum AnnotationRows {
    /// The table of annotations.
    /// The words of a text as a search of annotations matches them: runs
    /// of letters and digits, lowercased.
    public static func words(_ text: String) -> [String] {
        text.lowercased().split(whereSeparator: { !($0.isLetter || $0.isNumber) }).map(String.init)
    }

    public static let notes = "_annotations"
    /// The table of tags, one row per (annotation, tag).
    public static let tags = "_annotation_tags"

    /// The checks that need no replica: the site may annotate, the text is
    /// not empty, the table is a user table. Returns the tags trimmed,
    /// without duplicates, sorted.
    public static func check(_ a: NewAnnotation, by local: LocalSite) throws -> [String] {
        guard local.role.canAnnotate else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only editors and annotators may annotate")
        }
        guard !a.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw StoreError.badInput("the annotation text is empty")
        }
        guard !Identifier.isReserved(a.table) else { throw StoreError.badInput("annotate rows of user tables, not \(a.table)") }
        guard !a.pk.isEmpty else { throw StoreError.badInput("the annotated row's key is empty") }
        return Array(Set(a.tags.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })).sorted()
    }

    /// Checks a status change (`lode`'s resolve and reopen): a site that
    /// may annotate, to open or resolved. Returns the edit that writes it.
    public static func statusEdit(_ id: String, status: String, by local: LocalSite) throws -> RowEdit {
        guard local.role.canAnnotate else {
            throw StoreError(.forbidden, "site \(local.name) is a \(local.role.rawValue): only editors and annotators may resolve annotations")
        }
        guard statuses.contains(.text(status)) else {
            throw StoreError.badInput("an annotation's status is open or resolved, not \(status.debugDescription)")
        }
        return .put(table: notes, pk: id, columns: ["status"], values: [.text(status)])
    }

    /// The checks against the replica: the column exists in `table`, the
    /// row is present, and so is the annotation replied to.
    public static func checkTarget(_ a: NewAnnotation, table: TableSchema, rowPresent: Bool, replyPresent: Bool) throws {
        if let column = a.column, table.columns[column] == nil && column != table.primaryKey {
            throw StoreError.notFound("no column \(column) in table \(a.table)")
        }
        guard rowPresent else { throw StoreError.notFound("no row \(a.pk) in table \(a.table)") }
        if let reply = a.replyTo, !replyPresent { throw StoreError.notFound("no annotation \(reply) to reply to") }
    }

    /// The id of the annotation a site writes in a commit stamped `hlc`:
    /// unique, sorting by time, and naming its author's site by the first
    /// 64 bits of its key, so that every replica can tell, from the commit
    /// alone, whether a write to the annotation comes from its author.
    public static func id(hlc: HLC, site: SiteID) -> String {
        String(hlc.rawValue, radix: 16) + "-" + site.hex.prefix(ownerDigits)
    }

    /// Hex digits of the author's key in an annotation id.
    static let ownerDigits = 16

    /// Whether annotation `id` was written by `site` (DESIGN §9: only its
    /// author's site may edit it). Ids written before the site was named in
    /// full end with 4 hex digits of its key, a weaker binding that a site
    /// could match by making keys until one fits.
    public static func isOwned(_ id: Substring, by site: SiteID) -> Bool {
        if let dash = id.lastIndex(of: "-") { return id[id.index(after: dash)...] == site.hex.prefix(ownerDigits) }
        return id.count > 4 && id.hasSuffix(site.hex.prefix(4))
    }

    /// What a non-author may write to an annotation: its status.
    public static let statuses: Set<Value> = [.text("open"), .text("resolved")]

    /// Why `commit`'s writes to the annotation tables are not allowed, or
    /// nil (DESIGN §9). An annotation, its tags included, is written and
    /// deleted only by its author's site (the id names it), which must name
    /// itself `authorName` as author; any other site that may annotate may
    /// only set its status to open or resolved. A tag row's key begins with
    /// its annotation's id, and names that annotation.
    public static func violation(in commit: Commit, authorName: String) -> (kind: RejectionKind, reason: String)? {
        for op in commit.ops {
            switch op {
            case .put(let put) where put.table == notes:
                let author = put.columns.firstIndex(of: "author")
                let status = put.columns.firstIndex(of: "status")
                for i in 0..<put.rowCount {
                    let row = put.row(i)
                    if isOwned(put.keys[i][...], by: commit.author) {
                        if let author, row[row.startIndex + author] != .text(authorName) {
                            return (.invalid, "an annotation names an author other than the site that signed it")
                        }
                    } else if put.columns.count != 1 || status == nil || !statuses.contains(row[row.startIndex]) {
                        return (
                            .notAuthorized, "annotation \(put.keys[i].prefix(80)) is another site's: only its status may be set, to open or resolved"
                        )
                    }
                }
            case .put(let put) where put.table == tags:
                let named = put.columns.firstIndex(of: "annotation_id")
                for i in 0..<put.rowCount {
                    let id = put.keys[i].prefix { $0 != ":" }
                    guard isOwned(id, by: commit.author) else {
                        return (.notAuthorized, "tag \(put.keys[i].prefix(80)) belongs to another site's annotation")
                    }
                    if let named, put.row(i)[put.row(i).startIndex + named] != .text(String(id)) {
                        return (.invalid, "tag \(put.keys[i].prefix(80)) names an annotation other than its key's")
                    }
                }
            case .delete(let del) where del.table == notes || del.table == tags:
                for key in del.keys where !isOwned(key.prefix { $0 != ":" }, by: commit.author) {
                    return (
                        .notAuthorized,
                        "\(del.table == notes ? "annotation" : "tag") \(key.prefix(80)) is another site's: only its author may delete it"
                    )
                }
            default:
                continue
            }
        }
        return nil
    }

    /// The rows that record annotation `id`, written by `author` at `hlc`.
    public static func rows(_ a: NewAnnotation, id: String, author: String, hlc: HLC, tags: [String]) -> [RowEdit] {
        let fields: [(String, Value)] = [
            ("target_table", .text(a.table)), ("target_pk", .text(a.pk)), ("target_column", a.column.map(Value.text) ?? .null),
            ("body", .text(a.text)), ("author", .text(author)), ("status", .text("open")),
            ("reply_to", a.replyTo.map(Value.text) ?? .null), ("created", .text(hlc.iso8601)),
        ]
        var out: [RowEdit] = [.put(table: notes, pk: id, columns: fields.map(\.0), values: fields.map(\.1))]
        for tag in tags {
            out.append(.put(table: AnnotationRows.tags, pk: "\(id):\(tag)", columns: ["annotation_id", "tag"], values: [.text(id), .text(tag)]))
        }
        return out
    }

    /// The system tables every dataset has, with the same definition
    /// everywhere (stamped at the zero clock by `genesisSite`).
    public static let systemTables: [TableDef] = [
        TableDef(
            name: notes, primaryKey: "id",
            columns: [
                ColumnDef(name: "target_table", type: .text),
                ColumnDef(name: "target_pk", type: .text),
                ColumnDef(name: "target_column", type: .text),
                ColumnDef(name: "body", type: .text, notNull: true, defaultValue: .text("")),
                ColumnDef(name: "author", type: .text),
                ColumnDef(name: "status", type: .text, notNull: true, defaultValue: .text("open")),
                ColumnDef(name: "reply_to", type: .text),
                ColumnDef(name: "created", type: .text),
            ]),
        TableDef(
            name: tags, primaryKey: "id",
            columns: [
                ColumnDef(name: "annotation_id", type: .text),
                ColumnDef(name: "tag", type: .text),
            ]),
        CheckpointRows.definition,
    ]

    /// The author of the system tables' definitions.
    public static let genesisSite = try! SiteID(bytes: [UInt8](repeating: 0, count: 32))
}
