/* answer.h: reads a reranker's 2xx answer, {"rankings": [{"index": i, "logit": x}, ...],
 * "usage": {"total_tokens": n}, "id": "..."} or another provider's shape of the same thing
 * (nim_answer_shape), straight into C rankings. Pure C: no Lua, no
 * curl. Strict where a lenient reader would turn garbage into a plausible ranking: the body
 * must be one JSON object holding a "rankings" list; every index an integer literal in range
 * and not repeated, every logit a finite number literal (no hex, no NaN, no strings); JSON's
 * own grammar for the whole body (RFC 8259), read in one pass without a tokenizer. */
#ifndef NIM_ANSWER_H
#define NIM_ANSWER_H

#include <stddef.h>

#include "ranking.h"

/* Memory for the reader, owned by the caller; NULL when there is none. `keep` holds what the
 * answer returns (its rankings: a Lua userdata in the binding, so a raise frees it); `tmp`
 * what only the reading needs (which indices were seen: scratch.h's reusable blocks there). */
typedef void *(*nim_alloc_fn)(void *ud, size_t size);
typedef struct {
    nim_alloc_fn keep;
    void *keep_ud;
    nim_alloc_fn tmp;
    void *tmp_ud;
} nim_answer_mem;

typedef struct {
    nim_ranking *rk; /* n rankings in the provider's order */
    size_t n;
    long long tokens; /* usage.total_tokens when a positive number, else 0 */
    const char *id;   /* the provider's id: points into the body (JSON-escaped); NULL if none */
    size_t id_len;
    int id_escaped; /* the id has backslash escapes: decode it before use */
} nim_answer;

/* Where an answer keeps its rankings: NIM's is {"rankings": [{"index", "logit"}], "usage":
 * {"total_tokens"}, "id"}; other providers name the list and fields otherwise, or answer a
 * bare list (list NULL). tokens: the path of object keys to a token count (NULL-terminated,
 * at most 3 keys; tokens[0] NULL: none). */
typedef struct {
    const char *list;
    const char *index, *score;
    const char *tokens[4];
    const char *id; /* NULL: the answer carries no id */
} nim_answer_shape;

extern const nim_answer_shape nim_answer_nim_shape;

/* The value of the four hex digits at s (a JSON \u escape's) in *out: 1, or 0 if one is not
 * a hex digit. */
int nim_json_hex4(const char *s, unsigned *out);

/* 0, or -1 (out->n 0) with err saying what is wrong ("rankings[3].index is out of range").
 * npassages: passages that were sent (indices must be below it). shape NULL: NIM's. */
int nim_answer_read(const char *js, size_t len, size_t npassages, const nim_answer_shape *shape,
                    const nim_answer_mem *mem, nim_answer *out, char *err, size_t errlen);

/* The length of the UTF-8 sequence at s (before e): 1 to 4, or -1 when it is not valid UTF-8
 * (overlong forms, surrogates, past U+10FFFF, cut short). The one UTF-8 rule of nimrank. */
int nim_utf8_seq(const char *s, const char *e);

#endif
