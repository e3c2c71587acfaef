/* redis_binding.c: nim.Redis, a Redis client for Lua on the state's engine (redis.h).
 *
 * A command is a nim.Transfer whose operation is a Redis one (nim_call.op): so it waits exactly
 * as an upstream call does (transfer.c): it yields inside nim's tasks, and the scheduler resumes
 * the task when the reply is in; elsewhere it blocks, driving the same epoll set; nim.native.
 * await and cancel work on it too. Replies become Lua values here, after the fact: no Lua runs
 * inside hiredis.
 *
 *   nim.native.redis_new{url =, host =, port =, username =, password =, db =, timeout =,
 *                        connect_timeout =, backoff =, backoff_max =,
 *                        max_reply_bytes =} -> nim.Redis
 *   r:call(name, ...) -> reply | nil, err        r:pipeline{ {name, ...}, ... } -> replies
 *   r:status() -> {state, since, error, reconnects, retry_in, pending, server}
 *   r:close()
 * Errors: transport failures are type connection or timeout (retryable), a refused AUTH is auth,
 * a refused SELECT bad_request; a server's error reply is type provider with reply_error = true
 * and code (its first word: "WRONGTYPE", "NOSCRIPT"); all carry redis = true and provider
 * "redis". Nothing here ever holds the password in a message (redis.c's messages are built
 * without it, and every message is redacted against it as well). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "binding.h"
#include "redis.h"
#include "redis_url.h"
#include "sha1.h"

#define FN_CONNECT "redis.connect"
#define DEFAULT_TIMEOUT_S 0.5
#define DEFAULT_CONNECT_TIMEOUT_S 1.0
#define DEFAULT_BACKOFF_S 0.1
#define DEFAULT_BACKOFF_MAX_S 5.0
#define DEFAULT_MAX_REPLY_BYTES (64LL << 20)

typedef struct {
    nim_redis *r; /* NULL until attached, and after __gc */
} redis_box;

/* ---- options -------------------------------------------------------------------------------- */

static const char *const option_names[] = {
    "url",
    "host",
    "port",
    "username",
    "password",
    "db",
    "timeout",
    "connect_timeout",
    "backoff",
    "backoff_max",
    "max_reply_bytes",
    NULL,
};

/* A string option at the table's field (pushed and left on the stack, anchoring it); NULL
 * when absent. */
static const char *opt_string(lua_State *L, int opts, const char *field) {
    int t = lua_getfield(L, opts, field);
    if (t == LUA_TNIL) return NULL;
    if (t != LUA_TSTRING)
        nim_misuse(L, FN_CONNECT, field, "expected a string, got %s", luaL_typename(L, -1));
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (strlen(s) != n) nim_misuse(L, FN_CONNECT, field, "contains a NUL byte");
    return s;
}

/* An integer option in [lo, hi]; dflt when absent. */
static long long opt_int(lua_State *L, int opts, const char *field, long long lo, long long hi,
                         long long dflt) {
    int t = lua_getfield(L, opts, field);
    long long v = dflt;
    if (t != LUA_TNIL) {
        int isint = 0;
        if (t == LUA_TNUMBER) v = (long long)lua_tointegerx(L, -1, &isint);
        if (!isint || v < lo || v > hi)
            nim_misuse(L, FN_CONNECT, field, "expected an integer from %I to %I", (lua_Integer)lo,
                       (lua_Integer)hi);
    }
    lua_pop(L, 1);
    return v;
}

static double opt_seconds(lua_State *L, int opts, const char *field, double dflt) {
    double v = dflt;
    if (lua_getfield(L, opts, field) != LUA_TNIL) v = nim_check_seconds(L, FN_CONNECT, field, -1);
    lua_pop(L, 1);
    return v;
}

/* Fills cfg from the options table at slot 1. Strings stay anchored on the stack; the parsed
 * URL lives in *u. Raises naming the field. */
