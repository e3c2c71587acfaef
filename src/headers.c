/* headers.c: the HTTP headers of a call. The caller's are checked (names, framing headers,
 * control characters, sizes) and kept in the call's user value; ours (Accept, Content-Type,
 * User-Agent, Authorization) are sent unless the caller set the same one. */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "binding.h"
#include "nimrank.h"

int nim_header_name_ok(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s))) return 0;
    return 1;
}

/* Headers that frame the HTTP message: set by a caller they would corrupt the shared
 * keep-alive connection for the next, unrelated request. */
int nim_framing_header(const char *name) {
    static const char *const names[] = {"Content-Length",
                                        "Transfer-Encoding",
                                        "Host",
                                        "Connection",
                                        "Expect",
                                        "Upgrade",
                                        "TE",
                                        "Trailer",
                                        NULL};
    for (const char *const *n = names; *n; n++)
        if (strcasecmp(*n, name) == 0) return 1;
    return 0;
}

static void push_lower(lua_State *L, const char *s) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (; *s; s++)
        luaL_addchar(&b, (char)tolower((unsigned char)*s));
    luaL_pushresult(&b);
}

/* Checks the caller's headers; keeps their lines in uv.hlines and their lower-case names in
 * uv.hnames (so ours never duplicate theirs). Raises naming the header. */
void nim_keep_caller_headers(lua_State *L, int headers, int uv) {
    if (!headers) return; /* the usual call: no tables made (set_headers reads nil as none) */
    lua_newtable(L);
    int lines = lua_gettop(L);
    lua_newtable(L);
    int names = lua_gettop(L);
    lua_Integer n = 0;
    size_t total = 0;
    if (headers) lua_pushnil(L);
    while (headers && lua_next(L, headers)) {
        if (lua_type(L, -2) != LUA_TSTRING || !nim_header_name_ok(lua_tostring(L, -2)) ||
            strlen(lua_tostring(L, -2)) != lua_rawlen(L, -2) || lua_rawlen(L, -2) > 256)
            nim_misuse(L, "nim.rerank", "headers", "invalid header name");
        const char *name = lua_tostring(L, -2);
        if (nim_framing_header(name))
            nim_misuse(L, "nim.rerank", lua_pushfstring(L, "headers['%s']", name),
                       "frames the HTTP message (the connection is shared): not settable");
        if (lua_type(L, -1) != LUA_TSTRING) {
            const char *got = luaL_typename(L, -1); /* before anything else is pushed */
            nim_misuse(L, "nim.rerank", lua_pushfstring(L, "headers['%s']", name),
                       "expected string, got %s", got);
        }
        size_t vlen;
        const char *v = lua_tolstring(L, -1, &vlen);
        if (!nim_header_value_ok(v, vlen) || strlen(v) != vlen)
            nim_misuse(L, "nim.rerank", lua_pushfstring(L, "headers['%s']", name),
                       "value has control characters");
        total += vlen + lua_rawlen(L, -2);
        if (vlen > NIM_HEADER_VALUE_MAX || total > NIM_HEADERS_TOTAL_MAX)
            nim_misuse(L, "nim.rerank", lua_pushfstring(L, "headers['%s']", name),
                       "too large (at most %d bytes a value, %d in all)", NIM_HEADER_VALUE_MAX,
                       NIM_HEADERS_TOTAL_MAX);
        lua_pushfstring(L, "%s: %s", name, v);
        lua_rawseti(L, lines, ++n);
        if (lua_getfield(L, uv, "secrets") != LUA_TTABLE) { /* a header may carry a credential */
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -1);
            lua_setfield(L, uv, "secrets");
        }
        nim_secret_add(L, lua_gettop(L), v, vlen);
        const char *sp = strchr(v, ' '); /* "Bearer <token>": the token alone too */
        if (sp) nim_secret_add(L, lua_gettop(L), sp + 1, vlen - (size_t)(sp + 1 - v));
        lua_pop(L, 1);
        push_lower(L, name);
        lua_pushboolean(L, 1);
        lua_rawset(L, names);
        lua_pop(L, 1);
    }
    lua_setfield(L, uv, "hnames");
    lua_setfield(L, uv, "hlines");
}

static int caller_set(lua_State *L, int names, const char *lower) {
    int set = lua_getfield(L, names, lower) != LUA_TNIL;
    lua_pop(L, 1);
    return set;
}

/* Did the caller set this header (any spelling)? */
static int caller_set_any(lua_State *L, int names, const char *name) {
    push_lower(L, name);
    int set = caller_set(L, names, lua_tostring(L, -1));
    lua_pop(L, 1);
    return set;
}

/* "User-Agent: nimrank/0.1.0 (libcurl/7.88.1)", made once per process. */
static char user_agent[160];
static pthread_once_t user_agent_once = PTHREAD_ONCE_INIT;
static void make_user_agent(void) {
    snprintf(user_agent, sizeof user_agent, "User-Agent: nimrank/%s (%s)", NIMRANK_VERSION,
             nim_engine_backend());
}

/* Points r->headers at the lines to send: ours, unless the caller set the same header (a
 * caller's Authorization replaces ours), then the caller's. A poll is a GET: no Content-Type.
 * Pushes what holds them (the pointer array, the per-call lines): they live until the engine
 * has copied them. */
void nim_set_headers(lua_State *L, int uv, int poll, int poll_s, nim_request *r) {
    pthread_once(&user_agent_once, make_user_agent);
    lua_getfield(L, uv, "hnames");
    int names = lua_gettop(L);
    lua_getfield(L, uv, "hlines");
    int hlines = lua_gettop(L);
    size_t nc = lua_rawlen(L, hlines);
    const char **p = lua_newuserdatauv(L, (nc + 6) * sizeof *p, 0);
    size_t n = 0;
    int any = nc > 0; /* no caller headers, the usual case: no lookups */
    if (!any || !caller_set(L, names, "accept")) p[n++] = "Accept: application/json";
    if (!poll && (!any || !caller_set(L, names, "content-type")))
        p[n++] = "Content-Type: application/json";
    if (!any || !caller_set(L, names, "user-agent")) p[n++] = user_agent;
    /* The key's header: Authorization: Bearer, unless the provider's descriptor names
     * another (uv.auth_header, uv.auth_prefix). */
    int custom = lua_getfield(L, uv, "auth_header") == LUA_TSTRING;
    const char *auth = custom ? lua_tostring(L, -1) : "Authorization"; /* anchored by uv */
    lua_pop(L, 1);
    if ((!any || !caller_set_any(L, names, auth)) && lua_getfield(L, uv, "key") == LUA_TSTRING) {
        if (!custom) {
            p[n++] = lua_pushfstring(L, "Authorization: Bearer %s", lua_tostring(L, -1));
        } else {
            lua_getfield(L, uv, "auth_prefix");
            const char *prefix = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
            p[n++] = lua_pushfstring(L, "%s: %s%s", auth, prefix, lua_tostring(L, -2));
        }
    }
    if (poll) p[n++] = lua_pushfstring(L, "NVCF-POLL-SECONDS: %d", poll_s);
    for (size_t i = 1; i <= nc; i++) { /* anchored by hlines, which stays pushed */
        lua_rawgeti(L, hlines, (lua_Integer)i);
        p[n++] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    r->headers = p;
    r->nheaders = n;
}
