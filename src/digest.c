/* digest.c: nim.native.sha256(part, ...) -> the SHA-256 of the parts, one after another, as 64
 * lower-case hex digits. A part is a string, or a list of strings (read raw, in order), so the
 * response cache (lua/nim/cache.lua) hashes a request's documents without joining them into one
 * string first. The hash is Nettle's (Debian nettle-dev): the library the program already loads
 * through libmicrohttpd's GnuTLS, not a hand-written one. */
#include <stdint.h>

#include <nettle/sha2.h>

#include "binding.h"

/* Raises (misuse) before anything is allocated: the context lives on the C stack. */
static void add_part(lua_State *L, struct sha256_ctx *ctx, int i) {
    size_t n;
    if (lua_type(L, i) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, i, &n);
        sha256_update(ctx, n, (const uint8_t *)s);
        return;
    }
    luaL_argexpected(L, lua_type(L, i) == LUA_TTABLE, i, "string or list of strings");
    lua_Integer len = (lua_Integer)lua_rawlen(L, i);
    for (lua_Integer k = 1; k <= len; k++) {
        if (lua_rawgeti(L, i, k) != LUA_TSTRING)
            luaL_error(L, "bad argument #%d to 'sha256' ([%d]: string expected, got %s)", i, (int)k,
                       luaL_typename(L, -1));
        const char *s = lua_tolstring(L, -1, &n);
        sha256_update(ctx, n, (const uint8_t *)s);
        lua_pop(L, 1);
    }
}

int nim_l_sha256(lua_State *L) {
    static const char hex[] = "0123456789abcdef";
    struct sha256_ctx ctx;
    uint8_t digest[SHA256_DIGEST_SIZE];
    char out[2 * SHA256_DIGEST_SIZE];
    int top = lua_gettop(L);
    sha256_init(&ctx);
    for (int i = 1; i <= top; i++)
        add_part(L, &ctx, i);
    sha256_digest(&ctx, sizeof digest, digest);
    for (size_t i = 0; i < sizeof digest; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    lua_pushlstring(L, out, sizeof out);
    return 1;
}
