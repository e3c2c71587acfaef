/* module.c: luaopen_nim. Builds the nim table and nim.native, the metatables, and the
 * per-state context, all kept in the registry under static addresses (binding.h), so opening
 * the module twice returns the same table and no other library's key can collide. Opening
 * has no other effect on the host's state than package.loaded.nim and the preload entries of
 * the Lua layer's own modules (layer.c). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"

#include <lua-cjson.h> /* after lua.h: it does not include it */
#include "curl_lazy.h"
#include "nimrank.h"

const char nim_key_ctx, nim_key_module, nim_key_managed, nim_key_transfer_mt, nim_key_error_mt,
    nim_key_misuse_mt, nim_key_request_mt, nim_key_await_mt, nim_key_array_mt, nim_key_encode,
    nim_key_decode, nim_key_catalog, nim_key_settings, nim_key_rankings_mt, nim_key_providers,
    nim_key_redis_mt, nim_key_redis_null;

int nimrank_global_init(void) { return nim_curl_load(NULL, 0); }

void nimrank_global_cleanup(void) {
    if (nim_curl_loaded()) curl_global_cleanup();
}

void nim_setmeta(lua_State *L, const char *key) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    lua_setmetatable(L, -2);
}

void *nim_checkudata(lua_State *L, int idx, const char *key, const char *tname) {
    void *p = lua_touserdata(L, idx);
    if (p && lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, key);
        int same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (same) return p;
    }
    luaL_typeerror(L, idx, tname);
    return NULL;
}

int nim_setting(lua_State *L, const char *field) {
    nim_push_reg(L, nim_key_settings);
    int t = lua_getfield(L, -1, field);
    lua_remove(L, -2);
    return t;
}

nim_ctx *nim_ctx_get(lua_State *L) {
    nim_push_reg(L, nim_key_ctx);
    nim_ctx *c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return c;
}

nim_engine *nim_ctx_engine(lua_State *L, char *err, size_t errlen) {
    nim_ctx *c = nim_ctx_get(L);
    if (!c->engine) c->engine = nim_engine_new(err, errlen);
    return c->engine;
}

void nim_ctx_drop_engine(lua_State *L) {
    nim_ctx *c = nim_ctx_get(L);
    if (!c || !c->engine) return;
    nim_engine_free(c->engine); /* cancels what it still holds; the next call makes another */
    c->engine = NULL;
}

static int ctx_gc(lua_State *L) {
    nim_ctx *c = lua_touserdata(L, 1);
    nim_engine_free(c->engine); /* cancels transfers still owned by calls */
    c->engine = NULL;
    nim_scratch_free(&c->scratch);
    free(c->out.p);
    c->out = (nim_buf){0};
    return 0;
}

/* nim.check(args) -> true | nil, {fn, field, message}: what nim.native.rerank would raise,
 * returned instead (the layer extends it with its own options). */
static int nim_l_check(lua_State *L) {
    lua_settop(L, 1);
    lua_pushcfunction(L, nim_l_protect);
    lua_pushcfunction(L, nim_l_validate);
    lua_pushvalue(L, 1);
    lua_call(L, 2, LUA_MULTRET);
    return lua_gettop(L) - 1;
}

/* Creates registry[key] = a new table with __name, and leaves it on the stack. */
static void new_meta(lua_State *L, const char *key, const char *name) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

static int misuse_tostring(lua_State *L) {
    lua_getfield(L, 1, "fn");
    lua_getfield(L, 1, "field");
    lua_getfield(L, 1, "message");
    if (lua_isstring(L, 3))
        lua_pushfstring(L, "%s: %s: %s", luaL_optstring(L, 2, "nim"), lua_tostring(L, 3),
                        luaL_optstring(L, 4, ""));
    else
        lua_pushfstring(L, "%s: %s", luaL_optstring(L, 2, "nim"), luaL_optstring(L, 4, ""));
    return 1;
}

static void create_metatables(lua_State *L) {
    new_meta(L, &nim_key_error_mt, "nim.Error");
    lua_pushcfunction(L, nim_error_tostring);
    lua_setfield(L, -2, "__tostring");
    new_meta(L, &nim_key_misuse_mt, "nim.Misuse");
    lua_pushcfunction(L, misuse_tostring);
    lua_setfield(L, -2, "__tostring");
    new_meta(L, &nim_key_transfer_mt, "nim.Transfer");
    nim_transfer_methods(L);
    new_meta(L, &nim_key_request_mt, "nim.Request"); /* filled by lua/nim/async.lua */
    new_meta(L, &nim_key_await_mt, "nim.Await");
    new_meta(L, &nim_key_array_mt, "nim.array");
    new_meta(L, &nim_key_rankings_mt, "nim.Rankings"); /* a batch's rankings (result.c) */
    lua_pushliteral(L, "nim.Rankings");
    lua_setfield(L, -2, "__metatable"); /* no script can take or change it */
    lua_pop(L, 7);
    lua_newtable(L); /* managed coroutines; weak keys: a finished one is not kept alive */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_managed);
    nim_redis_open(L);
}

static void create_context(lua_State *L) {
    nim_ctx *ctx = lua_newuserdatauv(L, sizeof *ctx, 0);
    memset(ctx, 0, sizeof *ctx);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_ctx);
}

/* Our own cjson instance: the user's cjson settings do not reach it. lua-cjson sets a
 * process-wide static when it opens, so two threads opening states at once are serialised. */
