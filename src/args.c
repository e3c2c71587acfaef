/* args.c: argument checking for the native call, and misuse errors. Misuse raises naming the
 * field, at the caller's line (DESIGN.md "Errors"); which keys the native call takes, which
 * are transport options and which belong to the Lua layer is decided here, once. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"

/* ---- misuse -------------------------------------------------------------------------------- */

/* Pushes "file:line: " of the first frame outside nimrank (C functions and the Lua layer's own
 * files are skipped), or "" when there is none (the CLI, a C host). */
static void push_where(lua_State *L) {
    nim_ctx *c = nim_ctx_get(L);
    size_t plen = c ? strlen(c->lib_source) : 0;
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.currentline <= 0) continue;
        if (plen && strncmp(ar.source, c->lib_source, plen) == 0) continue;
        lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
        return;
    }
    lua_pushliteral(L, "");
}

/* Raises with the message on top of the stack (fn and field given). */
/* Registry: coroutine -> depth of nim.native.protect calls running in it (weak keys). */
static const char protected_key = 0;

static int protected_depth(lua_State *L) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &protected_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushthread(L);
    int depth = (int)lua_tointeger(L, (lua_rawget(L, -2), -1));
    lua_pop(L, 2);
    return depth;
}

static void set_protected_depth(lua_State *L, int depth) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &protected_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &protected_key);
    }
    lua_pushthread(L);
    if (depth > 0)
        lua_pushinteger(L, depth);
    else
        lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static int raise_misuse(lua_State *L, const char *fn, const char *field) {
    int msg = lua_gettop(L);
    if (protected_depth(L) > 0) { /* nim.native.protect: a structured error */
        lua_createtable(L, 0, 3);
        lua_pushstring(L, fn);
        lua_setfield(L, -2, "fn");
        if (field) {
            lua_pushstring(L, field);
            lua_setfield(L, -2, "field");
        }
        lua_pushvalue(L, msg);
        lua_setfield(L, -2, "message");
        nim_setmeta(L, &nim_key_misuse_mt);
        return lua_error(L);
    }
    push_where(L);
    lua_pushstring(L, fn);
    lua_pushliteral(L, ": ");
    if (field) {
        lua_pushstring(L, field);
        lua_pushliteral(L, ": ");
    } else {
        lua_pushliteral(L, "");
        lua_pushliteral(L, "");
    }
    lua_pushvalue(L, msg);
    lua_concat(L, 6);
    return lua_error(L);
}

int nim_misuse(lua_State *L, const char *fn, const char *field, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return raise_misuse(L, fn, field);
}

/* nim.native.misuse(fn, field, message): the Lua layer's misuse, raised the same way. */
int nim_l_misuse(lua_State *L) {
    const char *fn = luaL_checkstring(L, 1);
    const char *field = luaL_optstring(L, 2, NULL);
    luaL_checkstring(L, 3);
    lua_settop(L, 3);
    return raise_misuse(L, fn, field);
}

/* After fn (possibly resumed after a yield): the outcome as protect promises it. */
static int protect_done(lua_State *L, int status, lua_KContext ctx) {
    set_protected_depth(L, (int)ctx);
    if (status == LUA_OK || status == LUA_YIELD) {
        lua_pushboolean(L, 1);
        lua_insert(L, 1);
        return lua_gettop(L);
    }
    if (lua_getmetatable(L, -1)) {
        nim_push_reg(L, nim_key_misuse_mt);
        int is_misuse = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (is_misuse) {
            lua_pushnil(L);
            lua_insert(L, -2);
            return 2;
        }
    }
    return lua_error(L);
}

/* nim.native.protect(fn, ...) -> true, ... | nil, {fn, field, message}: runs fn with misuse
 * turned into a returned error (the `.safe` flavour of every check). Other errors propagate.
 * fn may yield (inside nim's tasks a protected rerank still runs concurrently): the mode is
 * per coroutine, so other tasks raise as usual meanwhile. */
