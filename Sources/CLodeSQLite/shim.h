#ifndef LODE_SQLITE_SHIM_H
#define LODE_SQLITE_SHIM_H
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>
#include <string.h>

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
/// behind it (`AsOfTable`: a table's rows as of a time), in memory from
/// sqlite3_malloc, zeroed (SQLite reads zErrMsg). NULL when out of memory.
typedef struct lode_vtab {
    sqlite3_vtab base;
    void *owner;
} lode_vtab;

typedef struct lode_vtab_cursor {
    sqlite3_vtab_cursor base;
    void *owner;
} lode_vtab_cursor;

static inline sqlite3_vtab *lode_vtab_new(void *owner) {
    lode_vtab *v = sqlite3_malloc(sizeof *v);
    if (!v) return 0;
    memset(v, 0, sizeof *v);
    v->owner = owner;
    return &v->base;
}

static inline void *lode_vtab_owner(sqlite3_vtab *v) { return ((lode_vtab *)v)->owner; }

static inline sqlite3_vtab_cursor *lode_vtab_cursor_new(void *owner) {
    lode_vtab_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c) return 0;
    memset(c, 0, sizeof *c);
    c->owner = owner;
    return &c->base;
}

static inline void *lode_vtab_cursor_owner(sqlite3_vtab_cursor *c) { return ((lode_vtab_cursor *)c)->owner; }
#endif
