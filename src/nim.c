#define _GNU_SOURCE /* dladdr */
/* nim.c: the `nim` Lua module. Argument checking, Lua tables <-> C, the blocking call.
 * Misuse raises naming the field; failures of the world return nil, err (DESIGN.md). */
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>

#include "curl_lazy.h"
#include "bm25.h"
#include "engine.h"
#include "nimrank.h"
#include "resolve.h"
#include "wire.h"

/* Upvalues shared by every function of the module: no per-process globals for state data. */
enum { UV_CTX = 1, UV_ENCODE, UV_DECODE, UV_CATALOG, UV_SETTINGS, UV_ARRAY_MT, UV_COUNT = 6 };

#ifndef NIMRANK_LUA_DIR
#define NIMRANK_LUA_DIR "/usr/local/share/lua/5.4"
#endif

#define ERROR_MT "nim.Error"
#define REQ_MT "nim.Transfer"
#define MANAGED_KEY "nim.managed"
#define DEFAULT_MAX_PASSAGES 512
#define DEFAULT_TIMEOUT_S 60.0
#define DEFAULT_CONNECT_TIMEOUT_S 10.0

typedef struct {
    nim_engine *engine;
} nim_ctx;

/* One NIM request in flight: the `nim.Transfer` userdata. Everything malloc'ed for it hangs
 * here, so a raise never leaks: __gc (and __close, cancel) frees it. Its user value is a table
 * with what finishing needs: texts, dropped, model, key (for redaction only), url,
 * route_model, body_model, replacement; and, once finished, res or err. */
enum { REQ_PENDING, REQ_FINISHED, REQ_CANCELLED };
typedef struct {
    nim_transfer *t;
    struct curl_slist *headers;
    nim_buf body; /* written here, then handed to the engine without a copy */
    int state;
    nim_family family;
    lua_Integer top_n, ndocs, max_response;
    int return_documents;
    double timeout;
    double deadline; /* monotonic: the call's timeout covers NVCF status polls too */
    int polls;       /* NVCF status polls made so far */
} nim_req;

int nimrank_global_init(void) { return nim_curl_load(NULL, 0); }

void nimrank_global_cleanup(void) {
    if (nim_curl_loaded()) curl_global_cleanup();
}

static nim_ctx *ctx_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(UV_CTX)); }

/* The engine (and libcurl's global state: TLS library set-up costs milliseconds) is created
 * on the first network call, so scripts that never reach the network start fast. NULL with
 * err filled on failure. */
static nim_engine *engine_of(lua_State *L, char *err, size_t errlen) {
    nim_ctx *c = ctx_of(L);
    if (!c->engine) {
        if (nim_curl_load(err, errlen) != 0) return NULL;
        c->engine = nim_engine_new();
        if (!c->engine) snprintf(err, errlen, "cannot create the curl engine");
    }
    return c->engine;
}

static int ctx_gc(lua_State *L) {
    nim_ctx *c = lua_touserdata(L, 1);
    nim_engine_free(c->engine); /* detaches transfers still owned by calls */
    c->engine = NULL;
    return 0;
}

static void req_release(nim_req *r) {
    nim_transfer_free(r->t);
    if (r->headers) curl_slist_free_all(r->headers); /* non-NULL only once curl is loaded */
    free(r->body.p);
    r->t = NULL;
    r->headers = NULL;
    r->body.p = NULL;
}

/* __gc and __close: a pending transfer is cancelled (removed from the engine) and freed. */
static int req_gc(lua_State *L) {
    nim_req *r = luaL_checkudata(L, 1, REQ_MT);
    if (r->state == REQ_PENDING) r->state = REQ_CANCELLED;
    req_release(r);
    return 0;
}

/* ---- errors ---------------------------------------------------------------------------- */

static int error_tostring(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "type");
    lua_getfield(L, 1, "status");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "model");
    lua_Integer status = lua_tointeger(L, -3);
    if (status > 0)
        lua_pushfstring(L, "nim: %s (HTTP %I): %s", luaL_optstring(L, -4, "error"), status,
                        luaL_optstring(L, -2, ""));
    else
        lua_pushfstring(L, "nim: %s: %s", luaL_optstring(L, -4, "error"),
                        luaL_optstring(L, -2, ""));
    if (lua_type(L, -2) == LUA_TSTRING) {
        lua_pushfstring(L, " [model %s]", lua_tostring(L, -2));
        lua_concat(L, 2);
    }
    return 1;
}

/* Replaces every occurrence of the key in the string on top of the stack. */
static void redact_top(lua_State *L, const char *key) {
    if (!key || strlen(key) < 4 || !strstr(lua_tostring(L, -1), key)) return;
    luaL_gsub(L, lua_tostring(L, -1), key, "[redacted]");
    lua_remove(L, -2);
}

/* Replaces the message on top of the stack with an error table (the message redacted). */
static void push_error(lua_State *L, nim_err_type type, long status, int retryable,
                       const char *model, const char *key) {
    redact_top(L, key);
    int msg = lua_gettop(L);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_pushstring(L, nim_err_type_name(type));
    lua_setfield(L, -2, "type");
    lua_pushvalue(L, msg);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, retryable);
    lua_setfield(L, -2, "retryable");
    lua_pushliteral(L, "nvidia_nim");
    lua_setfield(L, -2, "provider");
    lua_pushstring(L, model);
    lua_setfield(L, -2, "model");
    luaL_setmetatable(L, ERROR_MT);
    lua_remove(L, msg);
}

/* ---- argument checking ----------------------------------------------------------------- */

static int field_error(lua_State *L, const char *field, const char *what) {
    return luaL_error(L, "nim.rerank: %s: %s", field, what);
}

static int type_error(lua_State *L, const char *field, const char *expected, int idx) {
    return luaL_error(L, "nim.rerank: %s: expected %s, got %s", field, expected,
                      luaL_typename(L, idx));
}

