/* answer.c: the reader of answer.h. jsmn tokenises (with parent links, so closing brackets
 * cost O(1)); this file walks the tokens it needs and checks JSON's number grammar itself. */
#include "answer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

/* A valid answer has about six tokens per ranking; more than this is garbage or an attack,
 * and is refused before any memory is taken for it. */
#define TOKENS_PER_PASSAGE 8
#define TOKENS_SLACK 4096

const nim_answer_shape nim_answer_nim_shape = {
    "rankings", "index", "logit", {"usage", "total_tokens", NULL, NULL}, "id"};

typedef struct {
    const char *js;
    const jsmntok_t *t;
    int n;
    char *err;
    size_t errlen;
    const nim_answer_shape *shape;
    const char *list; /* the list's name in messages: its key, or "answer" for a bare list */
} reader;

static int fail(reader *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (r->err && r->errlen) vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_key(const reader *r, int i, const char *key) {
    size_t k = strlen(key);
    const jsmntok_t *t = &r->t[i];
    return t->type == JSMN_STRING && (size_t)(t->end - t->start) == k &&
           memcmp(r->js + t->start, key, k) == 0;
}

/* Is token i a key with its value at i + 1 (jsmn is lenient about a key without one)? */
static int key_with_value(const reader *r, int i) {
    return i + 1 < r->n && r->t[i].type == JSMN_STRING && r->t[i].size == 1;
}

/* The token after the value that starts at i (its whole subtree skipped). */
static int skip(const reader *r, int i) {
    int end = r->t[i].end, j = i + 1;
    while (j < r->n && r->t[j].start < end)
        j++;
    return j;
}

/* JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? over [p, end). */
static int number_ok(const char *p, const char *end) {
    p += p < end && *p == '-';
    if (p >= end || *p < '0' || *p > '9') return 0;
    if (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9') return 0; /* leading zero */
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if (p < end && *p == '.') {
        if (++p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    return p == end;
}

/* Where a token's text begins and ends (a string's quotes included: jsmn leaves them out). */
static int tok_begin(const jsmntok_t *t) {
    return t->type == JSMN_STRING ? t->start - 1 : t->start;
}
static int tok_end(const jsmntok_t *t) { return t->type == JSMN_STRING ? t->end + 1 : t->end; }

/* Are the bytes [from, to) white space around exactly one `sep` (or none when sep is 0)? */
static int gap_ok(const char *js, int from, int to, char sep) {
    if (to - from == (sep != 0)) return sep == 0 || js[from] == sep; /* compact JSON */
    int seen = 0;
    for (int i = from; i < to; i++) {
        char c = js[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c != sep || seen++) return 0;
    }
    return seen == (sep != 0);
}

int nim_json_hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return 0;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 1;
}

int nim_utf8_seq(const char *s, const char *e) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x80) return 1;
    int n = c >= 0xC2 && c <= 0xDF   ? 1
            : c >= 0xE0 && c <= 0xEF ? 2
            : c >= 0xF0 && c <= 0xF4 ? 3
                                     : -1;
    if (n < 0 || e - s <= n) return -1;
    unsigned char c1 = (unsigned char)s[1];
    /* the second byte's range carries the overlong, surrogate and past-U+10FFFF rules */
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) ||
        (c == 0xF4 && c1 > 0x8F))
        return -1;
    for (int i = 1; i <= n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) return -1;
    return n + 1;
}

/* A string's text between its quotes: valid UTF-8, no raw control byte, and \u escapes that
 * name characters (a surrogate only as a high-low pair, as UTF-16 and JSON readers require). */
static int string_ok(const char *s, const char *e) {
    for (; s < e; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x80 && c != '\\') continue; /* the usual byte */
        if (c < 0x20) return -1;
        if (c >= 0x80) { /* UTF-8 (RFC 8259 section 8.1): shortest form, no surrogates */
            int n = nim_utf8_seq(s, e);
            if (n < 0) return -1;
            s += n - 1;
            continue;
        }
        if (*++s != 'u') continue; /* c is '\\': a one-letter escape, jsmn checked the letter */
        unsigned u, lo;
        if (!nim_json_hex4(s + 1, &u)) return -1; /* jsmn has checked; cheap to be sure */
        s += 4;
        if (u >= 0xDC00 && u < 0xE000) return -1; /* a low half alone */
        if (u >= 0xD800 && u < 0xDC00) {          /* a high half: its low half must follow */
            if (e - s < 7 || s[1] != '\\' || s[2] != 'u') return -1;
            if (!nim_json_hex4(s + 3, &lo) || lo < 0xDC00 || lo >= 0xE000) return -1;
            s += 6;
        }
    }
    return 0;
}

