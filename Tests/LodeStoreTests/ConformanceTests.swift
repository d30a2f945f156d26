import Foundation
import LodeCore
import LodePostgres
import LodeSQLite
import LodeStore
import LodeTestSupport
import Synchronization
import Testing

/// The stores every conformance test runs against. A new store (the
/// PostgreSQL one) adds a case here and passes the same tests.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case reference
    case postgres

    var testDescription: String { rawValue }

    /// An empty replica of `dataset` for `local` (with the system tables).
    func make(_ dir: TempDir, site local: LocalSite, dataset: String = "d", clock: TestClock = TestClock()) async throws -> any ReplicaStore {
        switch self {
        case .sqlite:
            let catalog = SQLiteCatalog(directory: dir.file("\(local.name)-\(UUID().uuidString.prefix(6))"), local: local, wallClock: clock.now)
            return try catalog.openOrCreate(dataset).replica
        case .reference:
            return ReferenceStore(dataset: dataset, local: local, wallClock: clock.now)
        case .postgres:
            // A database of its own on the tests' server (PostgresServer).
            let url = try PostgresServer.shared().newDatabase()
            let catalog = try await PostgresCatalog.open(try PostgresLocation(url), local: local, connections: 2, wallClock: clock.now)
            return try await catalog.openOrCreateStore(dataset).replica
        }
    }
}

/// A wall clock that moves 7 ms at every reading: commits made with it are
/// the same in every run.
final class TestClock: Sendable {
    private let millis: Mutex<UInt64>
    init(start: UInt64 = 1_780_000_000_000) { millis = Mutex(start) }
    var now: @Sendable () -> UInt64 {
        { [self] in
            millis.withLock {
                $0 += 7; return $0
            }
        }
    }
    /// Moves the clock `ms` milliseconds on.
    func advance(_ ms: UInt64) { millis.withLock { $0 += ms } }
}

let conformanceSchema = try! SchemaParser.parse(
    """
    CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', output INTEGER, grade REAL, note TEXT, raw BLOB);
    CREATE TABLE plants (id TEXT PRIMARY KEY, mine TEXT, tonnes INTEGER);
    """)

/// The user tables of a replica as values: table → pk → column → value.
func tables(_ r: any ReplicaStore) async throws -> [String: [String: [String: Value]]] {
    var out: [String: [String: [String: Value]]] = [:]
    for t in try await r.schema() {
        let box = Collected()
        try await r.export(table: t.name) { e in box.add(e) }
        let events = box.all
        guard case .columns(let cols)? = events.first else { continue }
        var rows: [String: [String: Value]] = [:]
        for case .row(let values) in events.dropFirst() {
            guard case .text(let pk) = values[0] else { continue }
            rows[pk] = Dictionary(uniqueKeysWithValues: zip(cols.dropFirst(), values.dropFirst()))
        }
        out[t.name] = rows
    }
    return out
}

final class Collected: @unchecked Sendable {
    private var items: [QueryEvent] = []
    private let lock = NSLock()
    func add(_ e: QueryEvent) { lock.withLock { items.append(e) } }
    var all: [QueryEvent] { lock.withLock { items } }
}

/// Offers `commits` to `to` in a random order with some duplicates,
/// offering what waits again until nothing more applies. Returns what
/// was refused.
@discardableResult
func deliver(_ commits: [Commit], to: any ReplicaStore, _ rng: inout SeededGenerator) async throws -> [Rejection] {
    var batch = commits + commits.prefix(3)
    batch.shuffle(using: &rng)
    var rejected: [Rejection] = []
    var outcome = try await to.apply(batch)
    rejected += outcome.rejected
    while !outcome.waiting.isEmpty {
        let before = outcome.waiting.count
        outcome = try await to.apply(outcome.waiting.shuffled(using: &rng))
        rejected += outcome.rejected
        if outcome.waiting.count >= before { break }
    }
    return rejected
}

/// Moves what `to` lacks from `from`.
func exchange(from: any ReplicaStore, to: any ReplicaStore, _ rng: inout SeededGenerator) async throws {
    let rejected = try await deliver(try await from.commits(missingFrom: to.vector, limit: 100_000), to: to, &rng)
    #expect(rejected.isEmpty, "\(rejected.map(\.reason))")
}

/// A random local edit: puts of a few columns or of none, deletes, re-inserts.
func randomEdit(_ rng: inout SeededGenerator, columns: [String]) -> RowEdit {
    let pk = "m\(Int.random(in: 0..<8, using: &rng))"
    if Int.random(in: 0..<5, using: &rng) == 0 { return .delete(table: "mines", pk: pk) }
    var names: [String] = []
    var values: [Value] = []
    // Now and then a row named by its key alone (`KeyOnlyRow`).
    let count = Int.random(in: 0..<8, using: &rng) == 0 ? 0 : Int.random(in: 1...3, using: &rng)
    for c in columns.shuffled(using: &rng).prefix(count) {
        names.append(c)
        switch c {
        case "name": values.append(Int.random(in: 0..<6, using: &rng) == 0 ? .null : .text("Mine \(Int.random(in: 0..<4, using: &rng))"))
        case "output": values.append(.integer(Int64.random(in: -3...3, using: &rng)))
        case "grade": values.append(.real(Double(Int.random(in: 0..<8, using: &rng)) / 8))
        case "raw": values.append(.blob([UInt8](repeating: UInt8.random(in: 0...3, using: &rng), count: 2)))
        default: values.append(.text("t\(Int.random(in: 0..<5, using: &rng))"))
        }
    }
    return .put(table: "mines", pk: pk, columns: names, values: values)
}

@Suite struct ConformanceTests {
    let dir = TempDir("lode-conf")

