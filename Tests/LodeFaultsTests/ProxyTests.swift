import Foundation
import Testing

@testable import lode_faults

/// The fault proxy does to a link what its mode file says, while
/// connections run: passes bytes untouched, holds them after a stall,
/// lets them go again, resets.
@Suite(.serialized) struct ProxyTests {
    @Test func modesParseAndPrintBack() {
        for line in ["normal", "latency 150 100", "rate 32768", "stall 0", "drip 20", "reset"] {
            #expect(LinkMode(line)?.description == line)
        }
        for bad in ["", "latency 10", "latency 10 20", "rate 0", "drip -1", "stall", "fast"] { #expect(LinkMode(bad) == nil, "\(bad)") }
    }

    @Test func aLinkPassesStallsResumesAndResets() throws {
        let echo = try EchoServer()
        let dir = NSTemporaryDirectory() + "lode-proxy-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let modeFile = dir + "/link.mode"
        func set(_ mode: String) throws {
            try mode.write(toFile: modeFile, atomically: true, encoding: .utf8)
            usleep(300_000)  // the proxy reads the file every 100 ms
        }
        try set("normal")
        let port = UInt16.random(in: 20_000..<40_000)
        let proxy = FaultProxy(listen: ("127.0.0.1", port), target: ("127.0.0.1", echo.port), modeFile: modeFile)
        Thread.detachNewThread { _ = try? proxy.run() }
        usleep(200_000)
        let c = try TCPClient(port: port)
        let payload = [UInt8]((0..<1000).map { UInt8($0 % 251) })
        try c.send(payload)
        #expect(c.receive(upTo: 1000, within: 2) == payload)

        // Stalled after 100 bytes (both ways together): the echo of 1,000 bytes stops short.
        try set("stall 100")
        try c.send(payload)
        let held = c.receive(upTo: 1000, within: 1)
        #expect(held.count <= 100, "\(held.count) bytes passed a link stalled after 100")
        // Back to normal: the rest arrives, in order.
        try set("normal")
        let rest = held + c.receive(upTo: 1000 - held.count, within: 3)
        #expect(rest == payload)

        // A reset ends the connection at once.
        try set("reset")
        #expect(c.receive(upTo: 1, within: 2).isEmpty && c.closed)
    }
}

/// Echoes what each connection sends, on a port of its own.
final class EchoServer: @unchecked Sendable {
    let port: UInt16
    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw Failure("echo server: \(String(cString: strerror(errno)))") }
        port = UInt16(bigEndian: a.sin_port)
        Thread.detachNewThread {
            while true {
                let c = accept(fd, nil, nil)
                guard c >= 0 else { return }
                Thread.detachNewThread {
                    var b = [UInt8](repeating: 0, count: 4096)
                    while true {
                        let n = read(c, &b, b.count)
                        guard n > 0, write(c, b, n) == n else { break }
                    }
                    close(c)
                }
            }
        }
    }
}

/// A blocking client with read timeouts.
final class TCPClient {
    let fd: Int32
    private(set) var closed = false
    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard ok else { throw Failure("connect: \(String(cString: strerror(errno)))") }
    }
    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        guard write(fd, bytes, bytes.count) == bytes.count else { throw Failure("write: \(String(cString: strerror(errno)))") }
    }

    /// Reads until `n` bytes came, the connection ended, or `seconds` passed.
    func receive(upTo n: Int, within seconds: Double) -> [UInt8] {
        var out: [UInt8] = []
        let deadline = Date().addingTimeInterval(seconds)
        var b = [UInt8](repeating: 0, count: 4096)
        while out.count < n && Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) > 0 else { continue }
            let got = read(fd, &b, min(b.count, n - out.count))
            if got <= 0 {
                closed = true
                break
            }
            out += b[..<got]
        }
        return out
    }
}