/* What jsmn leaves unchecked, checked in one pass over the tokens: the separators between
 * values (',' and ':', none missing, none extra), keys that are strings with one value,
 * literals spelled exactly (true, false, null), numbers by JSON's grammar, and no raw control
 * byte inside a string. With it, a body is refused exactly when RFC 8259 JSON would refuse
 * it. `last` is scratch for one int per token: where its latest child ended. */
static int syntax(const reader *r, int *last, int *count) {
    const jsmntok_t *t = r->t;
    const char *js = r->js;
    for (int j = 0; j < r->n; j++) {
        last[j] = t[j].start + 1; /* just past '{' or '[' */
        count[j] = 0;
        const char *s = js + t[j].start, *e = js + t[j].end;
        if (t[j].type == JSMN_PRIMITIVE) {
            size_t n = (size_t)(e - s);
            if (!((n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0) ||
                  (n == 4 && memcmp(s, "null", 4) == 0) || number_ok(s, e)))
                return -1;
        } else if (t[j].type == JSMN_STRING && string_ok(s, e) != 0) {
            return -1;
        }
        int p = t[j].parent;
        if (p < 0) { /* the top-level value: first, with only white space before it */
            if (j != 0 || !gap_ok(js, 0, tok_begin(&t[j]), 0)) return -1;
            continue;
        }
        if (t[p].type == JSMN_STRING) { /* a value: its parent is its key */
            if (!gap_ok(js, tok_end(&t[p]), tok_begin(&t[j]), ':')) return -1;
            int obj = t[p].parent; /* and the key's, an object ("a":1 alone is not JSON) */
            if (obj < 0 || t[obj].type != JSMN_OBJECT) return -1;
            last[obj] = tok_end(&t[j]);
            continue;
        }
        if (t[p].type == JSMN_OBJECT && (t[j].type != JSMN_STRING || t[j].size != 1)) return -1;
        if (!gap_ok(js, last[p], tok_begin(&t[j]), count[p] ? ',' : 0)) return -1;
        last[p] = tok_end(&t[j]);
        count[p]++;
    }
    for (int j = 0; j < r->n; j++) /* nothing between the last child and the closing bracket */
        if ((t[j].type == JSMN_OBJECT || t[j].type == JSMN_ARRAY) &&
            !gap_ok(js, last[j], t[j].end - 1, 0))
            return -1;
    return 0;
}

/* Powers of ten a double holds exactly (Clinger's fast path). */
static const double exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, checked while the
 * value is read. Most values (up to 15 significant digits, exponent within 22) are converted
 * exactly in C, the classic fast path; the others go to strtod. */
static int number(const reader *r, int i, double *out, int *integer) {
    const jsmntok_t *t = &r->t[i];
    if (t->type != JSMN_PRIMITIVE) return -1;
    const char *s = r->js + t->start, *end = r->js + t->end, *p = s;
    int neg = p < end && *p == '-';
    p += neg;
    if (p >= end || *p < '0' || *p > '9') return -1;
    if (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9') return -1; /* leading zero */
    unsigned long long mant = 0;
    int digits = 0, scale = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
        if (digits < 19)
            mant = mant * 10 + (unsigned)(*p - '0'), digits += mant != 0;
        else
            scale++;
    *integer = 1;
    if (p < end && *p == '.') {
        *integer = 0;
        if (++p >= end || *p < '0' || *p > '9') return -1;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            if (digits < 19) mant = mant * 10 + (unsigned)(*p - '0'), digits += mant != 0, scale--;
    }
    int exp10 = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        *integer = 0;
        int eneg = 0;
        if (++p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p >= end || *p < '0' || *p > '9') return -1;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            if (exp10 < 100000) exp10 = exp10 * 10 + (*p - '0');
        if (eneg) exp10 = -exp10;
    }
    if (p != end || end - s >= 64) return -1;
    int e = scale + exp10;
    if (digits <= 15 && e >= -22 && e <= 22) { /* both operands exact: one rounding */
        double v = (double)mant;
        v = e < 0 ? v / exact_pow10[-e] : v * exact_pow10[e];
        *out = neg ? -v : v;
        return 0;
    }
    char buf[64];
    memcpy(buf, s, (size_t)(end - s));
    buf[end - s] = '\0';
    *out = strtod(buf, NULL);
    return isfinite(*out) ? 0 : -1;
}

