#ifndef LODE_SQLITE_SHIM_H
#define LODE_SQLITE_SHIM_H
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>

/// Multi-thread mode (no mutex per call): every connection is used by one
/// thread at a time (GRDB serializes). Memory statistics off: with them on,
/// every allocation SQLite makes takes a global mutex. Must run before SQLite
/// initializes; returns SQLITE_OK when both settings took effect.
static inline int lode_sqlite_configure(void) {
    int rc = sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    if (rc != SQLITE_OK) return rc;
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/// A virtual table and a cursor of one, each carrying the Swift object
/// behind it (`AsOfTable`: a table's rows as of a time).
typedef struct lode_vtab {
    sqlite3_vtab base;
    void *owner;
} lode_vtab;

typedef struct lode_vtab_cursor {
    sqlite3_vtab_cursor base;
    void *owner;
} lode_vtab_cursor;
#endif