static const char *opt_string(lua_State *L, int args, const char *field) {
    int t = lua_getfield(L, args, field);
    const char *s = NULL;
    if (t == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (t != LUA_TNIL)
        type_error(L, field, "string", -1);
    lua_pop(L, 1); /* still referenced by args, so s stays valid */
    return s;
}

/* An integer >= 1, or 0 when absent. Floats with a fraction, booleans, strings: errors. */
static lua_Integer opt_count(lua_State *L, int args, const char *field) {
    int t = lua_getfield(L, args, field);
    lua_Integer v = 0;
    if (t != LUA_TNIL) {
        int isint = 0;
        if (t == LUA_TNUMBER) v = lua_tointegerx(L, -1, &isint);
        if (!isint) type_error(L, field, "an integer >= 1", -1);
        if (v < 1) luaL_error(L, "nim.rerank: %s: must be an integer >= 1 (got %I)", field, v);
    }
    lua_pop(L, 1);
    return v;
}

static double opt_seconds(lua_State *L, int args, const char *field, double dflt) {
    int t = lua_getfield(L, args, field);
    double v = dflt;
    if (t == LUA_TNUMBER) {
        v = lua_tonumber(L, -1);
        if (!(v > 0 && v < 1e7)) field_error(L, field, "must be a number of seconds > 0");
    } else if (t != LUA_TNIL) {
        type_error(L, field, "a number of seconds", -1);
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int args, const char *field, int dflt) {
    int t = lua_getfield(L, args, field);
    int v = dflt;
    if (t == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        type_error(L, field, "boolean", -1);
    lua_pop(L, 1);
    return v;
}

/* Request parameters the native call understands. */
static const char *const known_params[] = {"model", "query",    "documents",        "top_n",
                                           "top_k", "truncate", "return_documents", NULL};
/* Transport and policy options: never "unsupported", even when this layer ignores them. */
static const char *const transport_options[] = {"api_key",
                                                "api_base",
                                                "timeout",
                                                "connect_timeout",
                                                "headers",
                                                "drop_params",
                                                "num_retries",
                                                "max_retries",
                                                "ca_bundle",
                                                "max_response_bytes",
                                                "request_timeout",
                                                "metadata",
                                                "fallbacks",
                                                "user",
                                                "custom_llm_provider",
                                                "bm25",
                                                "batch_size",
                                                "concurrency",
                                                "on_progress",
                                                "filters",
                                                "nvcf_status_url",
                                                NULL};

static int in_list(const char *const *list, const char *s) {
    for (; *list; list++)
        if (strcmp(*list, s) == 0) return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int is_unknown_param(const char *k) {
    return !in_list(known_params, k) && !in_list(transport_options, k);
}

/* Collects unknown keys into a sorted list at the top of the stack (a table; empty if none).
 * Names only: values are never printed. Raises on a key that is not a string. */
static void unknown_params(lua_State *L, int args) {
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, args)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "nim.rerank: arguments: keys must be strings, got a %s key",
                       luaL_typename(L, -1));
        if (is_unknown_param(lua_tostring(L, -1))) n++;
    }
    lua_createtable(L, (int)n, 0);
    if (n == 0) return;
    /* scratch owned by the GC; the names stay alive as keys of args */
    const char **names = lua_newuserdatauv(L, n * sizeof *names, 0);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, args)) {
        lua_pop(L, 1);
        const char *k = lua_tostring(L, -1);
        if (is_unknown_param(k)) names[i++] = k;
    }
    qsort(names, n, sizeof names[0], cmp_str);
    for (i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
    }
    lua_pop(L, 1);
}

/* Looks the cleaned model up in nim.catalog; fills entry and limits. A malformed entry
 * raises: catalog lookups never fall open to the derived rules. */
static int catalog_lookup(lua_State *L, const char *clean, nim_catalog_entry *entry,
                          lua_Integer *max_passages) {
    int top = lua_gettop(L);
    *max_passages = DEFAULT_MAX_PASSAGES;
    memset(entry, 0, sizeof *entry);
    int t = lua_getfield(L, lua_upvalueindex(UV_CATALOG), clean);
    if (t == LUA_TNIL && strchr(clean, '.')) {
        /* Catalog keys use the URL spelling (underscores); ranking models are written with dots. */
        lua_pop(L, 1);
        luaL_gsub(L, clean, ".", "_");
        t = lua_gettable(L, lua_upvalueindex(UV_CATALOG));
    }
    if (t == LUA_TNIL) {
        lua_settop(L, top);
        return 0;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "nim.catalog['%s']: expected table, got %s", clean, luaL_typename(L, -1));
    static const char *const fields[] = {"endpoint_path", "body_model"};
    for (int i = 0; i < 2; i++) {
        int ft = lua_getfield(L, -1 - i, fields[i]);
        if (ft != LUA_TNIL && ft != LUA_TSTRING)
            luaL_error(L, "nim.catalog['%s'].%s: expected string, got %s", clean, fields[i],
                       luaL_typename(L, -1));
    }
    entry->body_model = lua_tostring(L, -1);
    entry->endpoint_path = lua_tostring(L, -2);
    lua_getfield(L, -3, "max_passages");
    if (!lua_isnil(L, -1)) {
        int isint;
        *max_passages = lua_tointegerx(L, -1, &isint);
        if (!isint || *max_passages < 1)
            luaL_error(L, "nim.catalog['%s'].max_passages: expected an integer >= 1", clean);
    }
    lua_pop(L, 1);
    /* The entry table and its strings stay on the stack (anchored) until the caller is done. */
    return 1;
}

static int header_name_ok(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s))) return 0;
    return 1;
}

static int header_value_ok(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 && s[i] != '\t') return 0;
    return 1;
}

static void add_header(lua_State *L, nim_req *call) {
    struct curl_slist *h = curl_slist_append(call->headers, lua_tostring(L, -1));
    if (!h) luaL_error(L, "nim.rerank: out of memory");
    call->headers = h;
    lua_pop(L, 1);
}

/* Caller headers override ours by name (case-insensitive); a caller's Authorization wins. */
static int caller_has_header(lua_State *L, int headers, const char *name) {
    if (headers == 0) return 0;
    lua_pushnil(L);
    while (lua_next(L, headers)) {
        lua_pop(L, 1);
        if (strcasecmp(lua_tostring(L, -1), name) == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

static void build_headers(lua_State *L, nim_req *call, int headers, const char *key) {
    if (headers) {
        lua_pushnil(L);
        while (lua_next(L, headers)) {
            if (lua_type(L, -2) != LUA_TSTRING || !header_name_ok(lua_tostring(L, -2)))
                luaL_error(L, "nim.rerank: headers: invalid header name");
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "nim.rerank: headers['%s']: expected string, got %s",
                           lua_tostring(L, -2), luaL_typename(L, -1));
            size_t n;
            const char *v = lua_tolstring(L, -1, &n);
            if (!header_value_ok(v, n))
                luaL_error(L, "nim.rerank: headers['%s']: value has control characters",
                           lua_tostring(L, -2));
            lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), v);
            add_header(L, call);
            lua_pop(L, 1);
        }
    }
    if (!caller_has_header(L, headers, "Accept")) {
        lua_pushliteral(L, "Accept: application/json");
        add_header(L, call);
    }
    if (!caller_has_header(L, headers, "Content-Type")) {
        lua_pushliteral(L, "Content-Type: application/json");
        add_header(L, call);
    }
    if (!caller_has_header(L, headers, "User-Agent")) {
        lua_pushfstring(L, "User-Agent: nimrank/%s (libcurl/%s)", NIMRANK_VERSION,
                        curl_version_info(CURLVERSION_NOW)->version);
        add_header(L, call);
    }
    if (key && !caller_has_header(L, headers, "Authorization")) {
        lua_pushfstring(L, "Authorization: Bearer %s", key);
        add_header(L, call);
    }
}

static const char *settings_string(lua_State *L, const char *field) {
    lua_getfield(L, lua_upvalueindex(UV_SETTINGS), field);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* held by the settings table */
    return s;
}

static int settings_bool(lua_State *L, const char *field) {
    lua_getfield(L, lua_upvalueindex(UV_SETTINGS), field);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static double settings_number(lua_State *L, const char *field, double dflt) {
    lua_getfield(L, lua_upvalueindex(UV_SETTINGS), field);
    double v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

static void push_empty_result(lua_State *L) {
    char uuid[37];
    nim_uuid4(uuid);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, uuid);
    lua_setfield(L, -2, "id");
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(UV_ARRAY_MT));
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "results");
    lua_createtable(L, 0, 1);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "total_tokens");
    lua_setfield(L, -2, "billed_units");
    lua_setfield(L, -2, "meta");
}

/* Adds provider, family (NULL: none), model, latency and dropped_params to res.meta (res on
 * top of the stack). seconds < 0: no latency. */
