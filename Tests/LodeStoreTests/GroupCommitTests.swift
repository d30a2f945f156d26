import LodeCore
import LodeStore
import LodeTestSupport
import Synchronization
import Testing

/// Group commit in the stores: batches that wait while a
/// transaction runs are applied together in the next one, each with its
/// own outcome; a group that fails is retried batch by batch, unless the
/// database is unavailable.
@Suite struct GroupCommitTests {
    /// `n` commits of one site (a table's definition, then one-row
    /// writes), to pass around.
    func commits(_ n: Int) async throws -> [Commit] {
        let author = ReferenceStore(dataset: "d", local: site(3, "author"))
        _ = try await author.alter(conformanceSchema)
        for i in 0..<(n - 1) { _ = try await author.write([.put(table: "mines", pk: "m\(i)", columns: ["name"], values: [.text("x")])]) }
        return try await author.commits(missingFrom: VersionVector(), limit: 1000)
    }

    /// Runs `batches` through one queue while its first transaction is held
    /// until every other batch waits; returns each batch's outcome (or
    /// error) and the size of every group `apply` was called with.
    func run(
        _ batches: [[Commit]], failing: @escaping @Sendable ([[Commit]]) -> StoreError?
    ) async throws -> (results: [Result<[Commit], StoreError>], groups: [Int]) {
        let queue = GroupCommit()
        let groups = Mutex<[Int]>([])
        let apply: GroupCommit.Apply = { group in
            let first = groups.withLock { g in
                g.append(group.count)
                return g.count == 1
            }
            if first { while queue.waiting < batches.count - 1 { try await Task.sleep(for: .milliseconds(1)) } }
            if let e = failing(group) { throw e }
            return group.map { b in
                var o = ApplyOutcome()
                o.applied = b
                return o
            }
        }
        let first = Task { try await queue.submit(batches[0], apply: apply) }
        while groups.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(1)) }
        var rest: [Task<ApplyOutcome, any Error>] = []
        for b in batches.dropFirst() { rest.append(Task { try await queue.submit(b, apply: apply) }) }
        var results: [Result<[Commit], StoreError>] = []
        for t in [first] + rest {
            do { results.append(.success(try await t.value.applied)) } catch let e as StoreError { results.append(.failure(e)) }
        }
        return (results, groups.withLock { $0 })
    }

    @Test func batchesThatWaitShareOneTransactionAndKeepTheirOwnOutcomes() async throws {
        let all = try await commits(12)
        let batches = stride(from: 0, to: 12, by: 2).map { Array(all[$0..<$0 + 2]) }
        let (results, groups) = try await run(batches) { _ in nil }
        #expect(groups == [1, 5])
        for (r, b) in zip(results, batches) { #expect(try r.get().map(\.hash) == b.map(\.hash)) }
    }

    @Test func aGroupThatFailsIsRetriedBatchByBatchSoOnlyTheBadOneFails() async throws {
        let all = try await commits(4)
        let batches = all.map { [$0] }
        let poison = all[2].hash
        let (results, groups) = try await run(batches) { group in
            group.contains { $0.contains { $0.hash == poison } } ? StoreError(.storage, "cannot store") : nil
        }
        #expect(groups == [1, 3, 1, 1, 1])
        #expect(try results[0].get().count == 1 && results[1].get().count == 1 && results[3].get().count == 1)
        guard case .failure(let e) = results[2] else { throw StoreError(.storage, "the bad batch was applied") }
        #expect(e.code == .storage)
    }

    @Test func whenTheDatabaseIsUnavailableTheWholeGroupFailsAtOnce() async throws {
        let all = try await commits(4)
        let (results, groups) = try await run(all.map { [$0] }) { group in
            group.count > 1 ? StoreError(.unavailable, "PostgreSQL is down") : nil
        }
        #expect(groups == [1, 3])
        #expect(results.dropFirst().allSatisfy { if case .failure(let e) = $0 { e.code == .unavailable } else { false } })
    }
}