    /// Three sites of one store kind, the schema made at the first and
    /// known everywhere.
    func cluster(_ kind: StoreKind, _ n: Int = 3, clock: TestClock = TestClock()) async throws -> [any ReplicaStore] {
        var all: [any ReplicaStore] = []
        for i in 0..<n { all.append(try await kind.make(dir, site: site(UInt8(i + 1), "s\(i)"), clock: clock)) }
        try await introduce(all)
        _ = try await all[0].alter(conformanceSchema)
        var rng = SeededGenerator(seed: 0)
        for r in all.dropFirst() { try await exchange(from: all[0], to: r, &rng) }
        return all
    }

    /// Random edits at three sites, exchanged at random in random orders
    /// with duplicates, converge: every replica holds the same rows, and
    /// they are the rows the reference model makes of the same commits. A
    /// fresh replica applying every commit shuffled ends the same, with the
    /// same history for every row.
    @Test(arguments: StoreKind.allCases, 0..<6)
    func editsConvergeWhateverTheOrder(_ kind: StoreKind, seed: UInt64) async throws {
        var rng = SeededGenerator(seed: seed)
        let rs = try await cluster(kind)
        for step in 0..<60 {
            let r = rs.randomElement(using: &rng)!
            if step == 30 {
                _ = try await r.alter(
                    conformanceSchema.map { t in
                        t.name == "mines"
                            ? TableDef(name: t.name, primaryKey: t.primaryKey, columns: t.columns + [ColumnDef(name: "status", type: .text)]) : t
                    })
                continue
            }
            // The columns this replica knows (the new one only once it has heard of it).
            let columns = try await r.schema().first { $0.name == "mines" }!.orderedColumns.map(\.name)
            _ = try await r.write((0..<Int.random(in: 1...3, using: &rng)).map { _ in randomEdit(&rng, columns: columns) })
            if Int.random(in: 0..<4, using: &rng) == 0 {
                let a = rs.randomElement(using: &rng)!, b = rs.randomElement(using: &rng)!
                if a !== b { try await exchange(from: a, to: b, &rng) }
            }
        }
        for _ in 0..<2 { for a in rs { for b in rs where a !== b { try await exchange(from: a, to: b, &rng) } } }
        let expected = try await tables(rs[0])
        for r in rs.dropFirst() {
            #expect(r.vector == rs[0].vector)
            #expect(try await tables(r) == expected, "\(kind) seed \(seed)")
            #expect(try await r.schemaSQL() == rs[0].schemaSQL())
        }
        // The reference model, fed every commit in one causal order.
        let all = try await rs[0].commits(missingFrom: VersionVector(), limit: 100_000)
        var model = ReferenceReplica(dataset: "d")
        for c in all { try model.apply(c) }
        #expect(expected["mines"] == model.rows(of: "mines"), "\(kind) seed \(seed)")
        // A new replica fed every commit shuffled, with duplicates.
        let fresh = try await kind.make(dir, site: site(9, "late"))
        try await introduce(rs + [fresh])
        try await deliver(all, to: fresh, &rng)
        #expect(try await tables(fresh) == expected)
        for pk in (0..<8).map({ "m\($0)" }) {
            let a = try? await rs[1].history(table: "mines", pk: pk), b = try? await fresh.history(table: "mines", pk: pk)
            #expect(Set(a ?? []) == Set(b ?? []), "history of \(pk)")
        }
    }

    /// A feed cut off (a revoked site's, DESIGN §9) is dropped past its
    /// cut-off also where its commits were applied, seen by other sites
    /// and built on (commits depending on them, a column only they
    /// defined): every replica ends with the tables of a replica that never
    /// received the dropped commits, the other sites' writes all kept; a
    /// commit past the cut-off is refused from then on.
    @Test(arguments: StoreKind.allCases, 0..<4)
    func aCutOffFeedIsDroppedEverywhereAndTheRestConverges(_ kind: StoreKind, seed: UInt64) async throws {
        var rng = SeededGenerator(seed: seed)
        let rs = try await cluster(kind)
        let mallory = rs[2]
        var cutoff: UInt64 = 0
        for step in 0..<60 {
            let r = rs.randomElement(using: &rng)!
            if step == 20 { cutoff = mallory.vector[mallory.local.site] }
            if step == 30 {
                // After the cut-off, mallory adds a column the others then write to.
                _ = try await mallory.alter(
                    conformanceSchema.map { t in
                        t.name == "mines"
                            ? TableDef(name: t.name, primaryKey: t.primaryKey, columns: t.columns + [ColumnDef(name: "status", type: .text)]) : t
                    })
                continue
            }
            let columns = try await r.schema().first { $0.name == "mines" }!.orderedColumns.map(\.name)
            _ = try await r.write((0..<Int.random(in: 1...3, using: &rng)).map { _ in randomEdit(&rng, columns: columns) })
            if Int.random(in: 0..<3, using: &rng) == 0 {
                let a = rs.randomElement(using: &rng)!, b = rs.randomElement(using: &rng)!
                if a !== b { try await exchange(from: a, to: b, &rng) }
            }
        }
        for a in rs { for b in rs where a !== b { try await exchange(from: a, to: b, &rng) } }
        let all = try await rs[0].commits(missingFrom: VersionVector(), limit: 100_000)
        let past = all.filter { $0.author == mallory.local.site && $0.seq > cutoff }
        #expect(!past.isEmpty)

        // What a replica that never held mallory's commits past the cut-off holds.
        let fresh = try await kind.make(dir, site: site(9, "late"))
        try await introduce(rs + [fresh])
        #expect(try await fresh.cut([mallory.local.site: cutoff]) == 0)
        let refused = try await deliver(all.filter { !past.contains($0) }, to: fresh, &rng)
        let expected = try await tables(fresh)
        // Writes that needed the dropped column are the only others refused.
        #expect(refused.allSatisfy { $0.reason.contains("status") }, "\(refused.map(\.reason))")

        for r in rs.prefix(2) {
            let before = try await r.commitCount()
            let dropped = try await r.cut([mallory.local.site: cutoff])
            #expect(dropped >= past.count && r.vector[mallory.local.site] == cutoff)
            #expect(try await r.commitCount() == before - dropped)
            #expect(try await tables(r) == expected, "\(kind) seed \(seed)")
            #expect(r.vector == fresh.vector)
            // Cut again, or at a later seq: nothing changes; the smaller cut-off stays.
            #expect(try await r.cut([mallory.local.site: cutoff + 1]) == 0)
            #expect(r.cutoffs[mallory.local.site] == cutoff)
            // Offered again, the dropped commits are refused.
            let again = try await r.apply(past)
            #expect(again.applied.isEmpty && again.rejected.count == past.count)
        }
        #expect(try await tables(rs[0]) == tables(rs[1]))
    }

