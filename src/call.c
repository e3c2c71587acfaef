/* call.c: the native call's entry points. Each checks its arguments (args.c), picks the
 * provider by the model string's prefix, and blocks, yields or returns a transfer. */
#include <string.h>

#include "binding.h"

const char *nim_provider_name(nim_provider p) {
    return p == NIM_PROVIDER_LOCAL ? "local" : p == NIM_PROVIDER_API ? "api" : "nvidia_nim";
}

/* The one place that reads a provider prefix: "local/" is the embedded reranker; a prefix
 * that names a registered descriptor (nim.providers: "cohere/", "jina_ai/", ...) is that
 * provider; "nvidia_nim/" or no known prefix is NVIDIA NIM. */
static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

nim_provider nim_provider_of(lua_State *L, const char *model) {
    if (has_prefix(model, "local/")) {
        if (strcmp(model, "local/bm25") != 0)
            nim_misuse(L, "nim.rerank", "model", "unknown local model '%s' (known: local/bm25)",
                       model);
        return NIM_PROVIDER_LOCAL;
    }
    int api = nim_descriptor_push(L, model);
    lua_pop(L, 1);
    return api ? NIM_PROVIDER_API : NIM_PROVIDER_NVIDIA;
}

/* nim.native.provider_of(model) -> provider name, whether the model names it by prefix */
int nim_l_provider_of(lua_State *L) {
    const char *model = luaL_checkstring(L, 1);
    nim_provider p = nim_provider_of(L, model);
    if (p == NIM_PROVIDER_API) {
        nim_descriptor_push(L, model);
        nim_descriptor d;
        nim_descriptor_read(L, -1, &d);
        lua_pushstring(L, d.name);
        lua_pushboolean(L, 1);
        return 2;
    }
    lua_pushstring(L, nim_provider_name(p));
    lua_pushboolean(L, p == NIM_PROVIDER_LOCAL || has_prefix(model, "nvidia_nim/"));
    return 2;
}

/* nim.native.rerank{...} -> result | nil, err. Inside a coroutine that nim's scheduler
 * manages, a network call yields its nim.Transfer and resumes when it settles; anywhere else
 * (or where yielding is impossible) it blocks. */
int nim_l_rerank(lua_State *L) {
    nim_args a;
    nim_check_args(L, &a);
    if (nim_provider_of(L, a.model) == NIM_PROVIDER_LOCAL) {
        nim_local_rerank(L, &a);
        return 1;
    }
    nim_http_start(L, &a);
    return nim_call_finish(L, lua_gettop(L));
}

/* nim.native.start(args [, first, count [, partial]]) -> nim.Transfer: starts the call (with
 * documents first .. first+count-1 only, when given: a batch; indices in its result are the
 * caller's) and returns at once. partial: the result is a batch's, for nim.native.merge
 * (rankings kept in C, no result tables). local/bm25 answers immediately (the transfer is
 * already settled). */
int nim_l_start(lua_State *L) {
    int partial = lua_toboolean(L, 4);
    nim_args a;
    nim_check_args(L, &a);
    if (nim_provider_of(L, a.model) == NIM_PROVIDER_LOCAL) {
        nim_local_rerank(L, &a);
        nim_call_push_settled(L, "res");
        return 1;
    }
    nim_http_start(L, &a);
    ((nim_call *)lua_touserdata(L, -1))->partial = partial;
    return 1;
}

/* nim.native.validate(args [, first, count]) -> true: raises what rerank would raise for
 * these arguments, without any network traffic. */
int nim_l_validate(lua_State *L) {
    nim_args a;
    nim_check_args(L, &a);
    if (nim_provider_of(L, a.model) == NIM_PROVIDER_LOCAL)
        nim_local_validate(L, &a);
    else
        nim_http_validate(L, &a);
    lua_pushboolean(L, 1);
    return 1;
}

/* Pushes nim.resolve's route table; family NULL and max_passages 0 leave those out. */
static int push_route(lua_State *L, const nim_route *r, const char *family,
                      lua_Integer max_passages, const char *provider) {
    lua_createtable(L, 0, 8);
    const char *const names[] = {"url", "body_model", "model", "base_source", "family", "provider"};
    const char *const values[] = {r->url,         r->body_model, r->model,
                                  r->base_source, family,        provider};
    for (int i = 0; i < 6; i++) {
        if (!values[i]) continue;
        lua_pushstring(L, values[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_pushboolean(L, r->hosted);
    lua_setfield(L, -2, "needs_key");
    if (max_passages > 0) {
        lua_pushinteger(L, max_passages);
        lua_setfield(L, -2, "max_passages");
    }
    return 1;
}

/* The route table of a descriptor's model (the descriptor on top). */
static int resolve_descriptor(lua_State *L, const char *model, const char *api_base) {
    int desc = lua_gettop(L);
    nim_descriptor d;
    nim_descriptor_read(L, desc, &d);
    nim_route r;
    char err[512];
    if (nim_descriptor_route(L, desc, &d, model, api_base, 0, &r, err, sizeof err) != 0)
        return nim_misuse(L, "nim.resolve", NULL, "%s", err);
    return push_route(L, &r, NULL, d.max_passages, d.name);
}

/* nim.resolve(model [, {api_base = ...}]) -> route table. Raises on a malformed model. */
int nim_l_resolve(lua_State *L) {
    if (lua_type(L, 1) != LUA_TSTRING)
        nim_misuse(L, "nim.resolve", "model", "expected string, got %s", luaL_typename(L, 1));
    const char *model = lua_tostring(L, 1), *api_base = NULL;
    lua_settop(L, 2);
    if (!lua_isnil(L, 2)) {
        if (!lua_istable(L, 2))
            nim_misuse(L, "nim.resolve", NULL, "bad argument #2 (table expected, got %s)",
                       luaL_typename(L, 2));
        int t = lua_getfield(L, 2, "api_base"); /* stays at slot 3: api_base points into it */
        if (t == LUA_TSTRING)
            api_base = lua_tostring(L, -1);
        else if (t != LUA_TNIL)
            nim_misuse(L, "nim.resolve", "api_base", "expected string, got %s",
                       luaL_typename(L, -1));
    } else {
        lua_pushnil(L);
    }
    nim_family family;
    const char *clean;
    char err[512];
    if (nim_provider_of(L, model) == NIM_PROVIDER_LOCAL) { /* no route: ranked here */
        lua_createtable(L, 0, 4);
        lua_pushstring(L, nim_provider_name(NIM_PROVIDER_LOCAL));
        lua_setfield(L, -2, "provider");
        lua_pushstring(L, model);
        lua_setfield(L, -2, "model");
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "needs_key");
        return 1;
    }
    if (nim_descriptor_push(L, model)) /* slot 4 */
        return resolve_descriptor(L, model, api_base);
    lua_pop(L, 1);
    if (nim_model_parse(model, &family, &clean, err, sizeof err) != 0)
        return nim_misuse(L, "nim.resolve", NULL, "%s", err);
    nim_catalog_entry entry;
    lua_Integer max_passages;
    int has_entry = nim_catalog_lookup(L, clean, &entry, &max_passages);
    nim_route r;
    if (nim_resolve(model, api_base, has_entry ? &entry : NULL, NULL, NULL, &r, err, sizeof err) !=
        0)
        return nim_misuse(L, "nim.resolve", NULL, "%s", err);
    return push_route(L, &r, nim_family_name(r.family), max_passages,
                      nim_provider_name(NIM_PROVIDER_NVIDIA));
}