static void check_options(lua_State *L, nim_redis_config *cfg, nim_redis_url *u) {
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            nim_misuse(L, FN_CONNECT, NULL, "option names must be strings, got a %s",
                       luaL_typename(L, -1));
        const char *k = lua_tostring(L, -1);
        int known = 0;
        for (const char *const *o = option_names; *o && !known; o++)
            known = strcmp(*o, k) == 0;
        if (!known)
            nim_misuse(L, FN_CONNECT, k,
                       "unknown option (url, host, port, username, password, db, timeout, "
                       "connect_timeout, backoff, backoff_max, max_reply_bytes)");
    }
    char err[256];
    const char *url = opt_string(L, 1, "url");
    if (url) {
        if (nim_redis_url_parse(url, u, err, sizeof err) != 0)
            nim_misuse(L, FN_CONNECT, "url", "%s", err);
    } else {
        memset(u, 0, sizeof *u);
        u->db = -1;
    }
    const char *host = opt_string(L, 1, "host");
    if (host && !nim_redis_host_ok(host))
        nim_misuse(L, FN_CONNECT, "host", "not a host name or an address");
    const char *username = opt_string(L, 1, "username");
    const char *password = opt_string(L, 1, "password");
    cfg->host = host ? host : (u->host[0] ? u->host : NIM_REDIS_DEFAULT_HOST);
    cfg->port = (int)opt_int(L, 1, "port", 1, 65535, u->port ? u->port : NIM_REDIS_DEFAULT_PORT);
    cfg->username = username ? username : u->username;
    cfg->password = password ? password : u->password;
    if (cfg->username[0] && !cfg->password[0])
        nim_misuse(L, FN_CONNECT, username ? "username" : "url",
                   "a user name needs a password (AUTH user password)");
    cfg->db = opt_int(L, 1, "db", 0, 2147483647, u->db >= 0 ? u->db : 0);
    cfg->timeout = opt_seconds(L, 1, "timeout", DEFAULT_TIMEOUT_S);
    cfg->connect_timeout = opt_seconds(L, 1, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S);
    cfg->backoff = opt_seconds(L, 1, "backoff", DEFAULT_BACKOFF_S);
    cfg->backoff_max = opt_seconds(L, 1, "backoff_max", DEFAULT_BACKOFF_MAX_S);
    if (cfg->backoff_max < cfg->backoff)
        nim_misuse(L, FN_CONNECT, "backoff_max", "must be >= backoff");
    /* the unparsed bytes of replies a connection buffers at most: a bigger reply fails its
     * command (bad_response) and drops the connection instead of growing without bound */
    cfg->max_reply_bytes =
        (size_t)opt_int(L, 1, "max_reply_bytes", 1024, 1LL << 40, DEFAULT_MAX_REPLY_BYTES);
}

/* nim.native.redis_new(options) -> nim.Redis: never connects (the first command does). */
int nim_l_redis_new(lua_State *L) {
    if (lua_type(L, 1) != LUA_TTABLE)
        nim_misuse(L, FN_CONNECT, NULL, "bad argument #1 (table of options expected, got %s)",
                   luaL_typename(L, 1));
    lua_settop(L, 1);
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    nim_redis_url u;
    nim_redis_config cfg;
    check_options(L, &cfg, &u);
    redis_box *box = lua_newuserdatauv(L, sizeof *box, 0); /* born closed, then attached */
    box->r = NULL;
    nim_setmeta(L, &nim_key_redis_mt);
    box->r = nim_redis_new(&cfg);
    memset(&u, 0, sizeof u); /* the URL's password leaves the stack */
    if (!box->r) return luaL_error(L, "%s: out of memory", FN_CONNECT);
    return 1;
}

/* ---- replies and errors ------------------------------------------------------------------- */

/* The first word of an error reply when it is a code ("WRONGTYPE", "NOSCRIPT"). */
static void push_code(lua_State *L, const char *s, size_t n) {
    size_t k = 0;
    while (k < n && k < 32 && s[k] >= 'A' && s[k] <= 'Z')
        k++;
    if (k >= 2 && (k == n || s[k] == ' '))
        lua_pushlstring(L, s, k);
    else
        lua_pushnil(L);
}

/* Replaces the message on top with a Redis error object. */
static void push_error(lua_State *L, nim_err_type type, int retryable, const char *secret) {
    nim_error e = {type, 0, retryable, "redis", NULL, secret};
    nim_push_error(L, &e);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "redis");
}

/* A server's error reply, as an error object (not raised). */
static void push_reply_error(lua_State *L, const nim_redis_value *v, const char *secret) {
    lua_pushlstring(L, v->str, v->len);
    push_code(L, v->str, v->len);
    const char *code = lua_tostring(L, -1);
    /* the server is busy or not ready: asking again later may work */
    static const char *const transient[] = {"LOADING",    "BUSY",        "TRYAGAIN",
                                            "MASTERDOWN", "CLUSTERDOWN", NULL};
    int retryable = 0;
    for (const char *const *t = transient; code && *t; t++)
        retryable |= strcmp(code, *t) == 0;
    lua_insert(L, -2);
    push_error(L, NIM_ERR_PROVIDER, retryable, secret);
    lua_insert(L, -2);
    lua_setfield(L, -2, "code");
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "reply_error");
}

