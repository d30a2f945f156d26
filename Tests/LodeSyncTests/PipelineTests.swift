import LodeCore
import LodeProtocol
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import LodeSync

/// The frame decoder as the connection pipeline runs it, and the small
/// types sessions report with.
@Suite struct PipelineTests {
    let a = try! SiteID(bytes: [UInt8](repeating: 1, count: 32))
    let b = try! SiteID(bytes: [UInt8](repeating: 2, count: 32))

    /// NIO's verifier feeds the decoder every way a stream can be cut
    /// (whole, byte by byte, in random pieces, with data left at the end).
    @Test func theDecoderPassesNIOsVerifier() throws {
        let messages: [SyncMessage] = [
            .v1(.ping(1)),
            .v1(.vector(dataset: "d", vector: VersionVector([a: 3, b: 9]))),
            .v1(.commits(dataset: "d", commits: [[UInt8](repeating: 7, count: 300), [1, 2, 3]])),
            .v1(.reject(code: .forkedFeed, message: "two commits with one seq")),
        ]
        let pairs = messages.map { (ByteBuffer(bytes: SyncFrame.encode($0)), [$0]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { SyncFrameDecoder() }
    }

    /// In a channel, an oversized frame is refused from its header alone,
    /// and the error names the rejection the peer is sent.
    @Test func inAChannelABadFrameEndsTheStreamWithItsRejection() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(SyncFrameDecoder(maxFrameBytes: 64)))
        try channel.writeInbound(ByteBuffer(bytes: SyncFrame.encode(.v1(.ping(5)))))
        #expect(try channel.readInbound(as: SyncMessage.self) == .v1(.ping(5)))
        do {
            try channel.writeInbound(ByteBuffer(bytes: [0, 0, 1, 0]))
            Issue.record("a 256-byte frame passed a 64-byte limit")
        } catch let e as SyncFrameDecoder.Failure {
            #expect(e == .frameTooLarge(256) && e.code == .frameTooLarge)
        }
        let garbage = EmbeddedChannel(handler: ByteToMessageHandler(SyncFrameDecoder()))
        do {
            try garbage.writeInbound(ByteBuffer(bytes: [0, 0, 0, 2, 1, 99]))
            Issue.record("an unknown message type decoded")
        } catch let e as SyncFrameDecoder.Failure {
            #expect(e.code == .malformed)
            guard case .malformed(let detail) = e else { return }
            #expect(detail.rule == .unknownTag)
        }
        _ = try? channel.finish()
        _ = try? garbage.finish()
    }

    @Test func lagCountsWhatEachSideLacksWithoutOverflowing() {
        #expect(Lag(local: VersionVector([a: 5, b: 2]), peer: VersionVector([a: 3, b: 4])) == Lag(ahead: 2, behind: 2))
        #expect(Lag(local: VersionVector(), peer: VersionVector()).isZero)
        // A peer may announce anything: the sum saturates rather than trapping.
        let huge = Lag(local: VersionVector(), peer: VersionVector([a: .max, b: .max]))
        #expect(huge.behind == .max && huge.ahead == 0)
    }

    @Test func peerStatesSayWhenASessionRuns() {
        #expect(PeerState.allCases.filter(\.isConnected) == [.connected, .accepted])
        #expect(PeerState(rawValue: "handshake") == .handshake)
    }
}
