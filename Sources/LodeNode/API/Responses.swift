import Foundation
import Hummingbird
import LodeCore
import LodeProtocol
import LodeStore
import NIOCore

/// A JSON response (keys sorted, so answers are stable).
func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
}

/// A text response.
func text(_ s: String, contentType: String = "text/plain; charset=utf-8") -> Response {
    var headers = HTTPFields()
    headers[.contentType] = contentType
    return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: s)))
}

/// The most bytes a JSON request body may have.
let maxJSONBodyBytes = 2 << 20

extension Request {
    /// Decodes a JSON body; a missing, oversized or malformed one is bad input
    /// naming what is wrong.
    func decodeJSON<T: Decodable>(as type: T.Type) async throws -> T {
        let body = self.body
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: maxJSONBodyBytes)
        } catch {
            throw NodeError(.badInput, "the request body is larger than \(maxJSONBodyBytes >> 20) MiB")
        }
        guard buffer.readableBytes > 0 else { throw NodeError(.badInput, "the request needs a JSON body") }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer.readableBytesView))
        } catch {
            throw NodeError(.badInput, "the request body is not the JSON this endpoint expects: \(UnexpectedError.describe(error))")
        }
    }

    /// The `format` query parameter (default JSON).
    func resultFormat() throws -> ResultFormat {
        guard let f = query("format") else { return .json }
        guard let format = ResultFormat(rawValue: f) else {
            throw NodeError(.badInput, "unknown format \(f): use csv, json or ndjson")
        }
        return format
    }
}

/// Streams rows produced on a database thread. The producer runs until
/// its first chunk (the column names) before the response starts, so
/// that errors such as a bad table name become proper error responses.
func stream(
    _ format: ResultFormat, _ produce: @escaping @Sendable (@escaping @Sendable (QueryEvent) throws -> Void) async throws -> Void
) async throws -> Response {
    let pipe = ChunkPipe()
    let encoder = EncoderBox(format)
    let producer = Task {
        do {
            try await produce { event in
                switch event {
                case .columns(let c): try pipe.send(encoder.columns(c))
                case .row(let r): if let chunk = encoder.row(r) { try pipe.send(chunk) }
                }
            }
            try pipe.send(encoder.finish())
            pipe.finish()
        } catch {
            pipe.finish(error)
        }
    }
    let first: [UInt8]?
    do {
        first = try await pipe.next()
    } catch {
        pipe.cancel()
        _ = await producer.result
        throw error
    }
    var headers = HTTPFields()
    headers[.contentType] = format.contentType
    return Response(
        status: .ok, headers: headers,
        body: ResponseBody { writer in
            do {
                if let first { try await writer.write(ByteBuffer(bytes: first)) }
                while let chunk = try await pipe.next() { try await writer.write(ByteBuffer(bytes: chunk)) }
                try await writer.finish(nil)
            } catch {
                pipe.cancel()
                _ = await producer.result
                throw error
            }
            _ = await producer.result
        })
}

/// A ResultEncoder shared between the producer's callbacks (which run one
/// at a time on the database thread).
final class EncoderBox: @unchecked Sendable {
    private var encoder: ResultEncoder
    init(_ format: ResultFormat) { encoder = ResultEncoder(format) }
    func columns(_ c: [String]) -> [UInt8] { encoder.columns(c) }
    func row(_ r: [Value]) -> [UInt8]? { encoder.row(r) }
    func finish() -> [UInt8] { encoder.finish() }
}

extension Node {
    /// Writes a request body to a new file (0600) in the node's temporary
    /// folder as it arrives, so that no upload is held in memory; returns
    /// its path. An empty body is refused with `empty`.
    func spool(_ body: RequestBody, as ext: String, empty: String) async throws -> String {
        try FileManager.default.createDirectory(atPath: paths.tmp, withIntermediateDirectories: true)
        let spool = paths.tmp + "/upload-\(UUID().uuidString).\(ext)"
        guard FileManager.default.createFile(atPath: spool, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = FileHandle(forWritingAtPath: spool)
        else {
            throw NodeError(.storage, "cannot create a file in \(paths.tmp) for the upload")
        }
        do {
            var bytes = 0
            for try await buffer in body {
                try handle.write(contentsOf: buffer.readableBytesView)
                bytes += buffer.readableBytes
            }
            try handle.close()
            guard bytes > 0 else { throw NodeError(.badInput, empty) }
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: spool)
            throw error
        }
        return spool
    }
}

/// A file as the response body, read a megabyte at a time; with
/// `removeAfter`, the file is removed once sent (or the client went).
func fileResponse(_ path: String, contentType: String, removeAfter: Bool = false) throws -> Response {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw NodeError(.storage, "cannot read \(path)") }
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
    var headers = HTTPFields()
    headers[.contentType] = contentType
    if let size { headers[.contentLength] = String(size) }
    return Response(
        status: .ok, headers: headers,
        body: ResponseBody { writer in
            defer {
                try? handle.close()
                if removeAfter { try? FileManager.default.removeItem(atPath: path) }
            }
            while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                try await writer.write(ByteBuffer(bytes: chunk))
            }
            try await writer.finish(nil)
        })
}
