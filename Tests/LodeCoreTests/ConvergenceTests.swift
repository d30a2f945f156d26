import Crypto
import Testing

@testable import LodeCore

/// One simulated site: a reference replica, its writer, and an inbox of
/// commits not yet applicable.
struct SimSite {
    var replica: ReferenceReplica
    let writer: FeedWriter
    var inbox: [Commit] = []
    var wall: UInt64

    init(_ n: UInt8, wall: UInt64) {
        replica = ReferenceReplica(dataset: "d")
        writer = FeedWriter(key: testKey(n))
        self.wall = wall
    }

    /// Commits `ops` locally and returns the commit to broadcast.
    mutating func write(_ ops: [Op]) throws -> Commit {
        let hlc = replica.clock.tick(wallMillis: wall)
        let c = try writer.commit(dataset: "d", ops: ops, hlc: hlc, head: replica.head(of: writer.site), held: replica.vector)
        try replica.apply(c)
        return c
    }

    /// Receives a commit (perhaps a duplicate), applying everything that has
    /// become applicable.
    mutating func receive(_ c: Commit) {
        inbox.append(c)
        var progress = true
        while progress {
            progress = false
            var keep: [Commit] = []
            for m in inbox {
                if replica.vector[m.author] >= m.seq { continue }  // duplicate
                do {
                    try replica.apply(m)
                    progress = true
                } catch {
                    keep.append(m)
                }
            }
            inbox = keep
        }
    }
}

/// Random local edits on a fixed key space, so that writes collide.
func randomOps(_ site: SimSite, _ rng: inout SeededGenerator) -> [Op]? {
    guard let schema = site.replica.schemas["t"] else { return nil }
    let columns = schema.orderedColumns.map(\.name)
    let key = "k\(Int.random(in: 0..<6, using: &rng))"
    let length = site.replica.length(of: "t", key: key)
    switch Int.random(in: 0..<10, using: &rng) {
    case 0..<6:
        let cols = columns.filter { _ in Bool.random(using: &rng) }
        guard !cols.isEmpty else { return nil }
        var put = PutRows(table: "t", columns: cols)
        put.append(key: key, length: Merge.lengthForLocalWrite(length), values: cols.map { _ in randomValue(&rng) })
        return [.put(put)]
    case 6..<9:
        guard let l = Merge.lengthForLocalDelete(length) else { return nil }
        var del = DeleteRows(table: "t")
        del.append(key: key, length: l)
        return [.delete(del)]
    default:
        let name = "x\(Int.random(in: 0..<4, using: &rng))"
        let type = ColumnType.allCases.randomElement(using: &rng)!
        return [.defineTable(TableDef(name: "t", primaryKey: "id", columns: [ColumnDef(name: name, type: type)]))]
    }
}

func randomValue(_ rng: inout SeededGenerator) -> Value {
    switch Int.random(in: 0..<5, using: &rng) {
    case 0: .null
    case 1: .integer(Int64.random(in: -5...5, using: &rng))
    case 2: .real(Double(Int.random(in: 0...4, using: &rng)) / 2)
    case 3: .text(["a", "b", "Nd", "ü"].randomElement(using: &rng)!)
    default: .blob([UInt8.random(in: 0...3, using: &rng)])
    }
}

@Suite struct ConvergenceTests {
    /// Random op schedules on 3 to 5 replicas, delivered in random orders
    /// with duplicates, always converge to identical tables and schemas.
    @Test(arguments: 0..<200)
    func randomSchedulesConverge(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        let n = Int.random(in: 3...5, using: &rng)
        var sites = (0..<n).map { SimSite(UInt8($0 + 1), wall: 1_000 + UInt64.random(in: 0..<50, using: &rng)) }
        var sent: [Commit] = []
        let define = TableDef(
            name: "t", primaryKey: "id",
            columns: [
                ColumnDef(name: "a", type: .integer), ColumnDef(name: "b", type: .text, notNull: true, defaultValue: .text("-")),
            ])
        sent.append(try sites[0].write([.defineTable(define)]))
        for _ in 0..<Int.random(in: 20...80, using: &rng) {
            let i = Int.random(in: 0..<n, using: &rng)
            sites[i].wall += UInt64.random(in: 0..<3, using: &rng)  // clocks drift and stall
            if Bool.random(using: &rng), let ops = randomOps(sites[i], &rng) {
                sent.append(try sites[i].write(ops))
            } else if let c = sent.randomElement(using: &rng) {
                sites[i].receive(c)
            }
        }
        // Heal: every site gets everything, in its own random order, twice.
        for i in 0..<n {
            for c in (sent + sent).shuffled(using: &rng) { sites[i].receive(c) }
            #expect(sites[i].inbox.isEmpty)
        }
        let reference = sites[0].replica
        for s in sites.dropFirst() {
            #expect(s.replica.vector == reference.vector, "seed \(seed)")
            #expect(s.replica.schemas == reference.schemas, "seed \(seed)")
            #expect(s.replica.rows(of: "t") == reference.rows(of: "t"), "seed \(seed)")
        }
    }

