/* answer.c: the reader of answer.h. One pass over the bytes: a strict RFC 8259 reader that
 * reads the values the shape names straight into C rankings and checks, then forgets, every
 * other value. Written here rather than taken from a library: a tokenizer (jsmn, used before)
 * plus the checks it leaves out took three passes and ~2,400 instructions per ranking, and no
 * Debian JSON library checks UTF-8's shortest form and surrogate pairs while handing over a
 * number's text. tests/c/test_answer.c and the fuzz target (whose oracle is lua-cjson) hold
 * it to the grammar. */
#include "answer.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Brackets a value passed over may nest (counted from that value): a bound on skip()'s
 * stack array, far past any answer's four or five levels. Deeper is refused. */
#define MAX_DEPTH 512
#define STR(x) #x
#define XSTR(x) STR(x)

const nim_answer_shape nim_answer_nim_shape = {
    "rankings", "index", "logit", {"usage", "total_tokens", NULL, NULL}, "id"};

/* What is wrong with an answer, from least to most telling: a syntax error (the body is not
 * JSON) outranks everything; a problem with the list as a whole outranks one with an entry.
 * Within a rank the first one found is the one reported. */
enum { WRONG_NONE, WRONG_ENTRY, WRONG_LIST, WRONG_SYNTAX };

typedef struct {
    const char *p, *end; /* the next byte to read; the body's end */
    char *err;
    size_t errlen;
    int wrong; /* the rank of the message in err */
    const nim_answer_shape *shape;
    const char *list; /* the list's name in messages: its key, or "answer" for a bare list */
    size_t npassages;
    const nim_answer_mem *mem;
    nim_answer *out;
} reader;

/* Records what is wrong at rank `rank` unless something as telling is recorded already. */
static void wrong(reader *r, int rank, const char *fmt, ...) {
    if (r->wrong >= rank) return;
    r->wrong = rank;
    va_list ap;
    va_start(ap, fmt);
    if (r->err && r->errlen) vsnprintf(r->err, r->errlen, fmt, ap);
    va_end(ap);
}

/* A syntax error, or one that stops the reading (memory, depth): reading ends here. */
static int stop(reader *r, const char *msg) {
    wrong(r, WRONG_SYNTAX, "%s", msg);
    return -1;
}
static int not_json(reader *r) { return stop(r, "body is not JSON"); }

static void ws(reader *r) {
    const char *p = r->p;
    while (p < r->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    r->p = p;
}

/* After white space: is the next byte c? Then it is consumed. */
static int next_is(reader *r, char c) {
    ws(r);
    if (r->p < r->end && *r->p == c) {
        r->p++;
        return 1;
    }
    return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

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

/* At a '"': the string's text between its quotes in [*s, *e), with p past the closing quote.
 * Valid UTF-8 (nim_utf8_seq), no raw control byte, escapes JSON has, and \u escapes that name
 * characters (a surrogate only as a high-low pair, as UTF-16 and JSON readers require). */
static int string(reader *r, const char **s, const char **e) {
    const char *p = r->p + 1, *end = r->end;
    *s = p;
    for (;;) {
        while (p < end && (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x80 && *p != '"' &&
               *p != '\\')
            p++; /* the usual byte */
        if (p >= end) return not_json(r);
        unsigned char c = (unsigned char)*p;
        if (c == '"') break;
        if (c < 0x20) return not_json(r);
        if (c >= 0x80) { /* UTF-8 (RFC 8259 section 8.1): shortest form, no surrogates */
            int n = nim_utf8_seq(p, end);
            if (n < 0) return not_json(r);
            p += n;
            continue;
        }
        if (++p >= end) return not_json(r); /* c is '\\' */
        if (*p && strchr("\"\\/bfnrt", *p)) {
            p++;
            continue;
        }
        unsigned u, lo;
        if (*p != 'u' || end - p < 5 || !nim_json_hex4(p + 1, &u)) return not_json(r);
        p += 5;
        if (u >= 0xDC00 && u < 0xE000) return not_json(r); /* a low half alone */
        if (u >= 0xD800 && u < 0xDC00) {                   /* a high half: its low half next */
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !nim_json_hex4(p + 2, &lo) ||
                lo < 0xDC00 || lo >= 0xE000)
                return not_json(r);
            p += 6;
        }
    }
    *e = p;
    r->p = p + 1;
    return 0;
}

/* At a number's first byte: its text in [*s, *e) by JSON's grammar,
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, with p past it. What follows is the
 * caller's to check (a separator), so "01" and "1x" are refused there. */
static int number_text(reader *r, const char **s, const char **e) {
    const char *p = r->p, *end = r->end;
    *s = p;
    p += p < end && *p == '-';
    if (p >= end || !is_digit(*p)) return not_json(r);
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit(*p))
            p++;
    if (p < end && *p == '.') {
        if (++p >= end || !is_digit(*p)) return not_json(r);
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !is_digit(*p)) return not_json(r);
        while (p < end && is_digit(*p))
            p++;
    }
    *e = p;
    r->p = p;
    return 0;
}

