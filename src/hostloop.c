/* hostloop.c: the C API for a host's own event loop (nimrank.h). Each function reaches the
 * state's engine through the registry (the host has only L) and pushes its error message
 * when it returns -1, as nimrank.h promises. */
#include "binding.h"
#include "nimrank.h"

/* The engine of L's nim module, created on demand; NULL with the message pushed. */
static nim_engine *host_engine(lua_State *L) {
    char err[256];
    nim_engine *e = nim_ctx_get(L) ? nim_ctx_engine(L, err, sizeof err) : NULL;
    if (!e)
        lua_pushstring(L, nim_ctx_get(L) ? err
                                         : "nimrank: the nim module is not open in "
                                           "this lua_State");
    return e;
}

/* Calls nim.<name>() protected: 1 with its result pushed, 0 when the Lua layer does not
 * define it, -1 with the error pushed. */
static int call_layer(lua_State *L, const char *name) {
    int top = lua_gettop(L);
    nim_push_reg(L, nim_key_module);
    if (!lua_istable(L, -1) || lua_getfield(L, -1, "native") != LUA_TTABLE ||
        lua_getfield(L, -1, "layer_error") != LUA_TNIL || /* no layer: only its stubs */
        lua_getfield(L, top + 1, name) != LUA_TFUNCTION) {
        lua_settop(L, top);
        return 0;
    }
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return lua_pcall(L, 0, 1, 0) == LUA_OK ? 1 : -1;
}

NIMRANK_API int nimrank_set_loop(lua_State *L, nimrank_watch_fn watch, nimrank_timer_fn timer,
                                 void *ud) {
    nim_engine *e = host_engine(L);
    if (!e) return -1;
    nim_engine_set_watchers(e, watch, timer, ud);
    return 0;
}

NIMRANK_API int nimrank_assign(lua_State *L, int fd, void *socketp) {
    nim_engine *e = host_engine(L);
    if (!e) return -1;
    if (nim_engine_assign(e, fd, socketp) != 0) {
        lua_pushfstring(L, "nimrank_assign: fd %d is not a socket nimrank watches", fd);
        return -1;
    }
    return 0;
}

/* Moves every transfer (those of nim's tasks and bare nim.Transfer handles alike), then
 * lets the scheduler resume what completed. */
NIMRANK_API int nimrank_poll(lua_State *L) {
    nim_engine *e = host_engine(L);
    if (!e) return -1;
    int running = nim_engine_step(e, 0);
    if (running < 0) {
        lua_pushliteral(L, "nimrank: epoll or curl multi error");
        return -1;
    }
    int rc = call_layer(L, "poll");
    if (rc < 0) return -1;
    if (rc == 0) return running; /* no Lua layer: no scheduler */
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return n > running ? n : running;
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

/* Never fails: on any error it answers 0 ("call nimrank_poll now"), which reports it. */
NIMRANK_API long nimrank_timeout(lua_State *L) {
    nim_ctx *c = nim_ctx_get(L);
    long net = (c && c->engine) ? nim_engine_timeout(c->engine) : -1;
    long lua_ms = -1;
    int rc = call_layer(L, "next_timeout");
    if (rc < 0) {
        lua_pop(L, 1);
        return 0;
    }
    if (rc > 0) {
        if (lua_type(L, -1) == LUA_TNUMBER) lua_ms = (long)(lua_tonumber(L, -1) * 1000.0);
        lua_pop(L, 1);
    }
    if (net < 0) return lua_ms;
    if (lua_ms < 0) return net;
    return net < lua_ms ? net : lua_ms;
}

NIMRANK_API int nimrank_fds(lua_State *L, int *fds, int *events, int max) {
    nim_engine *e = host_engine(L);
    if (!e) return -1;
    if (max < 1) return 0;
    fds[0] = nim_engine_fd(e); /* an epoll set: readable when any socket of nimrank is */
    events[0] = NIMRANK_WATCH_IN;
    return 1;
}
