/* bm25_core.c: the C scorer alone on N documents of 1 KB (no Lua), median of R runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/bm25.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 10000;
    int runs = argc > 2 ? atoi(argv[2]) : 20;
    static const char *vocab[] = {"gpu",      "memory", "bandwidth", "tensor", "core",   "cache",
                                  "latency",  "Kernel", "warp",      "thread", "block",  "grid",
                                  "register", "shared", "global",    "stream", "event",  "graph",
                                  "launch",   "copy",   "host",      "device", "pinned", "page"};
    size_t nv = sizeof vocab / sizeof vocab[0];
    char *text = malloc(n * 1024);
    const char **docs = malloc(n * sizeof *docs);
    size_t *lens = malloc(n * sizeof *lens);
    nim_bm25_hit *hits = malloc(n * sizeof *hits);
    unsigned seed = 1;
    for (size_t i = 0; i < n; i++) {
        char *d = text + i * 1024;
        size_t len = 0;
        while (len < 1000) {
            seed = seed * 1103515245u + 12345u;
            const char *w = vocab[(seed >> 16) % nv];
            size_t wl = strlen(w);
            memcpy(d + len, w, wl);
            len += wl;
            d[len++] = (seed >> 8) % 5 ? ' ' : ',';
        }
        while (len < 1024)
            d[len++] = ' ';
        docs[i] = d;
        lens[i] = 1024;
    }
    const char *q = "gpu memory bandwidth of tensor cores";
    nim_bm25_params p = NIM_BM25_DEFAULTS;
    double *t = malloc((size_t)runs * sizeof *t);
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        if (nim_bm25_rank(q, strlen(q), docs, lens, n, &p, hits, NULL) != 0) return 1;
        t[r] = now() - t0;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp);
    double mb = (double)n * 1024 / 1e6;
    printf("bm25 core: %zu docs, %.1f MB: median %.2f ms, %.0f MB/s (best %.0f MB/s)\n", n, mb,
           t[runs / 2] * 1000, mb / t[runs / 2], mb / t[0]);
    free(text);
    free(docs);
    free(lens);
    free(hits);
    free(t);
    return 0;
}
