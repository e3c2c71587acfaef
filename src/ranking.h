/* ranking.h: the one rule for ordering reranked results, shared by every provider and by
 * batching: score descending, ties by index ascending. Pure C. */
#ifndef NIM_RANKING_H
#define NIM_RANKING_H

#include <stddef.h>

typedef struct {
    size_t index; /* 0-based position among the caller's documents */
    double score;
} nim_ranking;

/* Does a rank before b? */
static inline int nim_ranking_before(const nim_ranking *a, const nim_ranking *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->index < b->index;
}

void nim_rankings_sort(nim_ranking *r, size_t n);
int nim_rankings_sorted(const nim_ranking *r, size_t n);

/* k-way merge of k lists, each already in rank order: writes the first `keep` entries of the
 * merged order into out as (list, position) pairs. cursor is scratch of k entries. Returns
 * how many were written. */
typedef struct {
    size_t list, pos;
} nim_merge_ref;
size_t nim_rankings_merge(const nim_ranking *const *lists, const size_t *lens, size_t k,
                          size_t keep, size_t *cursor, nim_merge_ref *out);

#endif
