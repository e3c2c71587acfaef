/* wire.c: the NIM wire format: request bodies, the documents' texts, reading an answer (the
 * strict reader is answer.c) and the message of a failed one. */
#include "wire.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "binding.h"

int nim_buf_reserve(nim_buf *b, size_t extra) {
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256; /* the first reserve is the whole body's estimate */
    while (cap < b->n + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int nim_buf_add(nim_buf *b, const char *s, size_t n) {
    if (nim_buf_reserve(b, n)) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

#define BUF_ADD_LIT(b, lit) nim_buf_add((b), (lit), sizeof(lit) - 1)

/* Appends s as a JSON string literal (RFC 8259). Hand-written on purpose: cjson.encode runs at
 * about 270 MB/s here, which cost more than the whole HTTP exchange of a 1 MB request. Eight
 * clean bytes (no control byte, '"' or '\\') are checked and stored in one step; bytes >= 0x80
 * pass through, as cjson does. Capacity: (bytes left) + 10 is always reserved; an escape
 * (up to 6 bytes for 1) reserves again. */
int nim_buf_json_string(nim_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    const uint64_t quotes = ones * '"', slashes = ones * '\\';
    if (nim_buf_reserve(b, n + 10)) return -1;
    char *d = b->p + b->n;
    *d++ = '"';
    size_t i = 0;
    while (i < n) {
#ifdef __SSE2__
        /* Sixteen bytes a step: the clean prefix is stored, the first byte to escape found. */
        const __m128i vq = _mm_set1_epi8('"'), vb = _mm_set1_epi8('\\'), vc = _mm_set1_epi8(0x1f);
        while (i + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
            __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, vq), _mm_cmpeq_epi8(v, vb)),
                                       _mm_cmpeq_epi8(_mm_max_epu8(v, vc), vc)); /* <= 0x1f */
            int mask = _mm_movemask_epi8(bad);
            _mm_storeu_si128((__m128i *)(void *)d, v); /* room: (bytes left) + 10 reserved */
            if (mask) {
                int k = __builtin_ctz((unsigned)mask);
                d += k;
                i += (size_t)k;
                break;
            }
            d += 16;
            i += 16;
        }
#endif
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            uint64_t q = w ^ quotes, bs = w ^ slashes;
            /* (x - ones) & ~x & highs: some byte of x is zero; with w - 0x20s: one is < 0x20 */
            if ((((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & highs) break;
            memcpy(d, &w, 8);
            d += 8;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = (unsigned char)s[i++];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *d++ = (char)c;
            continue;
        }
        b->n = (size_t)(d - b->p);
        if (nim_buf_reserve(b, (n - i) + 6 + 10)) return -1;
        d = b->p + b->n;
        *d++ = '\\';
        switch (c) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '\n': *d++ = 'n'; break;
        case '\r': *d++ = 'r'; break;
        case '\t': *d++ = 't'; break;
        case '\b': *d++ = 'b'; break;
        case '\f': *d++ = 'f'; break;
        default:
            memcpy(d, "u00", 3);
            d[3] = hex[c >> 4];
            d[4] = hex[c & 15];
            d += 5;
        }
    }
    *d++ = '"';
    b->n = (size_t)(d - b->p);
    return 0;
}

/* The name documents[i] (or documents[i].text), pushed: misuse names the field itself. */
static const char *doc_field(lua_State *L, lua_Integer i, const char *sub) {
    return lua_pushfstring(L, "documents[%I]%s", i, sub);
}

/* The text of the number at idx, pushed: a float with an integer's value as that integer
 * (JSON has one number type: a JSON body's 3 decodes as the float 3.0), anything else as Lua
 * writes it. Raises naming documents[i] plus sub for one that is not finite. */
static void push_number_text(lua_State *L, int idx, lua_Integer i, const char *sub) {
    idx = lua_absindex(L, idx);
    if (!lua_isinteger(L, idx)) {
        lua_Number x = lua_tonumber(L, idx);
        if (!isfinite(x)) nim_misuse(L, "nim.rerank", doc_field(L, i, sub), "not a finite number");
        if (x == floor(x) && fabs(x) < 9007199254740992.0) { /* 2^53: every integer exact */
            lua_pushfstring(L, "%I", (LUAI_UACINT)(lua_Integer)x);
            return;
        }
    }
    luaL_tolstring(L, idx, NULL);
}

/* The text of document i (at doc) as a string pushed on the stack, or nothing pushed and 0
 * for a table with neither text nor (ranking) image. Raises naming documents[i]. */
static int push_text(lua_State *L, int doc, lua_Integer i, int *has_image, nim_family family,
                     int texts, lua_Integer slot) {
    *has_image = 0;
    switch (lua_type(L, doc)) {
    case LUA_TSTRING: lua_pushvalue(L, doc); return 1;
    case LUA_TNUMBER: push_number_text(L, doc, i, ""); return 1;
    case LUA_TBOOLEAN: luaL_tolstring(L, doc, NULL); return 1;
    case LUA_TTABLE: break;
    default: { /* a JSON null (a light userdata of NULL, as cjson decodes it) is named so */
        const char *type =
            lua_islightuserdata(L, doc) && !lua_touserdata(L, doc) ? "null" : luaL_typename(L, doc);
        return nim_misuse(L, "nim.rerank", doc_field(L, i, ""), "expected string or table, got %s",
                          type);
    }
    }
    if (family == NIM_FAMILY_RANKING) {
        int it = lua_getfield(L, doc, "image");
        if (it != LUA_TNIL && it != LUA_TSTRING) {
            const char *type = luaL_typename(L, -1), *field = doc_field(L, i, ".image");
            nim_misuse(L, "nim.rerank", field, "expected string, got %s", type);
        }
        *has_image = (it == LUA_TSTRING);
        lua_rawseti(L, texts, -slot); /* the image is kept beside the text (or nil) */
    }
    int tt = lua_getfield(L, doc, "text");
    if (tt == LUA_TSTRING) return 1;
    if (tt == LUA_TNUMBER) {
        push_number_text(L, -1, i, ".text");
        lua_remove(L, -2); /* the number */
        return 1;
    }
    if (tt != LUA_TNIL) {
        const char *type = luaL_typename(L, -1), *field = doc_field(L, i, ".text");
        nim_misuse(L, "nim.rerank", field, "expected string, got %s", type);
    }
    lua_pop(L, 1);
    return 0;
}

/* A table with neither text nor image: its JSON encoding (by cjson) is the text. */
static void push_json_text(lua_State *L, int encode_idx, int doc, lua_Integer i) {
    lua_pushvalue(L, encode_idx);
    lua_pushvalue(L, doc);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *m = lua_tostring(L, -1), *field = doc_field(L, i, "");
        nim_misuse(L, "nim.rerank", field, "cannot be encoded as text (%s)", m ? m : "?");
    }
}

