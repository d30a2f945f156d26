import Foundation

/// What a link does to the bytes it carries, both ways: read from a mode
/// file the proxy polls, so that a schedule changes it while connections
/// run. One line: `normal`, `latency MS JITTER_MS`, `rate BYTES_PER_S`,
/// `stall BYTES` (forward that many more bytes, then nothing, holding the
/// connection open), `drip MS` (one byte every MS), or `reset` (every
/// connection is reset: RST, at once and on arrival).
enum LinkMode: Equatable, CustomStringConvertible {
    case normal
    case latency(ms: Int, jitter: Int)
    case rate(bytesPerSecond: Int)
    case stall(after: Int)
    case drip(ms: Int)
    case reset

    init?(_ line: String) {
        let w = line.split(separator: " ").map(String.init)
        let n = w.dropFirst().compactMap { Int($0) }
        switch (w.first, n.count) {
        case ("normal", 0): self = .normal
        case ("latency", 2) where n[0] >= 0 && n[1] >= 0 && n[1] <= n[0]: self = .latency(ms: n[0], jitter: n[1])
        case ("rate", 1) where n[0] > 0: self = .rate(bytesPerSecond: n[0])
        case ("stall", 1) where n[0] >= 0: self = .stall(after: n[0])
        case ("drip", 1) where n[0] > 0: self = .drip(ms: n[0])
        case ("reset", 0): self = .reset
        default: return nil
        }
    }

    var description: String {
        switch self {
        case .normal: "normal"
        case .latency(let ms, let j): "latency \(ms) \(j)"
        case .rate(let r): "rate \(r)"
        case .stall(let n): "stall \(n)"
        case .drip(let ms): "drip \(ms)"
        case .reset: "reset"
        }
    }
}

/// A TCP proxy between two nodes that misbehaves on command (kernel `netem`
/// is not available here): latency and jitter, a bandwidth cap, a stall
/// after N bytes, a one-byte drip, resets. It forwards bytes untouched (TLS
/// passes through), one thread per direction of each connection.
final class FaultProxy: @unchecked Sendable {
    let listen: (host: String, port: UInt16)
    let target: (host: String, port: UInt16)
    let modeFile: String
    private let state = NSLock()
    private var mode = LinkMode.normal
    /// Bumped whenever the mode changes: a stall counts from its own start.
    private var generation = 0
    private var stallLeft = 0
    private var connections: Set<Int32> = []

    init(listen: (String, UInt16), target: (String, UInt16), modeFile: String) {
        self.listen = listen
        self.target = target
        self.modeFile = modeFile
    }

    /// Runs until the process is killed.
    func run() throws -> Never {
        signal(SIGPIPE, SIG_IGN)
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard server >= 0 else { throw Failure("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = try Self.address(listen.host, listen.port)
        let bound = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(server, 64) == 0 else {
            throw Failure("cannot listen on \(listen.host):\(listen.port): \(String(cString: strerror(errno)))")
        }
        Thread.detachNewThread { [self] in watchMode() }
        while true {
            let client = accept(server, nil, nil)
            guard client >= 0 else { continue }
            Thread.detachNewThread { [self] in connect(client) }
        }
    }

    private static func address(_ host: String, _ port: UInt16) throws -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &a.sin_addr) == 1 else { throw Failure("\(host) is not an IPv4 address") }
        return a
    }

    /// Polls the mode file every 100 ms; a reset also resets every open connection.
    private func watchMode() {
        while true {
            let line = ((try? String(contentsOfFile: modeFile, encoding: .utf8)) ?? "normal").trimmingCharacters(in: .whitespacesAndNewlines)
            let next = LinkMode(line) ?? .normal
            let open: [Int32] = state.withLock {
                guard next != mode else { return [] }
                mode = next
                generation += 1
                if case .stall(let n) = next { stallLeft = n }
                return next == .reset ? Array(connections) : []
            }
            for fd in open { Self.reset(fd) }
            usleep(100_000)
        }
    }

    /// Closes with an RST rather than a FIN.
    private static func reset(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        shutdown(fd, Int32(SHUT_RDWR))
    }

    private func connect(_ client: Int32) {
        if state.withLock({ mode == .reset }) {
            Self.reset(client)
            close(client)
            return
        }
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard upstream >= 0, var addr = try? Self.address(target.host, target.port) else {
            close(client)
            return
        }
        let ok = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else {
            close(upstream)
            close(client)
            return
        }
        state.withLock { connections.formUnion([client, upstream]) }
        let done = DispatchGroup()
        for (from, to) in [(client, upstream), (upstream, client)] {
            done.enter()
            Thread.detachNewThread { [self] in
                pump(from, to)
                // One direction ended: end the other too.
                shutdown(from, Int32(SHUT_RDWR))
                shutdown(to, Int32(SHUT_RDWR))
                done.leave()
            }
        }
        done.wait()
        state.withLock {
            connections.remove(client)
            connections.remove(upstream)
        }
        close(client)
        close(upstream)
    }

    /// Copies `from` to `to` under the link's mode until either end closes.
    private func pump(_ from: Int32, _ to: Int32) {
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        var rng = SystemRandomNumberGenerator()
        while true {
            // A stalled link reads nothing (TCP pushes back on the sender) and sends nothing.
            if state.withLock({ if case .stall = mode { stallLeft <= 0 } else { false } }) {
                usleep(50_000)
                continue
            }
            var p = pollfd(fd: from, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) >= 0 else { return }
            if p.revents == 0 { continue }
            let n = read(from, &buffer, buffer.count)
            guard n > 0 else { return }
            var sent = 0
            while sent < n {
                let current = state.withLock { mode }
                var piece = n - sent
                switch current {
                case .normal: break
                case .reset: return
                case .latency(let ms, let jitter):
                    usleep(UInt32(max(0, ms + Int.random(in: -jitter...jitter, using: &rng)) * 1000))
                case .rate(let r):
                    piece = min(piece, max(1, r / 20))
                    usleep(UInt32(Double(piece) / Double(r) * 1_000_000))
                case .stall:
                    let allowed = state.withLock {
                        let a = min(piece, stallLeft)
                        stallLeft -= a
                        return a
                    }
                    if allowed == 0 {
                        usleep(50_000)
                        continue
                    }
                    piece = allowed
                case .drip(let ms):
                    piece = 1
                    usleep(UInt32(ms * 1000))
                }
                let w = buffer.withUnsafeBytes { b in write(to, b.baseAddress! + sent, piece) }
                guard w > 0 else { return }
                sent += w
            }
        }
    }
}
