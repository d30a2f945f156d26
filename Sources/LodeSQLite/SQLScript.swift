import CLodeSQLite
import Foundation
import LodeStore

/// A file of SQL statements read a piece at a time: whole statements are
/// gathered into chunks of about `chunkBytes` and handed out in order, so
/// that a script of any length is run in bounded memory (a statement is
/// whole when SQLite's `sqlite3_complete` says so: strings, comments and
/// trigger bodies may hold `;`).
struct SQLScript {
    /// The longest statement a script may hold.
    static let maxStatementBytes = 16 << 20
    let path: String
    let chunkBytes: Int

    /// Calls `body` with each chunk of whole statements, in order. The
    /// last chunk also takes whatever follows the last whole statement (an
    /// unfinished statement is for SQLite to refuse).
    func forEachChunk(_ body: (String) throws -> Void) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw StoreError.badInput("cannot read the SQL file") }
        defer { try? handle.close() }
        var chunk: [UInt8] = []
        var pending: [UInt8] = []
        func flush() throws {
            guard !chunk.isEmpty else { return }
            guard let sql = String(validating: chunk, as: UTF8.self) else {
                throw StoreError.badInput("the SQL is not valid UTF-8")
            }
            chunk.removeAll(keepingCapacity: true)
            try body(sql)
        }
        while let block = try handle.read(upToCount: 64 << 10), !block.isEmpty {
            for byte in block {
                pending.append(byte)
                guard byte == UInt8(ascii: ";") else { continue }
                pending.append(0)
                let whole = pending.withUnsafeBufferPointer { p in
                    p.withMemoryRebound(to: CChar.self) { sqlite3_complete($0.baseAddress) != 0 }
                }
                pending.removeLast()
                guard whole else { continue }
                chunk += pending
                pending.removeAll(keepingCapacity: true)
                if chunk.count >= chunkBytes { try flush() }
            }
            guard pending.count <= Self.maxStatementBytes else {
                throw StoreError.badInput("a statement is longer than \(Self.maxStatementBytes >> 20) MiB: split it")
            }
        }
        if pending.contains(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D) }) { chunk += pending }
        try flush()
    }
}
