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
            ImportCommand.self, ExportCommand.self, QueryCommand.self, DiffCommand.self, ExecCommand.self, BackupCommand.self, RestoreCommand.self,
            AnnotateCommand.self, AnnotationsCommand.self, HistoryCommand.self, ConflictsCommand.self, CheckpointCommand.self, CompactCommand.self,
            StatusCommand.self, PeersGroup.self, SyncCommand.self, WatchCommand.self, RevokeCommand.self, DemoCommand.self,
            UserGroup.self, UICommand.self,
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
        var status: Int32 = 0
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var sync = command
                try sync.run()
            }
        } catch {
            status = report(error)
        }
        await NodeClient.shutdownAll()
        Foundation.exit(status)
    }

    /// Prints a failure the way the exit code says (one line on stderr for
    /// failures, usage for bad usage, help on stdout) and returns the code.
    static func report(_ error: any Error) -> Int32 {
        switch error {
        case let e as CLIError:
            note("lode: \(e.message)")
            return e.exitCode
        case let e as NodeError:
            note("lode: \(e.message)")
            return 1
        case let e as ExitCode:
            return e.rawValue
        default:
            // Help and usage errors raised while running (e.g. `lode --help`).
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                return 0
            }
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                return 2
            }
            note("lode: \(error)")
            return 1
        }
    }
}
