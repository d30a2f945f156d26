import Crypto
import Foundation
import LodeCore
import LodeProtocol
import LodeTestSupport
import Testing
import X509

@testable import LodeNode

@Suite struct IdentityTests {
    let scratch = TempDir("lode-node")

    @Test func siteCertificatesNameTheSiteRoleAndClusterAndChainToTheCA() throws {
        let ca = try Identity.createCA(dir: scratch.file("ca"), cluster: "watch")
        let site = try Node.initialize(dataDir: scratch.file("n"), site: "lab-1", role: .annotator, caDir: scratch.file("ca"))
        #expect(site.name == "lab-1" && site.role == .annotator && site.cluster == "watch")
        #expect(Identity.isIssued(site.certificate, by: ca))
        let node = try Node.open(dataDir: scratch.file("n"))
        #expect(node.identity.local.site == site.site)
        // Another CA's certificate is not issued by ours.
        let other = try Identity.createCA(dir: scratch.file("other"), cluster: "watch")
        #expect(!Identity.isIssued(site.certificate, by: other))
    }

    @Test func aNodeWhoseCertificateIsFromAnotherCAWillNotOpen() throws {
        _ = try Identity.createCA(dir: scratch.file("ca"), cluster: "c")
        _ = try Identity.createCA(dir: scratch.file("ca2"), cluster: "c")
        try Node.initialize(dataDir: scratch.file("n"), site: "s", role: .editor, caDir: scratch.file("ca"))
        try FileManager.default.removeItem(atPath: scratch.file("n/ca.pem"))
        try FileManager.default.copyItem(atPath: scratch.file("ca2/ca.pem"), toPath: scratch.file("n/ca.pem"))
        #expect(throws: NodeError.self) { try Node.open(dataDir: scratch.file("n")) }
    }

    @Test func namesAreChecked() {
        #expect(throws: NodeError.self) { try Identity.createCA(dir: scratch.file("x"), cluster: "Bad Name") }
        _ = try? Identity.createCA(dir: scratch.file("ca"), cluster: "c")
        #expect(throws: NodeError.self) {
            try Node.initialize(dataDir: scratch.file("n"), site: "no spaces", role: .editor, caDir: scratch.file("ca"))
        }
    }

    @Test func configFileSubsetOfTOML() throws {
        let c = try ConfigFile.parse(
            """
            # a node
            data_dir = "/var/lib/lode"   # where
            listen = "0.0.0.0:7443"
            peers = ["relay-1:7443", "10.0.0.9:7443"]
            log_level = "debug"
            """)
        #expect(c == ConfigFile(dataDir: "/var/lib/lode", listen: "0.0.0.0:7443", peers: ["relay-1:7443", "10.0.0.9:7443"], logLevel: "debug"))
        #expect(throws: NodeError.self) { try ConfigFile.parse("lissen = \"x\"") }
        #expect(throws: NodeError.self) { try ConfigFile.parse("listen = 7443") }
        #expect(throws: NodeError.self) { try ConfigFile.parse("peers") }
        #expect(try ConfigFile.parse("max_clock_drift = 90").maxClockDrift == 90)
        for bad in ["\"90\"", "-1", "1.5", "604801"] {
            #expect(throws: NodeError.self) { try ConfigFile.parse("max_clock_drift = \(bad)") }
        }
        let example = try ConfigFile.load(repoRoot + "/deploy/lode.example.toml")
        #expect(example.listen != nil && example.maxClockDrift == 600)
    }

    @Test func peerAddressesAreChecked() throws {
        #expect(try PeerAddress("relay:7443") == PeerAddress("relay:7443"))
        let relay = try PeerAddress("relay:7443")
        #expect(relay.host == "relay" && relay.port == 7443)
        let v6 = try PeerAddress("[::1]:9")
        #expect(v6.host == "::1" && v6.port == 9 && v6.description == "[::1]:9")
        #expect(try PeerAddress("127.0.0.1:0", allowZero: true).port == 0)
        let dir = TempDir("lode-node")
        try Identity.createCA(dir: dir.file("ca"), cluster: "test")
        try Node.initialize(dataDir: dir.file("n"), site: "n", role: .editor, caDir: dir.file("ca"))
        let node = try Node.open(dataDir: dir.file("n"))
        defer { node.close() }
        for bad in ["relay", "relay:", ":7443", "relay:0", "relay:70000", "relay:x"] {
            #expect(throws: PeerAddress.Invalid.self, "\(bad)") { try PeerAddress(bad) }
            #expect(throws: NodeError.self, "\(bad)") { try node.addPeer(bad) }
        }
        #expect(try node.peers().isEmpty)
    }

    @Test func theEmbeddedSeedIsExactlyTheFilesInSeed() throws {
        for (name, bytes) in DevelopmentBootstrap.bundledFiles {
            let onDisk = try Data(contentsOf: URL(fileURLWithPath: repoRoot + "/seed/rare-earths/" + name))
            #expect([UInt8](onDisk) == bytes, "\(name) differs: run scripts/seed.py")
        }
    }
}
