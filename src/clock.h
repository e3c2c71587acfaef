/* clock.h: the one monotonic clock (seconds), for deadlines, latencies and frame loops. */
#ifndef NIM_CLOCK_H
#define NIM_CLOCK_H

#include <time.h>

static inline double nim_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
