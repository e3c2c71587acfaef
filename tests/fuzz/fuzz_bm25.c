/* The BM25 tokenizer and scorer: the first line is the query, each further line a document. */
#include <math.h>
#include <string.h>

#include "../../src/bm25.h"
#include "fuzz.h"

#define MAX_DOCS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data, *end = s + size;
    const char *nl = memchr(s, '\n', size);
    size_t qlen = nl ? (size_t)(nl - s) : size;
    const char *docs[MAX_DOCS];
    size_t lens[MAX_DOCS], n = 0;
    for (const char *p = nl ? nl + 1 : end; p < end && n < MAX_DOCS;) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        docs[n] = p;
        lens[n++] = e ? (size_t)(e - p) : (size_t)(end - p);
        p = e ? e + 1 : end;
    }
    FUZZ_ASSERT(nim_bm25_tokenize(s, size, NULL, NULL) <= size);
    nim_bm25_hit hits[MAX_DOCS];
    size_t tokens;
    nim_bm25_params p = NIM_BM25_DEFAULTS;
    p.stopwords = size % 2;
    FUZZ_ASSERT(nim_bm25_rank(s, qlen, docs, lens, n, &p, hits, &tokens) == 0);
    int seen[MAX_DOCS] = {0};
    for (size_t i = 0; i < n; i++) {
        FUZZ_ASSERT(hits[i].index < n && !seen[hits[i].index]);
        seen[hits[i].index] = 1;
        FUZZ_ASSERT(isfinite(hits[i].score) && hits[i].score >= 0);
        if (i) FUZZ_ASSERT(!nim_ranking_before(&hits[i], &hits[i - 1])); /* the one rule */
    }
    return 0;
}