    /// Applied in the same order, a store finds the same conflicts as the
    /// reference model, keeps both values, and marks the same ones resolved.
    @Test(arguments: StoreKind.allCases, 0..<4)
    func conflictsAreThoseTheModelFinds(_ kind: StoreKind, seed: UInt64) async throws {
        var rng = SeededGenerator(seed: 100 + seed)
        let rs = try await cluster(kind)
        for _ in 0..<40 {
            let r = rs.randomElement(using: &rng)!
            _ = try await r.write([randomEdit(&rng, columns: ["name", "output"])])
            if Int.random(in: 0..<6, using: &rng) == 0 {
                let a = rs.randomElement(using: &rng)!, b = rs.randomElement(using: &rng)!
                if a !== b { try await exchange(from: a, to: b, &rng) }
            }
        }
        var commits: [Commit] = []
        for r in rs { commits += try await r.commits(missingFrom: VersionVector(), limit: 100_000).filter { $0.author == r.local.site } }
        // One causal order: repeatedly take any commit whose past is held.
        var model = ReferenceReplica(dataset: "d")
        var order: [Commit] = []
        var left = commits
        while !left.isEmpty {
            let i = left.firstIndex { (try? FeedRules.check($0, head: model.head(of: $0.author), held: model.vector)) != nil }!
            try model.apply(left[i])
            order.append(left.remove(at: i))
        }
        let fresh = try await kind.make(dir, site: site(9, "late"))
        try await introduce(rs + [fresh])
        for c in order { #expect(try await fresh.apply([c]).applied.count == 1) }
        let got = try await fresh.conflicts(includeResolved: true).map {
            "\($0.table) \($0.pk) \($0.column) \($0.winnerValue) \($0.loserValue) \($0.resolved)"
        }
        let want = model.conflicts.reversed().map {
            "\($0.table) \($0.pk) \($0.column) \($0.winner.value) \($0.loser.value) \($0.resolvedBy != nil)"
        }
        #expect(got == want, "\(kind) seed \(seed)")
        #expect(want.count > 10, "the schedule makes conflicts to compare")
        #expect(try await fresh.conflicts().count == model.conflicts.filter { $0.resolvedBy == nil }.count)
    }

    /// Two sites write one cell while apart: both values are kept as a
    /// conflict, the history shows both writes and which won, and a later
    /// write that saw both resolves it.
    @Test(arguments: StoreKind.allCases)
    func concurrentWritesAreKeptAndALaterWriteResolvesThem(_ kind: StoreKind) async throws {
        var rng = SeededGenerator(seed: 1)
        let rs = try await cluster(kind, 2)
        _ = try await rs[0].write([.put(table: "mines", pk: "k", columns: ["output"], values: [.integer(1)])])
        try await exchange(from: rs[0], to: rs[1], &rng)
        _ = try await rs[0].write([.put(table: "mines", pk: "k", columns: ["output"], values: [.integer(10)])])
        _ = try await rs[1].write([.put(table: "mines", pk: "k", columns: ["output"], values: [.integer(20)])])
        try await exchange(from: rs[0], to: rs[1], &rng)
        try await exchange(from: rs[1], to: rs[0], &rng)
        for r in rs {
            let cs = try await r.conflicts()
            #expect(cs.count == 1)
            #expect(Set([cs.first?.winnerValue, cs.first?.loserValue]) == [.integer(10), .integer(20)])
            let h = try await r.history(table: "mines", pk: "k")
            #expect(h.filter { $0.column == "output" }.count == 3)
            #expect(h.filter { $0.won && $0.column == "output" }.map(\.value) == [cs.first?.winnerValue])
        }
        #expect(try await tables(rs[0]) == tables(rs[1]))
        _ = try await rs[1].write([.put(table: "mines", pk: "k", columns: ["output"], values: [.integer(30)])])
        try await exchange(from: rs[1], to: rs[0], &rng)
        for r in rs {
            #expect(try await r.conflicts().isEmpty)
            #expect(try await r.conflicts(includeResolved: true).count == 1)
        }
        // A delete wins over a concurrent update; a re-insert starts a clean life.
        _ = try await rs[0].write([.delete(table: "mines", pk: "k")])
        _ = try await rs[1].write([.put(table: "mines", pk: "k", columns: ["note"], values: [.text("late")])])
        try await exchange(from: rs[0], to: rs[1], &rng)
        try await exchange(from: rs[1], to: rs[0], &rng)
        for r in rs { #expect(try await tables(r)["mines"]?["k"] == nil) }
        _ = try await rs[1].write([.put(table: "mines", pk: "k", columns: ["name"], values: [.text("again")])])
        try await exchange(from: rs[1], to: rs[0], &rng)
        let row = try await tables(rs[0])["mines"]?["k"]
        #expect(row?["name"] == .text("again") && row?["output"] == .null && row?["note"] == .null, "\(String(describing: row))")
    }

    /// The person a write is made for travels inside its signed commit
    /// (version 2) and every replica shows it: in the history, on the
    /// annotation and on both sides of a conflict. A write for no one is
    /// still a version 1 commit.
    @Test(arguments: StoreKind.allCases)
    func eachWriteNamesItsPersonOnEveryReplica(_ kind: StoreKind) async throws {
        var rng = SeededGenerator(seed: 2)
        let rs = try await cluster(kind, 2)
        let before = rs[0].vector
        try await Attribution.$person.withValue("ana") {
            _ = try await rs[0].write([.put(table: "mines", pk: "k", columns: ["output"], values: [.integer(1)])])
        }
        let note = try await Attribution.$person.withValue("ana") {
            try await rs[0].annotate(NewAnnotation(table: "mines", pk: "k", text: "check the output", tags: []))
        }
        _ = try await rs[0].write([.put(table: "mines", pk: "k", columns: ["note"], values: [.text("by the site")])])
        let made = try await rs[0].commits(missingFrom: before)
        #expect(made.map(\.person) == ["ana", "ana", ""])
        #expect(made.map { $0.bytes[0] } == [Commit.personVersion, Commit.personVersion, Commit.version])
        try await exchange(from: rs[0], to: rs[1], &rng)
        try await Attribution.$person.withValue("ana") {
            _ = try await rs[0].write([.put(table: "mines", pk: "k", columns: ["output"], values: [.integer(10)])])
        }
        try await Attribution.$person.withValue("bo") {
            _ = try await rs[1].write([.put(table: "mines", pk: "k", columns: ["output"], values: [.integer(20)])])
        }
        try await exchange(from: rs[0], to: rs[1], &rng)
        try await exchange(from: rs[1], to: rs[0], &rng)
        for r in rs {
            let h = try await r.history(table: "mines", pk: "k")
            #expect(h.map(\.person) == ["ana", nil, "ana", "bo"] || h.map(\.person) == ["ana", nil, "bo", "ana"], "\(h)")
            let a = try await r.annotations().first { $0.id == note }
            #expect(a?.person == "ana" && a?.author == "s0")
            let c = try await r.conflicts().first
            #expect(Set([c?.winnerPerson, c?.loserPerson]) == ["ana", "bo"])
            #expect((c?.winnerValue == .integer(10)) == (c?.winnerPerson == "ana"))
        }
    }

    /// A commit stamped further ahead of the receiver's wall clock than the
    /// drift allows is held back: not applied, not kept, not refused, and
    /// the receiver's clock does not move; once the receiver's wall clock
    /// has caught up, the same commits apply (DESIGN §9).
    @Test(arguments: StoreKind.allCases)
    func aCommitStampedTooFarAheadIsHeldUntilTheClockCatchesUp(_ kind: StoreKind) async throws {
        let hour: UInt64 = 3_600_000
        let slow = TestClock()
        let fast = TestClock(start: 1_780_000_000_000 + hour)
        let ahead = try await kind.make(dir, site: site(1, "fast"), clock: fast)
        let behind = try await kind.make(dir, site: site(2, "slow"), clock: slow)
        try await introduce([ahead, behind])
        _ = try await ahead.alter(conformanceSchema)
        _ = try await ahead.write([.put(table: "plants", pk: "p", columns: ["tonnes"], values: [.integer(7)])])
        let early = try await ahead.commits(missingFrom: behind.vector)
        let held = try await behind.apply(early)
        // The first is held back; the second, which follows it, waits for it.
        #expect(early.count == 2)
        #expect(held.aheadOfClock.map(\.hash) == [early[0].hash] && held.waiting.map(\.hash) == [early[1].hash])
        #expect(held.applied.isEmpty && held.rejected.isEmpty)
        #expect(behind.vector[ahead.local.site] == 0)
        #expect(try await behind.rejectionCount() == 0)
        // The slow site's own commits keep to its own clock.
        _ = try await behind.alter(conformanceSchema)
        let own = try await behind.commits(missingFrom: VersionVector()).filter { $0.author == behind.local.site }
        #expect(!own.isEmpty && own.allSatisfy { $0.hlc.millis < 1_780_000_000_000 + hour })
        slow.advance(hour - CommitVerifier.defaultMaxClockDrift)
        let later = try await behind.apply(early)
        #expect(later.applied.count == early.count && later.aheadOfClock.isEmpty)
        #expect(try await tables(behind)["plants"]?["p"]?["tonnes"] == .integer(7))
    }

    /// Replays and duplicates change nothing; commits from elsewhere are
    /// applied whatever order they come in, waiting for what they follow.
    @Test(arguments: StoreKind.allCases)
    func duplicatesChangeNothingAndGapsWait(_ kind: StoreKind) async throws {
        var rng = SeededGenerator(seed: 2)
        let rs = try await cluster(kind, 2)
        for i in 0..<5 { _ = try await rs[0].write([.put(table: "plants", pk: "p\(i)", columns: ["tonnes"], values: [.integer(Int64(i))])]) }
        let missing = try await rs[0].commits(missingFrom: rs[1].vector)
        #expect(missing.count == 5)
        // The last first: it waits, changing nothing.
        let early = try await rs[1].apply([missing.last!])
        #expect(early.waiting.count == 1 && early.applied.isEmpty)
        #expect(try await tables(rs[1])["plants"]?.isEmpty == true)
        try await exchange(from: rs[0], to: rs[1], &rng)
        let before = try await tables(rs[1])
        let count = try await rs[1].commitCount()
        let again = try await rs[1].apply(missing + missing)
        #expect(again.duplicates == 10 && again.applied.isEmpty && again.rejected.isEmpty)
        #expect(try await tables(rs[1]) == before)
        #expect(try await rs[1].commitCount() == count)
    }

    /// What a replica hands a peer comes in an order the peer can apply
    /// as it comes, within the limits asked for.
    @Test(arguments: StoreKind.allCases)
    func missingCommitsComeInACausalOrderWithinTheLimits(_ kind: StoreKind) async throws {
        var rng = SeededGenerator(seed: 3)
        let rs = try await cluster(kind, 3)
        for i in 0..<12 {
            _ = try await rs[i % 3].write([randomEdit(&rng, columns: ["name", "output", "note"])])
            if i % 2 == 1 { try await exchange(from: rs[i % 3], to: rs[(i + 1) % 3], &rng) }
        }
        try await exchange(from: rs[1], to: rs[0], &rng)
        try await exchange(from: rs[2], to: rs[0], &rng)
        let fresh = try await kind.make(dir, site: site(9, "late"))
        try await introduce(rs + [fresh])
        var pages = 0
        while fresh.vector != rs[0].vector {
            let page = try await rs[0].missingCommits(after: fresh.vector, maxBytes: 1, maxCount: 3)
            #expect(page.count == 1, "maxBytes 1 still gives one commit")
            let outcome = try await fresh.apply(try page.map { try Commit(decoding: $0.bytes) })
            #expect(outcome.applied.count == page.count && outcome.waiting.isEmpty)
            pages += 1
            if pages > 200 { break }
        }
        #expect(try await tables(fresh) == tables(rs[0]))
        #expect(try await rs[0].missingCommits(after: rs[0].vector, maxBytes: .max, maxCount: .max).isEmpty)
        #expect(try await rs[0].missingCommits(after: VersionVector(), maxBytes: .max, maxCount: 2).count == 2)
    }

    /// Refused commits: nothing of them is applied, each is recorded once
    /// with its kind, and the good ones around them still apply.
    @Test(arguments: StoreKind.allCases)
    func refusedCommitsChangeNothingAndAreRecordedOnce(_ kind: StoreKind) async throws {
        var rng = SeededGenerator(seed: 4)
        let rs = try await cluster(kind, 2)
        let reader = site(7, "reader", role: .reader)
        let annotator = site(8, "annot", role: .annotator)
        for r in rs {
            try await r.registerSite(reader.record)
            try await r.registerSite(SiteRecord(site: annotator.site, name: "annot", role: .annotator, certificate: nil))
        }
        let target = rs[1]
        let before = try await tables(target)
        var put = PutRows(table: "mines", columns: ["output"])
        put.append(key: "evil", length: 1, values: [.integer(666)])
        let hlc = HLC(millis: 1_780_000_000_000, counter: 0)
        // Not authorized: a reader's row.
        let byReader = try reader.writer.commit(dataset: "d", ops: [.put(put)], hlc: hlc, head: .empty, held: VersionVector())
        // Invalid: an unknown column, after a good op (the good op must not stay).
        var good = PutRows(table: "plants", columns: ["tonnes"])
        good.append(key: "ok", length: 1, values: [.integer(1)])
        var bad = PutRows(table: "mines", columns: ["nope"])
        bad.append(key: "x", length: 1, values: [.integer(1)])
        let writer = rs[0].local
        _ = try await rs[0].write([.put(table: "plants", pk: "first", columns: ["tonnes"], values: [.integer(1)])])
        try await exchange(from: rs[0], to: target, &rng)
        let head0 = FeedHead(
            seq: rs[0].vector[writer.site],
            hash: try await rs[0].commits(missingFrom: VersionVector(), limit: 100).last { $0.author == writer.site }!.hash,
            vector: rs[0].vector)
        let unknownColumn = try writer.writer.commit(dataset: "d", ops: [.put(good), .put(bad)], hlc: hlc, head: head0, held: rs[0].vector)
        // A fork: another commit with the same seq (signed by the same key).
        var other = PutRows(table: "plants", columns: ["tonnes"])
        other.append(key: "fork", length: 1, values: [.integer(2)])
        let prior = try await rs[0].commits(missingFrom: VersionVector(), limit: 100).last { $0.author == writer.site }!
        let forked = try writer.writer.commit(
            dataset: "d", ops: [.put(other)], hlc: prior.hlc,
            head: FeedHead(seq: prior.seq - 1, hash: prior.prev, vector: VersionVector()), held: VersionVector([writer.site: prior.seq - 1]))
        // An altered copy: the signature no longer matches.
        var bytes = byReader.bytes
        bytes[bytes.count - 1] ^= 1
        let altered = try Commit(decoding: bytes)
        // An annotator writing an annotation under another author's name, and defining a table.
        var note = PutRows(table: "_annotations", columns: ["body", "author"])
        note.append(key: AnnotationRows.id(hlc: hlc, site: annotator.site), length: 1, values: [.text("hi"), .text("someone-else")])
        let forgedNote = try annotator.writer.commit(dataset: "d", ops: [.put(note)], hlc: hlc, head: .empty, held: VersionVector())
        // Another dataset's commit.
        let elsewhere = try reader.writer.commit(dataset: "other", ops: [.put(put)], hlc: hlc, head: .empty, held: VersionVector())
        // A site nobody introduced: waits for its certificate.
        let stranger = site(5, "stranger")
        let unknown = try stranger.writer.commit(dataset: "d", ops: [.put(good)], hlc: hlc, head: .empty, held: VersionVector())

        let batch = [byReader, unknownColumn, forked, altered, forgedNote, elsewhere, unknown]
        let outcome = try await target.apply(batch)
        #expect(outcome.applied.isEmpty)
        #expect(outcome.waiting.map(\.hash) == [unknown.hash])
        let kinds = Dictionary(uniqueKeysWithValues: outcome.rejected.map { ($0.commit.hash, $0.kind) })
        #expect(kinds[byReader.hash] == .notAuthorized)
        #expect(kinds[unknownColumn.hash] == .invalid)
        #expect(kinds[forked.hash] == .forkedFeed)
        #expect(kinds[altered.hash] == .badSignature)
        #expect(kinds[forgedNote.hash] == .invalid)
        #expect(kinds[elsewhere.hash] == .invalid)
        #expect(outcome.rejected.first { $0.commit.hash == unknownColumn.hash }?.reason.contains("no column nope") == true)
        #expect(
            try await tables(target) == before.merging(["plants": ["first": ["mine": .null, "tonnes": .integer(1)]]]) { a, b in a.merging(b) { $1 } })
        #expect(try await target.rejectionCount() == 6)
        // Offered again, each is recorded once.
        _ = try await target.apply(batch)
        #expect(try await target.rejectionCount() == 6)
        let records = try await target.rejections()
        #expect(Set(records.map(\.kind)) == [.notAuthorized, .invalid, .forkedFeed, .badSignature])
        // The stranger's commit applies once its certificate arrives.
        try await target.registerSite(stranger.record)
        #expect(try await target.knowsSite(stranger.site))
        #expect(try await target.apply([unknown]).applied.count == 1)
        #expect(try await target.sites().contains { $0.site == stranger.site && $0.name == "stranger" })
    }

    /// Definitions a peer may send that SQL finds awkward: a TEXT default
    /// holding NUL, and a later primary-key rename onto an existing column.
    /// Every store ends the same (the reference's rules), and the apply
    /// never fails as a whole.
    @Test(arguments: StoreKind.allCases)
    func awkwardDefinitionsFromAPeerApplyAsTheRulesSay(_ kind: StoreKind) async throws {
        let rs = try await cluster(kind, 2)
        let writer = rs[0].local
        var rng = SeededGenerator(seed: 11)
        let nul = TableDef(
            name: "nul", primaryKey: "id", columns: [ColumnDef(name: "a", type: .text, notNull: true, defaultValue: .text("x\u{0}y'z"))])
        let renamed = TableDef(
            name: "plants", primaryKey: "mine", columns: [ColumnDef(name: "id", type: .text), ColumnDef(name: "tonnes", type: .integer)])
        _ = try await rs[0].write([.put(table: "plants", pk: "p1", columns: ["mine", "tonnes"], values: [.text("mp"), .integer(5)])])
        try await exchange(from: rs[0], to: rs[1], &rng)
        // Signed by the writer as an old or hostile peer would: straight definitions, no local checks.
        let last = try await rs[0].commits(missingFrom: VersionVector()).last { $0.author == writer.site }!
        var head = FeedHead(seq: last.seq, hash: last.hash, vector: rs[0].vector)
        var commits: [Commit] = []
        for def in [nul, renamed] {
            let c = try writer.writer.commit(
                dataset: "d", ops: [.defineTable(def)], hlc: HLC(rawValue: last.hlc.rawValue + 1 + UInt64(commits.count)), head: head,
                held: head.vector)
            commits.append(c)
            var v = head.vector
            v[writer.site] = c.seq
            head = FeedHead(seq: c.seq, hash: c.hash, vector: v)
        }
        let outcome = try await rs[1].apply(commits)
        #expect(outcome.applied.count + outcome.rejected.count == 2, "\(outcome.rejected.map(\.reason))")
        let model = ReferenceStore(dataset: "d", local: site(30, "model"))
        for s in [writer, rs[1].local] { try await model.registerSite(s.record) }
        _ = try await model.apply(try await rs[0].commits(missingFrom: VersionVector()) + commits)
        #expect(outcome.applied.map(\.hash) == commits.filter { c in model.vector[c.author] >= c.seq }.map(\.hash))
        let got = try await tables(rs[1])
        let want = try await tables(model)
        #expect(got == want, "\(got)\n\(want)")
        _ = try await rs[1].write([.put(table: "nul", pk: "n", columns: ["a"], values: [.null])])
        #expect(try await tables(rs[1])["nul"]?["n"]?["a"] == .text("x\u{0}y'z"))
        // The column the key took over is no column while it holds it.
        await #expect(throws: (any Error).self) {
            _ = try await rs[1].write([.put(table: "plants", pk: "p2", columns: ["mine"], values: [.text("x")])])
        }
        _ = try await rs[1].write([.put(table: "plants", pk: "p2", columns: ["id"], values: [.text("x")])])
        #expect(try await tables(rs[1])["plants"]?["p2"] == ["id": .text("x"), "tonnes": .null])
    }

