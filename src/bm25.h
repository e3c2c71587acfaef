/* bm25.h: the embedded offline reranker (provider `local/bm25`). Pure C: no Lua, no curl.
 * Okapi BM25 over the documents of one request, Lucene's non-negative idf:
 *   idf(t)   = ln(1 + (N - df + 0.5) / (df + 0.5))
 *   score(D) = sum over distinct query terms t of
 *              idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |D| / avgdl))
 * Tokens: runs of ASCII letters and digits and of bytes >= 0x80 (so UTF-8 text stays whole),
 * ASCII case folded; everything else separates. No token is copied: any length is safe. */
#ifndef NIM_BM25_H
#define NIM_BM25_H

#include <stddef.h>

#include "ranking.h"

typedef struct {
    double k1;     /* term-frequency saturation; default 1.2 */
    double b;      /* length normalisation, 0..1; default 0.75 */
    int stopwords; /* drop a small English stop-word list from query and documents */
} nim_bm25_params;

#define NIM_BM25_DEFAULTS                                                                          \
    { 1.2, 0.75, 1 }

/* index: 0-based position among the documents */
typedef nim_ranking nim_bm25_hit;

/* Calls fn for each token (bytes as in s, not folded); returns the number of tokens. */
typedef void (*nim_token_fn)(const char *tok, size_t len, void *ud);
size_t nim_bm25_tokenize(const char *s, size_t n, nim_token_fn fn, void *ud);

/* Is this (ASCII case-insensitive) token on the stop-word list? */
int nim_bm25_is_stopword(const char *tok, size_t len);

/* Scores ndocs documents against the query; fills hits (ndocs entries) in rank order
 * (ranking.h). *tokens = query plus document tokens seen. Returns 0, or -1 on
 * out-of-memory or bad parameters (k1 < 0, b outside 0..1, NaN). */
int nim_bm25_rank(const char *query, size_t qlen, const char *const *docs, const size_t *lens,
                  size_t ndocs, const nim_bm25_params *p, nim_bm25_hit *hits, size_t *tokens);

#endif
