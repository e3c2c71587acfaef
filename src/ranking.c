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

/* The head of list i (its next ranking not yet merged). */
#define HEAD(i) (&lists[(i)][cursor[(i)]])

static void sift_down(size_t *heap, size_t n, size_t at, const nim_ranking *const *lists,
                      const size_t *cursor) {
    for (;;) {
        size_t l = 2 * at + 1, r = l + 1, best = at;
        if (l < n && nim_ranking_before(HEAD(heap[l]), HEAD(heap[best]))) best = l;
        if (r < n && nim_ranking_before(HEAD(heap[r]), HEAD(heap[best]))) best = r;
        if (best == at) return;
        size_t t = heap[at];
        heap[at] = heap[best];
        heap[best] = t;
        at = best;
    }
}

/* Few lists (a 10,000-document call has 20 batches): a scan over the heads. Many (a client
 * that sends two million documents makes thousands of batches): a binary heap of the heads,
 * so the merge costs n log k, not n times k. */
size_t nim_rankings_merge(const nim_ranking *const *lists, const size_t *lens, size_t k,
                          size_t keep, size_t *cursor, nim_merge_ref *out) {
    for (size_t i = 0; i < k; i++)
        cursor[i] = 0;
    size_t n = 0;
    size_t *heap = k > 16 ? malloc(k * sizeof *heap) : NULL;
    if (heap) {
        size_t h = 0;
        for (size_t i = 0; i < k; i++)
            if (lens[i] > 0) heap[h++] = i;
        for (size_t i = h / 2; i-- > 0;)
            sift_down(heap, h, i, lists, cursor);
        while (n < keep && h > 0) {
            size_t best = heap[0];
            out[n].list = best;
            out[n].pos = cursor[best]++;
            n++;
            if (cursor[best] >= lens[best]) heap[0] = heap[--h];
            sift_down(heap, h, 0, lists, cursor);
        }
        free(heap);
        return n;
    }
    while (n < keep) {
        size_t best = k;
        for (size_t i = 0; i < k; i++) {
            if (cursor[i] >= lens[i]) continue;
            if (best == k || nim_ranking_before(HEAD(i), HEAD(best))) best = i;
        }
        if (best == k) break;
        out[n].list = best;
        out[n].pos = cursor[best]++;
        n++;
    }
    return n;
}
