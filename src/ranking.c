/* ranking.c: sorting and merging rankings by the rule in ranking.h. */
#include "ranking.h"

#include <stdlib.h>

static int cmp(const void *a, const void *b) {
    const nim_ranking *x = a, *y = b;
    if (nim_ranking_before(x, y)) return -1;
    return nim_ranking_before(y, x) ? 1 : 0;
}

void nim_rankings_sort(nim_ranking *r, size_t n) {
    if (n > 1 && !nim_rankings_sorted(r, n)) qsort(r, n, sizeof *r, cmp);
}

int nim_rankings_sorted(const nim_ranking *r, size_t n) {
    for (size_t i = 1; i < n; i++)
        if (nim_ranking_before(&r[i], &r[i - 1])) return 0;
    return 1;
}

/* A linear scan over the k heads: batches are few (a 10,000-document call has 20), so a heap
 * would buy nothing measurable. */
size_t nim_rankings_merge(const nim_ranking *const *lists, const size_t *lens, size_t k,
                          size_t keep, size_t *cursor, nim_merge_ref *out) {
    for (size_t i = 0; i < k; i++)
        cursor[i] = 0;
    size_t n = 0;
    while (n < keep) {
        size_t best = k;
        for (size_t i = 0; i < k; i++) {
            if (cursor[i] >= lens[i]) continue;
            if (best == k || nim_ranking_before(&lists[i][cursor[i]], &lists[best][cursor[best]]))
                best = i;
        }
        if (best == k) break;
        out[n].list = best;
        out[n].pos = cursor[best]++;
        n++;
    }
    return n;
}