    /// What a replica keeps of refused commits is bounded whatever peers
    /// send (DESIGN §9): the newest `RejectionLog.maxKept` refusals, forks
    /// aside, which are kept as evidence.
    @Test(arguments: StoreKind.allCases)
    func refusalsKeptAsideAreBounded(_ kind: StoreKind) async throws {
        let rs = try await cluster(kind, 2)
        let writer = rs[0].local
        _ = try await rs[0].write([.put(table: "plants", pk: "p", columns: ["tonnes"], values: [.integer(1)])])
        var rng = SeededGenerator(seed: 9)
        try await exchange(from: rs[0], to: rs[1], &rng)
        let target = rs[1]
        // A fork first: the evidence must outlive everything after it.
        let prior = try await rs[0].commits(missingFrom: VersionVector()).last { $0.author == writer.site }!
        var other = PutRows(table: "plants", columns: ["tonnes"])
        other.append(key: "fork", length: 1, values: [.integer(2)])
        let forked = try writer.writer.commit(
            dataset: "d", ops: [.put(other)], hlc: prior.hlc, head: FeedHead(seq: prior.seq - 1, hash: prior.prev, vector: VersionVector()),
            held: VersionVector([writer.site: prior.seq - 1]))
        #expect(try await target.apply([forked]).rejected.map(\.kind) == [.forkedFeed])
        // Then many refusals: the writer's next commit with its value
        // changed each time (the number i in letters), so a forgery, and
        // (cheaper to judge, no signature to check) as many of its commits
        // for another dataset.
        var put = PutRows(table: "plants", columns: ["mine"])
        put.append(key: "q", length: 1, values: [.text(String(repeating: "a", count: 200))])
        func variants(of c: Commit, _ range: Range<Int>) throws -> [Commit] {
            let start = c.bytes.count - 64 - 200
            return try range.map { i in
                var b = c.bytes
                for d in 0..<4 { b[start + d] = UInt8(ascii: "b") + UInt8(i / [1, 24, 576, 13_824][d] % 24) }
                return try Commit(decoding: b)
            }
        }
        let next = try writer.writer.commit(
            dataset: "d", ops: [.put(put)], hlc: HLC(rawValue: prior.hlc.rawValue + 1),
            head: FeedHead(seq: prior.seq, hash: prior.hash, vector: target.vector), held: target.vector)
        let forgeries = try variants(of: next, 0..<300)
        #expect(try await target.apply(forgeries).rejected.map(\.kind) == Array(repeating: .badSignature, count: 300))
        let elsewhere = try writer.writer.commit(dataset: "e", ops: [.put(put)], hlc: prior.hlc, head: .empty, held: VersionVector())
        let total = RejectionLog.maxKept + 300
        for chunk in stride(from: 0, to: total, by: 2_000) {
            let batch = try variants(of: elsewhere, chunk..<min(total, chunk + 2_000))
            let outcome = try await target.apply(batch)
            #expect(outcome.rejected.count == batch.count && outcome.rejected.allSatisfy { $0.kind == .invalid })
        }
        let kept = try await target.rejectionCount()
        #expect(kept >= RejectionLog.maxKept + 1 && kept <= RejectionLog.maxKept + 257, "\(kept) refusals kept")
        let newest = try await target.rejections(limit: kept)
        #expect(newest.filter { $0.kind == .forkedFeed }.count == 1)
        #expect(target.vector[writer.site] == prior.seq)
    }