void nim_wire_texts(lua_State *L, int docs_idx, lua_Integer first, lua_Integer n, int encode_idx,
                    nim_family family) {
    lua_createtable(L, (int)n, 0);
    int texts = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, docs_idx, first + i);
        int has_image;
        if (!push_text(L, lua_gettop(L), first + i, &has_image, family, texts, i)) {
            if (has_image)
                lua_pushboolean(L, 0);
            else
                push_json_text(L, encode_idx, lua_gettop(L), first + i);
        }
        lua_rawseti(L, texts, i);
        lua_pop(L, 1);
    }
}

size_t nim_wire_body_estimate(lua_State *L, int texts, size_t per_text, const char *body_model) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, texts);
    size_t estimate = 256 + strlen(body_model);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, texts, i) == LUA_TSTRING) estimate += lua_rawlen(L, -1);
        lua_pop(L, 1);
        estimate += per_text;
    }
    return estimate;
}

int nim_wire_body(lua_State *L, nim_buf *b, int texts, nim_family family, const char *body_model,
                  int query_idx, lua_Integer top_k, const char *truncate) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, texts);
    size_t qlen;
    const char *q = lua_tolstring(L, query_idx, &qlen);
    if (nim_buf_reserve(b, nim_wire_body_estimate(L, texts, 16, body_model) + qlen)) return -1;
    if (BUF_ADD_LIT(b, "{\"model\":") || nim_buf_json_string(b, body_model, strlen(body_model)) ||
        BUF_ADD_LIT(b, ",\"query\":{\"text\":") || nim_buf_json_string(b, q, qlen) ||
        BUF_ADD_LIT(b, "},\"passages\":["))
        return -1;
    for (lua_Integer i = 1; i <= n; i++) {
        /* Only raw reads of the texts table (nothing that can raise or allocate while b is
         * held): it keeps every string alive, the images at negative indices. */
        size_t tl = 0, il = 0;
        const char *t = NULL, *img = NULL;
        if (lua_rawgeti(L, texts, i) == LUA_TSTRING) t = lua_tolstring(L, -1, &tl);
        lua_pop(L, 1);
        if (family == NIM_FAMILY_RANKING) {
            if (lua_rawgeti(L, texts, -i) == LUA_TSTRING) img = lua_tolstring(L, -1, &il);
            lua_pop(L, 1);
        }
        if ((i > 1 && BUF_ADD_LIT(b, ",")) || BUF_ADD_LIT(b, "{")) return -1;
        if (t && (BUF_ADD_LIT(b, "\"text\":") || nim_buf_json_string(b, t, tl))) return -1;
        if (img && ((t && BUF_ADD_LIT(b, ",")) || BUF_ADD_LIT(b, "\"image\":") ||
                    nim_buf_json_string(b, img, il)))
            return -1;
        if (BUF_ADD_LIT(b, "}")) return -1;
    }
    if (BUF_ADD_LIT(b, "]")) return -1;
    if (top_k > 0) {
        char num[40];
        int k = snprintf(num, sizeof num, ",\"top_k\":%lld", (long long)top_k);
        if (nim_buf_add(b, num, (size_t)k)) return -1;
    }
    if (truncate &&
        (BUF_ADD_LIT(b, ",\"truncate\":") || nim_buf_json_string(b, truncate, strlen(truncate))))
        return -1;
    return BUF_ADD_LIT(b, "}");
}