int nim_l_protect(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int outer = protected_depth(L);
    set_protected_depth(L, outer + 1);
    int status =
        lua_pcallk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, (lua_KContext)outer, protect_done);
    return protect_done(L, status, (lua_KContext)outer);
}

/* ---- which keys the native call takes ------------------------------------------------------ */

/* Request parameters: sent to the provider or deciding the answer. */
static const char *const request_params[] = {"model", "query",    "documents",        "top_n",
                                             "top_k", "truncate", "return_documents", NULL};
/* Transport options: how to reach the provider. Never "unsupported". */
static const char *const transport_options[] = {"api_key",
                                                "api_base",
                                                "timeout",
                                                "request_timeout",
                                                "connect_timeout",
                                                "headers",
                                                "ca_bundle",
                                                "max_response_bytes",
                                                "nvcf_status_url",
                                                "nvcf_poll_interval",
                                                "drop_params",
                                                "bm25",
                                                "user",
                                                "custom_llm_provider",
                                                NULL};
/* Policy options: the Lua layer's (router, batching). The native call refuses them rather
 * than ignore them; nim.rerank strips them before calling it. */
static const char *const policy_options[] = {"filters",  "fallbacks",  "num_retries", "max_retries",
                                             "metadata", "batch_size", "concurrency", "on_progress",
                                             "models",   "fusion",     "rrf_k",       "weights",
                                             "cache",    NULL};

static int in_list(const char *const *list, const char *s) {
    for (; *list; list++)
        if (strcmp(*list, s) == 0) return 1;
    return 0;
}

static void push_list(lua_State *L, const char *const *list) {
    lua_newtable(L);
    for (lua_Integer i = 1; *list; list++, i++) {
        lua_pushstring(L, *list);
        lua_rawseti(L, -2, i);
    }
}

void nim_push_keys(lua_State *L) {
    lua_createtable(L, 0, 3);
    push_list(L, request_params);
    lua_setfield(L, -2, "request");
    push_list(L, transport_options);
    lua_setfield(L, -2, "transport");
    push_list(L, policy_options);
    lua_setfield(L, -2, "policy");
}

int nim_args_known_key(const char *k) {
    return in_list(request_params, k) || in_list(transport_options, k) ||
           in_list(policy_options, k);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* desc: the stack slot of the model's provider descriptor, or 0. A descriptor's own
 * parameters are supported; truncate only where it says how to send it. */
static int is_unsupported(lua_State *L, int desc, const char *k) {
    if (desc && strcmp(k, "truncate") == 0) return !nim_descriptor_has_truncate(L, desc);
    if (desc && nim_descriptor_supports(L, desc, k)) return 0;
    return !in_list(request_params, k) && !in_list(transport_options, k) &&
           !in_list(policy_options, k);
}

/* Pushes the sorted names of unsupported keys (a table; empty if none). Names only: values
 * are never printed. Raises on a policy key and on a key that is not a string. */
static void unsupported_params(lua_State *L, int args, int desc) {
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, args)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            nim_misuse(L, "nim.rerank", "arguments", "keys must be strings, got a %s key",
                       luaL_typename(L, -1));
        const char *k = lua_tostring(L, -1);
        if (in_list(policy_options, k))
            nim_misuse(L, "nim.native.rerank", k,
                       "a routing or batching option, handled by nim.rerank (the Lua layer), "
                       "not by the native call");
        if (is_unsupported(L, desc, k)) n++;
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
        if (is_unsupported(L, desc, k)) names[i++] = k;
    }
    qsort(names, n, sizeof names[0], cmp_str);
    for (i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
    }
    lua_pop(L, 1);
}

/* ---- typed fields -------------------------------------------------------------------------- */