    /// Annotations: written at one site, listed at another with their tags
    /// and replies, filtered, searched, and marked when their row is deleted.
    @Test(arguments: StoreKind.allCases)
    func annotationsTravelAndAreListedAsWritten(_ kind: StoreKind) async throws {
        var rng = SeededGenerator(seed: 5)
        let rs = try await cluster(kind, 2)
        _ = try await rs[0].write([
            .put(table: "mines", pk: "mp", columns: ["name"], values: [.text("Mountain Pass")]),
            .put(table: "mines", pk: "mw", columns: ["name"], values: [.text("Mount Weld")]),
        ])
        let a = try await rs[0].annotate(
            NewAnnotation(table: "mines", pk: "mp", column: "output", text: "Output figure is 2024 actual", tags: ["check", "output", " check "]))
        let b = try await rs[0].annotate(NewAnnotation(table: "mines", pk: "mp", text: "Confirmed in the annual report", replyTo: a))
        _ = try await rs[0].annotate(NewAnnotation(table: "mines", pk: "mw", text: "Expansion announced", tags: ["news"]))
        try await exchange(from: rs[0], to: rs[1], &rng)
        let all = try await rs[1].annotations()
        #expect(all.count == 3)
        #expect(all.first { $0.id == a }?.tags == ["check", "output"])
        #expect(all.first { $0.id == a }?.column == "output")
        #expect(all.first { $0.id == b }?.replyTo == a)
        #expect(all.allSatisfy { $0.author == "s0" && $0.status == "open" && $0.targetExists })
        #expect(try await rs[1].annotations(AnnotationFilter(tag: "news")).map(\.pk) == ["mw"])
        #expect(try await rs[1].annotations(AnnotationFilter(pk: "mp")).count == 2)
        #expect(try await rs[1].annotations(AnnotationFilter(table: "plants")).isEmpty)
        #expect(try await rs[1].annotations(AnnotationFilter(search: "annual")).map(\.id) == [b])
        #expect(try await rs[1].annotations(AnnotationFilter(search: "annual figure")).isEmpty)
        #expect(try await rs[1].annotations(AnnotationFilter(limit: 1)).count == 1)
        _ = try await rs[1].write([.delete(table: "mines", pk: "mp")])
        try await exchange(from: rs[1], to: rs[0], &rng)
        for r in rs {
            let onMP = try await r.annotations(AnnotationFilter(pk: "mp"))
            #expect(onMP.count == 2 && onMP.allSatisfy { !$0.targetExists })
        }
        // Annotating what is not there is refused, and changes nothing.
        let vector = rs[0].vector
        for bad in [
            NewAnnotation(table: "mines", pk: "nope", text: "x"), NewAnnotation(table: "mines", pk: "mw", text: "x", replyTo: "nope"),
            NewAnnotation(table: "mines", pk: "mw", column: "colour", text: "x"), NewAnnotation(table: "mines", pk: "mw", text: "  "),
            NewAnnotation(table: "minerals", pk: "mw", text: "x"), NewAnnotation(table: "_annotations", pk: a, text: "x"),
            NewAnnotation(table: "mines", pk: "", text: "x"),
        ] {
            await #expect(throws: StoreError.self, "\(bad)") { try await rs[0].annotate(bad) }
        }
        #expect(rs[0].vector == vector)
    }