static void annotate_meta(lua_State *L, const char *provider, const char *family, const char *model,
                          int dropped, double seconds) {
    lua_getfield(L, -1, "meta");
    lua_pushstring(L, provider);
    lua_setfield(L, -2, "provider");
    if (family) {
        lua_pushstring(L, family);
        lua_setfield(L, -2, "family");
    }
    lua_pushstring(L, model);
    lua_setfield(L, -2, "model");
    if (seconds >= 0) {
        lua_pushnumber(L, seconds * 1000.0);
        lua_setfield(L, -2, "latency_ms");
    }
    if (lua_rawlen(L, dropped) > 0) {
        lua_pushvalue(L, dropped);
        lua_pushvalue(L, lua_upvalueindex(UV_ARRAY_MT));
        lua_setmetatable(L, -2);
        lua_setfield(L, -2, "dropped_params");
    }
    lua_pop(L, 1);
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The checked arguments of one nim.rerank call. Strings point into the args table (slot 1),
 * which stays on the stack for the whole call. */
typedef struct {
    const char *model;
    int query;     /* stack slot of the query string */
    int documents; /* stack slot of the documents table */
    lua_Integer ndocs;
    int dropped; /* stack slot of the sorted dropped-parameter names */
    int headers; /* stack slot of the headers table, or 0 */
    lua_Integer top_n;
    const char *truncate;
    int return_documents;
    double timeout, connect_timeout;
    const char *ca_bundle;
    lua_Integer max_response;
    const char *api_base;
    const char *api_key;
    const char *nvcf_status_url;
} rerank_args;

/* Checks everything common to every provider. Raises on misuse, naming the field. Leaves
 * slots 1 (args), 2 (dropped), 3 (query), 4 (documents), 5 (headers or nil). */
static void check_args(lua_State *L, rerank_args *a) {
    memset(a, 0, sizeof *a);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    const int args = 1;

    unknown_params(L, args); /* slot 2 */
    a->dropped = 2;
    if (lua_rawlen(L, a->dropped) > 0 &&
        !opt_bool(L, args, "drop_params", settings_bool(L, "drop_params"))) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, a->dropped); i++) {
            if (i > 1) luaL_addstring(&b, ", ");
            lua_rawgeti(L, a->dropped, i);
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
        luaL_error(L,
                   "nim.rerank: unsupported parameters: %s (pass drop_params = true to drop "
                   "them)",
                   lua_tostring(L, -1));
    }

    a->model = opt_string(L, args, "model");
    if (!a->model) field_error(L, "model", "required (e.g. \"nvidia_nim/nvidia/...\")");

    if (lua_getfield(L, args, "query") != LUA_TSTRING) type_error(L, "query", "string", -1);
    a->query = 3;
    if (lua_rawlen(L, a->query) == 0) field_error(L, "query", "must not be empty");

    if (lua_getfield(L, args, "documents") != LUA_TTABLE)
        type_error(L, "documents", "a list of strings or tables", -1);
    a->documents = 4;
    a->ndocs = (lua_Integer)lua_rawlen(L, a->documents);

    a->top_n = opt_count(L, args, "top_n");
    lua_Integer top_k = opt_count(L, args, "top_k");
    if (a->top_n && top_k && a->top_n != top_k)
        luaL_error(L, "nim.rerank: top_n and top_k: both given with different values (%I, %I)",
                   a->top_n, top_k);
    if (!a->top_n) a->top_n = top_k;

    a->truncate = opt_string(L, args, "truncate");
    if (a->truncate && strcmp(a->truncate, "NONE") != 0 && strcmp(a->truncate, "END") != 0)
        luaL_error(L, "nim.rerank: truncate: must be \"NONE\" or \"END\" (got \"%s\")",
                   a->truncate);
    a->return_documents = opt_bool(L, args, "return_documents", 1);
    a->timeout = opt_seconds(L, args, "timeout", settings_number(L, "timeout", DEFAULT_TIMEOUT_S));
    a->connect_timeout =
        opt_seconds(L, args, "connect_timeout",
                    settings_number(L, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S));
    a->ca_bundle = opt_string(L, args, "ca_bundle");
    if (!a->ca_bundle) a->ca_bundle = settings_string(L, "ca_bundle");
    a->max_response = opt_count(L, args, "max_response_bytes");
    a->api_base = opt_string(L, args, "api_base");
    a->nvcf_status_url = opt_string(L, args, "nvcf_status_url");
    if (!a->nvcf_status_url) a->nvcf_status_url = getenv("NIMRANK_NVCF_STATUS_URL");
    if (!a->nvcf_status_url || !*a->nvcf_status_url)
        a->nvcf_status_url = "https://api.nvcf.nvidia.com/v2/nvcf/pexec/status";
    a->api_key = opt_string(L, args, "api_key");
    if (!a->api_key || !*a->api_key) a->api_key = getenv("NVIDIA_NIM_API_KEY");
    if (a->api_key && !*a->api_key) a->api_key = NULL;
    if (a->api_key && !header_value_ok(a->api_key, strlen(a->api_key)))
        field_error(L, "api_key", "contains control characters");

    int ht = lua_getfield(L, args, "headers"); /* slot 5 */
    if (ht != LUA_TNIL && ht != LUA_TTABLE) type_error(L, "headers", "table", -1);
    a->headers = ht == LUA_TTABLE ? 5 : 0;
}

/* ---- provider local/bm25 ---------------------------------------------------------------- */

static double bm25_number(lua_State *L, int opts, const char *field, double dflt) {
    if (!opts) return dflt;
    int t = lua_getfield(L, opts, field);
    double v = dflt;
    if (t == LUA_TNUMBER)
        v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "nim.rerank: bm25.%s: expected number, got %s", field, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* Ranks with the embedded BM25 scorer: no key, no network, no document limit. */
static int rerank_local(lua_State *L, const rerank_args *a) {
    int opts = 0;
    int t = lua_getfield(L, 1, "bm25");
    if (t == LUA_TTABLE)
        opts = lua_gettop(L);
    else if (t != LUA_TNIL)
        type_error(L, "bm25", "table", -1);
    nim_bm25_params p = NIM_BM25_DEFAULTS;
    p.k1 = bm25_number(L, opts, "k1", p.k1);
    p.b = bm25_number(L, opts, "b", p.b);
    if (opts) {
        int st = lua_getfield(L, opts, "stopwords");
        if (st == LUA_TBOOLEAN)
            p.stopwords = lua_toboolean(L, -1);
        else if (st != LUA_TNIL)
            type_error(L, "bm25.stopwords", "boolean", -1);
        lua_pop(L, 1);
    }
    if (!(p.k1 >= 0 && p.k1 < 1e6)) field_error(L, "bm25.k1", "must be a number >= 0");
    if (!(p.b >= 0 && p.b <= 1)) field_error(L, "bm25.b", "must be between 0 and 1");

    /* image-only passages have no text here: the ranking family's rule gives them none */
    nim_wire_texts(L, a->documents, lua_upvalueindex(UV_ENCODE), NIM_FAMILY_RANKING);
    int texts = lua_gettop(L);
    size_t n = (size_t)a->ndocs;
    /* Scratch memory owned by the GC, so a raise frees it. */
    const char **docs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *docs, 0);
    size_t *lens = lua_newuserdatauv(L, (n ? n : 1) * sizeof *lens, 0);
    nim_bm25_hit *hits = lua_newuserdatauv(L, (n ? n : 1) * sizeof *hits, 0);
    nim_ranking *rk = lua_newuserdatauv(L, (n ? n : 1) * sizeof *rk, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, texts, (lua_Integer)i + 1);
        docs[i] = lua_tolstring(L, -1, &lens[i]); /* anchored by texts; NULL for false */
        if (!docs[i]) lens[i] = 0;
        lua_pop(L, 1);
    }
    size_t qlen, tokens = 0;
    const char *q = lua_tolstring(L, a->query, &qlen);
    double t0 = mono_now();
    if (nim_bm25_rank(q, qlen, docs, lens, n, &p, hits, &tokens) != 0)
        return luaL_error(L, "nim.rerank: local/bm25: out of memory");
    for (size_t i = 0; i < n; i++) {
        rk[i].index = (lua_Integer)hits[i].index;
        rk[i].score = hits[i].score;
    }
    nim_parse_opts o = {NIM_FAMILY_RANKING, a->top_n, a->return_documents, a->ndocs};
    nim_wire_results(L, rk, a->ndocs, (lua_Integer)tokens, texts, lua_upvalueindex(UV_ARRAY_MT),
                     &o);
    annotate_meta(L, "local", NULL, "local/bm25", a->dropped, mono_now() - t0);
    return 1;
}

