import Foundation
import LodeTestSupport
import Testing

/// The `lode` binary built beside the tests.
let lodeBinary: String = {
    if let p = ProcessInfo.processInfo.environment["LODE_BINARY"] { return p }
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("lode").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/lode").path
}()

/// The repository root.
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

/// What a finished command printed and returned.
struct Outcome: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
    var lines: [String] { stdout.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty } }
}

/// Runs `lode` with arguments, as a user would, and waits for it.
@discardableResult
func lode(_ args: [String], env: [String: String] = [:], stdin: String? = nil) throws -> Outcome {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: lodeBinary)
    p.arguments = args
    var environment = ProcessInfo.processInfo.environment
    environment["LODE_DATA_DIR"] = nil
    // The person at the terminal, the same on every machine (not the login name).
    environment["LODE_USER"] = "tess"
    for (k, v) in env { environment[k] = v }
    p.environment = environment
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    if let stdin {
        let inp = Pipe()
        p.standardInput = inp
        inp.fileHandleForWriting.write(Data(stdin.utf8))
        try inp.fileHandleForWriting.close()
    }
    try p.run()
    // Read both pipes concurrently so that neither fills up.
    nonisolated(unsafe) var errData = Data()
    let errThread = Thread { errData = err.fileHandleForReading.readDataToEndOfFile() }
    errThread.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    while !errThread.isFinished { usleep(1000) }
    return Outcome(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}

/// A `lode serve` process running in the background.
final class ServeProcess: @unchecked Sendable {
    let process = Process()
    let dataDir: String
    let log: String

    init(dataDir: String, extra: [String] = [], env: [String: String] = [:], listen: String? = nil) throws {
        self.dataDir = dataDir
        log = dataDir + ".serve.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: lodeBinary)
        process.arguments = ["serve", "--data-dir", dataDir, "--listen", listen ?? "127.0.0.1:0"] + extra
        var environment = ProcessInfo.processInfo.environment
        for (k, v) in env { environment[k] = v }
        process.environment = environment
        let handle = FileHandle(forWritingAtPath: log)!
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        try waitUntilServing()
    }

    var socket: String { dataDir + "/lode.sock" }

    func waitUntilServing(timeout: TimeInterval = 120) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: socket), (try? lode(["status", "--data-dir", dataDir]))?.status == 0 { return }
            if !process.isRunning { throw ServeError(message: "lode serve exited: \(logText)") }
            usleep(50_000)
        }
        throw ServeError(message: "lode serve did not start: \(logText)")
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// SIGTERM, and wait (15 s at most) for the exit status; a node that
    /// does not stop is killed and reported as -1.
    @discardableResult func stop() -> Int32 {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(15)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning {
                kill9()
                return -1
            }
        }
        return process.terminationStatus
    }

    /// kill -9.
    func kill9() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { kill9() }
}

struct ServeError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// A site of a cluster made with the CLI, as operators make one.
struct Site {
    let name: String
    let dir: String
    let port: Int
    var flags: [String] { ["--data-dir", dir] }
    var address: String { "127.0.0.1:\(port)" }
}

/// Makes the sites of one cluster in `scratch`: the CA once (`lode ca
/// init`), then `lode init` per site, each with a free port.
func makeSite(_ name: String, role: String, in scratch: TempDir, cluster: String) throws -> Site {
    let ca = scratch.file("ca")
    if !FileManager.default.fileExists(atPath: ca + "/ca.pem") { #expect(try lode(["ca", "init", "--dir", ca, "--cluster", cluster]).status == 0) }
    let s = Site(name: name, dir: scratch.file(name), port: freePort())
    let r = try lode(["init", "--site", name, "--ca", ca, "--role", role, "--data-dir", s.dir])
    #expect(r.status == 0, "\(r)")
    return s
}
