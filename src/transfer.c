/* transfer.c: nim.Transfer, one provider call (or Redis operation) in flight, and how a caller
 * waits for it: blocking (drive the engine until it settles), yielding (inside a coroutine that
 * nim's scheduler resumes, as lua-nginx-module does per request), or awaiting the first of
 * several (batches). The provider's complete function turns a finished transfer (or operation)
 * into res or err. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "binding.h"
#include "clock.h"

nim_call *nim_call_new(lua_State *L, nim_complete_fn complete) {
    nim_call *c = lua_newuserdatauv(L, sizeof *c, 1);
    memset(c, 0, sizeof *c);
    c->state = NIM_CALL_PENDING;
    c->complete = complete;
    nim_setmeta(L, &nim_key_transfer_mt);
    lua_createtable(L, 0, 12);
    lua_setiuservalue(L, -2, 1);
    return c;
}

void nim_call_release(nim_call *c) {
    nim_transfer_free(c->t); /* leaves the engine if still running */
    c->t = NULL;
    if (c->op) c->op_kind->release(c->op);
    c->op = NULL;
}

void nim_call_settle(lua_State *L, int idx, const char *field) {
    idx = lua_absindex(L, idx);
    nim_call *c = lua_touserdata(L, idx);
    lua_getiuservalue(L, idx, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, field);
    lua_pop(L, 1);
    c->state = NIM_CALL_FINISHED;
    nim_call_release(c);
}

void nim_call_push_settled(lua_State *L, const char *field) {
    nim_call_new(L, NULL);
    lua_insert(L, -2);
    nim_call_settle(L, -2, field);
}

int nim_call_poll(lua_State *L, int idx) {
    nim_call *c = lua_touserdata(L, idx);
    if (c->state == NIM_CALL_PENDING &&
        ((c->t && nim_transfer_done(c->t)) || (c->op && c->op_kind->done(c->op))))
        c->complete(L, idx);
    return c->state != NIM_CALL_PENDING;
}

/* Pushes the user value's field (a string, or nil). */
static const char *uv_string(lua_State *L, int idx, const char *field) {
    lua_getiuservalue(L, idx, 1);
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
    return lua_tostring(L, -1);
}

/* Settles a pending call with a connection error: a caller always gets nil, err. */
static void call_fail(lua_State *L, int idx, const char *why) {
    idx = lua_absindex(L, idx);
    const char *model = uv_string(L, idx, "model");
    const char *provider = uv_string(L, idx, "provider");
    const char *key = uv_string(L, idx, "key");
    lua_pushfstring(L, "network engine failure: %s", why);
    nim_error e = {NIM_ERR_CONNECTION, 0, 1, provider, model, key};
    nim_push_error(L, &e);
    lua_replace(L, -4);
    lua_pop(L, 2);
    nim_call_settle(L, idx, "err");
}

int nim_call_push_outcome(lua_State *L, int idx) {
    nim_call *c = lua_touserdata(L, idx);
    if (c->state == NIM_CALL_CANCELLED) {
        lua_pushnil(L);
        const char *model = uv_string(L, idx, "model");
        const char *provider = uv_string(L, idx, "provider");
        nim_push_cancelled(L, provider, model);
        lua_replace(L, -3);
        lua_pop(L, 1);
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

/* ---- waiting -------------------------------------------------------------------------------- */

/* Moves the engine once, waiting at most ms. On an engine failure every pending call in
 * [first, last] is settled with the failure, so no caller waits forever. */
static void drive(lua_State *L, int first, int last, int ms) {
    char err[256];
    nim_engine *engine = nim_ctx_engine(L, err, sizeof err);
    if (engine && nim_engine_step(engine, ms) >= 0) return;
    if (engine) snprintf(err, sizeof err, "epoll or curl multi error");
    for (int i = first; i <= last; i++)
        if (((nim_call *)lua_touserdata(L, i))->state == NIM_CALL_PENDING) call_fail(L, i, err);
}

/* Drives the engine until the call at idx settles (the blocking path). */
static void block(lua_State *L, int idx) {
    while (!nim_call_poll(L, idx))
        drive(L, idx, idx, 1000);
}

/* Is the running coroutine one that nim's scheduler resumes (nim.spawn, nim.run)? */
static int in_managed_coroutine(lua_State *L) {
    if (!lua_isyieldable(L)) return 0;
    nim_push_reg(L, nim_key_managed);
    lua_pushthread(L);
    int managed = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return managed;
}

static int finish_resumed(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    int idx = (int)ctx;
    block(L, idx); /* normally settled already: the scheduler resumes us when it is */
    return nim_call_push_outcome(L, idx);
}

int nim_call_finish(lua_State *L, int idx) {
    /* Settled already (a Redis command failed fast: down with backoff left, refused at once,
     * client closed)? Then return now: a task yielding a finished operation would wait for a
     * wake-up that never comes (no fd, no deadline for the engine). */
    if (nim_call_poll(L, idx)) return nim_call_push_outcome(L, idx);
    nim_call *c = lua_touserdata(L, idx);
    if (c->state == NIM_CALL_PENDING && in_managed_coroutine(L)) {
        lua_pushvalue(L, idx);
        return lua_yieldk(L, 1, (lua_KContext)idx, finish_resumed);
    }
    block(L, idx);
    return nim_call_push_outcome(L, idx);
}

/* nim.native.manage(co [, on]): marks a coroutine as resumed by nim's scheduler, so
 * nim.rerank inside it yields instead of blocking. */
int nim_l_manage(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTHREAD);
    nim_push_reg(L, nim_key_managed);
    lua_pushvalue(L, 1);
    if (lua_isnoneornil(L, 2) || lua_toboolean(L, 2))
        lua_pushboolean(L, 1);
    else
        lua_pushnil(L);
    lua_rawset(L, -3);
    return 0;
}

/* The 1-based position of a settled call among the list's, or 0. Settles what completed. */
static lua_Integer first_settled(lua_State *L, int list) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, list);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        int settled = nim_call_poll(L, lua_gettop(L));
        lua_pop(L, 1);
        if (settled) return i;
    }
    return 0;
}

