import ArgumentParser
import Foundation

/// Proof under faults: randomized fault schedules on a cluster in network
/// namespaces, kill -9 during every kind of write, and load.
@main
struct LodeFaults: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lode-faults",
        abstract: "Break a Lodestone cluster on purpose and check that nothing acknowledged is lost.",
        discussion: """
            Run from the repository after `swift build -c release`. `schedules` needs root (ip netns).
              lode-faults schedules --count 3           # what CI runs
              lode-faults schedules --seed 1234          # replay one schedule
              lode-faults crash --rounds 10
              lode-faults diskfull
              lode-faults revoke                       # a stolen laptop's key revoked on the cluster
              lode-faults proxy --listen 127.0.0.1:17001 --to 10.232.0.11:7443 --mode-file link.mode
              lode-faults load --seconds 60
              lode-faults load --seconds 60 --api --clients 8   # more load: no process per write
              lode-faults load --seconds 60 --api --postgres-relays   # the same through the server tier
              lode-faults failover --seconds 60        # two PostgreSQL relays: one killed, PostgreSQL restarted
            """,
        subcommands: [Schedules.self, Crash.self, DiskFull.self, Revoke.self, Load.self, Failover.self, Proxy.self])

    static func main() {
        stopChildrenOnSignal()
        main(nil)
    }

    struct Common: ParsableArguments {
        @Option(help: "The lode binary.") var lode = ".build/release/lode"
        @Option(help: "Where clusters and logs go (failing runs are kept).") var dir = "/tmp/lode-faults"

        func binary() throws -> Lode {
            let path = URL(fileURLWithPath: lode).standardizedFileURL.path
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw ValidationError("no lode binary at \(path); run `swift build -c release` first, or pass --lode")
            }
            return Lode(binary: path)
        }
    }

    struct Schedules: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Seeded fault schedules on 5 nodes (2 relays, 3 editors) in network namespaces, with clients writing on every editor.")
        @OptionGroup var common: Common
        @Option(help: "The first seed (default: from the clock). A failing schedule prints its seed.") var seed: UInt64?
        @Option(help: "How many schedules (seeds seed, seed+1, ...).") var count = 1
        @Option(help: "Seconds of faults and writes per schedule.") var seconds: Double = 30
        @Option(help: "Clients writing on each editing node.") var clients = 2
        @Option(help: "Seconds n5's clock runs ahead.") var skew = 240
        @Option(help: "deploy/netns-cluster.sh") var script = "deploy/netns-cluster.sh"
        @ArgumentParser.Flag(
            inversion: .prefixedNo,
            help: "Run the editor-relay links through TCP fault proxies and add their faults (latency, a bandwidth cap, stalls, drips, resets).")
        var proxy = true

        func run() throws {
            let lode = try common.binary()
            // The proxies are this very binary.
            if proxy {
                let me = Bundle.main.executablePath ?? URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
                setenv("LODE_FAULTS", me, 1)
            }
            // Its own namespaces, bridge and subnet, apart from a user's cluster.
            setenv("NETNS_PREFIX", "lodef", 0)
            setenv("NET", "10.232.0", 0)
            setenv("LODE", lode.binary, 1)  // the script starts this binary
            let first = seed ?? UInt64(Date().timeIntervalSince1970)
            var passed = 0
            for s in first..<(first + UInt64(count)) {
                do {
                    let summary = try runSchedule(
                        seed: s, seconds: seconds, clientsPerSite: clients, skew: skew, root: common.dir, lode: lode, script: script, proxy: proxy)
                    say("PASS " + summary)
                    passed += 1
                } catch {
                    say("FAIL seed \(s): \(error)\nReplay: lode-faults schedules --seed \(s) --seconds \(Int(seconds))")
                    throw ExitCode(1)
                }
            }
            say("\(passed) of \(count) schedules passed")
        }
    }

    struct Crash: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "kill -9 the node at random instants during import, exec and a large incoming sync; check integrity, all-or-nothing, convergence.")
        @OptionGroup var common: Common
        @Option(help: "Kills per kind of operation.") var rounds = 5
        @Option(help: "Rows per import (and the size of the incoming sync).") var rows = 100_000
        @Option(help: "Seed for the kill instants.") var seed: UInt64?

        func run() throws {
            let s = seed ?? UInt64(Date().timeIntervalSince1970)
            var test = CrashTest(lode: try common.binary(), root: common.dir + "/crash", rows: rows, seed: s)
            do {
                say("PASS " + (try test.run(rounds: rounds)))
            } catch {
                say(
                    "FAIL seed \(s): \(error)\nKept in \(common.dir)/crash. Replay: lode-faults crash --seed \(s) --rounds \(rounds) --rows \(rows)")
                throw ExitCode(1)
            }
        }
    }

    struct DiskFull: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "diskfull",
            abstract: "Fill a node's disk (a small tmpfs; needs root): the write that does not fit fails whole, the node keeps serving.")
        @OptionGroup var common: Common
        @Option(help: "The size of the node's disk.") var megabytes = 24

        func run() throws {
            do {
                say("PASS " + (try runDiskFull(lode: try common.binary(), root: common.dir + "/diskfull", megabytes: megabytes)))
            } catch {
                say("FAIL: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Revoke a site on 5 nodes in network namespaces (needs root): what it wrote past the cut-off, seen or offline, reaches no one.")
        @OptionGroup var common: Common
        @Option(help: "deploy/netns-cluster.sh") var script = "deploy/netns-cluster.sh"

        func run() throws {
            setenv("NETNS_PREFIX", "lodef", 0)
            setenv("NET", "10.232.0", 0)
            let lode = try common.binary()
            setenv("LODE", lode.binary, 1)
            do {
                say("PASS " + (try runRevocation(root: common.dir, lode: lode, script: script)))
            } catch {
                say("FAIL: \(error)\nKept in \(common.dir)/revoke.")
                throw ExitCode(1)
            }
        }
    }

    struct Proxy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A TCP proxy that misbehaves on command, for the links of a test cluster (the schedules start them).",
            discussion: """
                The mode file holds one line, read every 100 ms: normal | latency MS JITTER_MS | rate BYTES_PER_S \
                | stall BYTES (forward that many more, then hold everything) | drip MS (a byte every MS) | reset \
                (reset every connection, and each new one).
                """)
        @Option(help: ArgumentHelp("Where to listen.", valueName: "HOST:PORT")) var listen: String
        @Option(help: ArgumentHelp("Where to forward.", valueName: "HOST:PORT")) var to: String
        @Option(help: ArgumentHelp("The file whose line sets the mode.", valueName: "FILE")) var modeFile: String

        func run() throws {
            func split(_ s: String) throws -> (String, UInt16) {
                guard let i = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: i)...]) else {
                    throw ValidationError("\(s) is not HOST:PORT")
                }
                return (String(s[..<i]), port)
            }
            try FaultProxy(listen: try split(listen), target: try split(to), modeFile: modeFile).run()
        }
    }

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Concurrent clients on three syncing nodes: no errors, no lost writes, memory flat.")
        @OptionGroup var common: Common
        @Option(help: "How long to write.") var seconds: Double = 60
        @Option(help: "Clients per node.") var clients = 3
        @ArgumentParser.Flag(help: "Write through the node's HTTP API on its socket instead of a `lode exec` per write.") var api = false
        @ArgumentParser.Flag(help: "The nodes sync through two relays sharing one PostgreSQL database instead of with each other.")
        var postgresRelays = false
        @Option(help: "Seed for the clients' choices.") var seed: UInt64 = 1

        func run() throws {
            do {
                say(
                    "PASS "
                        + (try runLoad(
                            lode: try common.binary(), root: common.dir + "/load", seconds: seconds, clientsPerNode: clients, throughAPI: api,
                            postgresRelays: postgresRelays, seed: seed)))
            } catch {
                say("FAIL: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Failover: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Sites writing through two PostgreSQL-backed relays: one relay killed with kill -9, then PostgreSQL restarted; nothing acknowledged lost."
        )
        @OptionGroup var common: Common
        @Option(help: "How long to write.") var seconds: Double = 60
        @Option(help: "Clients per site.") var clients = 2
        @ArgumentParser.Flag(inversion: .prefixedNo, help: "Also stop PostgreSQL for 3 s three quarters of the way in.") var restartPostgres = true
        @Option(help: "Seed for the clients' choices.") var seed: UInt64 = 1

        func run() throws {
            do {
                say(
                    "PASS "
                        + (try runFailover(
                            lode: try common.binary(), root: common.dir + "/failover", seconds: seconds, clientsPerSite: clients, seed: seed,
                            restartPostgres: restartPostgres)))
            } catch {
                say("FAIL: \(error)")
                throw ExitCode(1)
            }
        }
    }
}

/// Prints a line at once (unbuffered, also into a file or a pipe).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
