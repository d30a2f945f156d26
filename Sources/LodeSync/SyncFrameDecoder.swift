import LodeCore
import LodeProtocol
import NIOCore

/// Splits a byte stream into sync frames (`Protocol/sync-protocol.md`,
/// "Frames") and decodes each into a message. An oversized length is
/// refused from the frame's header alone, before its body is buffered.
///
/// One decoder serves everywhere: the connection pipeline runs it in a
/// `ByteToMessageHandler`; tests and the fuzzer feed it bytes through
/// `SyncFrameSplitter`, cut however they like.
///
/// ```swift
/// try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(SyncFrameDecoder()))
/// ```
public struct SyncFrameDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = SyncMessage

    /// The largest frame accepted.
    public let maxFrameBytes: Int

    /// Why the stream cannot be decoded; nothing after it is read.
    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        /// A frame's length is over the limit.
        case frameTooLarge(Int)
        /// A frame does not decode.
        case malformed(BinaryDecodingError)

        /// The rejection a peer is sent for it.
        public var code: RejectCode {
            switch self {
            case .frameTooLarge: .frameTooLarge
            case .malformed: .malformed
            }
        }

        public var description: String {
            switch self {
            case .frameTooLarge(let n): "a frame of \(n) bytes exceeds the limit"
            case .malformed(let e): "malformed frame: \(e)"
            }
        }
    }

    /// Creates a decoder refusing frames over `maxFrameBytes`.
    public init(maxFrameBytes: Int = SyncFrame.maxFrameBytes) { self.maxFrameBytes = maxFrameBytes }

    public mutating func decode(buffer: inout ByteBuffer) throws -> SyncMessage? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard Int(length) <= maxFrameBytes else { throw Failure.frameTooLarge(Int(length)) }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let result: Result<SyncMessage, BinaryDecodingError> = buffer.readWithUnsafeReadableBytes { raw in
            let body = UnsafeRawBufferPointer(rebasing: raw[0..<Int(length)])
            do throws(BinaryDecodingError) {
                return (Int(length), .success(try SyncFrame.decode(body: body)))
            } catch {
                return (Int(length), .failure(error))
            }
        }
        switch result {
        case .success(let m): return m
        case .failure(let e): throw Failure.malformed(e)
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> SyncMessage? {
        try decode(buffer: &buffer)
    }
}

/// Feeds bytes, cut however they arrive, to a `SyncFrameDecoder` outside a
/// channel pipeline (NIO's `NIOSingleStepByteToMessageProcessor`), and
/// returns the messages completed.
///
/// ```swift
/// let splitter = SyncFrameSplitter()
/// let messages = try splitter.feed(bytes)
/// ```
public final class SyncFrameSplitter {
    private let processor: NIOSingleStepByteToMessageProcessor<SyncFrameDecoder>

    /// A splitter refusing frames over `maxFrameBytes`.
    public init(maxFrameBytes: Int = SyncFrame.maxFrameBytes) {
        processor = NIOSingleStepByteToMessageProcessor(SyncFrameDecoder(maxFrameBytes: maxFrameBytes))
    }

    /// Appends bytes and returns every complete message.
    public func feed(_ bytes: some Collection<UInt8>) throws(SyncFrameDecoder.Failure) -> [SyncMessage] {
        var out: [SyncMessage] = []
        do {
            try processor.process(buffer: ByteBuffer(bytes: bytes)) { out.append($0) }
        } catch let e as SyncFrameDecoder.Failure {
            throw e
        } catch {
            // The decoder throws nothing else; the processor adds no error of its own without a size limit.
            preconditionFailure("unexpected error from the frame decoder: \(error)")
        }
        return out
    }

    /// Bytes received but not yet part of a complete frame.
    public var pendingBytes: Int { processor.unprocessedBytes }
}
