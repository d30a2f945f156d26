import ArgumentParser
import Foundation
import LodeProtocol

/// The node's data directory.
struct DataDirOption: ParsableArguments {
    @Option(
        name: .customLong("data-dir"),
        help: ArgumentHelp(
            "The node's data directory (default: $LODE_DATA_DIR, else $XDG_DATA_HOME/lode, else ~/.local/share/lode).", valueName: "DIR"))
    var dataDir: String?

    /// The data directory to use.
    var resolvedDataDir: String { DataDir.resolve(dataDir) }
}

/// Where the node is: `--data-dir` (its Unix socket), or `--node` with
/// `--cert`, `--key` and `--ca` for a remote node over mutual TLS.
struct NodeOptions: ParsableArguments {
    @OptionGroup var local: DataDirOption
    var dataDir: String? { local.dataDir }

    @Option(help: ArgumentHelp("Reach a remote node's client API over mutual TLS instead of the local socket.", valueName: "HOST:PORT"))
    var node: String?
    @Option(help: ArgumentHelp("With --node: the client certificate (PEM), e.g. a site's site.pem.", valueName: "FILE")) var cert: String?
    @Option(help: ArgumentHelp("With --node: the client certificate's key (PEM).", valueName: "FILE")) var key: String?
    @Option(help: ArgumentHelp("With --node: the cluster CA certificate (PEM).", valueName: "FILE")) var ca: String?

    /// The data directory to use.
    var resolvedDataDir: String { local.resolvedDataDir }

    func validate() throws {
        if node != nil && (cert == nil || key == nil || ca == nil) {
            throw ValidationError("--node needs --cert, --key and --ca (for example a site's site.pem, site.key and ca.pem)")
        }
        if node == nil && (cert != nil || key != nil || ca != nil) {
            throw ValidationError("--cert, --key and --ca go with --node HOST:PORT")
        }
    }

    func client() throws -> NodeClient {
        if let node, let cert, let key, let ca {
            return try NodeClient(remote: node, cert: DataDir.absolute(cert), key: DataDir.absolute(key), ca: DataDir.absolute(ca))
        }
        return NodeClient(socket: resolvedDataDir + "/lode.sock", dataDir: resolvedDataDir)
    }
}

enum DataDir {
    /// `--data-dir`, else `$LODE_DATA_DIR`, else `$XDG_DATA_HOME/lode`, else `~/.local/share/lode`.
    static func resolve(_ flag: String?) -> String {
        let env = ProcessInfo.processInfo.environment
        let raw: String
        if let flag, !flag.isEmpty {
            raw = flag
        } else if let d = env["LODE_DATA_DIR"], !d.isEmpty {
            raw = d
        } else if let x = env["XDG_DATA_HOME"], !x.isEmpty {
            raw = x + "/lode"
        } else {
            raw = (env["HOME"] ?? NSHomeDirectory()) + "/.local/share/lode"
        }
        return absolute(raw)
    }

    static func absolute(_ p: String) -> String {
        let expanded = (p as NSString).expandingTildeInPath
        if expanded.hasPrefix("/") { return (expanded as NSString).standardizingPath }
        return ((FileManager.default.currentDirectoryPath + "/" + expanded) as NSString).standardizingPath
    }

    /// True when `dir` is what the defaults resolve to, so hints can omit `--data-dir`.
    static func isDefault(_ dir: String) -> Bool { dir == resolve(nil) }
}

/// How records are printed.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, csv, json
}

struct FormatOption: ParsableArguments {
    @Option(help: "Output format: table (the default on a terminal), csv (the default otherwise, RFC 4180 with a header) or json.")
    var format: OutputFormat?

    var resolved: OutputFormat { format ?? (stdoutIsTerminal ? .table : .csv) }
}

/// A command failure with its exit code (1: failed, 3: node unreachable).
struct CLIError: Error, CustomStringConvertible {
    var message: String
    var exitCode: Int32
    var description: String { message }

    static func failed(_ m: String) -> CLIError { CLIError(message: m, exitCode: 1) }
}

/// True when standard output is a terminal (a person reads it).
var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }

/// True when progress may be drawn on stderr.
var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

/// Writes a line to stderr.
func note(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// Writes bytes to stdout. When the reader has gone (`lode … | head`),
/// stops quietly, as Unix tools do.
func out(_ bytes: some Sequence<UInt8>) {
    let data = Array(bytes)
    var offset = 0
    while offset < data.count {
        let n = data.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress! + offset, data.count - offset) }
        if n < 0 {
            if errno == EINTR { continue }
            if errno == EPIPE { exit(0) }
            note("lode: cannot write output: \(String(cString: strerror(errno)))")
            exit(1)
        }
        offset += n
    }
}

func out(_ s: String) { out(Array(s.utf8)) }