/* At a value that is none of the others: true, false or null, spelled exactly. */
static int literal(reader *r) {
    size_t left = (size_t)(r->end - r->p);
    if (left >= 4 && (memcmp(r->p, "true", 4) == 0 || memcmp(r->p, "null", 4) == 0))
        r->p += 4;
    else if (left >= 5 && memcmp(r->p, "false", 5) == 0)
        r->p += 5;
    else
        return not_json(r);
    return 0;
}

/* An object member's key and its ':' (after '{' or ','): the key's text in [*s, *e). */
static int key(reader *r, const char **s, const char **e) {
    ws(r);
    if (r->p >= r->end || *r->p != '"' || string(r, s, e) != 0) return not_json(r);
    return next_is(r, ':') ? 0 : not_json(r);
}

static int key_is(const char *s, const char *e, const char *name) {
    size_t n = strlen(name);
    return (size_t)(e - s) == n && memcmp(s, name, n) == 0;
}

/* After a member or an element: ',' (1: another follows) or the closing bracket (0). */
static int more(reader *r, char close) {
    if (next_is(r, ',')) return 1;
    return next_is(r, close) ? 0 : not_json(r);
}

/* Checks one value of any kind (after white space) and moves past it. Iterative: nesting
 * costs a byte of `open` per level, not a C stack frame. */
static int skip(reader *r) {
    char open[MAX_DEPTH];
    int depth = 0;
    for (;;) {
        ws(r);
        if (r->p >= r->end) return not_json(r);
        const char *s, *e;
        char c = *r->p;
        int done = 1; /* a whole value was read: look for what follows it */
        if (c == '{' || c == '[') {
            if (depth == MAX_DEPTH)
                return stop(r, "body nests more than " XSTR(MAX_DEPTH) " levels deep");
            open[depth++] = c == '{' ? '}' : ']';
            r->p++;
            if (next_is(r, open[depth - 1])) {
                depth--;
            } else {
                if (c == '{' && key(r, &s, &e) != 0) return -1;
                done = 0;
            }
        } else if (c == '"') {
            if (string(r, &s, &e) != 0) return -1;
        } else if (c == '-' || is_digit(c)) {
            if (number_text(r, &s, &e) != 0) return -1;
        } else if (literal(r) != 0) {
            return -1;
        }
        while (done && depth > 0) { /* after a value inside brackets: ',' or the close */
            int m = more(r, open[depth - 1]);
            if (m < 0) return -1;
            if (m == 0) {
                depth--;
                continue;
            }
            if (open[depth - 1] == '}' && key(r, &s, &e) != 0) return -1;
            done = 0;
        }
        if (done) return 0;
    }
}

/* A value that should be a number (after white space): its text in [*s, *e) when it is one,
 * *s NULL when it is a value of another kind (checked and passed over). */
static int number_or_skip(reader *r, const char **s, const char **e) {
    ws(r);
    *s = NULL;
    if (r->p < r->end && (*r->p == '-' || is_digit(*r->p))) return number_text(r, s, e);
    return skip(r);
}

/* number()'s answer for a literal of 64 characters or more: valid JSON, but not read. */
#define TOO_LONG -2

/* Powers of ten a double holds exactly (Clinger's fast path). */
static const double exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The value of the number literal [s, end), its grammar checked again (cheap, and the rule
 * stays next to the conversion). Most values (up to 15 significant digits, exponent within 22) are
 * converted exactly in C, the classic fast path; the others go to strtod. */