/* ---- provider nvidia_nim ---------------------------------------------------------------- */

static void set_string(lua_State *L, int t, const char *k, const char *v) {
    lua_pushstring(L, v);
    lua_setfield(L, t, k);
}

/* A finished request: stores value (on top, popped) as res or err in the user value. */
static void req_settle(lua_State *L, int req_idx, const char *field) {
    nim_req *r = lua_touserdata(L, req_idx);
    lua_getiuservalue(L, req_idx, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, field);
    lua_pop(L, 1);
    r->state = REQ_FINISHED;
    req_release(r);
}

/* Checks the arguments, resolves the route and starts the POST. Pushes a nim.Transfer that
 * is pending, or already finished (no documents; too many; no key; engine failure). Raises
 * on misuse. Never blocks. */
static void start_nim(lua_State *L, const rerank_args *a) {
    const char *model = a->model, *api_key = a->api_key;
    nim_family family;
    const char *clean;
    char err[512];
    if (nim_model_parse(model, &family, &clean, err, sizeof err) != 0)
        luaL_error(L, "nim.rerank: %s", err);
    nim_catalog_entry entry;
    lua_Integer max_passages;
    int top = lua_gettop(L);
    int has_entry = catalog_lookup(L, clean, &entry, &max_passages);
    int entry_idx = top + 1;
    if (!has_entry) lua_pushnil(L);
    nim_route route;
    if (nim_resolve(model, a->api_base, has_entry ? &entry : NULL, NULL, NULL, &route, err,
                    sizeof err) != 0)
        luaL_error(L, "nim.rerank: %s", err);

    nim_req *r = lua_newuserdatauv(L, sizeof *r, 1);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, REQ_MT);
    int req = lua_gettop(L);
    r->state = REQ_PENDING;
    r->family = family;
    r->top_n = a->top_n;
    r->ndocs = a->ndocs;
    r->return_documents = a->return_documents;
    r->timeout = a->timeout;
    r->deadline = mono_now() + a->timeout;
    r->max_response = a->max_response;
    lua_createtable(L, 0, 10);
    int uv = lua_gettop(L);
    set_string(L, uv, "model", model);
    set_string(L, uv, "url", route.url);
    set_string(L, uv, "route_model", route.model);
    set_string(L, uv, "body_model", route.body_model);
    set_string(L, uv, "family", nim_family_name(family));
    set_string(L, uv, "status_url", a->nvcf_status_url);
    if (api_key) set_string(L, uv, "key", api_key);
    lua_pushvalue(L, a->dropped);
    lua_setfield(L, uv, "dropped");
    if (has_entry && lua_getfield(L, entry_idx, "replacement") == LUA_TSTRING)
        lua_setfield(L, uv, "replacement");
    else if (has_entry)
        lua_pop(L, 1);
    lua_pushvalue(L, uv);
    lua_setiuservalue(L, req, 1);

    if (a->ndocs > max_passages) {
        lua_pushfstring(L,
                        "documents: %I documents exceed the limit of %I passages per request "
                        "for %s; split them into batches of at most %I (nim.rerank does)",
                        a->ndocs, max_passages, route.model, max_passages);
        push_error(L, NIM_ERR_BAD_REQUEST, 0, 0, model, api_key);
        req_settle(L, req, "err");
        goto done;
    }
    if (!api_key && route.hosted) {
        lua_pushliteral(L, "no API key for the hosted NVIDIA API: pass api_key or set "
                           "NVIDIA_NIM_API_KEY");
        push_error(L, NIM_ERR_AUTH, 0, 0, model, NULL);
        req_settle(L, req, "err");
        goto done;
    }

    /* Texts and body; every document is checked before anything is sent. */
    nim_wire_texts(L, a->documents, lua_upvalueindex(UV_ENCODE), family);
    lua_pushvalue(L, -1);
    lua_setfield(L, uv, "texts");
    int texts = lua_gettop(L);
    if (a->ndocs == 0) { /* nothing to rank: no network call */
        push_empty_result(L);
        annotate_meta(L, "nvidia_nim", nim_family_name(family), route.body_model, a->dropped, -1);
        req_settle(L, req, "res");
        goto done;
    }
    lua_Integer top_k = 0;
    if (family == NIM_FAMILY_RETRIEVAL && a->top_n > 0)
        top_k = a->top_n < a->ndocs ? a->top_n : a->ndocs;
    if (nim_wire_body(L, &r->body, a->documents, texts, family, route.body_model, a->query, top_k,
                      a->truncate) != 0)
        luaL_error(L, "nim.rerank: out of memory"); /* r->body is freed by __gc */

    nim_engine *engine = engine_of(L, err, sizeof err);
    if (!engine) {
        lua_pushstring(L, err);
        push_error(L, NIM_ERR_CONNECTION, 0, 0, model, api_key);
        req_settle(L, req, "err");
        goto done;
    }
    build_headers(L, r, a->headers, api_key);

    nim_post post = {0};
    post.url = route.url;
    post.headers = r->headers;
    post.body = r->body.p;
    post.body_len = r->body.n;
    post.timeout_ms = (long)(a->timeout * 1000.0);
    post.connect_timeout_ms = (long)(a->connect_timeout * 1000.0);
    post.max_response = (size_t)a->max_response;
    post.ca_bundle = a->ca_bundle;
    r->headers = NULL; /* the engine owns them from here */
    r->body.p = NULL;
    r->t = nim_engine_start(engine, &post, err, sizeof err);
    if (!r->t) {
        lua_pushstring(L, err);
        push_error(L, NIM_ERR_CONNECTION, 0, 0, model, api_key);
        req_settle(L, req, "err");
    }
done:
    lua_settop(L, req);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
}

/* NVCF answered 202 (still running): GET {status_url}/{reqid} with the same key, asking the
 * server to hold the poll until the result is ready (NVCF-POLL-SECONDS), within the call's
 * own deadline. Returns 1 when the poll is under way (the request stays pending). */
