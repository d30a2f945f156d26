import Crypto
import Foundation
import GRDB
import LodeCore
import LodeStore

/// A signed-in browser: who, and the token its writes must carry.
public struct WorkspaceSession: Sendable, Hashable {
    public var person: Person
    /// Sent with every write (`X-CSRF-Token`), read from the page.
    public var csrf: String
}

/// The people of the site, their one-time sign-in links and the
/// workspace's sessions, in the node file. A link's token and a session's
/// id are secrets: only their SHA-256 is stored, so that a copy of
/// `node.db` signs nobody in. A link works once and until it expires; a
/// session lasts `sessionSeconds` from its last use.
extension NodeFile {
    static let peopleTables = """
        CREATE TABLE IF NOT EXISTS people(name TEXT PRIMARY KEY, role TEXT NOT NULL, added TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS signin_links(token BLOB PRIMARY KEY, person TEXT NOT NULL, expires INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS sessions(
            id BLOB PRIMARY KEY, person TEXT NOT NULL, csrf TEXT NOT NULL, expires INTEGER NOT NULL);
        """

    /// How long a session lasts without use: 12 hours.
    public static let sessionSeconds: Int64 = 12 * 3600

    /// Adds a person with `role`, which must be at most `siteRole`.
    public func addPerson(_ name: String, role: Role, siteRole: Role, added: String) throws -> Person {
        guard Identifier.isValidPerson(name) else {
            throw StoreError.badInput(
                "\"\(name)\" is not a valid person name: use 1 to 64 lowercase letters, digits, '-', '_' and '.', starting with a letter or digit")
        }
        guard Role.personRoles.contains(role) else {
            throw StoreError.badInput("a person's role is editor, annotator or reader, not \(role.rawValue)")
        }
        guard role.isAtMost(siteRole) else {
            throw StoreError(.forbidden, "this site is a \(siteRole.rawValue): its people may be at most what it is, not \(role.rawValue)")
        }
        return try StoreError.converting {
            try queue.write { db in
                try db.execute(sql: "INSERT OR IGNORE INTO people(name, role, added) VALUES (?, ?, ?)", arguments: [name, role.rawValue, added])
                guard db.changesCount > 0 else { throw StoreError(.alreadyExists, "\(name) is already a person of this site") }
                return Person(name: name, role: role, added: added)
            }
        }
    }

    /// The people of the site, by name.
    public func people() throws -> [Person] {
        try StoreError.converting {
            try queue.read { db in
                try Row.fetchAll(db, sql: "SELECT name, role, added FROM people ORDER BY name").compactMap(NodeFile.person)
            }
        }
    }

    /// One person, or nil.
    public func person(_ name: String) throws -> Person? {
        try StoreError.converting {
            try queue.read { db in
                try Row.fetchOne(db, sql: "SELECT name, role, added FROM people WHERE name = ?", arguments: [name]).flatMap(NodeFile.person)
            }
        }
    }

    private static func person(_ r: Row) -> Person? {
        Role(rawValue: r["role"]).map { Person(name: r["name"], role: $0, added: r["added"]) }
    }

    /// Removes a person, their sign-in links and sessions. Returns false if
    /// there was no such person. What they wrote stays theirs.
    public func removePerson(_ name: String) throws -> Bool {
        try StoreError.converting {
            try queue.write { db in
                try db.execute(sql: "DELETE FROM signin_links WHERE person = ?", arguments: [name])
                try db.execute(sql: "DELETE FROM sessions WHERE person = ?", arguments: [name])
                try db.execute(sql: "DELETE FROM people WHERE name = ?", arguments: [name])
                return db.changesCount > 0
            }
        }
    }

