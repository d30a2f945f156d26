import ArgumentParser
import Foundation
import LodeCore
import LodeNode

struct CAGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca", abstract: "Manage the cluster certificate authority.", subcommands: [CAInit.self])
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
