import Crypto
import Foundation
import LodeCore
import LodeProtocol
import LodeStore
import NIOCore
import NIOPosix
import NIOSSL
import Testing

@testable import LodeNode
@testable import LodeSync

/// A peer with a valid certificate that misbehaves: it speaks the protocol
/// by hand over real mutual TLS and sends whatever the test wants.
final class HandRolledPeer: @unchecked Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let site: LocalSite
    private var iterator: NIOAsyncChannelInboundStream<SyncInbound>.AsyncIterator

    init(inbound: NIOAsyncChannelInboundStream<SyncInbound>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, site: LocalSite) {
        self.outbound = outbound
        self.site = site
        iterator = inbound.makeAsyncIterator()
    }

    /// Connects as a new site `name` of `role`, says Hello (claiming `claim`
    /// if given) and its certificate, runs `body`, then hangs up.
    static func session(
        to target: TestNode, name: String, role: Role, caDir: String, root: String, claim: SiteID? = nil,
        _ body: (HandRolledPeer) async throws -> Void
    ) async throws {
        let dir = root + "/" + name
        try Node.initialize(dataDir: dir, site: name, role: role, caDir: caDir)
        let node = try Node.open(dataDir: dir)
        let context = try node.tls().clientContext()
        let (channel, handshake) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: target.port) { ch in
                ch.eventLoop.makeCompletedFuture {
                    try SyncEngine.configure(ch, tls: try NIOSSLClientHandler(context: context, serverHostname: nil))
                }
            }
        _ = try await handshake.get()
        try await channel.executeThenClose { inbound, outbound in
            let peer = HandRolledPeer(inbound: inbound, outbound: outbound, site: node.identity.local)
            try await peer.send(.hello(protocolVersion: 1, cluster: node.cluster, site: claim ?? node.identity.local.site, datasets: []))
            try await peer.send(.certificates([node.identity.certificate.der]))
            try await body(peer)
        }
    }

    func send(_ m: SyncMessageV1) async throws {
        try await outbound.write(ByteBuffer(bytes: SyncFrame.encode(.v1(m))))
    }

    func sendRaw(_ bytes: [UInt8]) async throws {
        try await outbound.write(ByteBuffer(bytes: bytes))
    }

    /// Reads messages until one matches, or the connection ends.
    func receive(until match: (SyncMessageV1) -> Bool) async throws -> SyncMessageV1? {
        while let item = try await iterator.next() {
            if case .message(.v1(let m)) = item, match(m) { return m }
        }
        return nil
    }
}

@Suite(.serialized) struct HostilePeerTests {
    let scratch = Scratch()

    func target() async throws -> TestNode {
        let caDir = scratch.file("ca")
        try Identity.createCA(dir: caDir, cluster: "test")
        let n = try TestNode(name: "berlin", role: .editor, caDir: caDir, root: scratch.path)
        try await n.start()
        try await n.node.createDataset("mines", schema: clusterSchema)
        _ = try await n.replica("mines").exec("INSERT INTO mines(id, name) VALUES ('mp', 'Mountain Pass')")
        return n
    }

