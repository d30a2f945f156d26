import Foundation

/// Carries byte chunks from a producer on a blocking thread (a SQLite read)
/// to an async consumer (an HTTP response), with backpressure: the producer
/// waits while `capacity` chunks are queued, so a slow client never makes
/// the node hold a large result in memory. Cancelling wakes the producer,
/// whose next `send` throws.
final class ChunkPipe: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [[UInt8]] = []
    private var done = false
    private var failure: (any Error)?
    private var cancelled = false
    private var waiter: CheckedContinuation<[UInt8]?, any Error>?
    private let capacity: Int

    init(capacity: Int = 8) { self.capacity = capacity }

    /// Hands a chunk to the consumer, waiting while the queue is full.
    func send(_ chunk: [UInt8]) throws {
        guard !chunk.isEmpty else { return }
        condition.lock()
        while queue.count >= capacity && !cancelled { condition.wait() }
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
}