/* Calls cjson.decode on the string at body_idx in protected mode; pushes the value or nil. */
static int decode(lua_State *L, int body_idx, int decode_idx) {
    lua_pushvalue(L, decode_idx);
    lua_pushvalue(L, body_idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return 0;
    }
    return 1;
}

/* Memory for the answer reader: the rankings it returns in userdata kept in the anchor table
 * (at ud), so the GC owns them and a raise cannot leak them; what only the reading needs in
 * the state's reusable scratch (no Lua code runs while the reader works). */
typedef struct {
    lua_State *L;
    int anchor;
} keep_in_lua;

static void *keep_alloc(void *ud, size_t size) {
    keep_in_lua *s = ud;
    void *p = lua_newuserdatauv(s->L, size, 0);
    lua_rawseti(s->L, s->anchor, (lua_Integer)lua_rawlen(s->L, s->anchor) + 1);
    return p;
}

int nim_wire_parse(lua_State *L, int body_idx, int decode_idx, lua_Integer npassages,
                   const nim_answer_shape *shape, nim_parsed *out) {
    int top = lua_gettop(L);
    size_t len;
    const char *js = lua_tolstring(L, body_idx, &len);
    lua_newtable(L);
    keep_in_lua keep = {L, top + 1};
    nim_scratch *tmp = &nim_ctx_get(L)->scratch;
    nim_answer_mem mem = {keep_alloc, &keep, nim_scratch_alloc, tmp};
    nim_answer a;
    char err[256];
    int rc = nim_answer_read(js, len, (size_t)npassages, shape, &mem, &a, err, sizeof err);
    nim_scratch_reset(tmp);
    if (rc != 0) {
        lua_settop(L, top);
        lua_pushstring(L, err);
        return 0;
    }
    out->rk = a.rk;
    out->n = a.n;
    out->tokens = a.tokens > 0 ? (lua_Integer)a.tokens : (lua_Integer)a.n;
    out->counted = a.tokens > 0;
    if (!a.id || a.id_len == 0) {
        lua_pushnil(L);
    } else if (!a.id_escaped) {
        lua_pushlstring(L, a.id, a.id_len);
    } else { /* the rare escaped id: the quoted JSON string, decoded by cjson */
        lua_pushlstring(L, a.id - 1, a.id_len + 2);
        if (!decode(L, lua_gettop(L), decode_idx) || lua_type(L, -1) != LUA_TSTRING) {
            lua_settop(L, top + 1);
            lua_pushnil(L);
        } else {
            lua_remove(L, -2);
        }
    }
    return 1;
}