static int type_error(lua_State *L, const char *field, const char *expected, int idx) {
    if (lua_isnil(L, idx)) return nim_misuse(L, "nim.rerank", field, "required (%s)", expected);
    return nim_misuse(L, "nim.rerank", field, "expected %s, got %s", expected,
                      luaL_typename(L, idx));
}

/* Slot of the anchor table: every string the checked arguments point to is stored there, so
 * it lives as long as the call's stack frame even when an __index metamethod made it up. */
#define ANCHOR 2

/* A string field the C side uses as a C string: an embedded NUL would silently cut it
 * (a model, a URL, a key), so it is refused. */
static const char *opt_string(lua_State *L, int args, const char *field) {
    int t = lua_getfield(L, args, field);
    const char *s = NULL;
    if (t == LUA_TSTRING) {
        size_t n;
        s = lua_tolstring(L, -1, &n);
        if (strlen(s) != n) nim_misuse(L, "nim.rerank", field, "contains a NUL byte");
        lua_setfield(L, ANCHOR, field);
        return s;
    }
    if (t != LUA_TNIL) type_error(L, field, "string", -1);
    lua_pop(L, 1);
    return NULL;
}

/* An integer >= 1, or 0 when absent. Floats with a fraction, booleans, strings: errors. */
static lua_Integer opt_count(lua_State *L, int args, const char *field) {
    int t = lua_getfield(L, args, field);
    lua_Integer v = 0;
    if (t != LUA_TNIL) {
        int isint = 0;
        if (t == LUA_TNUMBER) v = lua_tointegerx(L, -1, &isint);
        if (!isint) type_error(L, field, "an integer >= 1", -1);
        if (v < 1) nim_misuse(L, "nim.rerank", field, "must be an integer >= 1 (got %I)", v);
    }
    lua_pop(L, 1);
    return v;
}

/* The one rule for a number of seconds (timeouts): finite, > 0, below 1e7 (115 days). */
double nim_check_seconds(lua_State *L, const char *fn, const char *field, int idx) {
    if (lua_type(L, idx) != LUA_TNUMBER)
        nim_misuse(L, fn, field, "expected a number of seconds, got %s", luaL_typename(L, idx));
    double v = lua_tonumber(L, idx);
    if (!(v > 0 && v < 1e7)) nim_misuse(L, fn, field, "must be a number of seconds > 0 and < 1e7");
    return v;
}

/* nim.native.seconds(value, fn, field) -> value: the same rule for the Lua layer's own
 * timeouts (a routed call's deadline); raises naming fn and field. */
int nim_l_seconds(lua_State *L) {
    const char *fn = luaL_checkstring(L, 2), *field = luaL_checkstring(L, 3);
    lua_pushnumber(L, nim_check_seconds(L, fn, field, 1));
    return 1;
}

/* The call's value (or its alias), else nim.settings[field] (checked the same way), else
 * dflt. */
static double opt_seconds(lua_State *L, int args, const char *field, const char *alias,
                          double dflt) {
    int top = lua_gettop(L);
    double v = dflt;
    if (lua_getfield(L, args, field) != LUA_TNIL)
        v = nim_check_seconds(L, "nim.rerank", field, -1);
    else if (alias && lua_getfield(L, args, alias) != LUA_TNIL)
        v = nim_check_seconds(L, "nim.rerank", alias, -1);
    else if (nim_setting(L, field) != LUA_TNIL)
        v = nim_check_seconds(L, "nim.settings", field, -1);
    lua_settop(L, top);
    return v;
}

/* nim.native.call_timeout(args) -> seconds: a call's total time by the binding's own rule
 * (timeout, else request_timeout, else nim.settings.timeout, else the default); misuse names
 * a bad value. The Lua layer asks this rather than repeat it. */
