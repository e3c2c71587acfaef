/* The C API for a host's own loop (nimrank.h) and opening the module, from a C host. */
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../../src/nimrank.h"
#include "ctest.h"

static lua_State *open_state(const char *layer_path) {
    setenv("NIMRANK_LUA_PATH", layer_path, 1);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nim", luaopen_nim, 1);
    lua_pop(L, 1);
    return L;
}

static int run(lua_State *L, const char *code) {
    return luaL_dostring(L, code) == LUA_OK ? 0 : (lua_pop(L, 1), -1);
}

static void opening_twice_gives_the_same_module(void) {
    lua_State *L = open_state("lua");
    luaL_requiref(L, "nim", luaopen_nim, 0);
    lua_getglobal(L, "nim");
    CHECK(lua_rawequal(L, -1, -2));
    lua_pop(L, 2);
    CHECK(lua_gettop(L) == 0);
    lua_close(L);
}

static void poll_failure_pushes_its_message(void) {
    lua_State *L = open_state("lua");
    CHECK(run(L, "nim.spawn(function() error('boom in a task') end)") == 0);
    int top = lua_gettop(L);
    CHECK(nimrank_poll(L) == -1);
    CHECK(lua_gettop(L) == top + 1);
    CHECK(lua_type(L, -1) == LUA_TSTRING && strstr(lua_tostring(L, -1), "boom in a task"));
    lua_pop(L, 1);
    CHECK(nimrank_poll(L) == 0); /* nothing left */
    CHECK(lua_gettop(L) == top);
    lua_close(L);
}

static void without_the_layer_poll_still_moves_transfers(void) {
    lua_State *L = open_state("/nonexistent");
    int top = lua_gettop(L);
    CHECK(nimrank_poll(L) == 0);     /* no error, nothing pending */
    CHECK(nimrank_timeout(L) == -1); /* nothing pending */
    CHECK(lua_gettop(L) == top);     /* nothing pushed on success */
    int fds[4], events[4];
    CHECK(nimrank_fds(L, fds, events, 4) == 1); /* one epoll set */
    CHECK(fds[0] >= 0 && events[0] == NIMRANK_WATCH_IN);
    CHECK(run(L, "assert(nim.native.layer_error:find('NIMRANK_LUA_PATH'))") == 0);
    CHECK(run(L, "nim.load_config({})") == -1); /* the stub says the layer is missing */
    lua_close(L);
}

static void assign_needs_a_watched_socket(void) {
    lua_State *L = open_state("lua");
    int top = lua_gettop(L);
    CHECK(nimrank_assign(L, 12345, NULL) == -1);
    CHECK(lua_gettop(L) == top + 1 && lua_type(L, -1) == LUA_TSTRING);
    lua_close(L);
}

int main(void) {
    RUN(opening_twice_gives_the_same_module);
    RUN(poll_failure_pushes_its_message);
    RUN(without_the_layer_poll_still_moves_transfers);
    RUN(assign_needs_a_watched_socket);
    nimrank_global_cleanup();
    return CTEST_SUMMARY("c/hostloop");
}