/* The "message" of common error shapes: {"detail": "..."|[{"msg": ...}]},
 * {"error": "..."|{"message": ...}}, {"message": ...}, {"title": ...}. */
static int push_json_message(lua_State *L, int doc) {
    static const char *const keys[] = {"detail", "message", "error", "title", NULL};
    for (int k = 0; keys[k]; k++) {
        int t = lua_getfield(L, doc, keys[k]);
        if (t == LUA_TSTRING) return 1;
        if (t == LUA_TTABLE) {
            int sub = lua_gettop(L);
            if (lua_getfield(L, sub, "message") == LUA_TSTRING) return 1;
            lua_pop(L, 1);
            if (lua_rawgeti(L, sub, 1) == LUA_TTABLE && lua_getfield(L, -1, "msg") == LUA_TSTRING)
                return 1;
            lua_settop(L, sub);
        }
        lua_pop(L, 1);
    }
    return 0;
}

void nim_wire_error_message(lua_State *L, int body_idx, int decode_idx) {
    int top = lua_gettop(L);
    if (lua_rawlen(L, body_idx) > 0 && decode(L, body_idx, decode_idx) && lua_istable(L, -1) &&
        push_json_message(L, lua_gettop(L))) {
        lua_copy(L, -1, top + 1);
        lua_settop(L, top + 1);
        return;
    }
    lua_settop(L, top);
    lua_pushvalue(L, body_idx);
    nim_wire_unescape(L, -1);
}

void nim_wire_unescape(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (!memchr(s, '\\', len)) return; /* the usual text: nothing to do */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        unsigned u, lo;
        const char *simple = i + 1 < len ? strchr("\"\\/bfnrt", s[i + 1]) : NULL;
        if (s[i] != '\\' || i + 1 >= len) {
            luaL_addchar(&b, s[i]);
        } else if (simple && s[i + 1]) {
            luaL_addchar(&b, "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]);
            i++;
        } else if (s[i + 1] == 'u' && i + 6 <= len && nim_json_hex4(s + i + 2, &u)) {
            i += 5;
            if (u >= 0xD800 && u < 0xDC00 && i + 7 <= len && s[i + 1] == '\\' && s[i + 2] == 'u' &&
                nim_json_hex4(s + i + 3, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
            char utf8[8];
            lua_pushfstring(L, "%U", (long)u); /* Lua's own UTF-8 encoder */
            size_t n;
            const char *e = lua_tolstring(L, -1, &n);
            memcpy(utf8, e, n < sizeof utf8 ? n : sizeof utf8);
            lua_pop(L, 1);
            luaL_addlstring(&b, utf8, n < sizeof utf8 ? n : sizeof utf8);
        } else {
            luaL_addchar(&b, s[i]);
        }
    }
    luaL_pushresult(&b);
    lua_replace(L, idx);
}

void nim_wire_one_line(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    size_t i = 0, end = len;
    while (i < end && (unsigned char)s[i] <= ' ')
        i++;
    while (end > i && (unsigned char)s[end - 1] <= ' ')
        end--;
    size_t stop = end - i > 300 ? i + 300 : end;
    for (int back = 0;
         back < 3 && stop < end && stop > i && ((unsigned char)s[stop] & 0xC0) == 0x80;
         back++) /* a character cut at the limit is left out whole (at most 3 bytes back) */
        stop--;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    while (i < stop) { /* control bytes become spaces, bytes that are not UTF-8 '?' */
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            luaL_addchar(&b, (c < 0x20 || c == 0x7f) ? ' ' : (char)c);
            i++;
            continue;
        }
        int n = nim_utf8_seq(s + i, s + stop);
        if (n < 0) {
            luaL_addchar(&b, '?');
            i++;
        } else {
            luaL_addlstring(&b, s + i, (size_t)n);
            i += (size_t)n;
        }
    }
    if (stop < end) luaL_addstring(&b, "...");
    luaL_pushresult(&b);
    lua_replace(L, idx);
}