    /// A new one-time sign-in token for `person`, valid for `seconds`.
    public func issueSignInToken(for person: String, seconds: Int64, now: Int64) throws -> String {
        let token = NodeFile.secret()
        try StoreError.converting {
            try queue.write { db in
                try db.execute(sql: "DELETE FROM signin_links WHERE expires <= ?", arguments: [now])
                try db.execute(
                    sql: "INSERT INTO signin_links(token, person, expires) VALUES (?, ?, ?)",
                    arguments: [NodeFile.digest(token), person, now + seconds])
            }
        }
        return token
    }

    /// The person a sign-in token is for, without spending it; nil for a
    /// token unknown, used or expired.
    public func signInTokenPerson(_ token: String, now: Int64) throws -> Person? {
        try StoreError.converting {
            try queue.read { db in
                try Row.fetchOne(
                    db,
                    sql: """
                        SELECT p.name, p.role, p.added FROM signin_links l JOIN people p ON p.name = l.person
                        WHERE l.token = ? AND l.expires > ?
                        """, arguments: [NodeFile.digest(token), now]
                ).flatMap(NodeFile.person)
            }
        }
    }

    /// Uses a sign-in token: the person it is for, once, before it
    /// expires; nil for a token unknown, used or expired, or whose person
    /// was removed. The token is spent either way.
    public func redeemSignInToken(_ token: String, now: Int64) throws -> Person? {
        try StoreError.converting {
            try queue.write { db in
                let key = NodeFile.digest(token)
                guard let row = try Row.fetchOne(db, sql: "SELECT person, expires FROM signin_links WHERE token = ?", arguments: [key]) else {
                    return nil
                }
                try db.execute(sql: "DELETE FROM signin_links WHERE token = ?", arguments: [key])
                guard (row["expires"] as Int64) > now else { return nil }
                return try Row.fetchOne(db, sql: "SELECT name, role, added FROM people WHERE name = ?", arguments: [row["person"] as String])
                    .flatMap(NodeFile.person)
            }
        }
    }

    /// Opens a session for `person`: its id (the cookie) and CSRF token.
    public func openSession(for person: String, now: Int64) throws -> (id: String, csrf: String) {
        let id = NodeFile.secret(), csrf = NodeFile.secret()
        try StoreError.converting {
            try queue.write { db in
                try db.execute(sql: "DELETE FROM sessions WHERE expires <= ?", arguments: [now])
                try db.execute(
                    sql: "INSERT INTO sessions(id, person, csrf, expires) VALUES (?, ?, ?, ?)",
                    arguments: [NodeFile.digest(id), person, csrf, now + NodeFile.sessionSeconds])
            }
        }
        return (id, csrf)
    }

    /// The session with cookie `id`, if open and its person still there;
    /// using it extends it (at most once a minute, to spare the file).
    public func session(_ id: String, now: Int64) throws -> WorkspaceSession? {
        try StoreError.converting {
            try queue.write { db in
                let key = NodeFile.digest(id)
                guard
                    let row = try Row.fetchOne(
                        db,
                        sql: """
                            SELECT s.csrf, s.expires, p.name, p.role, p.added FROM sessions s JOIN people p ON p.name = s.person
                            WHERE s.id = ? AND s.expires > ?
                            """, arguments: [key, now]),
                    let person = NodeFile.person(row)
                else { return nil }
                if (row["expires"] as Int64) < now + NodeFile.sessionSeconds - 60 {
                    try db.execute(sql: "UPDATE sessions SET expires = ? WHERE id = ?", arguments: [now + NodeFile.sessionSeconds, key])
                }
                return WorkspaceSession(person: person, csrf: row["csrf"])
            }
        }
    }

    /// Ends a session (signing out).
    public func closeSession(_ id: String) throws {
        try StoreError.converting {
            try queue.write { db in try db.execute(sql: "DELETE FROM sessions WHERE id = ?", arguments: [NodeFile.digest(id)]) }
        }
    }

    /// 32 random bytes, base64url: a token no one can guess.
    static func secret() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func digest(_ secret: String) -> Data { Data(SHA256.hash(data: Data(secret.utf8))) }
}
