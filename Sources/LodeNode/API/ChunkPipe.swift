import Foundation

/// Carries byte chunks from a producer on a blocking thread (a SQLite read)
/// to an async consumer (an HTTP response), with backpressure: the producer
/// waits while `capacity` chunks are queued, so a slow client never makes
/// the node hold a large result in memory. Cancelling wakes the producer,
/// whose next `send` throws. A consumer that takes nothing for `stallLimit`
/// seconds (a client that stopped reading but keeps its connection open)
/// fails the producer too, so that it cannot hold a database reader, and
/// with it the WAL's checkpoints, for ever.
final class ChunkPipe: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [[UInt8]] = []
    private var done = false
    private var failure: (any Error)?
    private var cancelled = false
    private var waiter: CheckedContinuation<[UInt8]?, any Error>?
    private let capacity: Int
    private let stallLimit: TimeInterval

    init(capacity: Int = 8, stallLimit: TimeInterval = 60) {
        self.capacity = capacity
        self.stallLimit = stallLimit
    }

    /// Hands a chunk to the consumer, waiting while the queue is full.
    func send(_ chunk: [UInt8]) throws {
        guard !chunk.isEmpty else { return }
        condition.lock()
        let deadline = Date(timeIntervalSinceNow: stallLimit)
        while queue.count >= capacity && !cancelled {
            if !condition.wait(until: deadline) && queue.count >= capacity {
                cancelled = true
                condition.unlock()
                throw ChunkPipe.Stalled(seconds: stallLimit)
            }
        }
        if cancelled {
            condition.unlock()
            throw CancellationError()
        }
        if let w = waiter {
            waiter = nil
            condition.unlock()
            w.resume(returning: chunk)
            return
        }
        queue.append(chunk)
        condition.unlock()
    }

    /// Ends the stream, with an error if the producer failed.
    func finish(_ error: (any Error)? = nil) {
        condition.lock()
        done = true
        failure = error
        if let w = waiter {
            waiter = nil
            condition.unlock()
            if let error { w.resume(throwing: error) } else { w.resume(returning: nil) }
            return
        }
        condition.unlock()
    }

    /// The next chunk, or nil at the end.
    func next() async throws -> [UInt8]? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<[UInt8]?, any Error>) in
            condition.lock()
            if !queue.isEmpty {
                let chunk = queue.removeFirst()
                condition.signal()
                condition.unlock()
                c.resume(returning: chunk)
            } else if done {
                let error = failure
                condition.unlock()
                if let error { c.resume(throwing: error) } else { c.resume(returning: nil) }
            } else {
                waiter = c
                condition.unlock()
            }
        }
    }

    /// Stops the producer (the consumer went away).
    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }

    /// The consumer took nothing for `seconds`.
    struct Stalled: Error, CustomStringConvertible {
        let seconds: TimeInterval
        var description: String { "the client read nothing for \(String(format: "%g", seconds)) seconds; the result was abandoned" }
    }
}
