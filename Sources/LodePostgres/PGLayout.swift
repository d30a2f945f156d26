import Foundation
import LodeCore
import LodeStore
import NIOCore
import PostgresNIO

/// The layout of a dataset in PostgreSQL: the schema named exactly as the
/// dataset holds the user tables under their own names, in types a BI tool
/// understands (TEXT, BIGINT, DOUBLE PRECISION, BYTEA), and beside them
/// Lodestone's own tables, the same ones an SQLite dataset file has.
enum PGLayout {
    /// Bumped whenever Lodestone's tables change shape.
    static let version = 1

    /// The dataset's schema, quoted.
    static func schema(_ dataset: String) -> String { SchemaSQL.quote(dataset) }

    /// Lodestone's tables in schema `s` (quoted). Stamps and seqs are
    /// unsigned 64-bit numbers kept in BIGINT by their bit pattern.
    static func bootstrap(_ s: String) -> String {
        """
        CREATE TABLE \(s)._lode_meta(key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE \(s)._lode_sites(
            id bigserial PRIMARY KEY, key bytea NOT NULL UNIQUE, name text, role text, cert bytea,
            valid_from bigint, valid_until bigint);
        CREATE TABLE \(s)._lode_feeds(site bigint PRIMARY KEY, seq bigint NOT NULL, hash bytea NOT NULL, vector bytea NOT NULL);
        CREATE TABLE \(s)._lode_log(
            id bigint PRIMARY KEY, site bigint NOT NULL, seq bigint NOT NULL, hlc bigint NOT NULL,
            hash bytea NOT NULL, bytes bytea NOT NULL, person text, UNIQUE(site, seq));
        CREATE TABLE \(s)._lode_tables(name text PRIMARY KEY, pk text NOT NULL, hlc bigint NOT NULL, site bytea NOT NULL);
        CREATE TABLE \(s)._lode_columns(
            tbl text NOT NULL, slot integer NOT NULL, name text NOT NULL, type smallint NOT NULL, not_null boolean NOT NULL,
            dflt bytea NOT NULL, hlc bigint NOT NULL, site bytea NOT NULL, first_hlc bigint NOT NULL, first_site bytea NOT NULL,
            first_ordinal integer NOT NULL, PRIMARY KEY(tbl, slot), UNIQUE(tbl, name));
        CREATE TABLE \(s)._lode_rows(
            tbl text NOT NULL, pk text NOT NULL, cl bigint NOT NULL, clocks bytea NOT NULL, first_log bigint NOT NULL,
            PRIMARY KEY(tbl, pk));
        CREATE TABLE \(s)._lode_history(tbl text NOT NULL, pk text NOT NULL, log bigint NOT NULL, PRIMARY KEY(tbl, pk, log));
        CREATE TABLE \(s)._lode_misfits(tbl text NOT NULL, pk text NOT NULL, col text NOT NULL, value bytea NOT NULL, PRIMARY KEY(tbl, pk, col));
        CREATE TABLE \(s)._lode_conflicts(
            id bigserial PRIMARY KEY, tbl text NOT NULL, pk text NOT NULL, col text NOT NULL,
            winner_value bytea NOT NULL, winner_site bigint NOT NULL, winner_seq bigint NOT NULL, winner_hlc bigint NOT NULL,
            loser_value bytea NOT NULL, loser_site bigint NOT NULL, loser_seq bigint NOT NULL, loser_hlc bigint NOT NULL,
            resolved_site bigint, resolved_seq bigint, detected bigint NOT NULL);
        CREATE INDEX ON \(s)._lode_conflicts(tbl, pk, col) WHERE resolved_seq IS NULL;
        CREATE TABLE \(s)._lode_rejected(
            id bigserial PRIMARY KEY, received bigint NOT NULL, site bytea NOT NULL, seq bigint NOT NULL,
            hash bytea NOT NULL UNIQUE, kind text NOT NULL, reason text NOT NULL, bytes bytea NOT NULL);
        CREATE TABLE \(s)._lode_cutoffs(site bytea PRIMARY KEY, seq bigint NOT NULL);
        """
    }

    /// Empties what applying commits built (`ReplicaStore.cut` replays the
    /// rest): the user and system tables, schemas, clocks, history,
    /// conflicts, the log and the feeds. The sites, refusals and cut-offs stay.
    static func clearApplied(_ s: String, tables: [String]) -> String {
        tables.map { "DROP TABLE IF EXISTS \(s).\(SchemaSQL.quote($0));" }.joined()
            + """
            DELETE FROM \(s)._lode_tables; DELETE FROM \(s)._lode_columns; DELETE FROM \(s)._lode_rows;
            DELETE FROM \(s)._lode_history; DELETE FROM \(s)._lode_misfits; DELETE FROM \(s)._lode_conflicts;
            DELETE FROM \(s)._lode_log; DELETE FROM \(s)._lode_feeds;
            """
    }

    /// The PostgreSQL type of a column type.
    static func sqlType(_ t: ColumnType) -> String {
        switch t {
        case .integer: "bigint"
        case .real: "double precision"
        case .text: "text"
        case .blob: "bytea"
        }
    }

    /// A key for `pg_advisory_xact_lock` that names a dataset's writer.
    static func lockKey(_ dataset: String) -> Int64 {
        // FNV-1a over the name: stable across processes and builds.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in ("lode:" + dataset).utf8 {
            h ^= UInt64(b)
            h &*= 0x100_0000_01b3
        }
        return Int64(bitPattern: h)
    }
}

