import Synchronization
import Testing

@testable import LodeSync

/// `Wakeup`, which the engine's waits (`sync --wait`, diallers' backoff) share.
@Suite struct WakeupTests {
    /// Several tasks waiting at once are all woken by one signal. (A second
    /// waiter used to replace the first, whose continuation leaked: that
    /// task never returned, and Swift reported "SWIFT TASK CONTINUATION
    /// MISUSE"; the client-API contract test found it with overlapping
    /// `POST /v1/sync` waits.)
    @Test func everyWaiterWakesAndNoneIsLost() async throws {
        let w = Wakeup()
        let woken = Count()
        // Unstructured tasks, so that a lost waiter fails the test instead of hanging it.
        for _ in 0..<5 {
            Task {
                await w.wait(for: .seconds(600))
                woken.add()
            }
        }
        // Generous: on a loaded 2-core machine the cooperative pool may be
        // busy with other suites for many seconds before these tasks run.
        var deadline = ContinuousClock.now + .seconds(120)
        while w.waiting < 5 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(w.waiting == 5, "\(w.waiting) tasks wait, not 5")
        w.signal()
        deadline = ContinuousClock.now + .seconds(120)
        while woken.value < 5 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(woken.value == 5, "the signal woke only some of the waiters")
    }

    final class Count: Sendable {
        private let n = Mutex(0)
        func add() { n.withLock { $0 += 1 } }
        var value: Int { n.withLock { $0 } }
    }

    @Test func aWaitEndsAtItsTimeAndASignalWithNobodyWaitingIsKeptOnce() async {
        let w = Wakeup()
        var start = ContinuousClock.now
        await w.wait(for: .milliseconds(50))
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        w.signal()
        start = .now
        await w.wait(for: .seconds(30))  // the remembered signal
        // Well short of the 30 s a forgotten signal would wait (10 s was
        // too tight on a loaded 2-core machine: 10.9 s in CI).
        #expect(ContinuousClock.now - start < .seconds(25))
        start = .now
        await w.wait(for: .milliseconds(50))  // remembered once only
        #expect(ContinuousClock.now - start >= .milliseconds(50))
    }
}
