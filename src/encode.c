/* encode.c: results as JSON text, fast: nim.native.encode_results(results) for the gateway's
 * answers. A rerank answer is mostly documents; cjson escapes them a byte at a time and writes
 * every number through snprintf, which cost more than the rest of a gateway request together.
 * Here the texts go through wire.c's escaper, indices are written as integers and scores as
 * %.14g writes them without snprintf (g14).
 *
 * Only the shape nim's results have is written here: a list of {index, relevance_score
 * [, document = {text [, image]}]}. Anything else (a filter that added a key, a number that is
 * not finite) answers nil, and the caller encodes the whole with lua-cjson as before. Raw
 * reads only: no metamethod runs, nothing raises while the buffer (the state's, reused) is
 * written. */
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "binding.h"
#include "wire.h"

static int add(nim_buf *b, const char *s, size_t n) {
    if (n == 0) return 0; /* an empty head on a buffer never grown: no memcpy to NULL */
    if (nim_buf_reserve(b, n)) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

/* An integer in decimal (what "%lld" writes, without snprintf's cost). */
static int add_integer(nim_buf *b, long long v) {
    char tmp[24];
    char *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    return add(b, p, (size_t)(tmp + sizeof tmp - p));
}

static const uint64_t POW10[] = {1ull,
                                 10ull,
                                 100ull,
                                 1000ull,
                                 10000ull,
                                 100000ull,
                                 1000000ull,
                                 10000000ull,
                                 100000000ull,
                                 1000000000ull,
                                 10000000000ull,
                                 100000000000ull,
                                 1000000000000ull,
                                 10000000000000ull,
                                 100000000000000ull,
                                 1000000000000000ull,
                                 10000000000000000ull,
                                 100000000000000000ull,
                                 1000000000000000000ull};

/* What snprintf(out, n, "%.14g", v) writes, for 1e-4 <= |v| < 1e13 (relevance scores, and
 * the common case), without its cost: v is m * 2^-p exactly (m of 53 bits), so its 14
 * significant digits are the integer part of m * 10^s / 2^p, rounded half to even on the
 * exact remainder as printf rounds; %g's fixed notation then, trailing zeros cut. The length
 * written, or -1 for a value outside that range (the caller asks snprintf). */
static int g14(char *out, double v) {
    double a = fabs(v);
    if (!(a >= 1e-4 && a < 1e13)) return -1;
    int ex;
    double f = frexp(a, &ex);            /* a = f * 2^ex, 0.5 <= f < 1 */
    uint64_t m = (uint64_t)ldexp(f, 53); /* exact: a = m * 2^(ex - 53) */
    int p = 53 - ex;                     /* 9 < p < 67 in this range */
    /* 2^(ex-1) <= a < 2^ex: 10^e <= a < 10^(e+1) for this e or the next (no log10) */
    int e = (int)floor((ex - 1) * 0.30102999566398120);
    unsigned __int128 n, q = 0, r = 0, mask = ((unsigned __int128)1 << p) - 1;
    for (int tries = 0; tries < 3; tries++) {
        if (e < -5 || e > 13) return -1;
        n = (unsigned __int128)m * POW10[13 - e];
        q = n >> p, r = n & mask;
        if (q < POW10[13])
            e--;
        else if (q >= POW10[14])
            e++;
        else
            break;
    }
    if (q < POW10[13] || q >= POW10[14]) return -1;
    unsigned __int128 half = (unsigned __int128)1 << (p - 1);
    if (r > half || (r == half && (q & 1))) q++;
    if (q == POW10[14]) q = POW10[13], e++; /* 9.99...95 rounds up to 10 */
    if (e < -4 || e > 13) return -1;        /* (%g's exponent notation) */
    char d[14];
    uint64_t u = (uint64_t)q;
    for (int i = 13; i >= 0; i--, u /= 10)
        d[i] = (char)('0' + u % 10);
    int len = 0, nd = 14;
    while (nd > 1 && d[nd - 1] == '0' && nd > e + 1) /* trailing zeros of the fraction */
        nd--;
    if (signbit(v)) out[len++] = '-';
    if (e >= 0) {
        for (int i = 0; i <= e; i++)
            out[len++] = i < 14 ? d[i] : '0';
        if (nd > e + 1) {
            out[len++] = '.';
            for (int i = e + 1; i < nd; i++)
                out[len++] = d[i];
        }
    } else {
        out[len++] = '0';
        out[len++] = '.';
        for (int i = 0; i < -e - 1; i++)
            out[len++] = '0';
        for (int i = 0; i < nd; i++)
            out[len++] = d[i];
    }
    return len;
}

/* A number as lua-cjson writes it (%.14g); integers as integers. */
static int add_number(nim_buf *b, lua_State *L, int idx) {
    if (lua_isinteger(L, idx)) return add_integer(b, (long long)lua_tointeger(L, idx));
    double v = lua_tonumber(L, idx);
    if (!isfinite(v)) return -1;
    if (v == floor(v) && fabs(v) < 1e15) return add_integer(b, (long long)v);
    char tmp[40];
    int n = g14(tmp, v);
    if (n < 0) n = snprintf(tmp, sizeof tmp, "%.14g", v);
    return add(b, tmp, (size_t)n);
}

/* The key names, as the bytes of the state's own strings: Lua keeps one copy of each short
 * string, so a key is one of them exactly when it is the same pointer (no strlen, no
 * memcmp a key). The strings stay on the stack while they are used. */
typedef struct {
    const char *index, *score, *document, *text, *image;
} key_names;

/* Which of names (n of them) the key at idx is: its position, or -1 when it is none of them
 * (or not a string). */
static int key_slot(lua_State *L, int idx, const char *const *names, int n) {
    if (lua_type(L, idx) != LUA_TSTRING) return -1;
    const char *k = lua_tostring(L, idx); /* a string already: nothing is converted */
    for (int i = 0; i < n; i++)
        if (names[i] == k) return i;
    return -1;
}

/* Table t (absolute index, no metatable) read in one raw pass: its values for names go to
 * the stack slots from `at` on (nil for those it lacks); -1 when it has any other key. */
static int take_keys(lua_State *L, int t, const char *const *names, int n, int at) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        int slot = key_slot(L, -2, names, n);
        if (slot < 0) {
            lua_pop(L, 2);
            return -1;
        }
        lua_replace(L, at + slot); /* the value into its slot; the key stays for lua_next */
    }
    return 0;
}

