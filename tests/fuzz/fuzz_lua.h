/* fuzz_lua.h: one lua_State with nim and its Lua layer, for the targets that fuzz Lua code. */
#ifndef NIM_FUZZ_LUA_H
#define NIM_FUZZ_LUA_H

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../../src/nimrank.h"
#include "fuzz.h"

#ifndef FUZZ_LUA_DIR
#define FUZZ_LUA_DIR "lua"
#endif

/* Pushes nothing; returns the state (created on the first call) with fn = code loaded once. */
static lua_State *fuzz_state(const char *code, int *fn) {
    static lua_State *L;
    static int ref = LUA_NOREF;
    if (!L) {
        setenv("NIMRANK_LUA_PATH", FUZZ_LUA_DIR, 1);
        L = luaL_newstate();
        luaL_openlibs(L);
        luaL_requiref(L, "nim", luaopen_nim, 1);
        lua_pop(L, 1);
        FUZZ_ASSERT(luaL_loadstring(L, code) == LUA_OK);
        FUZZ_ASSERT(lua_pcall(L, 0, 1, 0) == LUA_OK);
        ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    *fn = ref;
    return L;
}

/* Calls code's function with the input's bytes: it must return true (an error is a finding). */
static int fuzz_lua_run(const char *code, const uint8_t *data, size_t size) {
    int fn;
    lua_State *L = fuzz_state(code, &fn);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
    lua_pushlstring(L, (const char *)data, size);
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc != LUA_OK) /* the finding, in Lua's words */
        fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error)");
    FUZZ_ASSERT(rc == LUA_OK);
    FUZZ_ASSERT(lua_toboolean(L, -1));
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}

#endif
