import Foundation
import Hummingbird
import LodeCore
import LodeProtocol
import LodeSQLite

/// `/v1/people` and `/v1/signin-links`: the site's people (`lode user`)
/// and one-time links into the workspace (`lode ui`).
struct PeopleRoutes: Sendable {
    let node: Node

    /// How long a link printed at the terminal (`lode ui`) works: 10 minutes.
    static let terminalLinkSeconds: Int64 = 600
    /// How long a link made for a new person (`lode user add`) works, to be
    /// passed on to them: 24 hours.
    static let newPersonLinkSeconds: Int64 = 86_400

    func add(to group: RouterGroup<APIRequestContext>) {
        group.on(.get, "people", needs: .operate) { _, _ in
            try json(node.file.people())
        }
        group.on(.post, "people", needs: .operate) { req, _ in
            let body = try await req.decodeJSON(as: API.PersonRequest.self)
            let p = try node.file.addPerson(body.name, role: body.role, siteRole: node.identity.local.role, added: PeopleRoutes.now())
            return try json(try link(for: p, seconds: PeopleRoutes.newPersonLinkSeconds), status: .created)
        }
        group.on(.delete, "people/:name", needs: .operate) { _, ctx in
            let name = try ctx.parameters.decoded("name")
            guard try node.file.removePerson(name) else { throw NodeError(.notFound, "\(name) is not a person of this site") }
            return Response(status: .noContent)
        }
        // Anyone may ask for a link for themselves (a person of the site at
        // the node's terminal, `lode ui`); a link for someone else takes
        // the operator's permission.
        group.on(.post, "signin-links", needs: .read) { req, ctx in
            // A client over TLS is a site's certificate, no person: it asks
            // for someone else, so it needs the operator's permission first.
            if case .remote = ctx.caller { try ctx.caller.check(.operate, req) }
            let body = try await req.decodeJSON(as: API.SignInRequest.self)
            let named: String? =
                switch ctx.caller {
                case .local(let p): p
                case .person(let p, _): p
                case .remote: nil
                }
            guard let name = body.person ?? named else {
                throw NodeError(.badInput, "name the person: set LODE_USER, or give \"person\"")
            }
            if name != named { try ctx.caller.check(.operate, req) }
            let p: Person
            if let known = try node.file.person(name) {
                p = known
            } else if name == named, case .local = ctx.caller {
                // The person at the node's own terminal (Lode-Person on the
                // socket) becomes a person of the site with its role.
                p = try node.file.addPerson(name, role: node.identity.local.role, siteRole: node.identity.local.role, added: PeopleRoutes.now())
            } else {
                throw NodeError(.notFound, "\(name) is not a person of this site; add them with `lode user add \(name) --role …`")
            }
            return try json(try link(for: p, seconds: PeopleRoutes.terminalLinkSeconds), status: .created)
        }
    }

    /// The time now, ISO 8601, as records show it.
    static func now() -> String { HLC(millis: UInt64(Date().timeIntervalSince1970 * 1000), counter: 0).iso8601 }

    /// A new one-time link for `p`, valid for `seconds`.
    func link(for p: Person, seconds: Int64) throws -> API.SignInLink {
        guard let web = node.webAddress.withLock({ $0 }) else {
            throw NodeError(.unavailable, "the workspace is off on this node (it was started with --web off)")
        }
        let now = Int64(Date().timeIntervalSince1970)
        let token = try node.file.issueSignInToken(for: p.name, seconds: seconds, now: now)
        return API.SignInLink(
            person: p.name, role: p.role, url: "http://\(web)/signin?token=\(token)",
            expires: HLC(millis: UInt64(now + seconds) * 1000, counter: 0).iso8601)
    }
}

extension Node {
    /// A one-time sign-in link to this running node's workspace for
    /// `name`, added first with `role` if the site does not know them (for
    /// programs that run a node in-process: benchmarks, the demo).
    public func signInLink(for name: String, role: Role) throws -> String {
        let p = try file.person(name) ?? file.addPerson(name, role: role, siteRole: identity.local.role, added: PeopleRoutes.now())
        return try PeopleRoutes(node: self).link(for: p, seconds: PeopleRoutes.terminalLinkSeconds).url
    }
}
