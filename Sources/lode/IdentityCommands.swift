import ArgumentParser
import Foundation
import LodeCore
import LodeNode
import LodeProtocol

struct CAGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca", abstract: "Manage the cluster certificate authority.", subcommands: [CAInit.self, CARevoke.self])
}

struct CAInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a cluster CA: DIR/ca.pem and DIR/ca.key (mode 0600). Refuses to overwrite.",
        discussion: "Example: lode ca init --dir ./ca --cluster rare-earth-watch")

    @Option(help: ArgumentHelp("Where to write ca.pem and ca.key.", valueName: "DIR")) var dir: String
    @Option(help: "The cluster name, written into every certificate.") var cluster = "lodestone"

    func run() throws {
        let path = DataDir.absolute(dir)
        try Identity.createCA(dir: path, cluster: cluster)
        out("created CA for cluster \(cluster): \(path)/ca.pem, \(path)/ca.key (keep ca.key secret)\n")
    }
}

struct CARevoke: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Write a revocation of a site, signed by the CA key, and print its path.",
        discussion: """
            It covers every certificate issued to the site's name until now; a certificate issued later (the site \
            re-keyed) is not covered. Hand it to a node with `lode revoke FILE`.
            Example: lode ca revoke --dir ./ca --site laptop-7 --reason "stolen on 2026-12-01"
            """)

    @Option(help: ArgumentHelp("The CA directory (holding ca.pem and ca.key).", valueName: "DIR")) var dir: String
    @Option(help: "The site to revoke.") var site: String
    @Option(help: "Why (at most 1,000 characters), for the people reading status.") var reason = "revoked by the CA"

    func run() throws {
        let path = DataDir.absolute(dir)
        let r = try Revocation.issue(site: site, reason: reason, by: try Identity.loadCA(dir: path))
        let folder = path + "/revocations"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let file = folder + "/\(site)-\(r.revoked).json"
        guard FileManager.default.createFile(atPath: file, contents: r.encoded) else {
            throw NodeError(.storage, "cannot write \(file)")
        }
        out("\(file)\n")
    }
}

struct RevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Hand a revocation (from `lode ca revoke`) to the node.",
        discussion: """
            The node checks the CA's signature, fixes the cut-off of each of the site's feeds (the last seq it \
            holds), and from then refuses the site's connections and its commits past the cut-offs, dropping \
            those it had applied. The revocation and the cut-offs, signed by this node, spread by sync: every \
            node they reach does the same.
            Example: lode revoke ./ca/revocations/laptop-7-1796000000000.json
            """)

    @Argument(help: ArgumentHelp("The revocation file.", valueName: "FILE")) var file: String
    @OptionGroup var node: NodeOptions

    func run() async throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw NodeError(.notFound, "cannot read \(file)") }
        let r = try Revocation.decode(data)
        let info = try await node.client().call(.POST, "/revocations", json: r, as: API.RevocationInfo.self)
        var text = "revoked \(info.site) (\(info.reason)): its connections are refused here\n"
        for c in info.cutoffs { text += "  \(c.dataset): commits of \(c.key.prefix(16)) after seq \(c.seq) are refused\n" }
        if info.cutoffs.isEmpty { text += "  no dataset here holds commits of \(info.site)\n" }
        out(text)
    }
}

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a node: site key, certificate for the site and role signed by the CA, the CA certificate, the node database.",
        discussion: "Example: lode init --site lab-berlin --ca ./ca --role editor --data-dir ./berlin")

    @Option(help: "The site name (lowercase letters, digits, '-', '_', '.').") var site: String
    @Option(help: ArgumentHelp("The CA directory (holding ca.pem and ca.key).", valueName: "DIR")) var ca: String
    @Option(help: "editor, annotator, reader or relay.") var role: Role = .editor
    @OptionGroup var node: DataDirOption

    func run() throws {
        let dir = node.resolvedDataDir
        let cert = try Node.initialize(dataDir: dir, site: site, role: role, caDir: DataDir.absolute(ca))
        out("created site \(cert.name) (\(cert.role.rawValue), cluster \(cert.cluster)) in \(dir)\nsite key \(cert.site.hex)\n")
    }
}

extension Role: ExpressibleByArgument {}
