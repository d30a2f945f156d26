import Synchronization

/// A signal several tasks may wait on: `wait(for:)` returns when signalled
/// or when the time is up, whichever comes first. A signal wakes every
/// task waiting; one that arrives while nobody waits is remembered once.
final class Wakeup: Sendable {
    private struct State {
        var signalled = false
        /// Each waiting task's continuation, by the number of its wait.
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        /// Waits whose time ran out before they had registered.
        var expired: Set<UInt64> = []
        var nextWait: UInt64 = 0
    }
    private let state = Mutex(State())

    /// How many tasks wait now.
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Wakes every task waiting (or, if none, the next to wait).
    func signal() {
        let waiting = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            if s.waiters.isEmpty {
                s.signalled = true
                return []
            }
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiting { w.resume() }
    }

    /// Waits until signalled or `duration` has passed (or the task is cancelled).
    func wait(for duration: Duration) async {
        let id = state.withLock { s -> UInt64 in
            s.nextWait += 1
            return s.nextWait
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(for: duration)
                self.end(id)
            }
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = self.state.withLock { s -> Bool in
                        if s.expired.remove(id) != nil { return true }
                        if s.signalled {
                            s.signalled = false
                            return true
                        }
                        s.waiters[id] = c
                        return false
                    }
                    if now { c.resume() }
                }
            }
            await group.next()
            group.cancelAll()
        }
        state.withLock {
            $0.signalled = false
            $0.expired.remove(id)
        }
    }

    /// Ends wait `id`: resumes it if it waits, or marks it so that it does not.
    private func end(_ id: UInt64) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let w = s.waiters.removeValue(forKey: id) { return w }
            s.expired.insert(id)
            return nil
        }
        waiter?.resume()
    }
}
