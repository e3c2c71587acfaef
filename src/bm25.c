/* bm25.c: Okapi BM25 over one request's documents (see bm25.h for the formula). */
#include "bm25.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 1 for bytes that belong to words: ASCII letters and digits, and every byte >= 0x80. */
static unsigned char word_byte[256];
/* ASCII lower case; other bytes unchanged. */
static unsigned char fold[256];

static void init_stopwords(void);

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void fill_tables(void) {
    for (int c = 0; c < 256; c++) {
        word_byte[c] = (unsigned char)((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                                       (c >= 'A' && c <= 'Z') || c >= 0x80);
        fold[c] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    init_stopwords();
}

/* Filled once per process, whichever thread comes first (two lua_States on two threads). */
static void init_tables(void) { pthread_once(&tables_once, fill_tables); }

size_t nim_bm25_tokenize(const char *s, size_t n, nim_token_fn fn, void *ud) {
    init_tables();
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t count = 0;
    while (p < end) {
        while (p < end && !word_byte[*p])
            p++;
        const unsigned char *start = p;
        while (p < end && word_byte[*p])
            p++;
        if (p > start) {
            count++;
            if (fn) fn((const char *)start, (size_t)(p - start), ud);
        }
    }
    return count;
}

static const char *const stopword_list[] = {
    "a",     "an",    "and",  "are",  "as",   "at",   "be",  "but",   "by",   "for",
    "from",  "has",   "have", "he",   "her",  "his",  "how", "i",     "if",   "in",
    "into",  "is",    "it",   "its",  "me",   "my",   "no",  "not",   "of",   "on",
    "or",    "our",   "she",  "so",   "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to",   "was",  "we",  "were",  "what", "when",
    "where", "which", "who",  "why",  "will", "with", "you", "your",  NULL};

static int ieq(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (fold[(unsigned char)a[i]] != fold[(unsigned char)b[i]]) return 0;
    return 1;
}

/* Stop words are at most 5 bytes: a folded token packs into one integer key, looked up in a
 * small open-addressing set (this runs for every short token of every document). */
#define STOP_SLOTS 256
static uint64_t stop_slots[STOP_SLOTS];

static uint64_t pack_key(const unsigned char *s, size_t len) {
    uint64_t k = (uint64_t)len << 56;
    for (size_t i = 0; i < len; i++)
        k |= (uint64_t)fold[s[i]] << (8 * i);
    return k;
}

static size_t stop_slot(uint64_t k) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 56); }

/* Quick reject: bit len of stop_pair[b0 & 31][b1 & 31] is set when some stop word of that
 * length starts with those two folded bytes (b1 = 0 for one-letter words). Collisions only
 * send a token on to the exact check. */
static uint8_t stop_pair[32][32];

static void init_stopwords(void) {
    for (const char *const *w = stopword_list; *w; w++) {
        size_t len = strlen(*w);
        unsigned b0 = (unsigned char)(*w)[0], b1 = len > 1 ? (unsigned char)(*w)[1] : 0;
        stop_pair[b0 & 31][b1 & 31] |= (uint8_t)(1u << len);
        uint64_t k = pack_key((const unsigned char *)*w, len);
        size_t i = stop_slot(k);
        while (stop_slots[i])
            i = (i + 1) % STOP_SLOTS;
        stop_slots[i] = k;
    }
}

static int is_stop(const unsigned char *s, size_t len) {
    if (len == 0 || len > 5) return 0;
    unsigned b1 = len > 1 ? fold[s[1]] : 0;
    if (!(stop_pair[fold[s[0]] & 31][b1 & 31] & (1u << len))) return 0;
    uint64_t k = pack_key(s, len);
    for (size_t i = stop_slot(k); stop_slots[i]; i = (i + 1) % STOP_SLOTS)
        if (stop_slots[i] == k) return 1;
    return 0;
}

int nim_bm25_is_stopword(const char *tok, size_t len) {
    init_tables();
    return is_stop((const unsigned char *)tok, len);
}

/* FNV-1a over case-folded bytes. (A word-at-a-time hash measured no faster here: the tail
 * bytes cost as much as FNV's multiply.) */
static uint64_t hash_token(const unsigned char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= fold[s[i]];
        h *= 1099511628211ull;
    }
    return h;
}

#define FILTER_BITS 4096 /* one bit per hash bucket: most document tokens stop here */

typedef struct {
    const char *tok; /* points into the query */
    size_t len;
    uint64_t hash;
    size_t df;
    double idf;
    size_t last_doc; /* +1; for counting df once per document */
    size_t post;     /* this term's posting in the current document */
} qterm;

typedef struct {
    qterm *terms;
    size_t nterms, cap;
    int32_t *slots; /* open addressing: index into terms, -1 empty */
    size_t nslots;
    uint64_t filter[FILTER_BITS / 64];
    uint64_t lengths; /* bit min(len, 63) set for every query term length */
    int stopwords;
    int oom;
} query_set;

static int32_t qs_find(const query_set *q, const char *tok, size_t len, uint64_t h) {
    size_t mask = q->nslots - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        int32_t t = q->slots[i];
        if (t < 0) return -1;
        const qterm *e = &q->terms[t];
        if (e->hash == h && e->len == len && ieq(e->tok, tok, len)) return t;
    }
}

static void collect_query_term(const char *tok, size_t len, void *ud) {
    query_set *q = ud;
    if (q->oom || (q->stopwords && is_stop((const unsigned char *)tok, len))) return;
    if (q->nterms == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        if (cap > ((size_t)1 << 30)) { /* term indices are 32-bit */
            q->oom = 1;
            return;
        }
        qterm *t = realloc(q->terms, cap * sizeof *t);
        if (!t) {
            q->oom = 1;
            return;
        }
        q->terms = t;
        q->cap = cap;
    }
    /* de-duplicated when the hash table is built */
    q->terms[q->nterms++] =
        (qterm){tok, len, hash_token((const unsigned char *)tok, len), 0, 0, 0, 0};
}

