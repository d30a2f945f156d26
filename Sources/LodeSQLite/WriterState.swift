import GRDB
import LodeCore

/// Everything the writer keeps in memory about one dataset file, in four
/// parts with one job each: the sites it knows, its tables, its log and
/// feeds, and the merging of rows. It is touched only inside the writer's
/// closures, which GRDB runs one at a time, and is reloaded from the file
/// after any failed transaction so that memory never disagrees with what
/// SQLite committed.
final class WriterState {
    let sites: SiteRegistry
    let schema: SchemaCatalog
    let feeds: FeedLog
    let rows: RowMerger

    private init(sites: SiteRegistry, schema: SchemaCatalog, feeds: FeedLog) {
        self.sites = sites
        self.schema = schema
        self.feeds = feeds
        rows = RowMerger(sites: sites, feeds: feeds)
    }

    /// Reads the state from the file.
    static func load(_ db: Database) throws -> WriterState {
        let sites = try SiteRegistry.load(db)
        return WriterState(sites: sites, schema: try SchemaCatalog.load(db), feeds: try FeedLog.load(db, sites: sites))
    }

    /// The context of a commit by `author` stored in the next log row.
    func context(_ db: Database, author: SiteID, hlc: HLC, seq: UInt64, past: VersionVector?) throws -> CommitContext {
        CommitContext(author: try sites.number(db, author), hlc: hlc, seq: seq, logID: feeds.nextID, past: past)
    }
}