static int start_poll(lua_State *L, int req, int uv, const char *reqid, double left) {
    nim_req *r = lua_touserdata(L, req);
    char err[256];
    nim_engine *engine = engine_of(L, err, sizeof err);
    if (!engine) return 0;
    int top = lua_gettop(L);
    lua_getfield(L, uv, "status_url");
    lua_getfield(L, uv, "key");
    const char *base = lua_tostring(L, -2), *key = lua_tostring(L, -1);
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    luaL_Buffer b; /* url = base without its trailing '/' + '/' + reqid */
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, base, blen);
    luaL_addchar(&b, '/');
    luaL_addstring(&b, reqid);
    luaL_pushresult(&b);
    const char *url = lua_tostring(L, -1);
    long poll_s = left > 300 ? 300 : (long)left;
    lua_pushliteral(L, "Accept: application/json");
    add_header(L, r);
    lua_pushfstring(L, "User-Agent: nimrank/%s (libcurl/%s)", NIMRANK_VERSION,
                    curl_version_info(CURLVERSION_NOW)->version);
    add_header(L, r);
    lua_pushfstring(L, "NVCF-POLL-SECONDS: %d", (int)(poll_s > 0 ? poll_s : 1));
    add_header(L, r);
    if (key) {
        lua_pushfstring(L, "Authorization: Bearer %s", key);
        add_header(L, r);
    }
    nim_post post = {0};
    post.url = url;
    post.get = 1;
    post.headers = r->headers;
    post.timeout_ms = (long)(left * 1000.0) + 1;
    post.max_response = (size_t)r->max_response;
    r->headers = NULL;
    r->t = nim_engine_start(engine, &post, err, sizeof err);
    lua_settop(L, top);
    if (!r->t) return 0;
    r->polls++;
    return 1;
}

/* Turns a completed transfer into res or err (stored in the user value). */
static void finish_nim(lua_State *L, int req) {
    nim_req *r = lua_touserdata(L, req);
    nim_transfer *t = r->t;
    int top = lua_gettop(L);
    lua_getiuservalue(L, req, 1);
    int uv = lua_gettop(L);
    lua_getfield(L, uv, "model");
    lua_getfield(L, uv, "key");
    lua_getfield(L, uv, "url");
    const char *model = lua_tostring(L, uv + 1), *key = lua_tostring(L, uv + 2),
               *url = lua_tostring(L, uv + 3);
    long status = nim_transfer_status(t);
    nim_xfer_result xr = nim_transfer_result(t);
    if (xr != NIM_XFER_OK) {
        nim_err_type type = NIM_ERR_CONNECTION;
        int retryable = 1;
        long st = 0;
        switch (xr) {
        case NIM_XFER_TIMEOUT:
            type = NIM_ERR_TIMEOUT;
            lua_pushfstring(L, "no response within %f s (%s)", r->timeout, nim_transfer_error(t));
            break;
        case NIM_XFER_TOO_LARGE:
            type = NIM_ERR_BAD_RESPONSE;
            retryable = 0;
            st = status;
            lua_pushfstring(
                L, "response larger than %I bytes",
                (lua_Integer)(r->max_response ? r->max_response : NIM_ENGINE_MAX_RESPONSE));
            break;
        case NIM_XFER_CANCELLED:
            retryable = 0;
            lua_pushliteral(L, "cancelled");
            break;
        case NIM_XFER_CONNECTION: lua_pushfstring(L, "%s: %s", url, nim_transfer_error(t)); break;
        default: retryable = 0; lua_pushfstring(L, "%s: %s", url, nim_transfer_error(t));
        }
        push_error(L, type, st, retryable, model, key);
        req_settle(L, req, "err");
        lua_settop(L, top);
        return;
    }

    /* Take what we need from the transfer, then release it before any further Lua work. */
    size_t resp_len;
    const char *resp = nim_transfer_body(t, &resp_len);
    lua_pushlstring(L, resp, resp_len);
    int resp_idx = lua_gettop(L);
    double seconds = nim_transfer_seconds(t);
    double retry_after = nim_transfer_retry_after(t);
    const char *reqid = nim_transfer_header(t, "NVCF-REQID");
    lua_pushstring(L, reqid ? reqid : "");
    int reqid_idx = lua_gettop(L);
    req_release(r);

    if (status == 202 && lua_rawlen(L, reqid_idx) > 0) { /* NVCF: poll for the result */
        double left = r->deadline - mono_now();
        if (left > 0 && start_poll(L, req, uv, lua_tostring(L, reqid_idx), left)) {
            lua_settop(L, top);
            return;
        }
        if (left <= 0) {
            lua_pushfstring(L, "no result within %f s: NVIDIA's queue still holds request '%s'",
                            r->timeout, lua_tostring(L, reqid_idx));
            push_error(L, NIM_ERR_TIMEOUT, 202, 1, model, key);
            req_settle(L, req, "err");
            lua_settop(L, top);
            return;
        }
    }

    int decode = lua_upvalueindex(UV_DECODE);
    if (status >= 200 && status < 300 && status != 202) {
        lua_getfield(L, uv, "texts");
        int texts = lua_gettop(L);
        nim_parse_opts o = {r->family, r->top_n, r->return_documents, r->ndocs};
        if (nim_wire_parse(L, resp_idx, decode, texts, lua_upvalueindex(UV_ARRAY_MT), &o)) {
            lua_getfield(L, uv, "family");
            lua_getfield(L, uv, "body_model");
            lua_getfield(L, uv, "dropped");
            lua_pushvalue(L, -4);
            annotate_meta(L, "nvidia_nim", lua_tostring(L, -4), lua_tostring(L, -3),
                          lua_gettop(L) - 1, seconds);
            if (r->polls > 0) {
                lua_getfield(L, -1, "meta");
                lua_pushinteger(L, r->polls);
                lua_setfield(L, -2, "nvcf_polls");
                lua_pop(L, 1);
            }
            req_settle(L, req, "res");
            lua_settop(L, top);
            return;
        }
        lua_pushfstring(L, "malformed response from %s: %s; body: ", url, lua_tostring(L, -1));
        nim_wire_error_message(L, resp_idx, 0); /* raw text: the first part of the body */
        lua_concat(L, 2);
        push_error(L, NIM_ERR_BAD_RESPONSE, status, 0, model, key);
        req_settle(L, req, "err");
        lua_settop(L, top);
        return;
    }

    int retryable;
    nim_err_type type = nim_err_from_status(status, &retryable);
    nim_wire_error_message(L, resp_idx, decode);
    if (status == 410) {
        lua_getfield(L, uv, "route_model");
        lua_pushfstring(L, "model %s has reached end of life (410 Gone): %s", lua_tostring(L, -1),
                        lua_tostring(L, -2));
        lua_replace(L, -3);
        lua_pop(L, 1);
        if (lua_getfield(L, uv, "replacement") == LUA_TSTRING) {
            lua_pushfstring(L, "; use %s instead", lua_tostring(L, -1));
            lua_remove(L, -2);
            lua_concat(L, 2);
        } else {
            lua_pop(L, 1);
        }
    } else if (status == 202) {
        lua_pushfstring(L, "result not ready (202 Accepted, NVCF-REQID '%s'); try again",
                        lua_tostring(L, reqid_idx));
        lua_remove(L, -2);
    } else if (lua_rawlen(L, -1) == 0) {
        lua_pushfstring(L, "HTTP %I from %s", (lua_Integer)status, url);
        lua_remove(L, -2);
    }
    push_error(L, type, status, retryable, model, key);
    if (retry_after >= 0) {
        lua_pushnumber(L, retry_after);
        lua_setfield(L, -2, "retry_after");
    }
    req_settle(L, req, "err");
    lua_settop(L, top);
}