/* Pushes a reply as a Lua value: integers, strings, tables (1-based, with n), error objects;
 * a nil reply is nil at the top and redis.null inside an array. */
static void push_value(lua_State *L, const nim_redis_value *v, int in_array, const char *secret) {
    luaL_checkstack(L, 8, "Redis reply nested too deep");
    switch (v->type) {
    case NIM_RV_STRING:
    case NIM_RV_STATUS: lua_pushlstring(L, v->str, v->len); return;
    case NIM_RV_INTEGER: lua_pushinteger(L, (lua_Integer)v->integer); return;
    case NIM_RV_ERROR: push_reply_error(L, v, secret); return;
    case NIM_RV_NIL:
        if (in_array)
            nim_push_reg(L, nim_key_redis_null);
        else
            lua_pushnil(L);
        return;
    case NIM_RV_ARRAY:
        lua_createtable(L, v->n < 1u << 24 ? (int)v->n : 0, 1);
        for (size_t i = 0; i < v->n; i++) {
            push_value(L, v->elem[i], 1, secret);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_pushinteger(L, (lua_Integer)v->n);
        lua_setfield(L, -2, "n");
        return;
    }
}

static int op_done(const void *op) { return nim_redis_op_done(op); }
static void op_release(void *op) { nim_redis_op_release(op); }
static const nim_op_kind redis_op_kind = {op_done, op_release};

/* Pushes the failure of a failed operation as an error object. */
static void push_failure(lua_State *L, const nim_redis_op *op, const char *secret) {
    const char *msg;
    nim_redis_failure f = nim_redis_op_failure(op, &msg);
    lua_pushstring(L, msg);
    switch (f) {
    case NIM_RF_TIMEOUT: push_error(L, NIM_ERR_TIMEOUT, 1, secret); break;
    case NIM_RF_AUTH: push_error(L, NIM_ERR_AUTH, 0, secret); break;
    case NIM_RF_SETUP: push_error(L, NIM_ERR_BAD_REQUEST, 0, secret); break;
    case NIM_RF_UNAVAILABLE: push_error(L, NIM_ERR_CONNECTION, 0, secret); break;
    case NIM_RF_BAD_REPLY: push_error(L, NIM_ERR_BAD_RESPONSE, 0, secret); break;
    default: push_error(L, NIM_ERR_CONNECTION, 1, secret); break;
    }
}

/* The secret to redact (uv.key, as for every call), pushed and returned. */
static const char *push_secret(lua_State *L, int idx) {
    lua_getiuservalue(L, idx, 1);
    lua_getfield(L, -1, "key");
    lua_remove(L, -2);
    return lua_tostring(L, -1);
}

/* complete: one command's reply is the call's result (an error reply its err). */
static void complete_call(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    nim_call *c = lua_touserdata(L, idx);
    const char *secret = push_secret(L, idx);
    int top = lua_gettop(L);
    if (nim_redis_op_failure(c->op, NULL) != NIM_RF_NONE) {
        push_failure(L, c->op, secret);
    } else {
        const nim_redis_value *v = nim_redis_op_reply(c->op, 0);
        push_value(L, v, 0, secret);
        if (v->type != NIM_RV_ERROR) {
            lua_remove(L, top);
            nim_call_settle(L, idx, "res");
            return;
        }
    }
    lua_remove(L, top);
    nim_call_settle(L, idx, "err");
}

/* complete: a pipeline's replies, in order, each a value or an error object; a transport
 * failure fails the whole. */
static void complete_pipeline(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    nim_call *c = lua_touserdata(L, idx);
    const char *secret = push_secret(L, idx);
    int top = lua_gettop(L);
    if (nim_redis_op_failure(c->op, NULL) != NIM_RF_NONE) {
        push_failure(L, c->op, secret);
        lua_remove(L, top);
        nim_call_settle(L, idx, "err");
        return;
    }
    int n = nim_redis_op_count(c->op);
    lua_createtable(L, n, 1);
    for (int i = 0; i < n; i++) {
        push_value(L, nim_redis_op_reply(c->op, i), 1, secret);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    lua_remove(L, top);
    nim_call_settle(L, idx, "res");
}

/* ---- commands ---------------------------------------------------------------------------------
 */

static redis_box *check_box(lua_State *L) {
    return nim_checkudata(L, 1, &nim_key_redis_mt, "nim.Redis");
}

static nim_redis *check_open(lua_State *L, const char *fn) {
    redis_box *b = check_box(L);
    if (!b->r || nim_redis_closed(b->r)) nim_misuse(L, fn, NULL, "the client is closed");
    return b->r;
}

/* Commands that would break the one pipelined connection (pub/sub and MONITOR change its
 * mode; replies would stop matching commands), the state the client keeps for it (the
 * database, the credentials, the reply mode), which a reconnection would silently undo, or
 * the commands of other tasks sharing it (a transaction left open, or WATCH, which needs a
 * round trip before its MULTI). A transaction goes in one pipeline: nothing can come between
 * its commands there. in_multi: a MULTI of the same pipeline is open (NULL: a single call). */
static const char *refused(const char *name, const char *second, int *in_multi) {
    if (strcasecmp(name, "WATCH") == 0 || strcasecmp(name, "UNWATCH") == 0)
        return "needs the connection to itself between round trips: not supported on the "
               "client's shared connection (use a script)";
    int multi = strcasecmp(name, "MULTI") == 0;
    if (multi || strcasecmp(name, "EXEC") == 0 || strcasecmp(name, "DISCARD") == 0) {
        if (!in_multi)
            return "is a transaction's command: send MULTI ... EXEC in one pipeline (the "
                   "connection is shared: other commands would join the transaction)";
        if (multi && *in_multi) return "inside a MULTI: transactions do not nest";
        *in_multi = multi;
        return NULL;
    }
    /* Each group of commands the shared connection cannot take, with why. */
    static const struct {
        const char *names[8];
        const char *why;
    } groups[] = {
        {{"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
          "MONITOR", NULL},
         "changes the connection's mode (pub/sub, MONITOR): not supported on the client's "
         "pipelined connection"},
        {{"SELECT", "AUTH", "HELLO", "RESET", NULL},
         "the client owns the connection's database and credentials: use the options db, "
         "username and password"},
        {{"SYNC", "PSYNC", "REPLCONF", NULL}, /* replies would stop matching commands */
         "is replication's (the connection would become a replica's stream): not supported on "
         "the client's pipelined connection"},
        {{"READONLY", "READWRITE", NULL},
         "sets the connection's state, which a reconnection would silently lose: not supported "
         "on the client's shared connection"},
    };
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
        for (const char *const *m = groups[g].names; *m; m++)
            if (strcasecmp(name, *m) == 0) return groups[g].why;
    if (strcasecmp(name, "CLIENT") == 0 && second && strcasecmp(second, "SETNAME") == 0)
        return "CLIENT SETNAME names the connection, which a reconnection would silently "
               "lose: not supported on the client's shared connection";
    if (strcasecmp(name, "CLIENT") == 0 && second && strcasecmp(second, "REPLY") == 0)
        return "CLIENT REPLY would stop replies matching commands: not supported";
    return NULL;
}

/* The argument at stack slot idx as a string. A float is written with the fewest digits that
 * read back as the same number (Lua's own %.14g would change 0.1 + 0.2), an integer as Lua
 * writes it; the string replaces the number in its slot, so it lives as long as the frame. */
static const char *arg_string(lua_State *L, int idx, size_t *len, const char *fn,
                              const char *field) {
    idx = lua_absindex(L, idx);
    int t = lua_type(L, idx);
    if (t == LUA_TNUMBER && !lua_isinteger(L, idx)) { /* integers: lua_tolstring's own form */
        char b[40];
        double d = lua_tonumber(L, idx);
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(b, sizeof b, "%.*g", digits, d);
            if (strtod(b, NULL) == d) break;
        }
        lua_pushstring(L, b);
        lua_replace(L, idx);
    } else if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        nim_misuse(L, fn, field, "expected a string or a number, got %s", luaL_typename(L, idx));
    }
    return lua_tolstring(L, idx, len);
}

