import Foundation
import LodeCore
import LodeProtocol
import LodeStore
import LodeTestSupport
import Testing

@testable import LodeNode
@testable import LodeSync

/// Snapshots over sync from a peer with a valid certificate that may lie
/// (DESIGN §9, §12), over real mutual TLS: a node that holds nothing of a
/// dataset takes a peer's snapshot only within its bounds, and keeps
/// nothing of one that does not check out (altered rows, another dataset,
/// too few signatures for its quorum); one that checks out starts the
/// dataset, equal to the source, and the node says what it holds.
@Suite(.serialized) struct SnapshotTransferTests {
    let scratch = TempDir("lode-snapshot")

    /// Offers `file` as a snapshot of `dataset` (with `claimed` as its size
    /// when given) and sends it if asked; returns the answers and, when
    /// the node took it, the vector it then announced (once it is `wanted`:
    /// the node announces the checkpoint's vector first, then that of the
    /// commits after it).
    func offer(
        _ file: String, as dataset: String = "mines", claimed: UInt64? = nil, to target: TestNode, from peer: String = "mallory",
        until wanted: VersionVector? = nil
    ) async throws -> (answers: [SyncMessageV1], announced: VersionVector?) {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        var answers: [SyncMessageV1] = []
        var announced: VersionVector?
        try await HandRolledPeer.session(to: target, name: peer, role: .editor, caDir: scratch.file("ca"), root: scratch.path) { evil in
            _ = try await evil.receive { if case .hello = $0 { true } else { false } }
            try await evil.send(.snapshotOffer(dataset: dataset, vector: VersionVector(), bytes: claimed ?? UInt64(bytes.count)))
            guard let first = try await evil.receive(until: { if case .snapshotAnswer = $0 { true } else { false } }) else { return }
            answers.append(first)
            guard case .snapshotAnswer(_, true, _) = first else { return }
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + SyncFrame.maxSnapshotChunkBytes, bytes.count)
                try await evil.send(
                    .snapshotChunk(dataset: dataset, offset: UInt64(offset), total: UInt64(bytes.count), bytes: Array(bytes[offset..<end])))
                let ack = try await evil.receive { if case .snapshotAck = $0 { true } else { false } }
                #expect(ack == .snapshotAck(dataset: dataset, received: UInt64(end)))
                offset = end
            }
            // Then either a refusal, or (installed) the node's vector of it.
            let outcome = try await evil.receive { m in
                switch m {
                case .snapshotAnswer: true
                case .vector(let name, let v): name == dataset && (wanted.map { v == $0 } ?? !v.isEmpty)
                default: false
                }
            }
            switch outcome {
            case .vector(_, let v)?: announced = v
            case let answer?: answers.append(answer)
            case nil: break
            }
        }
        return (answers, announced)
    }

    func refusal(_ answers: [SyncMessageV1]) -> String? {
        guard case .snapshotAnswer(_, false, let message)? = answers.last else { return nil }
        return message
    }

    func leftovers(_ node: TestNode) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: node.dir + "/tmp")) ?? []).filter { $0.hasPrefix("snapshot-") }
    }

    @Test func aSnapshotIsTakenOnlyIfItChecksOut() async throws {
        let caDir = scratch.file("ca")
        try Identity.createCA(dir: caDir, cluster: "test")
        // The source signs a checkpoint alone (quorum 1), compacts to it,
        // writes on, and backs up: a snapshot with commits after it.
        let source = try TestNode(name: "source", role: .editor, caDir: caDir, root: scratch.path)
        try await source.start()
        defer { Task { await source.stop() } }
        try source.node.setSetting(Node.checkpointQuorumSetting, "1")
        try await source.node.createDataset("mines", schema: clusterSchema)
        let r = try source.replica("mines")
        for i in 0..<50 { _ = try await r.exec("INSERT INTO mines(id, name) VALUES ('m\(i)', 'Mine \(i)')") }
        _ = try await r.exec("UPDATE mines SET name = 'Mountain Pass' WHERE id = 'm0'")
        _ = try await source.node.signCheckpoint(r)
        _ = try await source.node.compact(r, keepHistory: 0)
        _ = try await r.exec("INSERT INTO mines(id, name) VALUES ('late', 'After the checkpoint')")
        let file = scratch.file("snapshot.db")
        try await source.node.backup("mines", to: file)

        let target = try TestNode(name: "target", role: .editor, caDir: caDir, root: scratch.path)
        try await target.start()
        defer { Task { await target.stop() } }
        // Too large for its bound: declined before a byte is sent.
        var got = try await offer(file, claimed: 1 << 40, to: target)
        #expect(got.answers.count == 1 && refusal(got.answers)?.contains("over the 64 GiB") == true, "\(got.answers)")
        // It wants two signatures; the checkpoint has one.
        got = try await offer(file, to: target)
        #expect(refusal(got.answers)?.contains("no checkpoint with the 2 signatures") == true, "\(got.answers)")
        try target.node.setSetting(Node.checkpointQuorumSetting, "1")
        // A peer whose snapshot was refused on what it holds is not asked
        // for it again at that vector (for half an hour): it would fail the same way.
        got = try await offer(file, to: target)
        #expect(got.answers.count == 1 && refusal(got.answers)?.contains("refused this peer's snapshot of mines") == true, "\(got.answers)")
        // Rows altered after signing: the digest differs.
        let altered = scratch.file("altered.db")
        try await alteredCopy(of: file, to: altered, forgedRows("mines", set: "name = 'forged'"))
        got = try await offer(altered, to: target, from: "mallory-rows")
        #expect(refusal(got.answers)?.contains("digest") == true, "\(got.answers)")
        // Another dataset's file, offered as this one.
        got = try await offer(file, as: "other", to: target, from: "mallory-other")
        #expect(refusal(got.answers)?.contains("holds dataset mines") == true, "\(got.answers)")
        // Not a database at all.
        let junk = scratch.write("junk.db", String(repeating: "not sqlite ", count: 1000))
        got = try await offer(junk, to: target, from: "mallory-junk")
        #expect(refusal(got.answers) != nil, "\(got.answers)")
        // Nothing of any of them was kept.
        #expect(target.node.datasetNames().isEmpty)
        #expect(leftovers(target).isEmpty, "\(leftovers(target))")
        // The real one, from a peer none of that came from: the node starts
        // the dataset from it and says what it holds.
        got = try await offer(file, to: target, from: "honest", until: r.vector)
        #expect(got.answers == [.snapshotAnswer(dataset: "mines", accept: true, message: "")])
        #expect(got.announced == r.vector, "\(String(describing: got.announced)) vs \(r.vector)")
        #expect(try await target.dump("mines") == source.dump("mines"))
        // Its file goes once the install returns (just after the announcement).
        for _ in 0..<50 where !leftovers(target).isEmpty { try await Task.sleep(for: .milliseconds(100)) }
        #expect(leftovers(target).isEmpty)
        // Held now: another offer of what it holds is declined at once.
        got = try await offer(file, to: target, from: "honest")
        #expect(refusal(got.answers)?.contains("holds every commit of mines the snapshot covers") == true, "\(got.answers)")
    }
}
