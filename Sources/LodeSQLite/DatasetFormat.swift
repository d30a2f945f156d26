import GRDB
import LodeCore
import LodeStore

/// The layout of a dataset file beside the user tables.
enum DatasetFormat {
    /// Bumped whenever the internal tables change shape or what they hold
    /// changes encoding. 2: `_lode_log.bytes` may hold a deflated commit
    /// (`LogBytes`); a format 1 file is read as is and marked 2 when it opens.
    /// 3: `_lode_log.person`, the person a commit names (NULL for none),
    /// added to older files when they open (their commits name no one).
    /// 4: `_lode_history` keeps what each commit wrote to each row written
    /// more than once, values included (`RowWrite`, `FirstWrite`), and
    /// `_lode_rows` the time of each row's last write (`last`) and whether
    /// its first write is in the history (`kept`); a format 3 file gains
    /// them, rebuilt from its log, when it opens. 5: the system table
    /// `_checkpoints` (`CheckpointRows`), defined in older files when they
    /// open.
    static let version = 5

    static let bootstrap = """
        CREATE TABLE _lode_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        CREATE TABLE _lode_sites(
            id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, name TEXT, role TEXT, cert BLOB,
            valid_from INTEGER, valid_until INTEGER);
        CREATE TABLE _lode_feeds(
            site INTEGER PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL, vector BLOB NOT NULL);
        CREATE TABLE _lode_log(
            id INTEGER PRIMARY KEY, site INTEGER NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL,
            hash BLOB NOT NULL, bytes BLOB NOT NULL, person TEXT, UNIQUE(site, seq));
        CREATE TABLE _lode_tables(
            id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, pk TEXT NOT NULL,
            hlc INTEGER NOT NULL, site BLOB NOT NULL);
        CREATE TABLE _lode_columns(
            tbl INTEGER NOT NULL, slot INTEGER NOT NULL, name TEXT NOT NULL, type INTEGER NOT NULL,
            not_null INTEGER NOT NULL, dflt BLOB NOT NULL, hlc INTEGER NOT NULL, site BLOB NOT NULL,
            first_hlc INTEGER NOT NULL, first_site BLOB NOT NULL, first_ordinal INTEGER NOT NULL,
            PRIMARY KEY(tbl, slot), UNIQUE(tbl, name));
        CREATE TABLE _lode_rows(
            tbl INTEGER NOT NULL, pk TEXT NOT NULL, cl INTEGER NOT NULL, clocks BLOB NOT NULL,
            first_log INTEGER NOT NULL, last INTEGER NOT NULL DEFAULT 0, kept INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY(tbl, pk)) WITHOUT ROWID;
        CREATE TABLE _lode_conflicts(
            id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, pk TEXT NOT NULL, col TEXT NOT NULL,
            winner_value, winner_site INTEGER NOT NULL, winner_seq INTEGER NOT NULL, winner_hlc INTEGER NOT NULL,
            loser_value, loser_site INTEGER NOT NULL, loser_seq INTEGER NOT NULL, loser_hlc INTEGER NOT NULL,
            resolved_site INTEGER, resolved_seq INTEGER, detected INTEGER NOT NULL);
        CREATE INDEX _lode_conflicts_cell ON _lode_conflicts(tbl, pk, col) WHERE resolved_seq IS NULL;
        CREATE TABLE _lode_rejected(
            id INTEGER PRIMARY KEY, received INTEGER NOT NULL, site BLOB NOT NULL, seq INTEGER NOT NULL,
            hash BLOB NOT NULL UNIQUE, kind TEXT NOT NULL, reason TEXT NOT NULL, bytes BLOB NOT NULL);
        """ + history + cutoffs

    /// The history table (format 4), for files made before it.
    static let history = """
        CREATE TABLE _lode_history(
            tbl INTEGER NOT NULL, pk TEXT NOT NULL, hlc INTEGER NOT NULL, site INTEGER NOT NULL, seq INTEGER NOT NULL,
            cl INTEGER NOT NULL, cells BLOB NOT NULL, PRIMARY KEY(tbl, pk, hlc, site)) WITHOUT ROWID;
        """

    /// The feeds cut off (DESIGN §9): site (a `_lode_sites` id) and the last
    /// seq that counts. Added to files made before it when they open.
    static let cutoffs = "CREATE TABLE IF NOT EXISTS _lode_cutoffs(site INTEGER PRIMARY KEY, seq INTEGER NOT NULL);"

