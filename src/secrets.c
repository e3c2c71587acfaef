/* secrets.c: the credentials of one call, and keeping them out of every message. A call's
 * user value holds `secrets`: the key, the caller's header values, the userinfo of a URL.
 * Every message built from what a server said or from a URL passes through nim_redact()
 * before anyone sees it, and a URL is shown without its userinfo. */
#include <string.h>

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

void nim_secrets_add_url(lua_State *L, int secrets, const char *url) {
    const char *ui;
    size_t n = userinfo(url, &ui);
    if (!n) return;
    nim_secret_add(L, secrets, ui, n);
    const char *colon = memchr(ui, ':', n);
    if (colon) nim_secret_add(L, secrets, colon + 1, n - (size_t)(colon + 1 - ui));
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
void nim_redact(lua_State *L, int idx, int uv) {
    idx = lua_absindex(L, idx);
    lua_getfield(L, uv, "secrets");
    int secrets = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, secrets);
    for (int pass = 0; pass < 2; pass++) { /* whole userinfo and keys, then their parts */
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, secrets, i);
            const char *secret = lua_tostring(L, -1);
            int longest = 1;
            for (lua_Integer j = 1; j <= n && longest; j++) {
                lua_rawgeti(L, secrets, j);
                if (j != i && strstr(lua_tostring(L, -1), secret)) longest = 0;
                lua_pop(L, 1);
            }
            if (longest == (pass == 0) && strstr(lua_tostring(L, idx), secret)) {
                luaL_gsub(L, lua_tostring(L, idx), secret, "[redacted]");
                lua_replace(L, idx);
            }
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
    return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost", 9) == 0 ||
           strncmp(h, "[::1]", 5) == 0;
}
