/* BM25 and its tokenizer: cases from the issue, hand-computed scores, hostile input. */
#include <stdlib.h>

#include "../../src/bm25.h"
#include "ctest.h"

typedef struct {
    char out[512];
    size_t n;
} joined;

static void join(const char *tok, size_t len, void *ud) {
    joined *j = ud;
    if (j->n && j->n < sizeof j->out - 1) j->out[j->n++] = '|';
    for (size_t i = 0; i < len && j->n < sizeof j->out - 1; i++)
        j->out[j->n++] = tok[i];
    j->out[j->n] = '\0';
}

static const char *tokens_of(const char *s, size_t *count) {
    static joined j;
    memset(&j, 0, sizeof j);
    size_t c = nim_bm25_tokenize(s, strlen(s), join, &j);
    if (count) *count = c;
    return j.out;
}

static void tokenizer_cases(void) {
    static const struct {
        const char *in, *want;
        size_t count;
    } cases[] = {
        {"Hello, World!", "Hello|World", 2},
        {"GPU-memory_bandwidth (3TB/s)", "GPU|memory|bandwidth|3TB|s", 5},
        {"H100 SXM5 900GB/s", "H100|SXM5|900GB|s", 4},
        {"", "", 0},
        {"  \t\n ...!!! ", "", 0},
        {"café naïve 東京 слово", "café|naïve|東京|слово", 4},
        {"emoji😀inside", "emoji😀inside", 1},
        {"tab\tsep\r\nlines", "tab|sep|lines", 3},
        {"x", "x", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t count;
        CHECK_STR(tokens_of(cases[i].in, &count), cases[i].want);
        CHECK(count == cases[i].count);
    }
}

static void tokenizer_handles_very_long_tokens(void) {
    size_t n = 4u << 20; /* one 4 MiB token */
    char *big = malloc(n + 1);
    memset(big, 'a', n);
    big[n] = '\0';
    CHECK(nim_bm25_tokenize(big, n, NULL, NULL) == 1);
    const char *doc = big;
    nim_bm25_hit hit;
    size_t tokens;
    nim_bm25_params p = NIM_BM25_DEFAULTS;
    CHECK(nim_bm25_rank(big, n, &doc, &n, 1, &p, &hit, &tokens) == 0);
    CHECK(tokens == 2);
    CHECK(hit.score > 0);
    free(big);
}

static void tokenizer_handles_nul_and_invalid_utf8(void) {
    const char s[] = "ab\0cd\xff\xfe zz\x80";
    size_t count = nim_bm25_tokenize(s, sizeof s - 1, NULL, NULL);
    CHECK(count == 3); /* "ab", "cd\xff\xfe", "zz\x80" */
}

static void stopwords_are_case_insensitive(void) {
    CHECK(nim_bm25_is_stopword("The", 3));
    CHECK(nim_bm25_is_stopword("OF", 2));
    CHECK(!nim_bm25_is_stopword("GPU", 3));
    CHECK(!nim_bm25_is_stopword("theory", 6));
    CHECK(!nim_bm25_is_stopword("", 0));
}

static nim_bm25_params plain(void) {
    nim_bm25_params p = {1.2, 0.75, 0};
    return p;
}

static void scores_match_hand_computed_values(void) {
    /* N = 3, avgdl = 4, k1 = 1.2, b = 0.75; idf(cat) = ln 1.6, idf(mat) = ln(8/3):
     * D0 = ln1.6 * 2.2/(1 + 0.975) ; D1 = ln(8/3) * 2.2/(1 + 1.65) ; D2 = ln1.6 * 4.4/(2 + 0.975)
     */
    const char *docs[] = {"the cat sat", "the dog sat on the mat", "cat cat dog"};
    size_t lens[] = {11, 22, 11};
    nim_bm25_hit hits[3];
    size_t tokens;
    nim_bm25_params p = plain();
    CHECK(nim_bm25_rank("Cat MAT", 7, docs, lens, 3, &p, hits, &tokens) == 0);
    CHECK(tokens == 2 + 12);
    CHECK(hits[0].index == 1);
    CHECK_NEAR(hits[0].score, 0.814273342123, 1e-9);
    CHECK(hits[1].index == 2);
    CHECK_NEAR(hits[1].score, 0.695131418044, 1e-9);
    CHECK(hits[2].index == 0);
    CHECK_NEAR(hits[2].score, 0.523548346502, 1e-9);
}

static void duplicate_query_terms_count_once(void) {
    const char *docs[] = {"the cat sat", "the dog sat on the mat", "cat cat dog"};
    size_t lens[] = {11, 22, 11};
    nim_bm25_hit a[3], b[3];
    nim_bm25_params p = plain();
    CHECK(nim_bm25_rank("cat mat", 7, docs, lens, 3, &p, a, NULL) == 0);
    CHECK(nim_bm25_rank("cat CAT mat cat", 15, docs, lens, 3, &p, b, NULL) == 0);
    for (int i = 0; i < 3; i++)
        CHECK_NEAR(a[i].score, b[i].score, 1e-12);
}

static void ties_broken_by_index(void) {
    const char *docs[] = {"alpha", "beta", "alpha", "gamma", "alpha"};
    size_t lens[] = {5, 4, 5, 5, 5};
    nim_bm25_hit hits[5];
    nim_bm25_params p = plain();
    CHECK(nim_bm25_rank("alpha", 5, docs, lens, 5, &p, hits, NULL) == 0);
    CHECK(hits[0].index == 0 && hits[1].index == 2 && hits[2].index == 4);
    CHECK(hits[3].index == 1 && hits[4].index == 3);
    CHECK(hits[0].score == hits[1].score && hits[1].score == hits[2].score);
    CHECK(hits[3].score == 0 && hits[4].score == 0);
}

static void empty_query_and_documents(void) {
    const char *docs[] = {"", "something", NULL};
    size_t lens[] = {0, 9, 0};
    nim_bm25_hit hits[3];
    size_t tokens;
    nim_bm25_params p = NIM_BM25_DEFAULTS;
    CHECK(nim_bm25_rank("", 0, docs, lens, 3, &p, hits, &tokens) == 0);
    CHECK(tokens == 1);
    for (int i = 0; i < 3; i++)
        CHECK(hits[i].index == (size_t)i && hits[i].score == 0);
    CHECK(nim_bm25_rank("something", 9, docs, lens, 3, &p, hits, NULL) == 0);
    CHECK(hits[0].index == 1 && hits[0].score > 0);
    CHECK(nim_bm25_rank("q", 1, docs, lens, 0, &p, hits, NULL) == 0); /* no documents */
}

static void stopwords_removed_when_enabled(void) {
    const char *docs[] = {"the the the of of", "gpu"};
    size_t lens[] = {17, 3};
    nim_bm25_hit hits[2];
    nim_bm25_params p = NIM_BM25_DEFAULTS;
    CHECK(nim_bm25_rank("the gpu of", 10, docs, lens, 2, &p, hits, NULL) == 0);
    CHECK(hits[0].index == 1 && hits[1].score == 0);
    p.stopwords = 0;
    CHECK(nim_bm25_rank("the gpu of", 10, docs, lens, 2, &p, hits, NULL) == 0);
    CHECK(hits[0].score > 0 && hits[1].score > 0); /* stop words now count */
}

static void parameters_are_validated(void) {
    const char *docs[] = {"a"};
    size_t lens[] = {1};
    nim_bm25_hit hits[1];
    nim_bm25_params p = {-1, 0.75, 0};
    CHECK(nim_bm25_rank("a", 1, docs, lens, 1, &p, hits, NULL) == -1);
    p = (nim_bm25_params){1.2, 1.5, 0};
    CHECK(nim_bm25_rank("a", 1, docs, lens, 1, &p, hits, NULL) == -1);
    p = (nim_bm25_params){0.0 / 0.0, 0.5, 0};
    CHECK(nim_bm25_rank("a", 1, docs, lens, 1, &p, hits, NULL) == -1);
    p = (nim_bm25_params){0, 0, 0}; /* k1 = 0: binary term presence, still valid */
    CHECK(nim_bm25_rank("a", 1, docs, lens, 1, &p, hits, NULL) == 0);
}

static void b_zero_ignores_length(void) {
    const char *docs[] = {"gpu", "gpu filler filler filler filler filler"};
    size_t lens[] = {3, 38};
    nim_bm25_hit hits[2];
    nim_bm25_params p = {1.2, 0.0, 0};
    CHECK(nim_bm25_rank("gpu", 3, docs, lens, 2, &p, hits, NULL) == 0);
    CHECK_NEAR(hits[0].score, hits[1].score, 1e-12);
    p.b = 1.0;
    CHECK(nim_bm25_rank("gpu", 3, docs, lens, 2, &p, hits, NULL) == 0);
    CHECK(hits[0].index == 0 && hits[0].score > hits[1].score);
}

static void random_bytes_never_crash(void) {
    unsigned int seed = 12345;
    char buf[4096];
    const char *docs[8];
    size_t lens[8];
    nim_bm25_hit hits[8];
    nim_bm25_params p = NIM_BM25_DEFAULTS;
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof buf; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (char)(seed >> 16);
        }
        for (int d = 0; d < 8; d++) {
            docs[d] = buf + d * 500;
            lens[d] = (size_t)((seed >> (d + 3)) % 500);
        }
        CHECK(nim_bm25_rank(buf + 4000, 96, docs, lens, 8, &p, hits, NULL) == 0);
    }
}

int main(void) {
    RUN(tokenizer_cases);
    RUN(tokenizer_handles_very_long_tokens);
    RUN(tokenizer_handles_nul_and_invalid_utf8);
    RUN(stopwords_are_case_insensitive);
    RUN(scores_match_hand_computed_values);
    RUN(duplicate_query_terms_count_once);
    RUN(ties_broken_by_index);
    RUN(empty_query_and_documents);
    RUN(stopwords_removed_when_enabled);
    RUN(parameters_are_validated);
    RUN(b_zero_ignores_length);
    RUN(random_bytes_never_crash);
    return CTEST_SUMMARY("c/bm25");
}