/* Reads one {"index": i, "<score>": x} at token e into *rk; k names it in errors. */
static int ranking(reader *r, int e, size_t k, size_t npassages, unsigned char *seen,
                   nim_ranking *rk) {
    const char *list = r->list, *index = r->shape->index, *score = r->shape->score;
    if (r->t[e].type != JSMN_OBJECT) return fail(r, "%s[%zu] is not an object", list, k);
    int index_tok = -1, score_tok = -1;
    for (int i = e + 1; i < r->n && r->t[i].start < r->t[e].end; i = skip(r, i + 1)) {
        if (!key_with_value(r, i)) return fail(r, "%s[%zu] is not an object", list, k);
        int *tok = is_key(r, i, index) ? &index_tok : is_key(r, i, score) ? &score_tok : NULL;
        if (tok && *tok >= 0) /* which one a reader takes is a guess: none is taken */
            return fail(r, "%s[%zu] has '%s' twice", list, k, tok == &index_tok ? index : score);
        if (tok) *tok = i + 1;
    }
    double v;
    int integer;
    if (index_tok < 0) return fail(r, "%s[%zu].%s is missing", list, k, index);
    if (number(r, index_tok, &v, &integer) != 0 || !integer)
        return fail(r, "%s[%zu].%s is not an integer", list, k, index);
    if (v < 0 || v >= (double)npassages)
        return fail(r, "%s[%zu].%s is out of range", list, k, index);
    size_t idx = (size_t)v;
    if (seen[idx]) return fail(r, "%s[%zu].%s repeats an earlier index", list, k, index);
    seen[idx] = 1;
    if (score_tok < 0) return fail(r, "%s[%zu].%s is missing", list, k, score);
    if (r->t[score_tok].type != JSMN_PRIMITIVE || number(r, score_tok, &v, &integer) != 0)
        return fail(r, "%s[%zu].%s is not a finite number", list, k, score);
    rk->index = idx;
    rk->score = v;
    return 0;
}

static int rankings(reader *r, int a, size_t npassages, const nim_answer_mem *mem,
                    nim_answer *out) {
    if (r->t[a].type != JSMN_ARRAY) return fail(r, "'%s' is not a list", r->list);
    size_t n = (size_t)r->t[a].size;
    if (n > npassages) return fail(r, "'%s' has more entries than passages were sent", r->list);
    out->rk = mem->keep(mem->keep_ud, (n ? n : 1) * sizeof *out->rk);
    unsigned char *seen = mem->tmp(mem->tmp_ud, npassages ? npassages : 1);
    if (!out->rk || !seen) return fail(r, "out of memory");
    memset(seen, 0, npassages ? npassages : 1);
    int e = a + 1;
    for (size_t k = 0; k < n; k++, e = skip(r, e)) {
        if (e >= r->n) return fail(r, "body is not JSON");
        if (ranking(r, e, k, npassages, seen, &out->rk[k]) != 0) return -1;
    }
    out->n = n;
    return 0;
}

/* The token count at the shape's path below the object at u (depth: the key to match). */
static void usage(const reader *r, int u, int depth, nim_answer *out) {
    if (r->t[u].type != JSMN_OBJECT) return;
    const char *key = r->shape->tokens[depth], *next = r->shape->tokens[depth + 1];
    for (int i = u + 1; i < r->n && r->t[i].start < r->t[u].end; i = skip(r, i + 1)) {
        if (!key_with_value(r, i) || !is_key(r, i, key)) continue;
        double v;
        int integer;
        if (next && depth < 2)
            usage(r, i + 1, depth + 1, out);
        else if (!next && number(r, i + 1, &v, &integer) == 0 && v > 0 && v < 9e15)
            out->tokens = (long long)v;
    }
}

