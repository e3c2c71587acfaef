/* secrets.c: the credentials of one call, and keeping them out of every message. A call's
 * user value holds `secrets`: the key, the caller's header values, the userinfo of a URL.
 * Every message built from what a server said or from a URL passes through nim_redact()
 * before anyone sees it, and a URL is shown without its userinfo. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "binding.h"

void nim_secret_add(lua_State *L, int secrets, const char *s, size_t n) {
    if (!s || n < 4) return; /* shorter would redact ordinary words */
    lua_pushlstring(L, s, n);
    lua_rawseti(L, secrets, (lua_Integer)lua_rawlen(L, secrets) + 1);
}

/* The userinfo of an http(s) URL ("user:password" before '@'): start and length, or 0. */
static size_t userinfo(const char *url, const char **start) {
    const char *h = strstr(url, "://");
    if (!h) return 0;
    h += 3;
    size_t n = strcspn(h, "/?#");
    const char *at = NULL;
    for (const char *p = h; p < h + n; p++)
        if (*p == '@') at = p;
    if (!at) return 0;
    *start = h;
    return (size_t)(at - h);
}

/* Pushes s[0..n) with its %XX escapes decoded, as libcurl decodes a URL's user and password. */
static void push_unescaped(lua_State *L, const char *s, size_t n) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            luaL_addchar(&b, (char)strtol(hex, NULL, 16));
            i += 2;
        } else {
            luaL_addchar(&b, s[i]);
        }
    }
    luaL_pushresult(&b);
}

/* Pushes the base64 (RFC 4648) of the string on top, which it replaces: the form an
 * "Authorization: Basic" header gives a URL's user:password, which a server may echo back.
 * Written here because nothing linked before the first network call offers it. */
static void base64_top(lua_State *L) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n;
    const unsigned char *s = (const unsigned char *)lua_tolstring(L, -1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i += 3) {
        unsigned long v = (unsigned long)s[i] << 16;
        if (i + 1 < n) v |= (unsigned long)s[i + 1] << 8;
        if (i + 2 < n) v |= s[i + 2];
        luaL_addchar(&b, abc[(v >> 18) & 63]);
        luaL_addchar(&b, abc[(v >> 12) & 63]);
        luaL_addchar(&b, i + 1 < n ? abc[(v >> 6) & 63] : '=');
        luaL_addchar(&b, i + 2 < n ? abc[v & 63] : '=');
    }
    luaL_pushresult(&b);
    lua_remove(L, -2);
}

/* Adds what a URL's userinfo puts on the wire or in an echo: the userinfo as written, the
 * password, both decoded, and the Basic credentials libcurl sends for them. */
void nim_secrets_add_url(lua_State *L, int secrets, const char *url) {
    const char *ui;
    size_t n = userinfo(url, &ui);
    if (!n) return;
    nim_secret_add(L, secrets, ui, n);
    const char *colon = memchr(ui, ':', n);
    size_t user_n = colon ? (size_t)(colon - ui) : n;
    if (colon) nim_secret_add(L, secrets, colon + 1, n - user_n - 1);
    push_unescaped(L, ui, user_n);
    lua_pushliteral(L, ":");
    push_unescaped(L, colon ? colon + 1 : "", colon ? n - user_n - 1 : 0);
    nim_secret_add(L, secrets, lua_tostring(L, -1), lua_rawlen(L, -1)); /* the password */
    lua_concat(L, 3);
    nim_secret_add(L, secrets, lua_tostring(L, -1), lua_rawlen(L, -1)); /* user:password */
    base64_top(L);
    nim_secret_add(L, secrets, lua_tostring(L, -1), lua_rawlen(L, -1));
    lua_pop(L, 1);
}

/* Pushes url with its userinfo shown as "***". */
void nim_push_display_url(lua_State *L, const char *url) {
    const char *ui;
    size_t n = userinfo(url, &ui);
    if (!n) {
        lua_pushstring(L, url);
        return;
    }
    lua_pushfstring(L, "%s***%s", lua_pushlstring(L, url, (size_t)(ui - url)), ui + n);
    lua_remove(L, -2);
}

/* Replaces every secret of the call in the string at idx, longest first. */
/* Does h[0..hn) hold n[0..nn)? Lengths, not C strings: a NUL byte hides nothing. */
static int holds(const char *h, size_t hn, const char *n, size_t nn) {
    return nn > 0 && nn <= hn && memmem(h, hn, n, nn) != NULL;
}

/* Replaces every secret[0..sn) in the string at idx by "[redacted]". */
static void replace_all(lua_State *L, int idx, const char *secret, size_t sn) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len), *end = s + len, *hit;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    while ((hit = memmem(s, (size_t)(end - s), secret, sn))) {
        luaL_addlstring(&b, s, (size_t)(hit - s));
        luaL_addstring(&b, "[redacted]");
        s = hit + sn;
    }
    luaL_addlstring(&b, s, (size_t)(end - s));
    luaL_pushresult(&b);
    lua_replace(L, idx);
}

void nim_redact(lua_State *L, int idx, int uv) {
    idx = lua_absindex(L, idx);
    lua_getfield(L, uv, "secrets");
    int secrets = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, secrets);
    for (int pass = 0; pass < 2; pass++) { /* whole userinfo and keys, then their parts */
        for (lua_Integer i = 1; i <= n; i++) {
            size_t sn, on, mn;
            lua_rawgeti(L, secrets, i);
            const char *secret = lua_tolstring(L, -1, &sn);
            int longest = 1;
            for (lua_Integer j = 1; j <= n && longest; j++) {
                lua_rawgeti(L, secrets, j);
                const char *other = lua_tolstring(L, -1, &on);
                if (j != i && holds(other, on, secret, sn)) longest = 0;
                lua_pop(L, 1);
            }
            const char *msg = lua_tolstring(L, idx, &mn);
            if (longest == (pass == 0) && holds(msg, mn, secret, sn))
                replace_all(L, idx, secret, sn);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* Is the URL's host this machine (so a key in clear text never leaves it)? */
int nim_url_is_loopback(const char *url) {
    const char *h = strstr(url, "://"), *ui;
    h = h ? h + 3 : url;
    size_t n = userinfo(url, &ui);
    if (n) h = ui + n + 1;
    /* The whole host, compared exactly: "localhost.example" and "127.example" are not here. */
    size_t len = strcspn(h, ":/?#");
    if (*h == '[') { /* an IPv6 literal: up to its ']', which must end the host */
        len = strcspn(h, "]");
        if (!h[len]) return 0;
        len++;
        if (h[len] && !strchr(":/?#", h[len])) return 0; /* "[::1].example" */
    }
    char host[64];
    if (len >= sizeof host) return 0;
    memcpy(host, h, len);
    host[len] = 0;
    struct in_addr v4;
    if (inet_pton(AF_INET, host, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    return strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0;
}