/* Settles the request at idx if its transfer has completed. Returns 1 when finished. */
static int req_poll(lua_State *L, int idx) {
    nim_req *r = lua_touserdata(L, idx);
    if (r->state == REQ_PENDING && r->t && nim_transfer_done(r->t)) finish_nim(L, idx);
    return r->state != REQ_PENDING;
}

/* Pushes the outcome of a settled request: res, or nil and err. Returns the count. */
static int req_push_result(lua_State *L, int idx) {
    nim_req *r = lua_touserdata(L, idx);
    if (r->state == REQ_CANCELLED) { /* nil, {type = "cancelled", ...} */
        lua_getiuservalue(L, idx, 1);
        lua_getfield(L, -1, "model"); /* anchored by the user value */
        lua_pushnil(L);
        lua_pushliteral(L, "the request was cancelled");
        push_error(L, NIM_ERR_CONNECTION, 0, 0, lua_tostring(L, -3), NULL);
        lua_pushliteral(L, "cancelled");
        lua_setfield(L, -2, "type");
        lua_remove(L, -3);
        lua_remove(L, -3);
        return 2;
    }
    lua_getiuservalue(L, idx, 1);
    if (lua_getfield(L, -1, "res") != LUA_TNIL) {
        lua_remove(L, -2);
        return 1;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_getfield(L, -2, "err");
    lua_remove(L, -3);
    return 2;
}

/* The engine itself failed (curl_multi_perform/poll): the request settles with an error, so
 * a caller still gets nil, err rather than nothing. */
static void req_fail(lua_State *L, int idx, const char *why) {
    nim_req *r = lua_touserdata(L, idx);
    lua_getiuservalue(L, idx, 1);
    lua_getfield(L, -1, "model");
    lua_getfield(L, -2, "key");
    lua_pushfstring(L, "network engine failure: %s", why);
    push_error(L, NIM_ERR_CONNECTION, 0, 1, lua_tostring(L, -3), lua_tostring(L, -2));
    lua_replace(L, -4);
    lua_pop(L, 2);
    if (r->t) nim_transfer_free(r->t); /* leaves the engine */
    r->t = NULL;
    req_settle(L, idx, "err");
}

/* Drives the engine until the request at idx settles (the blocking path). */
static void req_block(lua_State *L, int idx) {
    char err[256];
    nim_engine *engine = engine_of(L, err, sizeof err);
    while (!req_poll(L, idx)) {
        if (!engine) {
            req_fail(L, idx, err);
            return;
        }
        if (nim_engine_step(engine, 1000) < 0) {
            req_fail(L, idx, "curl multi error");
            return;
        }
    }
}

/* Is the running coroutine one that nim's scheduler resumes (nim.spawn, nim.run)? */
static int in_managed_coroutine(lua_State *L) {
    if (!lua_isyieldable(L)) return 0;
    lua_getfield(L, LUA_REGISTRYINDEX, MANAGED_KEY);
    lua_pushthread(L);
    int managed = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return managed;
}

/* Is model a local provider? Raises on an unknown local model. */
static int is_local(lua_State *L, const char *model) {
    if (strncmp(model, "local/", 6) != 0) return 0;
    if (strcmp(model, "local/bm25") != 0)
        luaL_error(L, "nim.rerank: model: unknown local model '%s' (known: local/bm25)", model);
    return 1;
}

static int rerank_resume(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    int idx = (int)ctx;
    req_block(L, idx); /* normally settled already: the scheduler resumes us when it is */
    return req_push_result(L, idx);
}

/* nim.rerank{...} -> result | nil, err. Dispatches on the model's provider prefix. Inside a
 * coroutine that nim's scheduler manages, a network call yields the nim.Transfer and resumes
 * when it settles; anywhere else (or where yielding is impossible) it blocks. */
static int nim_rerank(lua_State *L) {
    rerank_args a;
    check_args(L, &a);
    if (is_local(L, a.model)) return rerank_local(L, &a);
    start_nim(L, &a);
    int idx = lua_gettop(L);
    nim_req *r = lua_touserdata(L, idx);
    if (r->state == REQ_PENDING && in_managed_coroutine(L)) {
        lua_pushvalue(L, idx);
        return lua_yieldk(L, 1, (lua_KContext)idx, rerank_resume);
    }
    req_block(L, idx);
    return req_push_result(L, idx);
}

/* nim.native.start{...} -> nim.Transfer: starts the call and returns at once. local/bm25
 * answers immediately (the transfer is already settled). Raises on misuse. */
static int nim_start(lua_State *L) {
    rerank_args a;
    check_args(L, &a);
    if (is_local(L, a.model)) { /* synchronous and fast: a transfer that is already settled */
        rerank_local(L, &a);
        nim_req *r = lua_newuserdatauv(L, sizeof *r, 1);
        memset(r, 0, sizeof *r);
        luaL_setmetatable(L, REQ_MT);
        r->state = REQ_FINISHED;
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, -3);
        lua_setfield(L, -2, "res");
        lua_setiuservalue(L, -2, 1);
        return 1;
    }
    start_nim(L, &a);
    return 1;
}

static nim_req *check_req(lua_State *L) { return luaL_checkudata(L, 1, REQ_MT); }

/* t:done() -> boolean (settles it if its transfer completed; never drives the engine) */
static int req_done(lua_State *L) {
    check_req(L);
    lua_pushboolean(L, req_poll(L, 1));
    return 1;
}

/* t:result() -> res | nil, err, or nothing while pending */
static int req_result(lua_State *L) {
    check_req(L);
    if (!req_poll(L, 1)) return 0;
    return req_push_result(L, 1);
}

/* t:wait([seconds]) -> res | nil, err; or nothing when the time runs out first */
static int req_wait(lua_State *L) {
    check_req(L);
    double limit = luaL_optnumber(L, 2, -1);
    double end = mono_now() + limit;
    char err[256];
    nim_engine *engine = engine_of(L, err, sizeof err);
    while (!req_poll(L, 1)) {
        int wait_ms = 1000;
        if (limit >= 0) {
            double left = end - mono_now();
            if (left <= 0) return 0;
            wait_ms = left * 1000 < 1000 ? (int)(left * 1000) + 1 : 1000;
        }
        if (!engine) {
            req_fail(L, 1, err);
            break;
        }
        if (nim_engine_step(engine, wait_ms) < 0) {
            req_fail(L, 1, "curl multi error");
            break;
        }
    }
    return req_push_result(L, 1);
}

/* t:cancel(): a pending transfer is removed from the engine; result() then says cancelled. */
static int req_cancel(lua_State *L) {
    nim_req *r = check_req(L);
    if (r->state == REQ_PENDING) {
        r->state = REQ_CANCELLED;
        req_release(r);
    }
    return 0;
}

static int req_tostring(lua_State *L) {
    nim_req *r = check_req(L);
    static const char *const names[] = {"pending", "finished", "cancelled"};
    lua_pushfstring(L, "nim.Transfer (%s)", names[r->state]);
    return 1;
}

/* nim.native.step([seconds]) -> running: moves every transfer, waiting at most `seconds`
 * (default 0: never blocks) for network activity. */
static int nim_step(lua_State *L) {
    double s = luaL_optnumber(L, 1, 0);
    luaL_argcheck(L, s >= 0, 1, "seconds must be >= 0");
    char err[256];
    nim_ctx *c = ctx_of(L);
    if (!c->engine) {
        lua_pushinteger(L, 0);
        return 1;
    }
    nim_engine *engine = engine_of(L, err, sizeof err);
    int running = nim_engine_step(engine, (int)(s * 1000));
    lua_pushinteger(L, running < 0 ? 0 : running);
    return 1;
}

