/* ranking.c: the merge of many sorted lists (batches) gives exactly the order a sort of all
 * of them gives, by the scan over few lists and by the heap over many. */
#include <stdlib.h>

#include "../../src/ranking.h"
#include "ctest.h"

/* k lists of random lengths (some empty), scores with ties, indices all distinct. */
static void check_merge_of(size_t k, unsigned seed) {
    srand(seed);
    nim_ranking *lists[200], all[200 * 40];
    size_t lens[200], cursor[200], total = 0, next_index = 0;
    const nim_ranking *heads[200];
    for (size_t i = 0; i < k; i++) {
        lens[i] = (size_t)(rand() % 40);
        lists[i] = malloc((lens[i] + 1) * sizeof **lists);
        for (size_t j = 0; j < lens[i]; j++) {
            lists[i][j] = (nim_ranking){next_index++, (double)(rand() % 7)};
            all[total++] = lists[i][j];
        }
        nim_rankings_sort(lists[i], lens[i]);
        heads[i] = lists[i];
    }
    nim_rankings_sort(all, total);
    nim_merge_ref out[200 * 40];
    size_t keep = total > 5 ? total - 5 : total; /* a top_n below the total */
    size_t n = nim_rankings_merge(heads, lens, k, keep, cursor, out);
    CHECK(n == keep);
    int same = 1;
    for (size_t i = 0; i < n; i++) {
        const nim_ranking *got = &lists[out[i].list][out[i].pos];
        if (got->index != all[i].index || got->score != all[i].score) same = 0;
    }
    CHECK(same);
    for (size_t i = 0; i < k; i++)
        free(lists[i]);
}

static void a_merge_of_few_lists_is_the_sorted_order(void) {
    for (unsigned seed = 1; seed <= 20; seed++)
        check_merge_of(5, seed);
}

static void a_merge_of_many_lists_is_the_sorted_order(void) {
    for (unsigned seed = 1; seed <= 20; seed++)
        check_merge_of(17 + seed * 9, seed);
}

int main(void) {
    RUN(a_merge_of_few_lists_is_the_sorted_order);
    RUN(a_merge_of_many_lists_is_the_sorted_order);
    return CTEST_SUMMARY("ranking");
}