/* Sends the commands gathered in argv and waits for them as a nim.Transfer (the call pushed at
 * slot call_idx): yields inside nim's tasks, blocks elsewhere. */
static int send_and_finish(lua_State *L, nim_redis *r, int call_idx, int ncmds, const int *argc,
                           const char *const *argv, const size_t *lens) {
    char err[256];
    nim_call *c = lua_touserdata(L, call_idx);
    nim_engine *e = nim_ctx_engine(L, err, sizeof err);
    if (!e) { /* no engine (libcurl missing): fail as a connection error, like any call */
        lua_pushfstring(L, "redis %s: network engine: %s", nim_redis_label(r), err);
        push_error(L, NIM_ERR_CONNECTION, 0, nim_redis_secret(r));
        nim_call_settle(L, call_idx, "err");
        return nim_call_push_outcome(L, call_idx);
    }
    c->op_kind = &redis_op_kind;
    c->op = nim_redis_send(r, e, ncmds, argc, argv, lens);
    if (!c->op) return luaL_error(L, "nim.Redis: out of memory");
    return nim_call_finish(L, call_idx);
}

/* The pending call the command waits as: provider "redis", the password as its secret. */
static int new_call(lua_State *L, nim_redis *r, nim_complete_fn complete) {
    nim_call_new(L, complete);
    lua_getiuservalue(L, -1, 1);
    lua_pushliteral(L, "redis");
    lua_setfield(L, -2, "provider");
    if (nim_redis_secret(r)) {
        lua_pushstring(L, nim_redis_secret(r));
        lua_setfield(L, -2, "key");
    }
    lua_pop(L, 1);
    return lua_gettop(L);
}

