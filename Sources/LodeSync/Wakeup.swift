import Synchronization

/// A one-slot signal: `wait(for:)` returns when signalled or when the time
/// is up, whichever comes first. Signals that arrive while nobody waits are
/// remembered once.
final class Wakeup: Sendable {
    private struct State {
        var signalled = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    /// Wakes the waiter (or the next one).
    func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.signalled = true
            return nil
        }
        waiter?.resume()
    }

    /// Waits until signalled or `duration` has passed (or the task is cancelled).
    func wait(for duration: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: duration)
                self.signal()
            }
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = self.state.withLock { s -> Bool in
                        if s.signalled {
                            s.signalled = false
                            return true
                        }
                        s.waiter = c
                        return false
                    }
                    if now { c.resume() }
                }
            }
            await group.next()
            group.cancelAll()
        }
        state.withLock { $0.signalled = false }
    }
}