static int build_query(query_set *q) {
    size_t n = q->nterms;
    q->nslots = 16;
    while (q->nslots < n * 2)
        q->nslots *= 2;
    q->slots = malloc(q->nslots * sizeof *q->slots);
    if (!q->slots) return -1;
    memset(q->slots, 0xff, q->nslots * sizeof *q->slots);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        qterm e = q->terms[i];
        q->nterms = kept; /* search only the distinct terms kept so far */
        if (kept && qs_find(q, e.tok, e.len, e.hash) >= 0) continue;
        q->terms[kept] = e;
        size_t mask = q->nslots - 1, j = (size_t)e.hash & mask;
        while (q->slots[j] >= 0)
            j = (j + 1) & mask;
        q->slots[j] = (int32_t)kept;
        q->filter[(e.hash % FILTER_BITS) / 64] |= 1ull << (e.hash % 64);
        q->lengths |= 1ull << (e.len < 63 ? e.len : 63);
        kept++;
    }
    q->nterms = kept;
    return 0;
}

typedef struct {
    uint32_t term;
    uint32_t tf;
} posting;

typedef struct {
    query_set *q; /* terms are updated (df, postings) as documents are scanned */
    size_t doc;   /* current document + 1 */
    size_t len;   /* tokens counted in the current document */
    posting *post;
    size_t npost, cap;
    int oom;
} doc_scan;

/* Counts one document's tokens and records postings for query terms. Inlined scanning: this
 * loop is the reranker's whole cost. Returns the number of tokens seen. */
static size_t scan_document(doc_scan *d, const unsigned char *p, size_t n) {
    const query_set *q = d->q;
    const unsigned char *end = p + n;
    size_t seen = 0;
    while (p < end) {
        while (p < end && !word_byte[*p])
            p++;
        const unsigned char *tok = p;
        while (p < end && word_byte[*p])
            p++;
        size_t len = (size_t)(p - tok);
        if (!len) break;
        seen++;
        if (q->stopwords && len <= 5 && is_stop(tok, len)) continue;
        d->len++;
        if (!(q->lengths & (1ull << (len < 63 ? len : 63)))) continue; /* no term this long */
        uint64_t h = hash_token(tok, len);
        if (!(q->filter[(h % FILTER_BITS) / 64] & (1ull << (h % 64)))) continue;
        int32_t t = qs_find(q, (const char *)tok, len, h);
        if (t < 0) continue;
        qterm *e = &q->terms[t];
        if (e->last_doc != d->doc) { /* first occurrence in this document */
            if (d->npost == d->cap) {
                size_t cap = d->cap ? d->cap * 2 : 256;
                posting *np = realloc(d->post, cap * sizeof *np);
                if (!np) {
                    d->oom = 1;
                    return seen;
                }
                d->post = np;
                d->cap = cap;
            }
            e->last_doc = d->doc;
            e->df++;
            e->post = d->npost;
            d->post[d->npost++] = (posting){(uint32_t)t, 1};
        } else {
            d->post[e->post].tf++;
        }
    }
    return seen;
}

int nim_bm25_rank(const char *query, size_t qlen, const char *const *docs, const size_t *lens,
                  size_t ndocs, const nim_bm25_params *p, nim_bm25_hit *hits, size_t *tokens) {
    init_tables();
    if (!(p->k1 >= 0 && p->k1 < 1e6) || !(p->b >= 0 && p->b <= 1)) return -1;
    int rc = -1;
    query_set q;
    memset(&q, 0, sizeof q);
    q.stopwords = p->stopwords;
    size_t seen = nim_bm25_tokenize(query, qlen, collect_query_term, &q);
    size_t *doc_len = calloc(ndocs ? ndocs : 1, sizeof *doc_len);
    size_t *first = calloc(ndocs + 1, sizeof *first); /* postings of doc i: first[i]..first[i+1] */
    doc_scan d = {&q, 0, 0, NULL, 0, 0, 0};
    if (q.oom || !doc_len || !first || build_query(&q) != 0) goto out;

    double total_len = 0;
    for (size_t i = 0; i < ndocs; i++) {
        d.doc = i + 1;
        d.len = 0;
        first[i] = d.npost;
        if (docs[i]) seen += scan_document(&d, (const unsigned char *)docs[i], lens[i]);
        if (d.oom) goto out;
        doc_len[i] = d.len; /* 0 when the query has no terms: every score is 0 then */
        total_len += (double)d.len;
    }
    first[ndocs] = d.npost;
    double avgdl = ndocs && total_len > 0 ? total_len / (double)ndocs : 1.0;
    for (size_t t = 0; t < q.nterms; t++) {
        double df = (double)q.terms[t].df;
        q.terms[t].idf = log(1.0 + ((double)ndocs - df + 0.5) / (df + 0.5));
    }
    for (size_t i = 0; i < ndocs; i++) {
        double s = 0, norm = p->k1 * (1.0 - p->b + p->b * (double)doc_len[i] / avgdl);
        for (size_t k = first[i]; k < first[i + 1]; k++) {
            double tf = (double)d.post[k].tf;
            s += q.terms[d.post[k].term].idf * tf * (p->k1 + 1.0) / (tf + norm);
        }
        hits[i].index = i;
        hits[i].score = s;
    }
    nim_rankings_sort(hits, ndocs);
    if (tokens) *tokens = seen;
    rc = 0;
out:
    free(q.terms);
    free(q.slots);
    free(doc_len);
    free(first);
    free(d.post);
    return rc;
}