/// Values between Swift and PostgreSQL.
enum PGValue {
    /// Appends `value` as a column of type `type` takes it (as SQLite would
    /// store it: `SQLiteAffinity`); returns false
    /// (appending NULL) when it does not fit that type, a misfit the store
    /// keeps aside (`_lode_misfits`) so that nothing written is lost.
    @discardableResult
    static func bind(_ value: Value, as type: ColumnType, into b: inout PostgresBindings) -> Bool {
        switch (SQLiteAffinity.stored(value, in: type), type) {
        case (.null, _): b.appendNull()
        case (.integer(let i), .integer): b.append(i)
        case (.integer(let i), .real): b.append(Double(i))
        case (.real(let d), .real): b.append(d)
        case (.text(let t), .text) where !t.utf8.contains(0): b.append(t)
        case (.blob(let x), .blob): b.append(ByteBuffer(bytes: x))
        default:
            b.appendNull()
            return false
        }
        return true
    }

    /// True when `value` can be stored in a column of `type` as it is.
    static func fits(_ value: Value, _ type: ColumnType) -> Bool {
        var scratch = PostgresBindings()
        return bind(value, as: type, into: &scratch)
    }

    /// The value of a cell of a user table column of `type`.
    static func decode(_ cell: PostgresCell, as type: ColumnType) throws -> Value {
        guard cell.bytes != nil else { return .null }
        switch type {
        case .integer: return .integer(try cell.decode(Int64.self))
        case .real: return .real(try cell.decode(Double.self))
        case .text: return .text(try cell.decode(String.self))
        case .blob: return .blob(Array(buffer: try cell.decode(ByteBuffer.self)))
        }
    }

    /// The value of a cell of any type a query returns: integers,
    /// floating point and numeric, text-like types, bytea and booleans;
    /// anything else is refused with a hint to cast it.
    static func decodeAny(_ cell: PostgresCell) throws -> Value {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int2: return .integer(Int64(try cell.decode(Int16.self)))
        case .int4: return .integer(Int64(try cell.decode(Int32.self)))
        case .int8, .oid: return .integer(try cell.decode(Int64.self))
        case .float4: return .real(Double(try cell.decode(Float.self)))
        case .float8: return .real(try cell.decode(Double.self))
        case .numeric:
            let d = try cell.decode(Decimal.self)
            let n = NSDecimalNumber(decimal: d)
            if d == Decimal(n.int64Value) { return .integer(n.int64Value) }
            return .real(n.doubleValue)
        case .bool: return .integer(try cell.decode(Bool.self) ? 1 : 0)
        case .bytea: return .blob(Array(buffer: try cell.decode(ByteBuffer.self)))
        case .text, .varchar, .bpchar, .name, .json, .jsonb, .uuid, .date, .timestamp, .timestamptz:
            if let s = try? cell.decode(String.self) { return .text(s) }
            throw StoreError.badInput("column \(cell.columnName) has type \(cell.dataType): cast it to text")
        default:
            if let s = try? cell.decode(String.self) { return .text(s) }
            throw StoreError.badInput("column \(cell.columnName) has type \(cell.dataType), which a query cannot return: cast it to text")
        }
    }

    static func int64(_ u: UInt64) -> Int64 { Int64(bitPattern: u) }
    static func uint64(_ i: Int64) -> UInt64 { UInt64(bitPattern: i) }
    static func bytes(_ b: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: b) }
    static func bytes(_ b: ByteBuffer) -> [UInt8] { Array(buffer: b) }
}

extension PostgresRandomAccessRow {
    func int64(_ i: Int) throws -> Int64 { try self[i].decode(Int64.self) }
    func optionalInt64(_ i: Int) throws -> Int64? { try self[i].decode(Int64?.self) }
    func string(_ i: Int) throws -> String { try self[i].decode(String.self) }
    func optionalString(_ i: Int) throws -> String? { try self[i].decode(String?.self) }
    func bytes(_ i: Int) throws -> [UInt8] { Array(buffer: try self[i].decode(ByteBuffer.self)) }
    func optionalBytes(_ i: Int) throws -> [UInt8]? { try self[i].decode(ByteBuffer?.self).map { Array(buffer: $0) } }
}

extension PostgresConnection {
    /// Runs `sql` with `binds`, returning every row.
    func rows(_ sql: String, _ binds: PostgresBindings = PostgresBindings(), logger: Logger) async throws -> [PostgresRandomAccessRow] {
        var out: [PostgresRandomAccessRow] = []
        for try await row in try await query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: logger) {
            out.append(row.makeRandomAccess())
        }
        return out
    }

    /// Runs statements separated by `;` (none may hold one in a string).
    func script(_ sql: String, logger: Logger) async throws {
        for statement in sql.split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
            try await run(String(statement), logger: logger)
        }
    }

    /// Runs `sql` with `binds`, ignoring what it returns.
    func run(_ sql: String, _ binds: PostgresBindings = PostgresBindings(), logger: Logger) async throws {
        _ = try await rows(sql, binds, logger: logger)
    }
}

/// Builds bindings as a query is written: `b.add(x)` appends `x` and
/// returns its placeholder (`$3`).
struct Binds {
    var bindings = PostgresBindings()
    var count: Int { bindings.count }

    mutating func add<T: PostgresDynamicTypeEncodable>(_ v: T) -> String {
        bindings.append(v)
        return "$\(bindings.count)"
    }

    mutating func addNull() -> String {
        bindings.appendNull()
        return "$\(bindings.count)"
    }

    /// A value of a user column: returns the placeholder with a cast to
    /// the column's type, and whether the value fits it.
    mutating func add(_ v: Value, as type: ColumnType) -> (String, Bool) {
        let fits = PGValue.bind(v, as: type, into: &bindings)
        return ("$\(bindings.count)::\(PGLayout.sqlType(type))", fits)
    }
}
