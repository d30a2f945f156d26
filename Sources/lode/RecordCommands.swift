import ArgumentParser
import Foundation
import LodeCore
import LodeProtocol

func printJSON<T: Encodable>(_ value: T) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    out(try enc.encode(value) + Data("\n".utf8))
}

struct AnnotateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "annotate", abstract: "Add an annotation to a row (or one cell); prints its id.",
        discussion: """
            Example: lode annotate rare-earths facilities mountain-pass --column capacity_t_per_year \\
                       --text "2024 actual output, not nameplate" --tag capacity --tag check
            """)
    @Argument(help: "The dataset name.") var name: String
    @Argument(help: "The table.") var table: String
    @Argument(help: "The row's primary key.") var pk: String
    @Option(help: "The annotation text.") var text: String
    @Option(help: "Annotate this column of the row.") var column: String?
    @Option(name: .customLong("tag"), help: "A tag (repeatable).") var tags: [String] = []
    @Option(name: .customLong("reply-to"), help: ArgumentHelp("Reply to this annotation.", valueName: "ID")) var replyTo: String?
    @OptionGroup var node: NodeOptions

    func run() async throws {
        let req = API.AnnotateRequest(table: table, pk: pk, column: column, text: text, tags: tags, replyTo: replyTo)
        let r = try await node.client().call(.POST, "/datasets/\(percentEncode(name))/annotations", json: req, as: [String: String].self)
        out("\(r["id"] ?? "")\n")
    }
}

struct AnnotationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "annotations",
        abstract: "List annotations, newest first, with author site, time, tags, and whether the target row still exists.",
        discussion: "Example: lode annotations rare-earths --tag check --search \"capacity OR output\"")
    @Argument(help: "The dataset name.") var name: String
    @Option(help: "Only this table.") var table: String?
    @Option(help: "Only this row.") var pk: String?
    @Option(help: "Only annotations with this tag.") var tag: String?
    @Option(help: "Full-text search (FTS5 syntax: words, \"phrases\", OR, prefix*).") var search: String?
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let list = try await node.client().call(
            .GET, "/datasets/\(percentEncode(name))/annotations",
            query: ["table": table, "pk": pk, "tag": tag, "search": search], as: [API.Annotation].self)
        if format.resolved == .json { return try printJSON(list) }
        let rows: [[Value]] = list.map { a in
            [
                .text(a.id), .text(a.created), .text(a.author), a.person.map(Value.text) ?? .null, .text(a.table), .text(a.pk),
                a.column.map(Value.text) ?? .null,
                .text(a.tags.joined(separator: ";")), a.replyTo.map(Value.text) ?? .null, .text(a.targetExists ? "yes" : "deleted"), .text(a.text),
            ]
        }
        RecordPrinter(format: format.resolved).print(
            columns: ["id", "created", "author", "person", "table", "pk", "column", "tags", "reply_to", "target", "text"], rows: rows)
    }
}

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "Every write to a row: time, site, column, value, and whether it won.",
        discussion: "Example: lode history rare-earths facilities mountain-pass")
    @Argument(help: "The dataset name.") var name: String
    @Argument(help: "The table.") var table: String
    @Argument(help: "The row's primary key.") var pk: String
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let list = try await node.client().call(
            .GET, "/datasets/\(percentEncode(name))/tables/\(percentEncode(table))/history",
            query: ["pk": pk], as: [API.HistoryEntry].self)
        if format.resolved == .json { return try printJSON(list) }
        let rows: [[Value]] = list.map { h in
            [
                .text(h.time), .text(h.siteName), h.person.map(Value.text) ?? .null, .integer(Int64(h.seq)), .text(h.column ?? "(row deleted)"),
                h.value ?? .null,
                .text(h.won ? "yes" : "no"),
            ]
        }
        RecordPrinter(format: format.resolved).print(columns: ["time", "site", "person", "seq", "column", "value", "won"], rows: rows)
    }
}

