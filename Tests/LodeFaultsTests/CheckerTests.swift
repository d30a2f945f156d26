import Testing

@testable import lode_faults

/// The fault test is only as good as its checker: it must catch each kind
/// of lost or invented write, and pass every history that is allowed.
struct CheckerTests {
    let history: [ClientOp] = [
        ClientOp(client: "c", kind: .insert, key: "c-1", value: "1", acked: true),
        ClientOp(client: "c", kind: .insert, key: "c-2", value: "2", acked: true),
        ClientOp(client: "c", kind: .insert, key: "c-3", value: "3", acked: false),
        ClientOp(client: "c", kind: .delete, key: "c-2", value: "", acked: true),
        ClientOp(client: "c", kind: .register, key: "c", value: "5", acked: true),
        ClientOp(client: "c", kind: .register, key: "c", value: "6", acked: false),
        ClientOp(client: "c", kind: .contested, key: "s0", value: "c:7", acked: true),
        ClientOp(client: "d", kind: .contested, key: "s0", value: "d:1", acked: false),
    ]

    @Test func anAllowedOutcomePasses() {
        // c-3 was never acknowledged: present or not is fine; the register may
        // hold the unacknowledged later value; s0 any written value.
        for extra in [[:], ["c-3": "3"]] as [[String: String]] {
            for reg in ["5", "6"] {
                for s0 in ["c:7", "d:1", "init"] {
                    let items = ["c-1": "1"].merging(extra) { a, _ in a }
                    #expect(checkHistory(ops: history, items: items, regs: ["c": reg], shared: ["s0": s0]).isEmpty)
                }
            }
        }
    }

    @Test func everyKindOfAnomalyIsCaught() {
        func problems(items: [String: String] = ["c-1": "1"], reg: String = "5", s0: String = "c:7") -> [String] {
            checkHistory(ops: history, items: items, regs: ["c": reg], shared: ["s0": s0])
        }
        #expect(problems(items: [:]).contains { $0.contains("lost write") && $0.contains("c-1") })
        #expect(problems(items: ["c-1": "1", "c-2": "2"]).contains { $0.contains("delete of c-2") })
        #expect(problems(items: ["c-1": "9"]).contains { $0.contains("holds 9") })
        #expect(problems(items: ["c-1": "1", "x-1": "1"]).contains { $0.contains("never written") })
        #expect(problems(reg: "4").contains { $0.contains("no one wrote") })
        #expect(problems(reg: "0").contains { $0.contains("lost write: register") })
        #expect(problems(s0: "e:1").contains { $0.contains("contested cell s0") })
    }

    @Test func schedulesAreReproducibleAndNeverOverlapOnANode() {
        let nodes = ["n1", "n2", "n3", "n4", "n5"]
        for seed in UInt64(0)..<50 {
            let a = Fault.schedule(seed: seed, seconds: 60, nodes: nodes, relays: ["n1", "n2"])
            let b = Fault.schedule(seed: seed, seconds: 60, nodes: nodes, relays: ["n1", "n2"])
            #expect(a.map(\.description) == b.map(\.description))
            #expect(!a.isEmpty)
            for (i, f) in a.enumerated() {
                #expect(f.at + f.duration <= 60)
                if case .cut(let x, let y) = f.kind { #expect(x == "n1" || x == "n2" || y == "n1" || y == "n2") }
                for g in a[(i + 1)...] where !Set(f.nodes).isDisjoint(with: g.nodes) {
                    #expect(g.at >= f.at + f.duration, "seed \(seed): \(f) overlaps \(g)")
                }
            }
        }
    }
}