/* Checks the top level: one object (a list, for a bare-list shape), nothing after it but white
 * space. */
static int tokenize(reader *r, const char *js, size_t len, size_t npassages, nim_alloc_fn alloc,
                    void *ud) {
    if (len > 0x7fffffff) return fail(r, "body is too large");
    /* One pass in the common case: room for a valid answer's tokens; more only if needed. */
    size_t limit = npassages * TOKENS_PER_PASSAGE + TOKENS_SLACK;
    size_t guess = npassages * 6 + 64;
    jsmn_parser p;
    jsmn_init(&p);
    jsmntok_t *t = alloc(ud, guess * sizeof *t);
    if (!t) return fail(r, "out of memory");
    int count = jsmn_parse(&p, js, len, t, (unsigned)guess);
    if (count == JSMN_ERROR_NOMEM) {
        jsmn_init(&p);
        count = jsmn_parse(&p, js, len, NULL, 0); /* how many, then exactly that */
        if (count < 1) return fail(r, "body is not JSON");
        if ((size_t)count > limit)
            return fail(r, "body has more JSON values (%d) than an answer for %zu passages", count,
                        npassages);
        t = alloc(ud, (size_t)count * sizeof *t);
        if (!t) return fail(r, "out of memory");
        jsmn_init(&p);
        if (jsmn_parse(&p, js, len, t, (unsigned)count) != count) count = -1;
    }
    if (count < 1) return fail(r, "body is not JSON");
    r->t = t;
    r->n = count;
    int *scratch = alloc(ud, 2 * (size_t)count * sizeof *scratch);
    if (!scratch) return fail(r, "out of memory");
    if (syntax(r, scratch, scratch + count) != 0) return fail(r, "body is not JSON");
    int bare = r->shape->list == NULL;
    if (t[0].type != (bare ? JSMN_ARRAY : JSMN_OBJECT))
        return fail(r, bare ? "body is not a JSON list" : "body is not a JSON object");
    for (size_t i = (size_t)t[0].end; i < len; i++)
        if (js[i] != ' ' && js[i] != '\t' && js[i] != '\r' && js[i] != '\n')
            return fail(r, "body has bytes after its JSON %s", bare ? "list" : "object");
    return 0;
}

int nim_answer_read(const char *js, size_t len, size_t npassages, const nim_answer_shape *shape,
                    const nim_answer_mem *mem, nim_answer *out, char *err, size_t errlen) {
    if (!shape) shape = &nim_answer_nim_shape;
    reader r = {js, NULL, 0, err, errlen, shape, shape->list ? shape->list : "answer"};
    memset(out, 0, sizeof *out);
    if (tokenize(&r, js, len, npassages, mem->tmp, mem->tmp_ud) != 0) return -1;
    if (!shape->list) return rankings(&r, 0, npassages, mem, out);
    int found = 0;
    for (int i = 1; i < r.n; i = skip(&r, i + 1)) { /* key, value, key, value ... */
        if (!key_with_value(&r, i)) return fail(&r, "body is not JSON");
        if (is_key(&r, i, shape->list)) {
            if (rankings(&r, i + 1, npassages, mem, out) != 0) return -1;
            found = 1;
        } else if (shape->tokens[0] && is_key(&r, i, shape->tokens[0])) {
            double v;
            int integer;
            if (shape->tokens[1])
                usage(&r, i + 1, 1, out);
            else if (number(&r, i + 1, &v, &integer) == 0 && v > 0 && v < 9e15)
                out->tokens = (long long)v;
        } else if (shape->id && is_key(&r, i, shape->id) && r.t[i + 1].type == JSMN_STRING) {
            out->id = js + r.t[i + 1].start;
            out->id_len = (size_t)(r.t[i + 1].end - r.t[i + 1].start);
            out->id_escaped = memchr(out->id, '\\', out->id_len) != NULL;
        }
    }
    if (!found) return fail(&r, "no '%s' list in the answer", shape->list);
    return 0;
}