static int await_resumed(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    lua_Integer i;
    while ((i = first_settled(L, 1)) == 0) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
        int top = lua_gettop(L);
        for (lua_Integer k = 1; k <= n; k++)
            lua_rawgeti(L, 1, k);
        drive(L, top + 1, top + (int)n, 1000);
        lua_settop(L, top);
    }
    lua_pushinteger(L, i);
    return 1;
}

/* nim.native.await(transfers) -> i: waits until one of the list's transfers has settled and
 * returns its position. Inside a managed coroutine it yields (the scheduler resumes it when
 * one has), elsewhere it drives the engine. */
int nim_l_await(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    luaL_argcheck(L, n > 0, 1, "no transfers to wait for");
    luaL_checkstack(L, (int)n + NIM_STACK_NEED, "too many transfers");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        nim_checkudata(L, -1, &nim_key_transfer_mt, "nim.Transfer");
        lua_pop(L, 1);
    }
    lua_Integer i = first_settled(L, 1);
    if (i == 0 && in_managed_coroutine(L)) {
        lua_createtable(L, (int)n, 0); /* what the scheduler waits on: any of these */
        for (lua_Integer k = 1; k <= n; k++) {
            lua_rawgeti(L, 1, k);
            lua_rawseti(L, -2, k);
        }
        nim_setmeta(L, &nim_key_await_mt);
        return lua_yieldk(L, 1, 0, await_resumed);
    }
    if (i == 0) return await_resumed(L, LUA_OK, 0);
    lua_pushinteger(L, i);
    return 1;
}

/* nim.native.step([seconds]) -> running: moves every transfer, waiting at most `seconds`
 * (default 0: never blocks) for network activity. */
int nim_l_step(lua_State *L) {
    double s = luaL_optnumber(L, 1, 0);
    luaL_argcheck(L, s >= 0 && s < 1e7, 1, "seconds must be a number >= 0 and < 1e7");
    nim_ctx *c = nim_ctx_get(L);
    int running = 0;
    double ms = ceil(s * 1000.0); /* 1e7 s does not fit an int of ms: wait in an hour's steps */
    if (c->engine) running = nim_engine_step(c->engine, ms > 3600000.0 ? 3600000 : (int)ms);
    lua_pushinteger(L, running < 0 ? 0 : running);
    return 1;
}

/* ---- methods -------------------------------------------------------------------------------- */

static nim_call *check_call(lua_State *L) {
    return nim_checkudata(L, 1, &nim_key_transfer_mt, "nim.Transfer");
}

/* t:done() -> boolean (settles it if its transfer completed; never drives the engine) */
static int call_done(lua_State *L) {
    check_call(L);
    lua_pushboolean(L, nim_call_poll(L, 1));
    return 1;
}

/* t:result() -> res | nil, err, or nothing while pending */
static int call_result(lua_State *L) {
    check_call(L);
    if (!nim_call_poll(L, 1)) return 0;
    return nim_call_push_outcome(L, 1);
}

/* t:wait([seconds]) -> res | nil, err; or nothing when the time runs out first */
static int call_wait(lua_State *L) {
    check_call(L);
    double limit = -1;
    if (!lua_isnoneornil(L, 2)) {
        limit = luaL_checknumber(L, 2);
        luaL_argcheck(L, limit >= 0 && limit < 1e7, 2, "seconds must be >= 0 and < 1e7");
    }
    lua_settop(L, 1);
    double end = nim_now() + limit;
    while (!nim_call_poll(L, 1)) {
        int wait_ms = 1000;
        if (limit >= 0) {
            double left = end - nim_now();
            if (left <= 0) return 0;
            wait_ms = left * 1000 < 1000 ? (int)ceil(left * 1000) : 1000;
        }
        drive(L, 1, 1, wait_ms);
    }
    return nim_call_push_outcome(L, 1);
}

/* t:cancel(): a pending transfer leaves the engine; result() then says cancelled. Also __gc
 * and __close. */
static int call_cancel(lua_State *L) {
    nim_call *c = check_call(L);
    if (c->state == NIM_CALL_PENDING) c->state = NIM_CALL_CANCELLED;
    nim_call_release(c);
    return 0;
}

static int call_tostring(lua_State *L) {
    nim_call *c = check_call(L);
    static const char *const names[] = {"pending", "finished", "cancelled"};
    lua_pushfstring(L, "nim.Transfer (%s)", names[c->state]);
    return 1;
}

void nim_transfer_methods(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"done", call_done}, {"result", call_result}, {"wait", call_wait}, {"cancel", call_cancel},
        {NULL, NULL},
    };
    lua_pushcfunction(L, call_cancel);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, call_cancel);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, call_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "nim.Transfer");
    lua_setfield(L, -2, "__name");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
}