struct ConflictsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conflicts", abstract: "Concurrent writes to the same cell: both values, both sites, which won.",
        discussion: "Example: lode conflicts rare-earths --all")
    @Argument(help: "The dataset name.") var name: String
    @Flag(help: "Include conflicts a later write has resolved.") var all = false
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let list = try await node.client().call(
            .GET, "/datasets/\(percentEncode(name))/conflicts", query: ["all": all ? "1" : nil], as: [API.Conflict].self)
        if format.resolved == .json { return try printJSON(list) }
        let rows: [[Value]] = list.map { c in
            [
                .text(c.table), .text(c.pk), .text(c.column), c.winnerValue, .text(c.winnerSiteName), c.winnerPerson.map(Value.text) ?? .null,
                .text(c.winnerTime), c.loserValue, .text(c.loserSiteName), c.loserPerson.map(Value.text) ?? .null, .text(c.loserTime),
                .text(c.resolved ? "yes" : "no"),
            ]
        }
        RecordPrinter(format: format.resolved).print(
            columns: [
                "table", "pk", "column", "winner", "winner_site", "winner_person", "winner_time", "loser", "loser_site", "loser_person",
                "loser_time", "resolved",
            ], rows: rows)
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "This site, role and listen address; each peer and how far behind or ahead; each dataset with its version vector.",
        discussion: "Example: lode status --format json")
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let s = try await node.client().call(.GET, "/status", as: API.Status.self)
        switch format.resolved {
        case .json: try printJSON(s)
        case .csv:
            var rows: [[Value]] = []
            for d in s.datasets {
                for v in d.vector { rows.append([.text(d.name), .text(v.site), .text(v.key), .integer(Int64(v.seq))]) }
            }
            RecordPrinter(format: .csv).print(columns: ["dataset", "site", "site_key", "seq"], rows: rows)
        case .table:
            var t = """
                site     \(s.site) (\(s.role)), cluster \(s.cluster)
                key      \(s.siteKey)
                listen   \(s.listen)
                data     \(s.dataDir)

                """
            t += "peers\n"
            if s.peers.isEmpty { t += "  (none)\n" }
            for p in s.peers {
                var line = "  \(p.address)  \(p.state)"
                if let site = p.site { line += "  \(site)" }
                for (ds, lag) in (p.datasets ?? [:]).sorted(by: { $0.key < $1.key }) {
                    line += "  \(ds): \(lag.behind) behind, \(lag.ahead) ahead"
                }
                if let e = p.lastError { line += "  (\(e))" }
                t += line + "\n"
            }
            t += "datasets\n"
            if s.datasets.isEmpty { t += "  (none)\n" }
            for d in s.datasets {
                let v = d.vector.map { "\($0.site):\($0.seq)" }.joined(separator: " ")
                t += "  \(d.name)  \(d.commits) commits  \(formatBytes(d.bytes))  vector {\(v)}"
                if d.rejected > 0 { t += "  \(d.rejected) rejected commits" }
                t += "\n"
                for a in d.alerts { t += "    \(a.kind.rawValue) \(a.site): \(a.detail)\n" }
            }
            let revoked = try await node.client().call(.GET, "/revocations", as: [API.RevocationInfo].self)
            if !revoked.isEmpty {
                t += "revoked\n"
                for r in revoked {
                    let cut = r.cutoffs.map { "\($0.dataset) after seq \($0.seq)" }.joined(separator: ", ")
                    t += "  \(RecordPrinter.printable(r.site)) since \(r.revoked): \(RecordPrinter.printable(r.reason))"
                    t += cut.isEmpty ? "\n" : "  (commits refused: \(cut))\n"
                }
            }
            out(t)
        }
    }
}

struct PeersGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peers", abstract: "Manage the peers this node dials; kept across restarts.",
        subcommands: [PeersList.self, PeersAdd.self, PeersRemove.self])
}

struct PeersList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List peers and their connection state.")
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let peers = try await node.client().call(.GET, "/peers", as: [API.PeerInfo].self)
        if format.resolved == .json { return try printJSON(peers) }
        RecordPrinter(format: format.resolved).print(
            columns: ["address", "state", "site", "last_error"],
            rows: peers.map {
                [.text($0.address), .text($0.state.rawValue), $0.site.map(Value.text) ?? .null, $0.lastError.map(Value.text) ?? .null]
            })
    }
}

struct PeersAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a peer to dial.", discussion: "Example: lode peers add 127.0.0.1:7444")
    @Argument(help: ArgumentHelp("The peer's address.", valueName: "HOST:PORT")) var address: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        let r = try await node.client().call(.POST, "/peers", json: API.PeerRequest(address: address), as: [String: String].self)
        out(r["added"] == "yes" ? "added \(address)\n" : "\(address) was already a peer\n")
    }
}

struct PeersRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Stop dialling a peer.")
    @Argument(help: ArgumentHelp("The peer's address.", valueName: "HOST:PORT")) var address: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        _ = try await node.client().callRaw(.DELETE, "/peers/\(percentEncode(address))")
        out("removed \(address)\n")
    }
}

struct UserGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "The people of this site, each with a role no higher than the site's.",
        subcommands: [UserAdd.self, UserList.self, UserRemove.self])
}

struct UserAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a person and print a one-time sign-in link for them (valid 24 hours).",
        discussion: "Example: lode user add ana --role annotator")
    @Argument(help: "Their name: lowercase letters, digits, '-', '_', '.'.") var name: String
    @Option(help: ArgumentHelp("editor, annotator or reader; at most the site's role.", valueName: "ROLE")) var role: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        guard let r = Role(rawValue: role), Role.personRoles.contains(r) else {
            throw ValidationError("--role is editor, annotator or reader, not \(role)")
        }
        let link = try await node.client().call(.POST, "/people", json: API.PersonRequest(name: name, role: r), as: API.SignInLink.self)
        out("added \(link.person) (\(link.role.rawValue)); their sign-in link, which works once until \(link.expires):\n\(link.url)\n")
    }
}

struct UserList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the people of this site.")
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let people = try await node.client().call(.GET, "/people", as: [API.PersonInfo].self)
        if format.resolved == .json { return try printJSON(people) }
        RecordPrinter(format: format.resolved).print(
            columns: ["name", "role", "added"], rows: people.map { [.text($0.name), .text($0.role.rawValue), .text($0.added)] })
    }
}