static void open_cjson(lua_State *L) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    lua_pushcfunction(L, luaopen_cjson);
    int rc = lua_pcall(L, 0, 1, 0);
    pthread_mutex_unlock(&lock);
    if (rc != LUA_OK) lua_error(L);
    lua_getfield(L, -1, "encode");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_encode);
    lua_getfield(L, -1, "decode");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_decode);
    lua_pop(L, 1);
}

static void push_settings(lua_State *L) {
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "drop_params");
    lua_pushnumber(L, NIM_DEFAULT_TIMEOUT_S);
    lua_setfield(L, -2, "timeout");
    lua_pushnumber(L, NIM_DEFAULT_CONNECT_TIMEOUT_S);
    lua_setfield(L, -2, "connect_timeout");
    lua_pushinteger(L, nim_engine_default_max_connections());
    lua_setfield(L, -2, "max_connections");
    lua_pushnumber(L, 1.0);
    lua_setfield(L, -2, "nvcf_poll_interval");
    lua_pushinteger(L, 10000000); /* VM instructions a filter or config script may run */
    lua_setfield(L, -2, "script_budget");
    const char *ca = getenv("NIMRANK_CA_BUNDLE");
    if (ca && *ca) {
        lua_pushstring(L, ca);
        lua_setfield(L, -2, "ca_bundle");
    }
}

static const luaL_Reg nim_funcs[] = {
    {"rerank", nim_l_rerank},
    {"resolve", nim_l_resolve},
    {"check", nim_l_check},
    {"array", nim_l_array},
    {"now", nim_l_now},
    {"sleep", nim_l_sleep},
    {"isatty", nim_l_isatty},
    {"terminal_width", nim_l_terminal_width},
    {NULL, NULL},
};

static const luaL_Reg native_funcs[] = {
    {"rerank", nim_l_rerank},
    {"start", nim_l_start},
    {"validate", nim_l_validate},
    {"resolve", nim_l_resolve},
    {"step", nim_l_step},
    {"await", nim_l_await},
    {"manage", nim_l_manage},
    {"handle", nim_l_handle},
    {"task_of", nim_l_task_of},
    {"sleep", nim_l_sleep},
    {"misuse", nim_l_misuse},
    {"seconds", nim_l_seconds},
    {"call_timeout", nim_l_call_timeout},
    {"protect", nim_l_protect},
    {"error", nim_l_error},
    {"cancelled", nim_l_cancelled},
    {"budget", nim_l_budget},
    {"merge", nim_l_merge},
    {"catalog_key", nim_l_catalog_key},
    {"catalog_entry", nim_l_catalog_entry},
    {"max_passages", nim_l_max_passages},
    {"provider_of", nim_l_provider_of},
    {"provider_register", nim_l_provider_register},
    {"provider_get", nim_l_provider_get},
    {"provider_names", nim_l_provider_names},
    {"encode_results", nim_l_encode_results},
    {"utf8_error", nim_l_utf8_error},
    {"sha256", nim_l_sha256},
    {"redis_new", nim_l_redis_new},
    {"sha1", nim_l_sha1},
    {NULL, NULL},
};

static void set_reg(lua_State *L, int t, const char *field, const char *key) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    lua_setfield(L, t, field);
}

/* nim.native: the raw binding and the primitives the Lua layer is built from. */
static void push_native(lua_State *L) {
    luaL_newlib(L, native_funcs);
    int t = lua_gettop(L);
    set_reg(L, t, "request_mt", &nim_key_request_mt);
    set_reg(L, t, "transfer_mt", &nim_key_transfer_mt);
    set_reg(L, t, "await_mt", &nim_key_await_mt);
    set_reg(L, t, "redis_mt", &nim_key_redis_mt);
    set_reg(L, t, "redis_null", &nim_key_redis_null);
    nim_push_keys(L);
    lua_setfield(L, t, "keys");
    lua_pushinteger(L, NIM_DEFAULT_MAX_PASSAGES);
    lua_setfield(L, t, "default_max_passages");
    /* name -> descriptor: checked copies that nim.providers.add registers, read by C; kept
     * in the registry only, so no Lua code can change one under a call */
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_providers);
    lua_newtable(L);
    for (int i = 0; nim_builtin_providers[i]; i++) {
        lua_pushstring(L, nim_builtin_providers[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, t, "builtin_providers");
}

int luaopen_nim(lua_State *L) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &nim_key_module) == LUA_TTABLE) return 1;
    lua_pop(L, 1);
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    create_metatables(L);
    create_context(L);
    open_cjson(L);

    luaL_newlib(L, nim_funcs);
    int mod = lua_gettop(L);
    nim_push_catalog(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_catalog);
    lua_setfield(L, mod, "catalog");
    push_settings(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_settings);
    lua_setfield(L, mod, "settings");
    push_native(L);
    lua_setfield(L, mod, "native");
    set_reg(L, mod, "error_mt", &nim_key_error_mt);
    set_reg(L, mod, "array_mt", &nim_key_array_mt);
    lua_pushliteral(L, NIMRANK_VERSION);
    lua_setfield(L, mod, "version");
    lua_pushstring(L, nim_provider_name(NIM_PROVIDER_NVIDIA));
    lua_setfield(L, mod, "default_provider");

    lua_pushvalue(L, mod);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_module);
    /* so the layer's require "nim" finds this table, however the host opened it */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, mod);
    lua_setfield(L, -2, "nim");
    lua_pop(L, 1);
    nim_layer_load(L, mod);
    lua_settop(L, mod);
    return 1;
}