    @Test func concurrentDeleteBeatsUpdate() throws {
        var a = SimSite(1, wall: 100)
        var b = SimSite(2, wall: 100)
        let def = try a.write([.defineTable(TableDef(name: "t", primaryKey: "id", columns: [ColumnDef(name: "v", type: .integer)]))])
        var put = PutRows(table: "t", columns: ["v"])
        put.append(key: "r", length: 1, values: [.integer(1)])
        let insert = try a.write([.put(put)])
        b.receive(def)
        b.receive(insert)
        // a deletes while b, later by the clock, updates.
        var del = DeleteRows(table: "t")
        del.append(key: "r", length: 2)
        let d = try a.write([.delete(del)])
        b.wall = 10_000
        var upd = PutRows(table: "t", columns: ["v"])
        upd.append(key: "r", length: 1, values: [.integer(2)])
        let u = try b.write([.put(upd)])
        a.receive(u)
        b.receive(d)
        #expect(a.replica.rows(of: "t").isEmpty)
        #expect(b.replica.rows(of: "t").isEmpty)
    }

    @Test func reinsertStartsACleanRow() throws {
        var a = SimSite(1, wall: 100)
        let cols = [ColumnDef(name: "v", type: .integer), ColumnDef(name: "w", type: .text, notNull: true, defaultValue: .text("none"))]
        _ = try a.write([.defineTable(TableDef(name: "t", primaryKey: "id", columns: cols))])
        var put = PutRows(table: "t", columns: ["v", "w"])
        put.append(key: "r", length: 1, values: [.integer(1), .text("old")])
        _ = try a.write([.put(put)])
        var del = DeleteRows(table: "t")
        del.append(key: "r", length: 2)
        _ = try a.write([.delete(del)])
        var again = PutRows(table: "t", columns: ["v"])
        again.append(key: "r", length: 3, values: [.integer(5)])
        _ = try a.write([.put(again)])
        #expect(a.replica.rows(of: "t") == ["r": ["v": .integer(5), "w": .text("none")]])
    }

    @Test func concurrentTableDefinitionsMergeToTheUnion() throws {
        var a = SimSite(1, wall: 100)
        var b = SimSite(2, wall: 100)
        let ca = try a.write([.defineTable(TableDef(name: "t", primaryKey: "id", columns: [ColumnDef(name: "x", type: .integer)]))])
        let cb = try b.write([
            .defineTable(TableDef(name: "t", primaryKey: "id", columns: [ColumnDef(name: "y", type: .text), ColumnDef(name: "x", type: .real)]))
        ])
        a.receive(cb)
        b.receive(ca)
        #expect(a.replica.schemas == b.replica.schemas)
        #expect(Set(a.replica.schemas["t"]!.columns.keys) == ["x", "y"])
        #expect(a.replica.schemas["t"]!.orderedColumns.map(\.name) == b.replica.schemas["t"]!.orderedColumns.map(\.name))
    }
    /// Merging another replica's merged schema is merging every definition
    /// it merged (`TableSchema.merge(_:)`, what a snapshot brings): random
    /// definitions split between two replicas, each merged in a random
    /// order, give by state the schema all of them give by definition.
    @Test(arguments: 0..<200)
    func aMergedSchemaTakesAnotherAsItsDefinitionsWould(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        // Keys never named like a column: a key taking a column's name
        // drops it, which even definitions merge in an order that matters.
        let names = ["a", "b", "c", "d"]
        var stamps = Set<SchemaStamp>()
        while stamps.count < Int.random(in: 1...8, using: &rng) {
            stamps.insert(
                SchemaStamp(
                    hlc: HLC(rawValue: UInt64.random(in: 1...6, using: &rng)),
                    site: try SiteID(bytes: [UInt8](repeating: UInt8.random(in: 1...3, using: &rng), count: 32))))
        }
        let defs: [(TableDef, SchemaStamp)] = stamps.sorted().map { stamp in
            let key = Int.random(in: 0..<4, using: &rng) == 0 ? "key" : "id"
            let columns = names.shuffled(using: &rng).prefix(Int.random(in: 0...4, using: &rng)).map {
                ColumnDef(name: $0, type: ColumnType.allCases.randomElement(using: &rng)!)
            }
            return (TableDef(name: "t", primaryKey: key, columns: Array(columns)), stamp)
        }
        func merged(_ some: [(TableDef, SchemaStamp)]) -> TableSchema? {
            var schema: TableSchema?
            for (def, stamp) in some.shuffled(using: &rng) {
                if schema == nil { schema = TableSchema(def, stamp: stamp) } else { schema!.merge(def, stamp: stamp) }
            }
            return schema
        }
        guard let all = merged(defs) else { return }
        let split = Int.random(in: 0...defs.count, using: &rng)
        let (left, right) = (merged(Array(defs[..<split])), merged(Array(defs[split...])))
        var state = left ?? right!
        if let left, let right { state = left; state.merge(right) }
        #expect(state == all, "seed \(seed)")
        #expect(state.orderedColumns == all.orderedColumns, "seed \(seed)")
    }
}