/* r:call(name, arg...) -> reply | nil, err. Yields inside nim's tasks, blocks elsewhere. */
static int l_call(lua_State *L) {
    static const char fn[] = "nim.Redis:call";
    nim_redis *r = check_open(L, fn);
    int n = lua_gettop(L) - 1;
    if (n < 1) nim_misuse(L, fn, "command", "expected a command name and its arguments");
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    const char **argv = lua_newuserdatauv(L, (size_t)n * (sizeof *argv + sizeof(size_t)), 0);
    size_t *lens = (size_t *)(void *)(argv + n);
    for (int i = 0; i < n; i++) {
        char field[32] = "command";
        if (i > 0) snprintf(field, sizeof field, "argument #%d", i + 1);
        argv[i] = arg_string(L, i + 2, &lens[i], fn, field);
    }
    const char *why = refused(argv[0], n > 1 ? argv[1] : NULL, NULL);
    if (why) nim_misuse(L, fn, "command", "%s %s", argv[0], why);
    int call = new_call(L, r, complete_call);
    return send_and_finish(L, r, call, 1, &n, argv, lens);
}

/* r:pipeline{ {name, arg...}, ... } -> replies | nil, err: one write, one round trip. */
static int l_pipeline(lua_State *L) {
    static const char fn[] = "nim.Redis:pipeline";
    nim_redis *r = check_open(L, fn);
    if (lua_type(L, 2) != LUA_TTABLE)
        nim_misuse(L, fn, "commands", "expected a table of commands, got %s", luaL_typename(L, 2));
    lua_settop(L, 2);
    luaL_checkstack(L, NIM_STACK_NEED, NULL);
    lua_Integer ncmds = (lua_Integer)lua_rawlen(L, 2);
    if (ncmds == 0) { /* nothing to send */
        lua_createtable(L, 0, 1);
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "n");
        return 1;
    }
    if (ncmds > 1000000) nim_misuse(L, fn, "commands", "more than 1,000,000 commands");
    lua_Integer total = 0;
    for (lua_Integer i = 1; i <= ncmds; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TTABLE || lua_rawlen(L, -1) == 0)
            nim_misuse(L, fn, "commands", "[%I]: expected a table {name, arg...}", i);
        total += (lua_Integer)lua_rawlen(L, -1);
        lua_pop(L, 1);
        if (total > 16000000) nim_misuse(L, fn, "commands", "more than 16,000,000 arguments");
    }
    int *argc = lua_newuserdatauv(L, (size_t)ncmds * sizeof *argc, 0);
    const char **argv = lua_newuserdatauv(L, (size_t)total * sizeof *argv, 0);
    size_t *lens = lua_newuserdatauv(L, (size_t)total * sizeof *lens, 0);
    lua_newtable(L); /* anchors the strings numbers became */
    int anchor = lua_gettop(L);
    size_t k = 0;
    int in_multi = 0;
    for (lua_Integer i = 1; i <= ncmds; i++) {
        lua_rawgeti(L, 2, i);
        int cmd = lua_gettop(L);
        lua_Integer n = (lua_Integer)lua_rawlen(L, cmd);
        argc[i - 1] = (int)n;
        for (lua_Integer j = 1; j <= n; j++) {
            char field[64];
            snprintf(field, sizeof field, "commands[%lld][%lld]", (long long)i, (long long)j);
            lua_rawgeti(L, cmd, j);
            argv[k] = arg_string(L, -1, &lens[k], fn, field);
            lua_rawseti(L, anchor, (lua_Integer)k + 1);
            k++;
        }
        const char *why =
            refused(argv[k - (size_t)n], n > 1 ? argv[k - (size_t)n + 1] : NULL, &in_multi);
        if (why) {
            char field[32];
            snprintf(field, sizeof field, "commands[%lld]", (long long)i);
            nim_misuse(L, fn, field, "%s %s", argv[k - (size_t)n], why);
        }
        lua_settop(L, anchor);
    }
    if (in_multi)
        nim_misuse(L, fn, "commands",
                   "a MULTI without its EXEC or DISCARD would leave the "
                   "shared connection inside a transaction");
    int call = new_call(L, r, complete_pipeline);
    return send_and_finish(L, r, call, (int)ncmds, argc, argv, lens);
}

