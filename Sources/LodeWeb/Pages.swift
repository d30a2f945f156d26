import Foundation
import LodeCore

/// Who is looking at a page.
public struct Viewer: Sendable {
    public var person: String
    public var role: Role
    public var site: String
    /// The token every write from the page carries (`X-CSRF-Token`).
    public var csrf: String
    public init(person: String, role: Role, site: String, csrf: String) {
        self.person = person
        self.role = role
        self.site = site
        self.csrf = csrf
    }
}

/// The workspace's pages, rendered on the server. Writes go from a form to
/// the client API (`/v1/…`) through `lode.js`, with the CSRF token; the
/// server checks every one as it would the CLI's.
public enum Pages {
    /// A whole page around `body`.
    public static func layout(title: String, viewer: Viewer?, crumbs: [(String, String?)] = [], body: HTML) -> String {
        let nav: Markup =
            if let v = viewer {
                """
                <span class="who">\(v.person) · \(v.role.rawValue) at \(v.site)</span>
                <a href="/">Datasets</a> <a href="/peers">Peers</a>\(v.role == .editor ? HTML(raw: " <a href=\"/people\">People</a>") : HTML(raw: ""))
                <form class="inline" data-api="/signout" data-then="/"><button>Sign out</button></form>
                """
            } else { "" }
        let trail = crumbs.map { c -> HTML in
            let m: Markup = c.1.map { "<a href=\"\(HTML(raw: HTML.attr($0)))\">\(c.0)</a>" } ?? "<span>\(c.0)</span>"
            return m.html
        }
        let page: Markup = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta name="csrf-token" content="\(viewer?.csrf ?? "")">
            <title>\(title) · Lodestone</title>
            <link rel="stylesheet" href="/assets/lode.css">
            <script src="/assets/lode.js" defer></script>
            </head><body>
            <header><a class="brand" href="/">Lodestone</a> <nav>\(nav.html)</nav></header>
            <div class="crumbs">\(trail.isEmpty ? HTML(raw: "") : trail.dropFirst().reduce(trail[0]) { $0 + HTML(raw: " / ") + $1 })</div>
            <main>\(body)</main>
            <p class="error" id="error" hidden></p>
            </body></html>
            """
        return page.html.description
    }

    /// The page for a browser that is not signed in (or whose link did not work).
    public static func signedOut(_ message: String) -> String {
        layout(
            title: "Sign in", viewer: nil,
            body: Markup(
                """
                <h1>Sign in</h1><p class="notice">\(message)</p>
                <p>Run <code>lode ui</code> on the node's machine for a link for yourself, or ask the site's operator for one
                (<code>lode user add NAME --role annotator</code>). A link works once, for a short time.</p>
                """
            ).html)
    }

    /// The page a sign-in link opens: who it signs in, and the button that
    /// does (a plain form, so it works before the script runs).
    public static func signIn(person: String, role: Role, site: String, token: String) -> String {
        layout(
            title: "Sign in", viewer: nil,
            body: Markup(
                """
                <h1>Sign in</h1><p>This link signs you in to the workspace of site <strong>\(site)</strong>
                as <strong>\(person)</strong> (\(role.rawValue)). It works once.</p>
                <form method="post" action="/signin"><input type="hidden" name="token" value="\(token)">
                <button id="sign-in">Sign in as \(person)</button></form>
                """
            ).html)
    }

    /// One dataset with its tables and row counts.
    public struct DatasetSummary: Sendable {
        public var name: String
        public var tables: [(name: String, rows: Int)]
        public var openAnnotations: Int
        public var openConflicts: Int
        public init(name: String, tables: [(name: String, rows: Int)], openAnnotations: Int, openConflicts: Int) {
            self.name = name
            self.tables = tables
            self.openAnnotations = openAnnotations
            self.openConflicts = openConflicts
        }
    }

    public static func datasets(_ list: [DatasetSummary], viewer: Viewer) -> String {
        let items = list.map { d -> HTML in
            let tables = d.tables.map { t -> HTML in
                Markup(
                    "<li><a href=\"/d/\(HTML(raw: HTML.component(d.name)))/t/\(HTML(raw: HTML.component(t.name)))\">\(t.name)</a> <span class=\"count\">\(t.rows) rows</span></li>"
                ).html
            }
            return Markup(
                """
                <section class="dataset"><h2>\(d.name)</h2>
                <p><a href="/d/\(HTML(raw: HTML.component(d.name)))/annotations">\(d.openAnnotations) open annotations</a> ·
                <a href="/d/\(HTML(raw: HTML.component(d.name)))/conflicts">\(d.openConflicts) open conflicts</a></p>
                <ul>\(tables)</ul></section>
                """
            ).html
        }
        return layout(title: "Datasets", viewer: viewer, crumbs: [("Datasets", nil)], body: Markup("<h1>Datasets</h1>\(items)").html)
    }

    /// What a table page shows and how it got there.
    public struct TableView: Sendable {
        public var dataset: String
        public var table: String
        public var primaryKey: String
        public var columns: [String]
        /// Each row: the key first, then `columns`.
        public var rows: [[Value]]
        /// Open annotations on the rows shown: key → columns annotated ("" for the row).
        public var marks: [String: Set<String>]
        public var sort: String
        public var descending: Bool
        public var filters: [(column: String, value: String)]
        public var search: String
        /// The query string of the next page, if there is one.
        public var next: String?
        /// The query string of the first page, when this is not it.
        public var first: String?
        public var total: Int?
        /// The time or commit the table is shown as of (as the reader gave
        /// it), or nil for now.
        public var asOf: String?
        public init(
            dataset: String, table: String, primaryKey: String, columns: [String], rows: [[Value]], marks: [String: Set<String>], sort: String,
            descending: Bool, filters: [(column: String, value: String)], search: String, next: String?, first: String?, total: Int?,
            asOf: String? = nil
        ) {
            self.asOf = asOf
            self.dataset = dataset
            self.table = table
            self.primaryKey = primaryKey
            self.columns = columns
            self.rows = rows
            self.marks = marks
            self.sort = sort
            self.descending = descending
            self.filters = filters
            self.search = search
            self.next = next
            self.first = first
            self.total = total
        }
    }

    public static func table(_ t: TableView, viewer: Viewer) -> String {
        let base = "/d/\(HTML.component(t.dataset))/t/\(HTML.component(t.table))"
        func sortLink(_ c: String) -> HTML {
            var q = t.filters.map { "f.\(HTML.component($0.column))=\(HTML.component($0.value))" }
            if !t.search.isEmpty { q.append("q=\(HTML.component(t.search))") }
            if let asOf = t.asOf { q.append("asof=\(HTML.component(asOf))") }
            q.append("sort=\(HTML.component(c))")
            if c == t.sort && !t.descending { q.append("desc=1") }
            let arrow = c == t.sort ? (t.descending ? " ▼" : " ▲") : ""
            return Markup("<a href=\"\(HTML(raw: HTML.attr(base + "?" + q.joined(separator: "&"))))\">\(c)\(arrow)</a>").html
        }
        let head = ([t.primaryKey] + t.columns).map { c in Markup("<th>\(sortLink(c))</th>").html }
        let body = t.rows.map { row -> HTML in
            guard case .text(let pk)? = row.first else { return HTML(raw: "") }
            let marks = t.marks[pk] ?? []
            let link = "\(base)/r/\(HTML.component(pk))"
            var cells = [
                Markup(
                    "<td class=\"key\"><a href=\"\(HTML(raw: HTML.attr(link)))\">\(pk)</a>\(marks.contains("") ? HTML(raw: " <span class=\"mark\" title=\"annotated\">●</span>") : HTML(raw: ""))</td>"
                ).html
            ]
            for (i, c) in t.columns.enumerated() {
                let marked = marks.contains(c)
                cells.append(
                    Markup(
                        "<td\(HTML(raw: marked ? " class=\"marked\" title=\"annotated\"" : ""))>\(HTML.value(i + 1 < row.count ? row[i + 1] : nil))</td>"
                    ).html)
            }
            return Markup("<tr data-pk=\"\(pk)\">\(cells)</tr>").html
        }
        let filterInputs = ([t.primaryKey] + t.columns).map { c -> HTML in
            let v = t.filters.first { $0.column == c }?.value ?? ""
            return Markup("<label>\(c) <input name=\"f.\(c)\" value=\"\(v)\" size=\"10\"></label>").html
        }
        let pager: Markup = """
            <p class="pager">\(t.total.map { HTML.text("\($0) rows") } ?? HTML(raw: ""))
            \(t.first.map { Markup("<a href=\"\(HTML(raw: HTML.attr(base + "?" + $0)))\">first page</a>").html } ?? HTML(raw: ""))
            \(t.next.map { Markup("<a rel=\"next\" href=\"\(HTML(raw: HTML.attr(base + "?" + $0)))\">next 100 →</a>").html } ?? HTML(raw: ""))</p>
            """
        let banner: HTML =
            t.asOf.map {
                Markup("<p class=\"asof\">As it stood at <strong>\($0)</strong>, read from the history. <a href=\"\(base)\">Back to now</a></p>").html
            } ?? HTML(raw: "")
        let page: Markup = """
            <h1>\(t.table)</h1>
            \(banner)
            <form class="filters" method="get" action="\(base)">
            <input type="hidden" name="sort" value="\(t.sort)">\(t.descending ? HTML(raw: "<input type=\"hidden\" name=\"desc\" value=\"1\">") : HTML(raw: ""))
            <label>Search <input name="q" value="\(t.search)" placeholder="any text column"></label>
            <label>As of <input name="asof" value="\(t.asOf ?? "")" placeholder="2026-03-01 or site:seq" size="16"></label>
            <details\(t.filters.isEmpty ? HTML(raw: "") : HTML(raw: " open"))><summary>Filter by column</summary>\(filterInputs)</details>
            <button>Apply</button> <a href="\(base)">clear</a></form>
            \(pager.html)
            <table class="rows"><thead><tr>\(head)</tr></thead><tbody>\(body)</tbody></table>
            \(pager.html)
            \(viewer.role.canEdit && t.asOf == nil ? importForm(dataset: t.dataset, table: t.table) : HTML(raw: ""))
            """
        return layout(
            title: t.table, viewer: viewer,
            crumbs: [("Datasets", "/"), (t.dataset, "/d/\(HTML.component(t.dataset))/annotations"), (t.table, nil)], body: page.html)
    }

    /// One row: its values, its annotations (a thread per note, with
    /// replies), and its history.
    public struct RowView: Sendable {
        public var dataset: String
        public var table: String
        public var primaryKey: String
        public var pk: String
        public var columns: [String]
        /// The row's values (`columns`), or nil when it is deleted.
        public var values: [Value]?
        public var annotations: [Annotation]
        /// Who set the status of each resolved annotation shown (by id).
        public var resolvedBy: [String: HistoryEntry]
        public var history: [HistoryEntry]
        public init(
            dataset: String, table: String, primaryKey: String, pk: String, columns: [String], values: [Value]?, annotations: [Annotation],
            history: [HistoryEntry], resolvedBy: [String: HistoryEntry] = [:]
        ) {
            self.resolvedBy = resolvedBy
            self.dataset = dataset
            self.table = table
            self.primaryKey = primaryKey
            self.pk = pk
            self.columns = columns
            self.values = values
            self.annotations = annotations
            self.history = history
        }
    }

    static func who(site: String, person: String?) -> HTML {
        person.map { Markup("<span class=\"person\">\($0)</span> <span class=\"site\">at \(site)</span>").html }
            ?? Markup("<span class=\"site\">\(site)</span>").html
    }

    public static func row(_ r: RowView, viewer: Viewer) -> String {
        let api = "/v1/datasets/\(HTML.component(r.dataset))"
        let open = Set(r.annotations.filter { $0.status != "resolved" && $0.replyTo == nil }.map { $0.column ?? "" })
        let canAnnotate = viewer.role.canAnnotate, canEdit = viewer.role.canEdit
        var fields: [HTML] = []
        if let values = r.values {
            for (i, c) in r.columns.enumerated() {
                let edit: HTML =
                    canEdit
                    ? Markup(
                        """
                         <form class="inline edit" data-api="\(api)/exec" data-kind="cell">
                        <input type="hidden" name="table" value="\(r.table)"><input type="hidden" name="key" value="\(r.primaryKey)">
                        <input type="hidden" name="pk" value="\(r.pk)"><input type="hidden" name="column" value="\(c)">
                        <input name="value" value="\(valueText(values[i]))" aria-label="new value of \(c)"> <button>Save</button></form>
                        """
                    ).html : HTML(raw: "")
                fields.append(
                    Markup(
                        "<tr\(HTML(raw: open.contains(c) ? " class=\"marked\"" : ""))><th>\(c)</th><td class=\"value\">\(HTML.value(values[i]))</td><td>\(edit)</td></tr>"
                    ).html)
            }
        }
        let deleted: HTML = r.values == nil ? Markup("<p class=\"deleted\">This row was deleted.</p>").html : HTML(raw: "")
        let threads = r.annotations.filter { $0.replyTo == nil }.sorted { $0.created < $1.created }.map { a -> HTML in
            let replies = r.annotations.filter { $0.replyTo == a.id }.sorted { $0.created < $1.created }.map { reply in
                Markup(
                    "<li class=\"reply\"><p>\(reply.text)</p><p class=\"meta\">\(who(site: reply.author, person: reply.person)) · \(reply.created)</p></li>"
                ).html
            }
            let tags = a.tags.map { Markup("<span class=\"tag\">\($0)</span>").html }
            let actions: HTML =
                canAnnotate
                ? Markup(
                    """
                    <form class="reply-form" data-api="\(api)/annotations">
                    <input type="hidden" name="table" value="\(r.table)"><input type="hidden" name="pk" value="\(r.pk)">
                    <input type="hidden" name="replyTo" value="\(a.id)"><input type="hidden" name="tags" value="">
                    <textarea name="text" required placeholder="Reply" aria-label="reply"></textarea> <button>Reply</button></form>
                    <form class="inline status" data-api="\(api)/annotations/\(HTML(raw: HTML.component(a.id)))/status">
                    <input type="hidden" name="status" value="\(a.status == "resolved" ? "open" : "resolved")"><button>\(a.status == "resolved" ? "Reopen" : "Resolve")</button></form>
                    """
                ).html : HTML(raw: "")
            return Markup(
                """
                <article class="annotation \(a.status)" id="a-\(a.id)">
                <p class="meta">\(a.column.map { "on \($0)" } ?? "on the row") · \(who(site: a.author, person: a.person)) · \(a.created) · <span class="status">\(a.status)</span>\(r.resolvedBy[a.id].map { Markup(" <span class=\"resolved-by\">by \(who(site: $0.siteName, person: $0.person))</span>").html } ?? HTML(raw: "")) \(tags)</p>
                <p class="text">\(a.text)</p><ul class="replies">\(replies)</ul>\(actions)</article>
                """
            ).html
        }
        let columnOptions = ([""] + r.columns).map { c in Markup("<option value=\"\(c)\">\(c.isEmpty ? "the whole row" : c)</option>").html }
        let annotate: HTML =
            canAnnotate
            ? Markup(
                """
                <form class="annotate" data-api="\(api)/annotations">
                <input type="hidden" name="table" value="\(r.table)"><input type="hidden" name="pk" value="\(r.pk)">
                <h3>Annotate</h3><label>On <select name="column">\(columnOptions)</select></label>
                <textarea name="text" required placeholder="What should others know?" aria-label="annotation"></textarea>
                <label>Tags <input name="tags" placeholder="comma, separated"></label> <button>Add annotation</button></form>
                """
            ).html : HTML(raw: "")
        let history = r.history.reversed().map { h in
            Markup(
                "<tr\(HTML(raw: h.won ? " class=\"won\"" : ""))><td>\(h.time)</td><td>\(who(site: h.siteName, person: h.person))</td><td>\(h.column ?? "(deleted the row)")</td><td>\(HTML.value(h.value))</td><td>\(h.won ? "shown" : "")</td></tr>"
            ).html
        }
        let page: Markup = """
            <h1>\(r.table) <span class="pk">\(r.pk)</span></h1>
            <div class="row-page"><section class="values">\(deleted)<table class="fields">\(fields)</table>
            <h2>History</h2><table class="history"><thead><tr><th>when</th><th>who</th><th>column</th><th>value</th><th></th></tr></thead><tbody>\(history)</tbody></table></section>
            <aside class="panel"><h2>Annotations</h2>\(threads.isEmpty ? Markup("<p>None yet.</p>").html : HTML(raw: ""))\(threads)\(annotate)</aside></div>
            """
        return layout(
            title: "\(r.table) \(r.pk)", viewer: viewer,
            crumbs: [
                ("Datasets", "/"), (r.dataset, "/d/\(HTML.component(r.dataset))/annotations"),
                (r.table, "/d/\(HTML.component(r.dataset))/t/\(HTML.component(r.table))"), (r.pk, nil),
            ], body: page.html)
    }

    /// A value as an input's text.
    static func valueText(_ v: Value) -> String {
        switch v {
        case .null: ""
        case .integer(let i): String(i)
        case .real(let d): String(d)
        case .text(let t): t
        case .blob: ""
        }
    }

    /// Annotations of a dataset, searched.
    public static func annotations(
        dataset: String, list: [Annotation], search: String, tag: String, person: String, status: String, viewer: Viewer
    ) -> String {
        let items = list.map { a in
            Markup(
                """
                <tr class="\(a.status)"><td><a href="/d/\(HTML(raw: HTML.component(dataset)))/t/\(HTML(raw: HTML.component(a.table)))/r/\(HTML(raw: HTML.component(a.pk)))#a-\(a.id)">\(a.table) \(a.pk)\(a.column.map { ".\($0)" } ?? "")</a>\(a.targetExists ? HTML(raw: "") : HTML(raw: " <span class=\"deleted\">row deleted</span>"))</td>
                <td>\(a.text)</td><td>\(who(site: a.author, person: a.person))</td><td>\(a.tags.joined(separator: ", "))</td><td>\(a.status)</td><td>\(a.created)</td></tr>
                """
            ).html
        }
        let statusOptions = ["", "open", "resolved"].map { s in
            Markup("<option value=\"\(s)\"\(HTML(raw: s == status ? " selected" : ""))>\(s.isEmpty ? "any" : s)</option>").html
        }
        let page: Markup = """
            <h1>Annotations in \(dataset)</h1>
            <form class="filters" method="get"><label>Words <input name="q" value="\(search)"></label>
            <label>Tag <input name="tag" value="\(tag)" size="10"></label> <label>Person <input name="person" value="\(person)" size="10"></label>
            <label>Status <select name="status">\(statusOptions)</select></label> <button>Search</button></form>
            <table class="rows"><thead><tr><th>on</th><th>text</th><th>who</th><th>tags</th><th>status</th><th>when</th></tr></thead><tbody>\(items)</tbody></table>
            """
        return layout(
            title: "Annotations", viewer: viewer, crumbs: [("Datasets", "/"), (dataset, nil), ("annotations", nil)], body: page.html)
    }
}

extension Pages {
    /// A value as JSON, as the client API takes it back (its `Codable`
    /// form: a blob is `{"base64": …}`), for a form that sends it back.
    static func json(_ v: Value) -> String {
        (try? JSONEncoder().encode(v)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    /// The dataset's conflicts: both values, who wrote each and when, which
    /// is shown; an editor may keep either, which writes it as a new edit
    /// that has seen both and so ends the conflict on every node.
    public static func conflicts(dataset: String, list: [ConflictRecord], all: Bool, viewer: Viewer) -> String {
        let api = "/v1/datasets/\(HTML.component(dataset))/conflicts/resolve"
        func keep(_ c: ConflictRecord, _ v: Value, _ label: String) -> HTML {
            guard viewer.role.canEdit, !c.resolved else { return HTML(raw: "") }
            return Markup(
                """
                <form class="inline keep" data-api="\(api)" data-kind="keep">
                <input type="hidden" name="table" value="\(c.table)"><input type="hidden" name="pk" value="\(c.pk)">
                <input type="hidden" name="column" value="\(c.column)"><input type="hidden" name="value" value="\(json(v))">
                <button>\(label)</button></form>
                """
            ).html
        }
        let rows = list.map { c in
            Markup(
                """
                <tr class="\(c.resolved ? "resolved" : "open")"><td><a href="/d/\(HTML(raw: HTML.component(dataset)))/t/\(HTML(raw: HTML.component(c.table)))/r/\(HTML(raw: HTML.component(c.pk)))">\(c.table) \(c.pk)</a>.\(c.column)</td>
                <td class="winner">\(HTML.value(c.winnerValue))<p class="meta">\(who(site: c.winnerSiteName, person: c.winnerPerson)) · \(c.winnerTime) · shown</p>\(keep(c, c.winnerValue, "Keep this value"))</td>
                <td class="loser">\(HTML.value(c.loserValue))<p class="meta">\(who(site: c.loserSiteName, person: c.loserPerson)) · \(c.loserTime)</p>\(keep(c, c.loserValue, "Keep this value"))</td>
                <td>\(c.resolved ? "resolved" : "open")</td></tr>
                """
            ).html
        }
        let page: Markup = """
            <h1>Conflicts in \(dataset)</h1>
            <p>Two sites wrote the same cell without seeing each other's write. Both values are kept; one is shown everywhere
            (the later stamp wins). Keeping a value writes it again as an edit that has seen both, which ends the conflict on every node.
            \(all ? Markup("<a href=\"?\">Open ones only</a>").html : Markup("<a href=\"?all=1\">Include resolved ones</a>").html)</p>
            \(list.isEmpty ? Markup("<p>No conflicts.</p>").html : Markup("<table class=\"rows conflicts\"><thead><tr><th>cell</th><th>shown</th><th>other</th><th></th></tr></thead><tbody>\(rows)</tbody></table>").html)
            """
        return layout(title: "Conflicts", viewer: viewer, crumbs: [("Datasets", "/"), (dataset, nil), ("conflicts", nil)], body: page.html)
    }

    /// The site's people, for its operator (an editor): add one (the page
    /// shows their one-time link), or remove one.
    public static func people(_ list: [Person], siteRole: Role, viewer: Viewer) -> String {
        let rows = list.map { p in
            Markup(
                """
                <tr><td>\(p.name)</td><td>\(p.role.rawValue)</td><td>\(p.added)</td>
                <td><form class="inline" data-api="/v1/people/\(HTML(raw: HTML.component(p.name)))" data-method="DELETE"><button>Remove</button></form></td></tr>
                """
            ).html
        }
        let roles = Role.personRoles.filter { $0.isAtMost(siteRole) }.map { r in Markup("<option>\(r.rawValue)</option>").html }
        let page: Markup = """
            <h1>People of this site</h1>
            <table class="rows"><thead><tr><th>name</th><th>role</th><th>added</th><th></th></tr></thead><tbody>\(rows)</tbody></table>
            <form class="add-person" data-api="/v1/people" data-show="url"><h2>Add a person</h2>
            <label>Name <input name="name" required pattern="[a-z0-9][a-z0-9._\\-]{0,63}"></label>
            <label>Role <select name="role">\(roles)</select></label> <button>Add</button>
            <p>Their sign-in link (it works once, for 24 hours): <output name="shown"></output></p></form>
            """
        return layout(title: "People", viewer: viewer, crumbs: [("Datasets", "/"), ("People", nil)], body: page.html)
    }

    /// The form that imports a CSV file into a table, with progress.
    static func importForm(dataset: String, table: String) -> HTML {
        Markup(
            """
            <details class="import"><summary>Import a CSV file</summary>
            <form data-api="/v1/datasets/\(HTML(raw: HTML.component(dataset)))/tables/\(HTML(raw: HTML.component(table)))/import" data-kind="import">
            <p>The header names the columns (one must be the key); rows are inserted or updated, all or nothing.</p>
            <input type="file" name="file" accept=".csv,text/csv" required> <button>Import</button>
            <progress max="1" value="0" hidden></progress> <output name="shown"></output></form></details>
            """
        ).html
    }
}
