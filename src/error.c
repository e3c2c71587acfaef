/* error.c: error objects. Every nil, err of nimrank, from C or from the Lua layer, is built
 * here: one enum, one metatable, one rule for `provider`, one redaction. */
#include "error.h"

#include <string.h>

#include <lauxlib.h>

#include "binding.h"

static const char *const names[NIM_ERR_COUNT] = {
    "auth",       "bad_request", "not_found",    "rate_limit", "timeout",
    "connection", "provider",    "bad_response", "cancelled",
};

const char *nim_err_type_name(nim_err_type t) {
    return (unsigned)t < NIM_ERR_COUNT ? names[t] : "provider";
}

int nim_err_type_parse(const char *name) {
    for (int i = 0; i < NIM_ERR_COUNT; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

int nim_err_retryable(nim_err_type t) {
    return t == NIM_ERR_RATE_LIMIT || t == NIM_ERR_TIMEOUT || t == NIM_ERR_CONNECTION ||
           t == NIM_ERR_PROVIDER;
}

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

int nim_error_tostring(lua_State *L) {
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

/* Replaces every occurrence of secret in the string on top of the stack. */
static void redact_top(lua_State *L, const char *secret) {
    if (!secret || strlen(secret) < 4 || !strstr(lua_tostring(L, -1), secret)) return;
    luaL_gsub(L, lua_tostring(L, -1), secret, "[redacted]");
    lua_remove(L, -2);
}

void nim_push_error(lua_State *L, const nim_error *e) {
    redact_top(L, e->secret);
    int msg = lua_gettop(L);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, e->status);
    lua_setfield(L, -2, "status");
    lua_pushstring(L, nim_err_type_name(e->type));
    lua_setfield(L, -2, "type");
    lua_pushvalue(L, msg);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, e->retryable);
    lua_setfield(L, -2, "retryable");
    lua_pushstring(L, e->provider ? e->provider : NIM_PROVIDER_NIMRANK);
    lua_setfield(L, -2, "provider");
    if (e->model) {
        lua_pushstring(L, e->model);
        lua_setfield(L, -2, "model");
    }
    nim_setmeta(L, &nim_key_error_mt);
    lua_remove(L, msg);
}

void nim_push_cancelled(lua_State *L, const char *provider, const char *model) {
    lua_pushliteral(L, "the request was cancelled");
    nim_error e = {NIM_ERR_CANCELLED, 0, 0, provider, model, NULL};
    nim_push_error(L, &e);
}

/* nim.native.cancelled(model) -> the error of a cancelled call (the scheduler's too). */
int nim_l_cancelled(lua_State *L) {
    const char *model = luaL_optstring(L, 1, NULL);
    const char *provider = NULL;
    if (model) {
        lua_pushcfunction(L, nim_l_provider_of); /* the provider the call was for, if any */
        lua_pushvalue(L, 1);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) provider = lua_tostring(L, -1);
    }
    nim_push_cancelled(L, provider, model);
    return 1;
}

/* The Lua layer's errors (router, scheduler) come through here too, so their shape and their
 * `type` values cannot drift from C's. */
static const char *field_string(lua_State *L, const char *field, int required) {
    int t = lua_getfield(L, 1, field);
    if (t == LUA_TSTRING || (t == LUA_TNIL && !required)) return lua_tostring(L, -1);
    luaL_error(L, "nim.native.error: %s: expected string, got %s", field, luaL_typename(L, -1));
    return NULL;
}

int nim_l_error(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    const char *type = field_string(L, "type", 1);         /* 2 */
    field_string(L, "message", 1);                         /* 3 */
    const char *provider = field_string(L, "provider", 0); /* 4 */
    const char *model = field_string(L, "model", 0);       /* 5 */
    int t = nim_err_type_parse(type);
    if (t < 0) return luaL_error(L, "nim.native.error: type: unknown error type '%s'", type);
    nim_error e = {(nim_err_type)t,
                   0,
                   nim_err_retryable((nim_err_type)t),
                   provider ? provider : NIM_PROVIDER_NIMRANK,
                   model,
                   NULL};
    if (lua_getfield(L, 1, "status") != LUA_TNIL) {
        int isint;
        e.status = (long)lua_tointegerx(L, -1, &isint);
        if (!isint) return luaL_error(L, "nim.native.error: status: expected an integer");
    }
    if (lua_getfield(L, 1, "retryable") != LUA_TNIL) e.retryable = lua_toboolean(L, -1);
    lua_pushvalue(L, 3);
    nim_push_error(L, &e);
    /* the caller's other fields (retry_after, attempts, batch, ...) are kept */
    int res = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pushvalue(L, -2);
        if (lua_rawget(L, res) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);
            lua_rawset(L, res);
        } else {
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 1;
}