    @Test func forgedAlteredAndUnauthorizedCommitsAreRejectedAndNothingApplied() async throws {
        let berlin = try await target()
        defer { Task { await berlin.stop() } }
        let before = try await berlin.dump("mines")
        let vectorBefore = try berlin.replica("mines").vector
        let genuine = try await berlin.replica("mines").commits(missingFrom: VersionVector())

        // An editor with a valid certificate…
        try await HandRolledPeer.session(to: berlin, name: "mallory", role: .editor, caDir: scratch.file("ca"), root: scratch.path) { evil in
            // …alters berlin's latest commit (a changed value, the old signature),
            var put = PutRows(table: "mines", columns: ["name"])
            put.append(key: "mp", length: 1, values: [.text("Mallory Pass")])
            var content = genuine.last!.content
            content.ops = [.put(put)]
            var altered = ByteWriter()
            content.encode(into: &altered)
            let alteredBytes = altered.bytes + genuine.last!.signature
            // …forges a commit as berlin, signed with its own key,
            content.seq = genuine.last!.seq + 1
            content.prev = genuine.last!.hash
            var forged = ByteWriter()
            content.encode(into: &forged)
            let forgedBytes = forged.bytes + Array(try Curve25519.Signing.PrivateKey().signature(for: Commit.signedMessage(forged.bytes)))
            try await evil.send(.commits(dataset: "mines", commits: [alteredBytes]))
            let first = try await evil.receive { if case .commitRejected = $0 { true } else { false } }
            guard case .commitRejected(_, _, _, let code1, _)? = first else {
                Issue.record("no rejection for the altered commit: \(String(describing: first))")
                return
            }
            #expect(code1 == .gapInFeed || code1 == .badSignature)
            try await evil.send(.commits(dataset: "mines", commits: [forgedBytes]))
            let second = try await evil.receive { if case .commitRejected = $0 { true } else { false } }
            if case .commitRejected(_, _, _, let code2, _)? = second {
                #expect(code2 == .badSignature)
            } else {
                Issue.record("no rejection for the forged commit")
            }
        }
        #expect(try await berlin.dump("mines") == before)
        #expect(try berlin.replica("mines").vector == vectorBefore)
        #expect(try await berlin.replica("mines").rejectionCount() == 2)
    }

    @Test func aReadersWriteIsRefused() async throws {
        let berlin = try await target()
        defer { Task { await berlin.stop() } }
        let before = try await berlin.dump("mines")
        try await HandRolledPeer.session(to: berlin, name: "rita", role: .reader, caDir: scratch.file("ca"), root: scratch.path) { reader in
            // Wait until berlin has registered the reader's certificate.
            _ = try await reader.receive { if case .hello = $0 { true } else { false } }
            var put = PutRows(table: "mines", columns: ["name"])
            put.append(key: "rd", length: 1, values: [.text("written by a reader")])
            let c = try reader.site.writer.commit(
                dataset: "mines", ops: [.put(put)], hlc: HLC(millis: UInt64(Date().timeIntervalSince1970 * 1000), counter: 0),
                head: .empty, held: berlin.replica("mines").vector)
            try await reader.send(.commits(dataset: "mines", commits: [c.bytes]))
            let r = try await reader.receive { if case .commitRejected = $0 { true } else { false } }
            guard case .commitRejected(_, _, _, let code, let message)? = r else {
                Issue.record("the reader's commit was not refused")
                return
            }
            #expect(code == .notAuthorized, "\(message)")
        }
        #expect(try await berlin.dump("mines") == before)
    }

    @Test func garbageAndOversizedFramesGetATypedRejectionAndTheNodeKeepsServing() async throws {
        let berlin = try await target()
        defer { Task { await berlin.stop() } }
        try await HandRolledPeer.session(to: berlin, name: "g1", role: .editor, caDir: scratch.file("ca"), root: scratch.path) { a in
            try await a.sendRaw([0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3])
            let r1 = try await a.receive { if case .reject = $0 { true } else { false } }
            if case .reject(let code, _)? = r1 { #expect(code == .frameTooLarge) } else { Issue.record("no rejection of an oversized frame") }
        }
        try await HandRolledPeer.session(to: berlin, name: "g2", role: .editor, caDir: scratch.file("ca"), root: scratch.path) { b in
            try await b.sendRaw([0, 0, 0, 3, 1, 250, 0])
            let r2 = try await b.receive { if case .reject = $0 { true } else { false } }
            if case .reject(let code, _)? = r2 { #expect(code == .malformed) } else { Issue.record("no rejection of a garbage frame") }
        }
        // A Hello that names another site than the certificate.
        try await HandRolledPeer.session(
            to: berlin, name: "g3", role: .editor, caDir: scratch.file("ca"), root: scratch.path, claim: berlin.node.identity.local.site
        ) { c in
            let r3 = try await c.receive { if case .reject = $0 { true } else { false } }
            if case .reject(let code, _)? = r3 { #expect(code == .siteMismatch) } else { Issue.record("a Hello claiming another site was accepted") }
        }
        // The node still serves its API and other peers.
        #expect(try await berlin.dump("mines").count > 1)
    }
}
