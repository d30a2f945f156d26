#ifndef LODE_ZLIB_SHIM_H
#define LODE_ZLIB_SHIM_H
#include <zlib.h>
#endif