    /// Full-text search over annotation bodies and tags, kept by triggers on
    /// the annotation tables. Local to each replica, never replicated.
    static let annotationSearch = """
        CREATE VIRTUAL TABLE _lode_annotations_fts USING fts5(id UNINDEXED, body, tokenize = 'unicode61');
        CREATE TRIGGER _lode_annotations_ai AFTER INSERT ON _annotations BEGIN
            INSERT INTO _lode_annotations_fts(id, body) VALUES (new.id, new.body);
        END;
        CREATE TRIGGER _lode_annotations_au AFTER UPDATE OF body ON _annotations BEGIN
            DELETE FROM _lode_annotations_fts WHERE id = old.id;
            INSERT INTO _lode_annotations_fts(id, body) VALUES (new.id, new.body);
        END;
        CREATE TRIGGER _lode_annotations_ad AFTER DELETE ON _annotations BEGIN
            DELETE FROM _lode_annotations_fts WHERE id = old.id;
        END;
        """

    /// Lays out a new dataset file: Lodestone's tables, the system tables
    /// (annotations) and their search index.
    static func create(_ db: Database, dataset: String) throws {
        try db.execute(sql: bootstrap)
        try db.execute(sql: "INSERT INTO _lode_meta(key, value) VALUES ('dataset', ?), ('format', ?)", arguments: [dataset, version])
        try layOutSystemTables(db)
    }

    /// Defines the system tables (annotations) and their search index in a
    /// file that holds no table yet.
    static func layOutSystemTables(_ db: Database) throws {
        let schema = try SchemaCatalog.load(db)
        let genesis = SchemaStamp(hlc: .zero, site: AnnotationRows.genesisSite)
        for def in AnnotationRows.systemTables { try schema.define(db, def, stamp: genesis) }
        try db.execute(sql: annotationSearch)
    }

    /// Empties everything that applying commits built: the tables (user and
    /// system), their schemas, clocks, history, conflicts, the log and the
    /// feeds, then lays the system tables out again. What stays: the sites
    /// known, the refusals, the cut-offs and the file's identity.
    static func clearApplied(_ db: Database, tables: [String]) throws {
        for t in tables { try db.execute(sql: "DROP TABLE IF EXISTS \(quote(t))") }
        try db.execute(
            sql: """
                DROP TABLE IF EXISTS _lode_annotations_fts;
                DELETE FROM _lode_tables; DELETE FROM _lode_columns; DELETE FROM _lode_rows; DELETE FROM _lode_history;
                DELETE FROM _lode_conflicts; DELETE FROM _lode_log; DELETE FROM _lode_feeds;
                """)
        try layOutSystemTables(db)
    }

    /// Checks that an existing file holds `dataset` in this format. Returns
    /// true when the file's history must be rebuilt from its log (a format 3
    /// file, whose history held no values).
    static func check(_ db: Database, path: String, dataset: String) throws -> Bool {
        let stored = try String.fetchOne(db, sql: "SELECT value FROM _lode_meta WHERE key = 'dataset'")
        guard stored == dataset else {
            throw StoreError(.storage, "\(path) holds dataset \(stored ?? "?"), not \(dataset)")
        }
        var format = try Int.fetchOne(db, sql: "SELECT value FROM _lode_meta WHERE key = 'format'") ?? 0
        if format == 1 || format == 2 {
            try db.execute(sql: "ALTER TABLE _lode_log ADD COLUMN person TEXT")
            try db.execute(sql: "UPDATE _lode_meta SET value = ? WHERE key = 'format'", arguments: [version])
            format = 3
        }
        var rebuild = false
        if format == 3 {
            try db.execute(sql: "DROP TABLE _lode_history")
            try db.execute(sql: history)
            let columns = try Set(Row.fetchAll(db, sql: "PRAGMA table_info(_lode_rows)").map { $0["name"] as String })
            for c in ["last", "kept"] where !columns.contains(c) {
                try db.execute(sql: "ALTER TABLE _lode_rows ADD COLUMN \(c) INTEGER NOT NULL DEFAULT 0")
            }
            try db.execute(sql: "UPDATE _lode_meta SET value = ? WHERE key = 'format'", arguments: [version])
            format = 4
            rebuild = true
        }
        if format == 4 {
            let schema = try SchemaCatalog.load(db)
            if schema[CheckpointRows.table] == nil {
                try schema.define(db, CheckpointRows.definition, stamp: SchemaStamp(hlc: .zero, site: AnnotationRows.genesisSite))
            }
            try db.execute(sql: "UPDATE _lode_meta SET value = ? WHERE key = 'format'", arguments: [version])
            format = version
        }
        guard format == version else {
            throw StoreError(.storage, "\(path) has format \(format); this build reads format \(version)")
        }
        try db.execute(sql: cutoffs)
        return rebuild
    }
}