static const char *const state_names[] = {"idle", "connecting", "connected", "down"};

/* r:status() -> {state, since, error, reconnects, retry_in, pending, server, closed} */
static int l_status(lua_State *L) {
    redis_box *b = check_box(L);
    if (!b->r) return luaL_error(L, "nim.Redis: the client is gone");
    nim_redis_status st;
    nim_redis_get_status(b->r, &st);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, state_names[st.state]);
    lua_setfield(L, -2, "state");
    lua_pushnumber(L, st.since);
    lua_setfield(L, -2, "since");
    if (st.error) {
        lua_pushstring(L, st.error);
        const char *secret = nim_redis_secret(b->r);
        if (secret && strlen(secret) >= 4 && strstr(st.error, secret)) {
            luaL_gsub(L, lua_tostring(L, -1), secret, "[redacted]");
            lua_remove(L, -2);
        }
        lua_setfield(L, -2, "error");
    }
    lua_pushinteger(L, (lua_Integer)st.reconnects);
    lua_setfield(L, -2, "reconnects");
    lua_pushnumber(L, st.retry_in);
    lua_setfield(L, -2, "retry_in");
    lua_pushinteger(L, st.pending);
    lua_setfield(L, -2, "pending");
    lua_pushstring(L, nim_redis_label(b->r));
    lua_setfield(L, -2, "server");
    lua_pushboolean(L, st.closed);
    lua_setfield(L, -2, "closed");
    return 1;
}

/* r:close(): what is pending fails (connection error); later commands raise. Idempotent. */
static int l_close(lua_State *L) {
    redis_box *b = check_box(L);
    nim_redis_close(b->r);
    return 0;
}

static int l_gc(lua_State *L) {
    redis_box *b = check_box(L);
    nim_redis_free(b->r);
    b->r = NULL;
    return 0;
}

static int l_tostring(lua_State *L) {
    redis_box *b = check_box(L);
    if (!b->r) {
        lua_pushliteral(L, "nim.Redis (gone)");
        return 1;
    }
    nim_redis_status st;
    nim_redis_get_status(b->r, &st);
    lua_pushfstring(L, "nim.Redis (%s, %s)", nim_redis_label(b->r),
                    st.closed ? "closed" : state_names[st.state]);
    return 1;
}

static int null_tostring(lua_State *L) {
    lua_pushliteral(L, "redis.null");
    return 1;
}

static int null_newindex(lua_State *L) { return luaL_error(L, "redis.null cannot be changed"); }

void nim_redis_open(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"call", l_call}, {"pipeline", l_pipeline}, {"status", l_status}, {"close", l_close},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 5);
    lua_pushliteral(L, "nim.Redis");
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, methods); /* lua/nim/redis.lua adds script() */
    lua_setfield(L, -2, "__index");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_redis_mt);
    /* redis.null: a nil inside an array reply; one empty table that cannot be changed */
    lua_createtable(L, 0, 0);
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "redis.null");
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, "redis.null");
    lua_setfield(L, -2, "__metatable");
    lua_pushcfunction(L, null_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &nim_key_redis_null);
}

/* nim.native.sha1(s) -> the 40 hex digits Redis names a script by (EVALSHA). */
int nim_l_sha1(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char hex[41];
    nim_sha1_hex(s, n, hex);
    lua_pushlstring(L, hex, 40);
    return 1;
}