    /// A local write is all or nothing: an import with a bad line, or a
    /// batch of edits with a bad one, leaves no row and no commit.
    @Test(arguments: StoreKind.allCases)
    func aLocalWriteIsAllOrNothing(_ kind: StoreKind) async throws {
        let rs = try await cluster(kind, 1)
        let r = rs[0]
        let csv = dir.write("ok-\(kind).csv", "id,name,output,grade\nmp,Mountain Pass,45000,0.08\nmw,Mount Weld,,\n")
        let report = try await r.importCSV(table: "mines", path: csv)
        #expect(report.rowsRead == 2 && report.rowsChanged == 2 && report.commits == 1)
        #expect(try await r.importCSV(table: "mines", path: csv).rowsChanged == 0)
        let before = try await tables(r)
        let vector = r.vector
        #expect(before["mines"]?["mw"] == ["name": .text("Mount Weld"), "output": .null, "grade": .null, "note": .null, "raw": .null])
        for (text, fragment) in [
            ("id,name\nk1,one\nk2,\"two\n", "line 3"), ("id,output\nk1,1\nk2,two\n", "is not an INTEGER"), ("id,colour\nk1,red\n", "colour"),
        ] {
            do {
                _ = try await r.importCSV(table: "mines", path: dir.write("bad-\(kind).csv", text))
                Issue.record("\(kind): import of \(text.debugDescription) succeeded")
            } catch let e as StoreError {
                #expect(e.message.contains(fragment), "\(e.message)")
            }
            #expect(try await tables(r) == before)
            #expect(r.vector == vector)
        }
        await #expect(throws: StoreError.self) {
            try await r.write([
                .put(table: "mines", pk: "k1", columns: ["name"], values: [.text("one")]),
                .put(table: "mines", pk: "k2", columns: ["colour"], values: [.text("red")]),
            ])
        }
        await #expect(throws: StoreError.self) { try await r.write([.put(table: "_annotations", pk: "x", columns: ["body"], values: [.text("y")])]) }
        // An empty key: no command could name the row (the contract run made
        // one through a conflict kept by key, then annotated it).
        do {
            _ = try await r.write([
                .put(table: "mines", pk: "k1", columns: ["name"], values: [.text("one")]),
                .put(table: "mines", pk: "", columns: ["name"], values: [.text("none")]),
            ])
            Issue.record("\(kind): a write with an empty key succeeded")
        } catch let e as StoreError {
            #expect(e.code == .badInput && e.message.contains("may not be empty"), "\(e)")
        }
        #expect(try await tables(r) == before)
        #expect(r.vector == vector)
        // A large write is cut into commits of about a megabyte, all kept.
        let big = (0..<3000).map {
            RowEdit.put(table: "plants", pk: "p\($0)", columns: ["mine"], values: [.text(String(repeating: "x", count: 600))])
        }
        let written = try await r.write(big)
        #expect(written.rowsChanged == 3000 && written.commits == 2)
        #expect(try await tables(r)["plants"]?.count == 3000)
    }

    /// Schemas only grow: alter adds tables and columns and refuses drops,
    /// renames and type changes, changing nothing.
    @Test(arguments: StoreKind.allCases)
    func schemasOnlyGrow(_ kind: StoreKind) async throws {
        let rs = try await cluster(kind, 1)
        let r = rs[0]
        let change = try await r.alter(
            try SchemaParser.parse(
                """
                CREATE TABLE mines (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', output INTEGER, grade REAL, note TEXT, raw BLOB, status TEXT NOT NULL DEFAULT 'open');
                CREATE TABLE trade (id TEXT PRIMARY KEY, year INTEGER);
                """))
        #expect(change.tables == ["trade"] && change.columns == ["mines.status"])
        let sql = try await r.schemaSQL()
        for bad in [
            "CREATE TABLE plants (id TEXT PRIMARY KEY, mine TEXT)", "CREATE TABLE plants (id TEXT PRIMARY KEY, mine TEXT, tonnes REAL)",
            "CREATE TABLE plants (code TEXT PRIMARY KEY, mine TEXT, tonnes INTEGER)",
        ] {
            await #expect(throws: StoreError.self, "\(bad)") { try await r.alter(try SchemaParser.parse(bad)) }
        }
        #expect(try await r.schemaSQL() == sql)
        #expect(try await r.schema().map(\.name) == ["mines", "plants", "trade"])
        #expect(try await r.rowCounts().map(\.rows) == [0, 0, 0])
    }

    /// A row a peer put at its last life (the largest causal length a
    /// commit may carry) shows, and a local delete of it is refused, since
    /// no peer would take the next length; nothing changes.
    @Test(arguments: StoreKind.allCases)
    func aRowAtItsLastLifeCannotBeDeletedLocally(_ kind: StoreKind) async throws {
        let rs = try await cluster(kind, 2)
        let writer = rs[1].local
        var put = PutRows(table: "mines", columns: ["name"])
        put.append(key: "last", length: Limits.maxCausalLength, values: [.text("final")])
        let c = try writer.writer.commit(
            dataset: "d", ops: [.put(put)], hlc: HLC(millis: 1_780_000_000_000, counter: 9), head: FeedHead.empty, held: rs[0].vector)
        #expect(try await rs[0].apply([c]).applied.count == 1)
        #expect(try await tables(rs[0])["mines"]?["last"]?["name"] == .text("final"))
        let vector = rs[0].vector
        await #expect(throws: StoreError.self) { try await rs[0].write([.delete(table: "mines", pk: "last")]) }
        #expect(rs[0].vector == vector)
        #expect(try await tables(rs[0])["mines"]?["last"]?["name"] == .text("final"))
    }

    /// Roles are enforced on local writes too.
    @Test(arguments: StoreKind.allCases)
    func aSiteWritesOnlyWhatItsRoleAllows(_ kind: StoreKind) async throws {
        let rs = try await cluster(kind, 1)
        _ = try await rs[0].write([.put(table: "mines", pk: "mp", columns: ["name"], values: [.text("Mountain Pass")])])
        var rng = SeededGenerator(seed: 6)
        let annotator = try await kind.make(dir, site: site(8, "annot", role: .annotator))
        let reader = try await kind.make(dir, site: site(7, "reader", role: .reader))
        try await introduce([rs[0], annotator, reader])
        try await exchange(from: rs[0], to: annotator, &rng)
        try await exchange(from: rs[0], to: reader, &rng)
        for r in [annotator, reader] {
            await #expect(throws: StoreError.self) { try await r.write([.put(table: "mines", pk: "x", columns: ["name"], values: [.text("x")])]) }
            await #expect(throws: StoreError.self) { try await r.alter(conformanceSchema) }
        }
        #expect(try await !annotator.annotate(NewAnnotation(table: "mines", pk: "mp", text: "ok")).isEmpty)
        await #expect(throws: StoreError.self) { try await reader.annotate(NewAnnotation(table: "mines", pk: "mp", text: "no")) }
        try await exchange(from: annotator, to: rs[0], &rng)
        #expect(try await rs[0].annotations().map(\.author) == ["annot"])
    }
}
