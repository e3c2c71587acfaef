/* wire.c: request bodies and response parsing for NVIDIA NIM reranking. */
#include "wire.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char *const err_names[] = {"auth",    "bad_request", "not_found", "rate_limit",
                                        "timeout", "connection",  "provider",  "bad_response"};

const char *nim_err_type_name(nim_err_type t) { return err_names[t]; }

nim_err_type nim_err_from_status(long status, int *retryable) {
    *retryable = 0;
    switch (status) {
    case 401:
    case 403: return NIM_ERR_AUTH;
    case 404:
    case 410: return NIM_ERR_NOT_FOUND;
    case 408: *retryable = 1; return NIM_ERR_TIMEOUT;
    case 429: *retryable = 1; return NIM_ERR_RATE_LIMIT;
    case 202: *retryable = 1; return NIM_ERR_PROVIDER; /* NVCF: result not ready */
    default: break;
    }
    if (status >= 500) {
        *retryable = (status != 501);
        return NIM_ERR_PROVIDER;
    }
    if (status >= 400) return NIM_ERR_BAD_REQUEST;
    return NIM_ERR_BAD_RESPONSE; /* 3xx and other statuses we do not follow */
}

/* Appends s as a JSON string literal (RFC 8259). Hand-written on purpose: cjson.encode runs at
 * about 270 MB/s here, which alone cost more than the whole HTTP exchange of a 1 MB request;
 * this copies runs of safe bytes in bulk. Bytes >= 0x80 pass through, as cjson does. */
static void add_json_string(luaL_Buffer *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    luaL_addchar(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        /* Skip 8 clean bytes at a time: no byte < 0x20, no '"', no '\\'. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
            uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
            /* (x - ones) & ~x & highs: some byte of x is zero; with w - 0x20s: one is < 0x20 */
            uint64_t special = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs);
            if (special & highs) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        luaL_addlstring(b, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            len = 6;
        }
        luaL_addlstring(b, esc, len);
    }
    luaL_addlstring(b, s + run, n - run);
    luaL_addchar(b, '"');
}

void nim_wire_json_string(luaL_Buffer *b, const char *s, size_t n) { add_json_string(b, s, n); }

/* The text of document i (at doc) as a string pushed on the stack, or nothing pushed and 0
 * for a table with neither text nor (ranking) image. Raises naming documents[i]. */
static int push_text(lua_State *L, int doc, lua_Integer i, int *has_image, nim_family family) {
    *has_image = 0;
    switch (lua_type(L, doc)) {
    case LUA_TSTRING: lua_pushvalue(L, doc); return 1;
    case LUA_TNUMBER:
    case LUA_TBOOLEAN: luaL_tolstring(L, doc, NULL); return 1;
    case LUA_TTABLE: break;
    default:
        return luaL_error(L, "nim.rerank: documents[%I]: expected string or table, got %s", i,
                          luaL_typename(L, doc));
    }
    if (family == NIM_FAMILY_RANKING) {
        int it = lua_getfield(L, doc, "image");
        if (it != LUA_TNIL && it != LUA_TSTRING)
            luaL_error(L, "nim.rerank: documents[%I].image: expected string, got %s", i,
                       luaL_typename(L, -1));
        lua_pop(L, 1);
        *has_image = (it == LUA_TSTRING);
    }
    int tt = lua_getfield(L, doc, "text");
    if (tt == LUA_TSTRING) return 1;
    if (tt == LUA_TNUMBER) {
        luaL_tolstring(L, -1, NULL);
        lua_remove(L, -2);
        return 1;
    }
    if (tt != LUA_TNIL)
        luaL_error(L, "nim.rerank: documents[%I].text: expected string, got %s", i,
                   luaL_typename(L, -1));
    lua_pop(L, 1);
    return 0;
}

/* A table with neither text nor image: its JSON encoding (by cjson) is the text. */
static void push_json_text(lua_State *L, int encode_idx, int doc, lua_Integer i) {
    lua_pushvalue(L, encode_idx);
    lua_pushvalue(L, doc);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        luaL_error(L, "nim.rerank: documents[%I]: cannot be encoded as text (%s)", i, m ? m : "?");
    }
}

void nim_wire_texts(lua_State *L, int docs_idx, int encode_idx, nim_family family) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, docs_idx);
    lua_createtable(L, (int)n, 0);
    int texts = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, docs_idx, i);
        int has_image;
        if (!push_text(L, lua_gettop(L), i, &has_image, family)) {
            if (has_image)
                lua_pushboolean(L, 0);
            else
                push_json_text(L, encode_idx, lua_gettop(L), i);
        }
        lua_rawseti(L, texts, i);
        lua_pop(L, 1);
    }
}

