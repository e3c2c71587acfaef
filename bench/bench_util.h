/* bench_util.h: what the libcurl baselines of bench/ share: reading the body file, and
 * nimrank's own clock. Header-only: each baseline stays one self-contained program. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "../src/clock.h" /* the wall clock: nim_now(), the one nimrank measures with */

/* The whole file at path (malloc'ed, *len set), or NULL with a message on stderr. */
static inline char *bench_read_file(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    char *body = NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (*len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (body = malloc((size_t)*len + 1)) && fread(body, 1, (size_t)*len, f) != (size_t)*len) {
        free(body);
        body = NULL;
    }
    fclose(f);
    if (!body) fprintf(stderr, "%s: cannot read\n", path);
    return body;
}

#endif