struct UserRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove a person: their links and sessions end; what they wrote stays theirs.")
    @Argument(help: "Their name.") var name: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        _ = try await node.client().callRaw(.DELETE, "/people/\(percentEncode(name))")
        out("removed \(name)\n")
    }
}

struct UICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ui",
        abstract: "Print a one-time sign-in link to this node's workspace for the person at this terminal (valid 10 minutes).",
        discussion: """
            The person is $LODE_USER, else your login name; a name the site does not know yet is added with the site's role.
            Example: lode ui
            """)
    @OptionGroup var node: NodeOptions

    func run() async throws {
        guard let me = CLIPerson.name else { throw ValidationError("set LODE_USER to your name (lowercase letters, digits, '-', '_', '.')") }
        let link = try await node.client().call(.POST, "/signin-links", json: API.SignInRequest(person: me), as: API.SignInLink.self)
        out(link.url + "\n")
    }
}

struct CheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Sign a checkpoint of the dataset as this node holds it now, or list the checkpoints and who signed them.",
        discussion: """
            A checkpoint says "at version vector V the dataset's digest is D", signed by an editor site. Other editor \
            sites co-sign it by themselves once sync has brought them V and they find the same digest; it is complete \
            once it has the signatures `serve --checkpoint-quorum` asks for (default 2).

            Examples:
              lode checkpoint rare-earths
              lode checkpoint rare-earths --list --format json
            """)
    @Argument(help: "The dataset name.") var name: String
    @Flag(help: "List the checkpoints instead of signing one.") var list = false
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    func run() async throws {
        let path = "/datasets/\(percentEncode(name))/checkpoints"
        let client = try node.client()
        let shown =
            list ? try await client.call(.GET, path, as: [API.Checkpoint].self) : [try await client.call(.POST, path, as: API.Checkpoint.self)]
        if format.resolved == .json { return list ? try printJSON(shown) : try printJSON(shown[0]) }
        RecordPrinter(format: format.resolved).print(
            columns: ["checkpoint", "commits", "rows", "digest", "signers", "complete"],
            rows: shown.map { c in
                [
                    .text(c.id), .integer(Int64(clamping: c.commits)), .integer(Int64(c.rows)), .text(c.digest),
                    .text(c.signers.joined(separator: " ")), .text(c.complete ? "yes" : "no (\(c.signers.count) of \(c.quorum))"),
                ]
            })
    }
}

struct CompactCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Drop the log and the history a complete checkpoint covers, keeping a span of history for as-of queries.",
        discussion: """
            Needs a checkpoint of the dataset with the signatures `serve --checkpoint-quorum` asks for (lode checkpoint). \
            The log keeps every commit's stamp, hash and author but drops the commits' bytes; the history keeps what \
            times after the horizon can show. Peers that lack the covered commits can no longer get them from this node.

            Examples:
              lode compact rare-earths
              lode compact rare-earths --keep-history 0
            """)
    @Argument(help: "The dataset name.") var name: String
    @Option(
        name: .customLong("keep-history"),
        help: ArgumentHelp("How much history to keep for as-of queries and diffs: seconds, or with s, m, h or d (default 30d).", valueName: "SPAN"))
    var keepHistory: String?
    @OptionGroup var node: NodeOptions
    @OptionGroup var format: FormatOption

    /// Seconds in a span such as `90`, `90s`, `15m`, `12h` or `30d`.
    static func seconds(_ text: String) -> UInt64? {
        let units: [Character: UInt64] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        let unit = text.last.flatMap { units[$0] }
        guard let n = UInt64(unit == nil ? text : String(text.dropLast())) else { return nil }
        let (s, overflow) = n.multipliedReportingOverflow(by: unit ?? 1)
        return overflow ? nil : s
    }

    func run() async throws {
        var keep: UInt64?
        if let keepHistory {
            guard let s = Self.seconds(keepHistory), s <= API.CompactRequest.maxKeepHistory else {
                throw ValidationError("--keep-history is a span such as 0, 90s, 15m, 12h or 30d, at most 100 years")
            }
            keep = s
        }
        let r = try await node.client().call(
            .POST, "/datasets/\(percentEncode(name))/compact", json: API.CompactRequest(keepHistory: keep), as: API.CompactionReport.self)
        if format.resolved == .json { return try printJSON(r) }
        RecordPrinter(format: format.resolved).print(
            columns: ["checkpoint", "commits_dropped", "history_entries_dropped", "rows_folded", "horizon", "bytes_before", "bytes_after"],
            rows: [
                [
                    .text(r.checkpoint), .integer(Int64(r.commitsDropped)), .integer(Int64(r.historyEntriesDropped)), .integer(Int64(r.rowsFolded)),
                    .text(r.horizon), .integer(Int64(clamping: r.bytesBefore)), .integer(Int64(clamping: r.bytesAfter)),
                ]
            ])
    }
}