void nim_wire_body(lua_State *L, int docs_idx, int texts, nim_family family, const char *body_model,
                   int query_idx, lua_Integer top_k, const char *truncate) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, texts);
    luaL_Buffer b;
    size_t qlen;
    const char *q = lua_tolstring(L, query_idx, &qlen);
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "{\"model\":");
    add_json_string(&b, body_model, strlen(body_model));
    luaL_addstring(&b, ",\"query\":{\"text\":");
    add_json_string(&b, q, qlen);
    luaL_addstring(&b, "},\"passages\":[");
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, ',');
        luaL_addchar(&b, '{');
        /* The stack must be as the buffer left it at each buffer call: read a string, pop
         * it (texts and documents keep it alive), then append. */
        size_t tl = 0, il = 0;
        const char *t = NULL, *img = NULL;
        if (lua_rawgeti(L, texts, i) == LUA_TSTRING) t = lua_tolstring(L, -1, &tl);
        lua_pop(L, 1);
        if (family == NIM_FAMILY_RANKING) {
            if (lua_rawgeti(L, docs_idx, i) == LUA_TTABLE) {
                if (lua_getfield(L, -1, "image") == LUA_TSTRING) img = lua_tolstring(L, -1, &il);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        if (t) {
            luaL_addstring(&b, "\"text\":");
            add_json_string(&b, t, tl);
        }
        if (img) {
            if (t) luaL_addchar(&b, ',');
            luaL_addstring(&b, "\"image\":");
            add_json_string(&b, img, il);
        }
        luaL_addchar(&b, '}');
    }
    luaL_addchar(&b, ']');
    if (top_k > 0) {
        char num[40];
        snprintf(num, sizeof num, ",\"top_k\":%lld", (long long)top_k);
        luaL_addstring(&b, num);
    }
    if (truncate) {
        luaL_addstring(&b, ",\"truncate\":");
        add_json_string(&b, truncate, strlen(truncate));
    }
    luaL_addchar(&b, '}');
    luaL_pushresult(&b);
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

static int by_score_desc(const void *a, const void *b) {
    const nim_ranking *x = a, *y = b;
    if (x->score > y->score) return -1;
    if (x->score < y->score) return 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int fail(lua_State *L, int top, const char *fmt, lua_Integer i) {
    lua_settop(L, top);
    lua_pushfstring(L, fmt, i);
    return 0;
}

void nim_wire_results(lua_State *L, const nim_ranking *rk, lua_Integer n, lua_Integer tokens,
                      int texts_idx, int array_mt_idx, const nim_parse_opts *o) {
    lua_Integer keep = (o->top_n > 0 && o->top_n < n) ? o->top_n : n;
    char uuid[37];
    nim_uuid4(uuid);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, uuid);
    lua_setfield(L, -2, "id");
    lua_createtable(L, (int)keep, 0);
    lua_pushvalue(L, array_mt_idx);
    lua_setmetatable(L, -2);
    for (lua_Integer i = 0; i < keep; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, rk[i].index);
        lua_setfield(L, -2, "index");
        lua_pushnumber(L, rk[i].score);
        lua_setfield(L, -2, "relevance_score");
        if (o->return_documents) {
            if (lua_rawgeti(L, texts_idx, rk[i].index + 1) == LUA_TSTRING) {
                lua_createtable(L, 0, 1);
                lua_insert(L, -2);
                lua_setfield(L, -2, "text");
                lua_setfield(L, -2, "document");
            } else {
                lua_pop(L, 1);
            }
        }
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "results");
    lua_createtable(L, 0, 4);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, tokens);
    lua_setfield(L, -2, "total_tokens");
    lua_setfield(L, -2, "billed_units");
    lua_setfield(L, -2, "meta");
}