/* Appends the string at idx as a JSON string; -1 when it is not a string. */
static int add_string_at(nim_buf *b, lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TSTRING) return -1;
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return nim_buf_json_string(b, s, n);
}

/* One result; 0, or -1 for a shape not written here (or memory out). */
static int add_entry(nim_buf *b, lua_State *L, int e, const key_names *kn) {
    const char *entry_keys[3] = {kn->index, kn->score, kn->document};
    const char *doc_keys[2] = {kn->text, kn->image};
    if (!lua_istable(L, e) || lua_getmetatable(L, e) != 0) return -1;
    int base = lua_gettop(L) + 1; /* index, relevance_score, document, text, image */
    lua_settop(L, base + 4);
    int rc = take_keys(L, e, entry_keys, 3, base);
    if (!rc && (lua_type(L, base) != LUA_TNUMBER || lua_type(L, base + 1) != LUA_TNUMBER)) rc = -1;
    if (!rc)
        rc = add(b, "{\"index\":", 9) || add_number(b, L, base) ||
             add(b, ",\"relevance_score\":", 19) || add_number(b, L, base + 1);
    int dt = lua_type(L, base + 2);
    if (!rc && dt == LUA_TTABLE) {
        if (lua_getmetatable(L, base + 2) != 0) {
            lua_pop(L, 1);
            rc = -1;
        } else {
            rc = take_keys(L, base + 2, doc_keys, 2, base + 3);
        }
        int has_text = !lua_isnil(L, base + 3), has_image = !lua_isnil(L, base + 4);
        if (!rc) rc = add(b, ",\"document\":{", 13);
        if (!rc && has_text) rc = add(b, "\"text\":", 7) || add_string_at(b, L, base + 3);
        if (!rc && has_image)
            rc = add(b, has_text ? ",\"image\":" : "\"image\":", has_text ? 9 : 8) ||
                 add_string_at(b, L, base + 4);
        if (!rc) rc = add(b, "}", 1);
    } else if (dt != LUA_TNIL) {
        rc = -1;
    }
    lua_settop(L, base - 1);
    return rc ? -1 : add(b, "}", 1);
}

/* nim.native.encode_results(results [, head, tail]) -> the JSON array text | nil (a shape for
 * cjson). With head and tail, the text is head .. array .. tail, made once (the gateway's
 * whole answer: no second copy of its largest part). */
int nim_l_encode_results(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t hn = 0, tn = 0;
    const char *head = luaL_optlstring(L, 2, "", &hn);
    const char *tail = luaL_optlstring(L, 3, "", &tn);
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    lua_settop(L, 3);
    key_names kn;
    kn.index = (lua_pushliteral(L, "index"), lua_tostring(L, -1));
    kn.score = (lua_pushliteral(L, "relevance_score"), lua_tostring(L, -1));
    kn.document = (lua_pushliteral(L, "document"), lua_tostring(L, -1));
    kn.text = (lua_pushliteral(L, "text"), lua_tostring(L, -1));
    kn.image = (lua_pushliteral(L, "image"), lua_tostring(L, -1));
    nim_buf *b = &nim_ctx_get(L)->out;
    b->n = 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    int rc = add(b, head, hn) || add(b, "[", 1);
    for (lua_Integer i = 1; i <= n && !rc; i++) {
        lua_rawgeti(L, 1, i);
        rc = (i > 1 && add(b, ",", 1)) || add_entry(b, L, lua_gettop(L), &kn);
        lua_pop(L, 1);
    }
    if (rc || add(b, "]", 1) || add(b, tail, tn)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, b->p, b->n);   /* the buffer stays the state's: nothing leaks on a raise */
    if (b->cap > ((size_t)4 << 20)) { /* one huge answer does not pin its memory for good */
        free(b->p);
        *b = (nim_buf){0};
    }
    return 1;
}

/* nim.native.utf8_error(s) -> nil when s is valid UTF-8, else the 1-based position of the
 * first byte that is not (answer.c's rule: nim_utf8_seq). Runs of ASCII are skipped eight
 * bytes at a time. */
int nim_l_utf8_error(lua_State *L) {
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        int len = nim_utf8_seq((const char *)s + i, (const char *)s + n);
        if (len < 0) break;
        i += (size_t)len;
    }
    if (i >= n) {
        lua_pushnil(L);
    } else {
        lua_pushinteger(L, (lua_Integer)i + 1);
    }
    return 1;
}
