/* encode.c: results as JSON text, fast: nim.native.encode_results(results) for the gateway's
 * answers. A rerank answer is mostly documents; cjson escapes them a byte at a time and writes
 * every number through snprintf, which cost more than the rest of a gateway request together.
 * Here the texts go through wire.c's escaper and indices are written as integers.
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
    if (nim_buf_reserve(b, n)) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

/* A number as lua-cjson writes it (%.14g); integers as integers. */
static int add_number(nim_buf *b, lua_State *L, int idx) {
    char tmp[40];
    int n;
    if (lua_isinteger(L, idx)) {
        n = snprintf(tmp, sizeof tmp, "%lld", (long long)lua_tointeger(L, idx));
    } else {
        double v = lua_tonumber(L, idx);
        if (!isfinite(v)) return -1;
        if (v == floor(v) && fabs(v) < 1e15)
            n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
        else
            n = snprintf(tmp, sizeof tmp, "%.14g", v);
    }
    return add(b, tmp, (size_t)n);
}

/* Does table t (absolute index) hold no keys but those of allowed? Counted, not compared:
 * the keys found by raw lookup must be all the keys there are. */
static int only_keys(lua_State *L, int t, const char *const *allowed) {
    int present = 0, total = 0;
    for (const char *const *a = allowed; *a; a++) {
        present += lua_getfield(L, t, *a) != LUA_TNIL; /* t has no metatable: a raw read */
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (++total > present) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return total == present;
}

/* Appends the field of table t as a JSON string; -1 when it is not a string. */
static int add_string_field(nim_buf *b, lua_State *L, int t, const char *field) {
    size_t n;
    int ok = lua_getfield(L, t, field) == LUA_TSTRING; /* t is raw-checked: no __index */
    const char *s = ok ? lua_tolstring(L, -1, &n) : NULL;
    int rc = ok ? nim_buf_json_string(b, s, n) : -1;
    lua_pop(L, 1);
    return rc;
}

static const char *const ENTRY_KEYS[] = {"index", "relevance_score", "document", NULL};
static const char *const DOC_KEYS[] = {"text", "image", NULL};

/* One result; 0, or -1 for a shape not written here (or memory out). */
static int add_entry(nim_buf *b, lua_State *L, int e) {
    if (!lua_istable(L, e) || lua_getmetatable(L, e) != 0 || !only_keys(L, e, ENTRY_KEYS))
        return -1;
    lua_pushliteral(L, "index");
    lua_rawget(L, e);
    lua_pushliteral(L, "relevance_score");
    lua_rawget(L, e);
    int rc = -1;
    if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TNUMBER &&
        !add(b, "{\"index\":", 9) && !add_number(b, L, -2) &&
        !add(b, ",\"relevance_score\":", 19) && !add_number(b, L, -1))
        rc = 0;
    lua_pop(L, 2);
    if (rc) return -1;
    lua_pushliteral(L, "document");
    int dt = lua_rawget(L, e);
    int d = lua_gettop(L);
    if (dt == LUA_TTABLE) {
        if (lua_getmetatable(L, d) != 0 || !only_keys(L, d, DOC_KEYS)) {
            lua_pop(L, 1);
            return -1;
        }
        int has_text = lua_getfield(L, d, "text") != LUA_TNIL;
        int has_image = lua_getfield(L, d, "image") != LUA_TNIL;
        lua_pop(L, 2);
        rc = add(b, ",\"document\":{", 13);
        if (!rc && has_text) rc = add(b, "\"text\":", 7) || add_string_field(b, L, d, "text");
        if (!rc && has_image)
            rc = add(b, has_text ? ",\"image\":" : "\"image\":", has_text ? 9 : 8) ||
                 add_string_field(b, L, d, "image");
        if (!rc) rc = add(b, "}", 1);
    } else if (dt != LUA_TNIL) {
        rc = -1;
    }
    lua_pop(L, 1);
    return rc ? -1 : add(b, "}", 1);
}

/* nim.native.encode_results(results) -> the JSON array text | nil (a shape for cjson). */
int nim_l_encode_results(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    nim_buf *b = &nim_ctx_get(L)->out;
    b->n = 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    int rc = add(b, "[", 1);
    for (lua_Integer i = 1; i <= n && !rc; i++) {
        lua_rawgeti(L, 1, i);
        rc = (i > 1 && add(b, ",", 1)) || add_entry(b, L, lua_gettop(L));
        lua_pop(L, 1);
    }
    if (rc || add(b, "]", 1)) {
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
