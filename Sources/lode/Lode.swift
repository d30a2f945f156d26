import ArgumentParser
import Foundation
import LodeNode

@main
struct Lode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lode",
        abstract: "Lodestone: a replicated, signed, CRDT-synced SQLite dataset you edit and query from the shell.",
        discussion: """
            Start a node on the bundled rare-earths dataset, then query it:

              lode serve &
              lode query rare-earths "SELECT symbol, name FROM elements"

            Exit codes: 0 success, 1 the command failed, 2 bad usage, 3 the node could not be reached.
            """,
        version: Node.version,
        subcommands: [
            CAGroup.self, InitCommand.self, ServeCommand.self, DatasetGroup.self, SchemaCommand.self,
            ImportCommand.self, ExportCommand.self, QueryCommand.self, ExecCommand.self,
            AnnotateCommand.self, AnnotationsCommand.self, HistoryCommand.self, ConflictsCommand.self,
            StatusCommand.self, PeersGroup.self, SyncCommand.self, WatchCommand.self,
        ])

    /// Parses, runs, and maps every failure to the documented exit codes.
    static func main() async {
        signal(SIGPIPE, SIG_IGN)
        let command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                exit(withError: error)
            }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var sync = command
                try sync.run()
            }
        } catch let e as CLIError {
            note("lode: \(e.message)")
            Foundation.exit(e.exitCode)
        } catch let e as ValidationError {
            note("lode: \(e.message)")
            Foundation.exit(2)
        } catch let e as ExitCode {
            Foundation.exit(e.rawValue)
        } catch let e as NodeError {
            note("lode: \(e.message)")
            Foundation.exit(1)
        } catch {
            // Help and usage errors raised while running (e.g. `lode --help`).
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            note("lode: \(error)")
            Foundation.exit(1)
        }
    }
}
