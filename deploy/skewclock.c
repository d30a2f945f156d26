// Runs a process with its wall clock shifted: LD_PRELOAD this library and set
// SKEW_SECONDS (may be negative). CLOCK_REALTIME, gettimeofday and time move;
// monotonic clocks do not. deploy/netns-cluster.sh builds it with
//   cc -shared -fPIC -O2 -o skewclock.so deploy/skewclock.c -ldl
// (libfaketime would do, but it empties Swift's CommandLine.arguments.)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long skew_seconds(void) {
    static long skew = -1;
    static int read = 0;
    if (!read) {
        const char *s = getenv("SKEW_SECONDS");
        skew = s ? strtol(s, NULL, 10) : 0;
        read = 1;
    }
    return skew;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += skew_seconds();
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    static int (*real)(struct timeval *restrict, void *restrict);
    if (!real) real = (int (*)(struct timeval *restrict, void *restrict))dlsym(RTLD_NEXT, "gettimeofday");
    int rc = real(tv, tz);
    if (rc == 0 && tv) tv->tv_sec += skew_seconds();
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