/* nim.native.manage(co [, on]): marks a coroutine as resumed by nim's scheduler, so
 * nim.rerank inside it yields instead of blocking. */
static int nim_manage(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTHREAD);
    lua_getfield(L, LUA_REGISTRYINDEX, MANAGED_KEY);
    lua_pushvalue(L, 1);
    if (lua_isnoneornil(L, 2) || lua_toboolean(L, 2))
        lua_pushboolean(L, 1);
    else
        lua_pushnil(L);
    lua_rawset(L, -3);
    return 0;
}

/* nim.resolve(model [, {api_base = ...}]) -> route table. Raises on a malformed model. */
static int nim_resolve_l(lua_State *L) {
    const char *model = luaL_checkstring(L, 1);
    const char *api_base = NULL;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "api_base") == LUA_TSTRING)
            api_base = lua_tostring(L, -1);
        else if (!lua_isnil(L, -1))
            type_error(L, "api_base", "string", -1);
    }
    lua_settop(L, 2);
    nim_family family;
    const char *clean;
    char err[512];
    if (nim_model_parse(model, &family, &clean, err, sizeof err) != 0)
        return luaL_error(L, "nim.resolve: %s", err);
    nim_catalog_entry entry;
    lua_Integer max_passages;
    int has_entry = catalog_lookup(L, clean, &entry, &max_passages);
    nim_route r;
    if (nim_resolve(model, api_base, has_entry ? &entry : NULL, NULL, NULL, &r, err, sizeof err) !=
        0)
        return luaL_error(L, "nim.resolve: %s", err);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, nim_family_name(r.family));
    lua_setfield(L, -2, "family");
    lua_pushstring(L, r.url);
    lua_setfield(L, -2, "url");
    lua_pushstring(L, r.body_model);
    lua_setfield(L, -2, "body_model");
    lua_pushstring(L, r.model);
    lua_setfield(L, -2, "model");
    lua_pushboolean(L, r.hosted);
    lua_setfield(L, -2, "needs_key");
    lua_pushstring(L, r.base_source);
    lua_setfield(L, -2, "base_source");
    lua_pushinteger(L, max_passages);
    lua_setfield(L, -2, "max_passages");
    lua_pushliteral(L, "nvidia_nim");
    lua_setfield(L, -2, "provider");
    return 1;
}

/* nim.now() -> seconds on a monotonic clock (for timing and frame loops). */
static int nim_now(lua_State *L) {
    lua_pushnumber(L, mono_now());
    return 1;
}

/* nim.sleep(seconds): blocks this thread (the router's default wait between retries). */
static int nim_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s < 1e7, 1, "seconds must be between 0 and 1e7");
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
    return 0;
}

/* nim.array([t]) -> t marked as a JSON array (so an empty one encodes as []). */
static int nim_array(lua_State *L) {
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    else
        luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(UV_ARRAY_MT));
    lua_setmetatable(L, 1);
    return 1;
}

static void push_catalog(lua_State *L) {
    lua_newtable(L);
    for (const nim_catalog_builtin *c = nim_catalog_builtins; c->name; c++) {
        lua_createtable(L, 0, 8);
        lua_pushliteral(L, "nvidia_nim");
        lua_setfield(L, -2, "provider");
        if (c->entry.endpoint_path) {
            lua_pushstring(L, c->entry.endpoint_path);
            lua_setfield(L, -2, "endpoint_path");
        }
        if (c->entry.body_model) {
            lua_pushstring(L, c->entry.body_model);
            lua_setfield(L, -2, "body_model");
        }
        lua_pushinteger(L, c->max_passages);
        lua_setfield(L, -2, "max_passages");
        lua_pushinteger(L, c->max_tokens);
        lua_setfield(L, -2, "max_tokens");
        if (c->deprecated) {
            lua_pushstring(L, c->deprecated);
            lua_setfield(L, -2, "deprecated");
        }
        if (c->replacement) {
            lua_pushstring(L, c->replacement);
            lua_setfield(L, -2, "replacement");
        }
        lua_setfield(L, -2, c->name);
    }
}

/* Adds dir/?.lua and dir/?/init.lua in front of package.path. */
static void prepend_path(lua_State *L, const char *dir) {
    lua_getglobal(L, "package");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, luaL_optstring(L, -1, ""));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* Is nim/layer.lua on package.path? */
static int layer_on_path(lua_State *L) {
    int top = lua_gettop(L);
    int found = 0;
    lua_getglobal(L, "package");
    if (lua_istable(L, -1) && lua_getfield(L, -1, "searchpath") == LUA_TFUNCTION) {
        lua_pushliteral(L, "nim.layer");
        lua_getfield(L, -3, "path");
        if (lua_type(L, -1) == LUA_TSTRING && lua_pcall(L, 2, 1, 0) == LUA_OK)
            found = lua_type(L, -1) == LUA_TSTRING;
    }
    lua_settop(L, top);
    return found;
}

/* Finds the Lua layer (the files of lua/nim): $NIMRANK_LUA_PATH; else where package.path already
 * finds it; else beside the binary or nim.so that holds this code (a build tree: ../lua; an
 * install: ../share/lua/5.4 or ../../../share/lua/5.4); else the build's install prefix.
 * Loads it if found: it wraps nim.rerank with the router. Without it, nim is the native
 * binding alone. The layer's own errors propagate: a broken script must be loud. */
static const char layer_anchor = 0; /* an address inside this object (nim.so or the binary) */

static void load_layer(lua_State *L, int mod) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, mod); /* so the layer's require "nim" returns this table */
    lua_setfield(L, -2, "nim");
    lua_pop(L, 1);
    const char *env = getenv("NIMRANK_LUA_PATH");
    if (env && *env) prepend_path(L, env);
    if (!layer_on_path(L)) {
        Dl_info info;
        char dir[4096];
        static const char *const rel[] = {"/../lua", "/../share/lua/5.4", "/../../../share/lua/5.4",
                                          "/lua"};
        if (dladdr(&layer_anchor, &info) && info.dli_fname) {
            char real[4096];
            const char *f = realpath(info.dli_fname, real) ? real : info.dli_fname;
            const char *slash = strrchr(f, '/');
            int n = slash ? (int)(slash - f) : 1;
            for (size_t i = 0; i < sizeof rel / sizeof rel[0] && !layer_on_path(L); i++) {
                snprintf(dir, sizeof dir, "%.*s%s", n, slash ? f : ".", rel[i]);
                prepend_path(L, dir);
            }
        }
        if (!layer_on_path(L)) prepend_path(L, NIMRANK_LUA_DIR);
    }
    if (!layer_on_path(L)) return;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "nim.layer");
    lua_call(L, 1, 0);
}

/* nim.native.handle(task) -> a nim.Request userdata whose user value is task. The methods,
 * __gc and __close come from the Lua scheduler (lua/nim/async.lua), which fills
 * nim.native.request_mt: a userdata, so `type(req)` is what users expect of a handle. */
static int nim_handle(lua_State *L) {
    luaL_checkany(L, 1);
    lua_newuserdatauv(L, 1, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, "nim.Request");
    return 1;
}