int nim_wire_parse(lua_State *L, int body_idx, int decode_idx, int texts_idx, int array_mt_idx,
                   const nim_parse_opts *o) {
    int top = lua_gettop(L);
    if (!decode(L, body_idx, decode_idx)) return fail(L, top, "body is not JSON", 0);
    int doc = lua_gettop(L);
    if (!lua_istable(L, doc)) return fail(L, top, "body is not a JSON object", 0);

    int rt = lua_getfield(L, doc, "rankings");
    int rankings_idx = lua_gettop(L);
    if (rt != LUA_TNIL && rt != LUA_TTABLE) return fail(L, top, "'rankings' is not a list", 0);
    lua_Integer n = rt == LUA_TTABLE ? (lua_Integer)lua_rawlen(L, rankings_idx) : 0;
    if (n > o->npassages)
        return fail(L, top, "'rankings' has more entries than passages were sent", 0);

    /* Collected in C first: nothing here raises while this memory is held... */
    nim_ranking *rk = NULL;
    if (n > 0) {
        rk = lua_newuserdatauv(L, (size_t)n * sizeof *rk, 0); /* ...and the GC owns it */
    }
    unsigned char *seen = n > 0 ? lua_newuserdatauv(L, (size_t)o->npassages, 0) : NULL;
    if (seen) memset(seen, 0, (size_t)o->npassages);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, rankings_idx, i) != LUA_TTABLE)
            return fail(L, top, "rankings[%I] is not an object", i - 1);
        int isnum;
        lua_getfield(L, -1, "index");
        lua_Integer idx = lua_tointegerx(L, -1, &isnum);
        if (!isnum) return fail(L, top, "rankings[%I].index is not an integer", i - 1);
        if (idx < 0 || idx >= o->npassages)
            return fail(L, top, "rankings[%I].index is out of range", i - 1);
        if (seen[idx]) return fail(L, top, "rankings[%I].index repeats an earlier index", i - 1);
        seen[idx] = 1;
        lua_getfield(L, -2, "logit");
        if (lua_type(L, -1) != LUA_TNUMBER)
            return fail(L, top, "rankings[%I].logit is not a number", i - 1);
        double score = lua_tonumber(L, -1);
        if (!isfinite(score)) return fail(L, top, "rankings[%I].logit is not finite", i - 1);
        rk[i - 1].index = idx;
        rk[i - 1].score = score;
        lua_pop(L, 3);
    }
    if (o->family == NIM_FAMILY_RANKING && n > 1) qsort(rk, (size_t)n, sizeof *rk, by_score_desc);
    lua_Integer tokens = 0;
    if (lua_getfield(L, doc, "usage") == LUA_TTABLE) {
        lua_getfield(L, -1, "total_tokens");
        if (lua_type(L, -1) == LUA_TNUMBER) {
            double t = lua_tonumber(L, -1);
            if (t > 0 && t < 9e15) tokens = (lua_Integer)t;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (tokens <= 0) tokens = n;
    nim_wire_results(L, rk, n, tokens, texts_idx, array_mt_idx, o);
    if (lua_getfield(L, doc, "id") == LUA_TSTRING && lua_rawlen(L, -1) > 0)
        lua_setfield(L, -2, "id"); /* the provider's id replaces the fresh one */
    else
        lua_pop(L, 1);
    lua_copy(L, -1, top + 1);
    lua_settop(L, top + 1);
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
    size_t len;
    const char *s = lua_tolstring(L, body_idx, &len);
    if (len > 0 && decode_idx != 0 && decode(L, body_idx, decode_idx) && lua_istable(L, -1) &&
        push_json_message(L, lua_gettop(L))) {
        s = lua_tolstring(L, -1, &len);
    }
    /* One line, at most 300 bytes, no control characters. */
    size_t i = 0, end = len;
    while (i < end && (unsigned char)s[i] <= ' ')
        i++;
    while (end > i && (unsigned char)s[end - 1] <= ' ')
        end--;
    size_t stop = end - i > 300 ? i + 300 : end;
    while (stop < end && stop > i && ((unsigned char)s[stop] & 0xC0) == 0x80)
        stop--;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (; i < stop; i++) {
        unsigned char c = (unsigned char)s[i];
        luaL_addchar(&b, (c < 0x20 || c == 0x7f) ? ' ' : (char)c);
    }
    if (stop < end) luaL_addstring(&b, "...");
    luaL_pushresult(&b);
    lua_copy(L, -1, top + 1); /* the result may already sit at top + 1 */
    lua_settop(L, top + 1);
}

void nim_uuid4(char out[37]) {
    unsigned char r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t k = getrandom(r + got, sizeof r - got, 0);
        if (k <= 0) break;
        got += (size_t)k;
    }
    for (; got < sizeof r; got++)
        r[got] = (unsigned char)rand(); /* no entropy: still unique-ish */
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
             r[14], r[15]);
}
