import Foundation
import LodeTestSupport

/// The server tier for `load --postgres-relays` and `failover`: relays
/// that keep their datasets in one durable PostgreSQL database of their
/// own. Their sites must already be made (`makeSites`, role relay).
final class RelayTier {
    let postgres: PostgresServer
    /// The database's name, for `psql`.
    let database: String
    let relays: [LocalNode]

    init(lode: Lode, root: String, names: [String]) throws {
        postgres = try PostgresServer.standalone(durable: true)
        do {
            let url = try postgres.newDatabase("faults")
            database = URL(string: url)?.lastPathComponent ?? ""
            var relays: [LocalNode] = []
            for n in names {
                let relay = LocalNode(lode: lode, dataDir: root + "/" + n, extra: ["--store", url, "--web", "off"])
                do { try relay.start() } catch {
                    for r in relays { r.stop() }
                    throw error
                }
                relays.append(relay)
            }
            self.relays = relays
        } catch {
            try? postgres.stop()
            throw error
        }
    }

    /// Stops the relays, then PostgreSQL.
    func stop() {
        for r in relays { r.stop() }
        try? postgres.stop()
    }

    /// Waits (60 s at most) until the database holds as many rows of
    /// `faults.items` as the site at `dataDir`; returns that count, or a
    /// problem when it never does.
    func checkRows(_ lode: Lode, like dataDir: String) throws -> (rows: String, problem: String?) {
        let expected = try lode.scalar(dataDir, "faults", "SELECT count(*) FROM items")
        var stored = ""
        let deadline = Date().addingTimeInterval(60)
        repeat {
            stored = ((try? postgres.psql(database, "SELECT count(*) FROM faults.items")) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            if stored == expected { return (expected, nil) }
            usleep(500_000)
        } while Date() < deadline
        return (expected, "the relays' database holds \(stored) rows of items, the sites \(expected)")
    }
}
