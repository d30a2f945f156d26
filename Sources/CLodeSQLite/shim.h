#ifndef LODE_SQLITE_SHIM_H
#define LODE_SQLITE_SHIM_H
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>

/// Multi-thread mode (no mutex per call): every connection is used by one
/// thread at a time (GRDB serializes). Must run before SQLite initializes.
static inline int lode_sqlite_multithread(void) { return sqlite3_config(SQLITE_CONFIG_MULTITHREAD); }
#endif
