/* catalog.c: the bridge between the C resolver's built-in catalog and nim.catalog, the
 * Lua-extendable table of known models. The key spelling (URL spelling, underscores; a dotted
 * name finds the same entry) and the default passage limit are decided here; catalog.lua and
 * batching ask, never repeat. */
#include <string.h>

#include "binding.h"

void nim_push_catalog(lua_State *L) {
    lua_newtable(L);
    for (const nim_catalog_builtin *c = nim_catalog_builtins; c->name; c++) {
        lua_createtable(L, 0, 8);
        lua_pushstring(L, nim_provider_name(NIM_PROVIDER_NVIDIA));
        lua_setfield(L, -2, "provider");
        lua_pushliteral(L, "retrieval"); /* hosted NIM endpoints are all retrieval */
        lua_setfield(L, -2, "family");
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

/* Pushes nim.catalog's entry for a cleaned name (or nil): exact key first, then the URL
 * spelling (dots as underscores) of a dotted ranking-family name. */
static int push_entry(lua_State *L, const char *clean) {
    nim_push_reg(L, nim_key_catalog);
    int t = lua_getfield(L, -1, clean);
    size_t n = strlen(clean);
    if (t == LUA_TNIL && strchr(clean, '.') && n < NIM_MODEL_MAX) {
        char url_spelling[NIM_MODEL_MAX];
        for (size_t i = 0; i <= n; i++)
            url_spelling[i] = clean[i] == '.' ? '_' : clean[i];
        lua_pop(L, 1);
        t = lua_getfield(L, -1, url_spelling);
    }
    lua_remove(L, -2);
    return t;
}

int nim_catalog_lookup(lua_State *L, const char *clean, nim_catalog_entry *entry,
                       lua_Integer *max_passages) {
    int top = lua_gettop(L);
    *max_passages = NIM_DEFAULT_MAX_PASSAGES;
    memset(entry, 0, sizeof *entry);
    int t = push_entry(L, clean);
    if (t == LUA_TNIL) {
        lua_settop(L, top);
        return 0;
    }
    if (t != LUA_TTABLE)
        nim_misuse(L, "nim.catalog", clean, "expected table, got %s", luaL_typename(L, -1));
    /* Raw reads: an entry is data, and its strings stay anchored by it. */
    static const char *const fields[] = {"endpoint_path", "body_model"};
    const char **dest[] = {&entry->endpoint_path, &entry->body_model};
    for (int i = 0; i < 2; i++) {
        lua_pushstring(L, fields[i]);
        int ft = lua_rawget(L, top + 1);
        if (ft != LUA_TNIL && ft != LUA_TSTRING)
            nim_misuse(L, "nim.catalog", clean, "%s: expected string, got %s", fields[i],
                       luaL_typename(L, -1));
        *dest[i] = lua_tostring(L, -1);
        if (*dest[i] && strlen(*dest[i]) != lua_rawlen(L, -1))
            nim_misuse(L, "nim.catalog", clean, "%s: contains a NUL byte", fields[i]);
        lua_pop(L, 1);
    }
    lua_pushliteral(L, "max_passages");
    if (lua_rawget(L, top + 1) != LUA_TNIL) {
        int isint;
        *max_passages = lua_tointegerx(L, -1, &isint);
        if (!isint || *max_passages < 1)
            nim_misuse(L, "nim.catalog", clean, "max_passages: expected an integer >= 1");
    }
    lua_settop(L, top + 1); /* the entry stays: its strings are in use */
    return 1;
}

/* The cleaned name of a NIM model string (prefixes stripped); raises on a malformed one. */
static const char *clean_name(lua_State *L, const char *fn, const char *model) {
    nim_family family;
    const char *clean;
    char err[512];
    if (nim_model_parse(model, &family, &clean, err, sizeof err) != 0)
        nim_misuse(L, fn, NULL, "%s", err);
    return clean;
}

/* nim.native.catalog_key(name) -> the key nim.catalog stores the model under */
int nim_l_catalog_key(lua_State *L) {
    const char *clean = clean_name(L, "nim.catalog", luaL_checkstring(L, 1));
    lua_pushstring(L, clean);
    return 1;
}

/* nim.native.catalog_entry(name) -> the entry the binding would use, or nil */
int nim_l_catalog_entry(lua_State *L) {
    const char *clean = clean_name(L, "nim.catalog", luaL_checkstring(L, 1));
    if (push_entry(L, clean) != LUA_TTABLE) lua_pushnil(L);
    return 1;
}

/* nim.native.max_passages(model) -> documents one request may carry, or nil (no limit) */
int nim_l_max_passages(lua_State *L) {
    const char *model = luaL_checkstring(L, 1);
    nim_provider p = nim_provider_of(L, model);
    if (p == NIM_PROVIDER_LOCAL) {
        lua_pushnil(L);
        return 1;
    }
    if (p == NIM_PROVIDER_API) { /* the descriptor's limit, or none */
        nim_descriptor_push(L, model);
        nim_descriptor d;
        nim_descriptor_read(L, -1, &d);
        if (d.max_passages > 0)
            lua_pushinteger(L, d.max_passages);
        else
            lua_pushnil(L);
        return 1;
    }
    nim_catalog_entry entry;
    lua_Integer max_passages;
    nim_catalog_lookup(L, clean_name(L, "nim.rerank", model), &entry, &max_passages);
    lua_pushinteger(L, max_passages);
    return 1;
}