/* nim.native.task_of(handle) -> the task table of a nim.Request */
static int nim_task_of(lua_State *L) {
    luaL_checkudata(L, 1, "nim.Request");
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* nim.isatty(fd) -> boolean (0 stdin, 1 stdout, 2 stderr) */
static int nim_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* ---- the C API for a host's own event loop (nimrank.h) ----------------------------------- */

#define CTX_KEY "nim.ctx"

/* The engine of L's nim module, created on demand; NULL (message pushed) on failure. */
static nim_engine *host_engine(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY) != LUA_TUSERDATA) {
        lua_pop(L, 1);
        lua_pushliteral(L, "nimrank: the nim module is not open in this lua_State");
        return NULL;
    }
    nim_ctx *c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!c->engine) {
        char err[256];
        if (nim_curl_load(err, sizeof err) != 0) {
            lua_pushstring(L, err);
            return NULL;
        }
        c->engine = nim_engine_new();
        if (!c->engine) {
            lua_pushliteral(L, "nimrank: cannot create the curl engine");
            return NULL;
        }
    }
    return c->engine;
}

/* Calls nim.<name>() protected; returns its integer result, or -1 with the error pushed. */
static int call_nim(lua_State *L, const char *name, lua_Integer *out) {
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* always a table */
    if (lua_getfield(L, -1, "nim") != LUA_TTABLE || lua_getfield(L, -1, name) != LUA_TFUNCTION) {
        lua_settop(L, top);
        *out = -1; /* no Lua layer: nothing to run */
        return 0;
    }
    lua_remove(L, -2);
    lua_remove(L, -2);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) return -1;
    *out = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) /* seconds (next_timeout) */
        *out = (lua_Integer)(lua_tonumber(L, -1) * 1000.0);
    lua_pop(L, 1);
    return 0;
}

NIMRANK_API int nimrank_set_loop(lua_State *L, nimrank_watch_fn watch, nimrank_timer_fn timer,
                                 void *ud) {
    nim_engine *e = host_engine(L);
    if (!e) return -1;
    nim_engine_set_watchers(e, (nim_watch_fn)watch, (nim_timer_fn)timer, ud);
    return 0;
}

NIMRANK_API int nimrank_poll(lua_State *L) {
    lua_Integer n;
    if (call_nim(L, "poll", &n) != 0) return -1;
    return (int)n;
}

NIMRANK_API int nimrank_socket_action(lua_State *L, int fd, int events) {
    nim_engine *e = host_engine(L);
    if (!e) return -1;
    if (nim_engine_socket_action(e, fd, events) < 0) {
        lua_pushliteral(L, "nimrank: curl_multi_socket_action failed");
        return -1;
    }
    return nimrank_poll(L);
}

NIMRANK_API long nimrank_timeout(lua_State *L) {
    nim_engine *e = host_engine(L);
    if (!e) return -1;
    long net = nim_engine_timeout(e);
    lua_Integer lua_ms = -1;
    if (call_nim(L, "next_timeout", &lua_ms) != 0) {
        lua_pop(L, 1);
        lua_ms = -1;
    }
    if (net < 0) return (long)lua_ms;
    if (lua_ms < 0) return net;
    return net < lua_ms ? net : (long)lua_ms;
}

NIMRANK_API int nimrank_fds(lua_State *L, int *fds, int *events, int max) {
    nim_engine *e = host_engine(L);
    if (!e) return -1;
    return nim_engine_fds(e, fds, events, max);
}

static const luaL_Reg req_methods[] = {
    {"done", req_done},     {"result", req_result}, {"wait", req_wait},
    {"cancel", req_cancel}, {NULL, NULL},
};

static const luaL_Reg nim_native_funcs[] = {
    {"start", nim_start},     {"step", nim_step},   {"manage", nim_manage}, {"handle", nim_handle},
    {"task_of", nim_task_of}, {"sleep", nim_sleep}, {NULL, NULL},
};

static const luaL_Reg nim_funcs[] = {
    {"rerank", nim_rerank}, {"resolve", nim_resolve_l}, {"array", nim_array}, {"now", nim_now},
    {"sleep", nim_sleep},   {"isatty", nim_isatty},     {NULL, NULL},
};

int luaopen_nim(lua_State *L) {
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, REQ_MT)) {
        lua_pushcfunction(L, req_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, req_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, req_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newmetatable(L, "nim.Request"); /* filled by lua/nim/async.lua */
    lua_pop(L, 1);
    if (lua_getfield(L, LUA_REGISTRYINDEX, MANAGED_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L); /* weak keys: a finished coroutine is not kept alive by the mark */
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, MANAGED_KEY);
    } else {
        lua_pop(L, 1);
    }

    lua_newtable(L); /* the module */
    int mod = lua_gettop(L);

    /* Upvalues, in UV_* order. */
    nim_ctx *ctx = lua_newuserdatauv(L, sizeof *ctx, 0);
    ctx->engine = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY); /* for the C API, which has only L */

    luaopen_cjson(L); /* our own cjson instance: the user's cjson settings do not reach it */
    lua_getfield(L, -1, "encode");
    lua_getfield(L, -2, "decode");
    lua_remove(L, -3);

    push_catalog(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, mod, "catalog");

    lua_createtable(L, 0, 6); /* settings */
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "drop_params");
    lua_pushnumber(L, DEFAULT_TIMEOUT_S);
    lua_setfield(L, -2, "timeout");
    lua_pushnumber(L, DEFAULT_CONNECT_TIMEOUT_S);
    lua_setfield(L, -2, "connect_timeout");
    const char *ca = getenv("NIMRANK_CA_BUNDLE");
    if (ca && *ca) {
        lua_pushstring(L, ca);
        lua_setfield(L, -2, "ca_bundle");
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, mod, "settings");

    lua_createtable(L, 0, 2); /* array marker metatable */
    lua_pushliteral(L, "nim.array");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_setfield(L, mod, "array_mt");

    /* nim.native: the raw binding, reachable after the Lua layer wraps nim.rerank. Its
     * functions share the module's upvalues. */
    lua_createtable(L, 0, 6);
    for (int i = 1; i <= UV_COUNT; i++)
        lua_pushvalue(L, mod + i);
    luaL_setfuncs(L, nim_native_funcs, UV_COUNT);
    luaL_getmetatable(L, "nim.Request");
    lua_setfield(L, -2, "request_mt");
    luaL_getmetatable(L, REQ_MT);
    lua_setfield(L, -2, "transfer_mt");
    lua_setfield(L, mod, "native");
    /* nim.Transfer methods: they finish transfers, so they need the same upvalues. */
    luaL_getmetatable(L, REQ_MT);
    lua_newtable(L);
    for (int i = 1; i <= UV_COUNT; i++)
        lua_pushvalue(L, mod + i);
    luaL_setfuncs(L, req_methods, UV_COUNT);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_setfuncs(L, nim_funcs, UV_COUNT);
    lua_getfield(L, mod, "native");
    lua_getfield(L, mod, "rerank");
    lua_setfield(L, -2, "rerank");
    lua_getfield(L, mod, "resolve");
    lua_setfield(L, -2, "resolve");
    lua_pop(L, 1);

    luaL_getmetatable(L, ERROR_MT);
    lua_setfield(L, mod, "error_mt");
    lua_pushliteral(L, NIMRANK_VERSION);
    lua_setfield(L, mod, "version");
    lua_pushliteral(L, "nvidia_nim");
    lua_setfield(L, mod, "default_provider");
    load_layer(L, mod);
    return 1;
}