int nim_l_call_timeout(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnumber(L, opt_seconds(L, 1, "timeout", "request_timeout", NIM_DEFAULT_TIMEOUT_S));
    return 1;
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

static const char *settings_string(lua_State *L, const char *field) {
    nim_setting(L, field);
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        return NULL;
    }
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (strlen(s) != n)
        nim_misuse(L, "nim.rerank", lua_pushfstring(L, "nim.settings.%s", field),
                   "contains a NUL byte");
    lua_setfield(L, ANCHOR, field); /* settings may change while the call runs */
    return s;
}

static int settings_bool(lua_State *L, const char *field) {
    nim_setting(L, field);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

int nim_header_value_ok(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 && s[i] != '\t') return 0;
    return 1;
}

/* ---- the whole check ----------------------------------------------------------------------- */

static void check_dropped(lua_State *L, const nim_args *a, int args) {
    if (lua_rawlen(L, a->dropped) == 0 ||
        opt_bool(L, args, "drop_params", settings_bool(L, "drop_params")))
        return;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, a->dropped); i++) {
        if (i > 1) luaL_addstring(&b, ", ");
        lua_rawgeti(L, a->dropped, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    nim_misuse(L, "nim.rerank", NULL,
               "unsupported parameters: %s (pass drop_params = true to drop them)",
               lua_tostring(L, -1));
}

/* The slice of documents to send: all, or count from first (1-based; a batch). */
static void check_slice(lua_State *L, nim_args *a, lua_Integer first, lua_Integer count) {
    lua_Integer all = (lua_Integer)lua_rawlen(L, a->documents);
    a->first = 0;
    a->ndocs = all;
    if (count < 0) return;
    if (first < 1 || first > all + 1)
        nim_misuse(L, "nim.native.start", "first", "%I is outside 1..%I", first, all + 1);
    if (count > all - first + 1)
        nim_misuse(L, "nim.native.start", "count", "%I documents from %I pass the end (%I)", count,
                   first, all);
    a->first = first - 1;
    a->ndocs = count;
}

static void check_transport(lua_State *L, nim_args *a, int args) {
    a->timeout = opt_seconds(L, args, "timeout", "request_timeout", NIM_DEFAULT_TIMEOUT_S);
    a->connect_timeout =
        opt_seconds(L, args, "connect_timeout", NULL, NIM_DEFAULT_CONNECT_TIMEOUT_S);
    a->ca_bundle = opt_string(L, args, "ca_bundle");
    if (!a->ca_bundle) a->ca_bundle = settings_string(L, "ca_bundle");
    a->max_response = opt_count(L, args, "max_response_bytes");
    a->api_base = opt_string(L, args, "api_base");
    a->nvcf_status_url = opt_string(L, args, "nvcf_status_url");
    a->nvcf_poll_interval = opt_seconds(L, args, "nvcf_poll_interval", NULL, 1.0);
    a->nvcf_status_source = "nvcf_status_url";
    if (!a->nvcf_status_url) {
        a->nvcf_status_url = getenv("NIMRANK_NVCF_STATUS_URL");
        a->nvcf_status_source = "NIMRANK_NVCF_STATUS_URL";
    }
    if (!a->nvcf_status_url || !*a->nvcf_status_url) {
        a->nvcf_status_url = "https://api.nvcf.nvidia.com/v2/nvcf/pexec/status";
        a->nvcf_status_default = 1;
    }
    a->api_key = opt_string(L, args, "api_key");
    a->key_source = "api_key";
    if (!a->api_key || !*a->api_key) {
        const char *var = "NVIDIA_NIM_API_KEY";
        a->api_key = a->desc ? nim_descriptor_key(L, a->desc, &var) : getenv(var);
        a->key_from_env = a->api_key != NULL;
        if (a->key_from_env) a->key_source = var;
    }
    if (a->api_key && !*a->api_key) a->api_key = NULL;
    const char *key_field = a->key_source;
    if (a->api_key && !nim_header_value_ok(a->api_key, strlen(a->api_key)))
        nim_misuse(L, "nim.rerank", key_field, "contains control characters");
    if (a->api_key && strlen(a->api_key) > NIM_HEADER_VALUE_MAX) /* what a caller's header may be */
        nim_misuse(L, "nim.rerank", key_field, "too large (at most %d bytes)",
                   NIM_HEADER_VALUE_MAX);
}

lua_Integer nim_args_top_n(lua_State *L, int args) {
    lua_Integer n = opt_count(L, args, "top_n");
    return n ? n : opt_count(L, args, "top_k"); /* top_k: LiteLLM's and NIM's name for it */
}

void nim_check_args(lua_State *L, nim_args *a) {
    memset(a, 0, sizeof *a);
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    if (!lua_istable(L, 1))
        nim_misuse(L, "nim.rerank", NULL, "bad argument #1 (table expected, got %s)",
                   luaL_typename(L, 1));
    const int args = 1;
    lua_Integer first = 1, count = -1; /* optional slice (first, count) at slots 2 and 3 */
    if (!lua_isnoneornil(L, 2)) {
        first = luaL_checkinteger(L, 2);
        count = luaL_checkinteger(L, 3);
        luaL_argcheck(L, count >= 0, 3, "count must be >= 0");
    }
    lua_settop(L, 1);
    lua_createtable(L, 0, 8); /* slot 2: ANCHOR */

    /* The model's provider decides which parameters are supported: found first, kept in the
     * anchor until it takes slot 8. */
    a->model = opt_string(L, args, "model");
    int desc = 0;
    if (a->model && nim_descriptor_push(L, a->model)) {
        lua_pushvalue(L, -1);
        lua_setfield(L, ANCHOR, "descriptor");
        desc = lua_gettop(L);
    } else if (a->model) {
        lua_pop(L, 1);
    }
    unsupported_params(L, args, desc); /* slot 3 */
    if (desc) lua_remove(L, desc);
    a->dropped = 3;
    check_dropped(L, a, args);

    if (!a->model)
        nim_misuse(L, "nim.rerank", "model", "required (e.g. \"nvidia_nim/nvidia/...\")");

    if (lua_getfield(L, args, "query") != LUA_TSTRING) type_error(L, "query", "string", -1);
    a->query = 4;
    if (lua_rawlen(L, a->query) == 0) nim_misuse(L, "nim.rerank", "query", "must not be empty");

    if (lua_getfield(L, args, "documents") != LUA_TTABLE)
        type_error(L, "documents", "a list of strings or tables", -1);
    a->documents = 5;
    check_slice(L, a, first, count);

    lua_Integer top_n = opt_count(L, args, "top_n"), top_k = opt_count(L, args, "top_k");
    if (top_n && top_k && top_n != top_k)
        nim_misuse(L, "nim.rerank", "top_n and top_k", "both given with different values (%I, %I)",
                   top_n, top_k);
    a->top_n = nim_args_top_n(L, args);

    a->truncate = opt_string(L, args, "truncate");
    if (a->truncate && strcmp(a->truncate, "NONE") != 0 && strcmp(a->truncate, "END") != 0)
        nim_misuse(L, "nim.rerank", "truncate", "must be \"NONE\" or \"END\" (got \"%s\")",
                   a->truncate);
    a->return_documents = opt_bool(L, args, "return_documents", 1);

    int ht = lua_getfield(L, args, "headers"); /* slot 6 */
    if (ht != LUA_TNIL && ht != LUA_TTABLE) type_error(L, "headers", "table", -1);
    a->headers = ht == LUA_TTABLE ? 6 : 0;
    int bt = lua_getfield(L, args, "bm25"); /* slot 7 */
    if (bt != LUA_TNIL && bt != LUA_TTABLE) type_error(L, "bm25", "table", -1);
    a->bm25 = bt == LUA_TTABLE ? 7 : 0;
    a->desc = lua_getfield(L, ANCHOR, "descriptor") == LUA_TTABLE ? 8 : 0; /* slot 8 */
    check_transport(L, a, args);
}