static int number(const char *s, const char *end, double *out, int *integer) {
    const char *p = s;
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
    if (p != end) return -1;
    if (end - s >= 64) return TOO_LONG;
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

/* Reads one entry of the list (after white space), the k-th, into *rk (NULL: only checked):
 * {"index": i, "<score>": x} with any other members passed over. */
static int ranking(reader *r, size_t k, unsigned char *seen, nim_ranking *rk) {
    const char *list = r->list, *index = r->shape->index, *score = r->shape->score;
    if (*r->p != '{') {
        wrong(r, WRONG_ENTRY, "%s[%zu] is not an object", list, k);
        return skip(r);
    }
    r->p++;
    const char *is = NULL, *ie = NULL, *ss = NULL, *se = NULL;
    int has_index = 0, has_score = 0;
    if (!next_is(r, '}')) {
        int m;
        do {
            const char *ks, *ke;
            if (key(r, &ks, &ke) != 0) return -1;
            int is_index = key_is(ks, ke, index), is_score = !is_index && key_is(ks, ke, score);
            int *has = is_index ? &has_index : is_score ? &has_score : NULL;
            if (has && *has) /* which one a reader takes is a guess: none is taken */
                wrong(r, WRONG_ENTRY, "%s[%zu] has '%s' twice", list, k, is_index ? index : score);
            if (!has) {
                if (skip(r) != 0) return -1;
            } else if (number_or_skip(r, is_index ? &is : &ss, is_index ? &ie : &se) != 0) {
                return -1;
            }
            if (has) *has = 1;
        } while ((m = more(r, '}')) == 1);
        if (m < 0) return -1;
    }
    double v;
    int integer;
    if (!has_index) {
        wrong(r, WRONG_ENTRY, "%s[%zu].%s is missing", list, k, index);
        return 0;
    }
    int rc = is ? number(is, ie, &v, &integer) : -1;
    if (rc != 0 || !integer) {
        wrong(r, WRONG_ENTRY,
              rc == TOO_LONG ? "%s[%zu].%s has 64 characters or more"
                             : "%s[%zu].%s is not an integer",
              list, k, index);
        return 0;
    }
    if (v < 0 || v >= (double)r->npassages) {
        wrong(r, WRONG_ENTRY, "%s[%zu].%s is out of range", list, k, index);
        return 0;
    }
    size_t idx = (size_t)v;
    if (seen[idx]) {
        wrong(r, WRONG_ENTRY, "%s[%zu].%s repeats an earlier index", list, k, index);
        return 0;
    }
    seen[idx] = 1;
    if (!has_score) {
        wrong(r, WRONG_ENTRY, "%s[%zu].%s is missing", list, k, score);
        return 0;
    }
    rc = ss ? number(ss, se, &v, &integer) : -1;
    if (rc != 0) {
        wrong(r, WRONG_ENTRY,
              rc == TOO_LONG ? "%s[%zu].%s has 64 characters or more"
                             : "%s[%zu].%s is not a finite number",
              list, k, score);
        return 0;
    }
    if (rk) {
        rk->index = idx;
        rk->score = v;
    }
    return 0;
}

/* The list (after white space): its entries into out->rk, in the provider's order. */
static int rankings(reader *r) {
    if (r->p >= r->end || *r->p != '[') {
        wrong(r, WRONG_LIST, "'%s' is not a list", r->list);
        return skip(r);
    }
    r->p++;
    nim_answer *out = r->out;
    size_t np = r->npassages;
    if (np > SIZE_MAX / sizeof *out->rk) return stop(r, "out of memory");
    /* Room for the entries the rest of the body can hold (one with both keys takes at least
     * their lengths + 11 bytes, and a separator), never more than were sent: a short answer
     * to a long request (top_n) takes little. An entry past the room can only follow a wrong
     * one: from then on entries are only checked. */
    size_t min_entry = strlen(r->shape->index) + strlen(r->shape->score) + 11;
    size_t room = (size_t)(r->end - r->p) / min_entry + 1;
    if (room > np) room = np;
    out->rk = r->mem->keep(r->mem->keep_ud, (room ? room : 1) * sizeof *out->rk);
    unsigned char *seen = r->mem->tmp(r->mem->tmp_ud, np ? np : 1);
    if (!out->rk || !seen) return stop(r, "out of memory");
    memset(seen, 0, np ? np : 1);
    size_t k = 0;
    if (!next_is(r, ']')) {
        int m;
        do {
            ws(r);
            if (r->p >= r->end) return not_json(r);
            if (k >= np) { /* more than were sent: the rest is only checked */
                wrong(r, WRONG_LIST, "'%s' has more entries than passages were sent", r->list);
                if (skip(r) != 0) return -1;
            } else if (ranking(r, k, seen,
                               k < room && r->wrong == WRONG_NONE ? &out->rk[k] : NULL) != 0) {
                return -1;
            }
            k++;
        } while ((m = more(r, ']')) == 1);
        if (m < 0) return -1;
    }
    out->n = k < np ? k : np;
    return 0;
}

/* The token count (a value, after white space): kept when it is a positive number. */
static int count(reader *r) {
    const char *s, *e;
    if (number_or_skip(r, &s, &e) != 0) return -1;
    double v;
    int integer;
    if (s && number(s, e, &v, &integer) == 0 && v > 0 && v < 9e15) r->out->tokens = (long long)v;
    return 0;
}

/* The token count at the shape's path (a value, after white space): depth is the key to
 * match inside it. Values off the path are checked and passed over. */
static int usage(reader *r, int depth) {
    ws(r);
    if (r->p >= r->end || *r->p != '{') return skip(r);
    r->p++;
    if (next_is(r, '}')) return 0;
    const char *name = r->shape->tokens[depth], *next = r->shape->tokens[depth + 1];
    int m;
    do {
        const char *ks, *ke;
        if (key(r, &ks, &ke) != 0) return -1;
        int rc = !key_is(ks, ke, name) ? skip(r)
                 : next                ? (depth < 2 ? usage(r, depth + 1) : skip(r))
                                       : count(r);
        if (rc != 0) return -1;
    } while ((m = more(r, '}')) == 1);
    return m < 0 ? -1 : 0;
}

/* The members of the top-level object (after its '{'): the list, the token count, the id;
 * every other member checked and passed over. */
static int members(reader *r) {
    const nim_answer_shape *shape = r->shape;
    int found = 0;
    if (!next_is(r, '}')) {
        int m;
        do {
            const char *ks, *ke;
            int rc;
            if (key(r, &ks, &ke) != 0) return -1;
            ws(r);
            if (key_is(ks, ke, shape->list)) {
                if (found++) { /* refused, and only checked: one list is read, once */
                    wrong(r, WRONG_LIST, "'%s' appears twice in the answer", r->list);
                    rc = skip(r);
                } else {
                    rc = rankings(r);
                }
            } else if (shape->tokens[0] && key_is(ks, ke, shape->tokens[0])) {
                rc = shape->tokens[1] ? usage(r, 1) : count(r);
            } else if (shape->id && key_is(ks, ke, shape->id) && r->p < r->end && *r->p == '"') {
                const char *s, *e;
                if (string(r, &s, &e) != 0) return -1;
                rc = 0;
                r->out->id = s;
                r->out->id_len = (size_t)(e - s);
                r->out->id_escaped = memchr(s, '\\', (size_t)(e - s)) != NULL;
            } else {
                rc = skip(r);
            }
            if (rc != 0) return -1;
        } while ((m = more(r, '}')) == 1);
        if (m < 0) return -1;
    }
    if (!found) wrong(r, WRONG_LIST, "no '%s' list in the answer", shape->list);
    return 0;
}

/* The body: one value of the shape's kind, nothing after it but white space. 0, or -1 with
 * what is wrong recorded (r->wrong). */
static int read_answer(reader *r) {
    int bare = r->shape->list == NULL;
    ws(r);
    if (r->p >= r->end) return not_json(r);
    int rc;
    if (*r->p != (bare ? '[' : '{')) { /* the wrong kind of value: said once it is JSON */
        if (skip(r) != 0) return -1;
        ws(r);
        if (r->p != r->end) return not_json(r); /* "a":1 is no JSON value */
        wrong(r, WRONG_LIST, bare ? "body is not a JSON list" : "body is not a JSON object");
        return -1;
    } else if (bare) {
        rc = rankings(r);
    } else {
        r->p++;
        rc = members(r);
    }
    if (rc != 0) return -1;
    ws(r);
    if (r->p != r->end)
        return stop(r, bare ? "body has bytes after its JSON list"
                            : "body has bytes after its JSON object");
    return r->wrong == WRONG_NONE ? 0 : -1;
}

int nim_answer_read(const char *js, size_t len, size_t npassages, const nim_answer_shape *shape,
                    const nim_answer_mem *mem, nim_answer *out, char *err, size_t errlen) {
    if (!shape) shape = &nim_answer_nim_shape;
    reader r = {
        js,        js + len, err, errlen, WRONG_NONE, shape, shape->list ? shape->list : "answer",
        npassages, mem,      out};
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    if (read_answer(&r) == 0) return 0;
    out->n = 0; /* a refused answer has no rankings */
    return -1;
}
