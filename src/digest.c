/* digest.c: hashes, from Nettle (Debian nettle-dev: the library the program already loads
 * through libmicrohttpd's GnuTLS), not hand-written ones.
 * nim.native.sha256(part, ...) -> the SHA-256 of the parts, one after another, as 64 lower-case
 * hex digits. A part is a string, or a list of strings (read raw, in order), so the response
 * cache (lua/nim/cache.lua) hashes a request's documents without joining them first.
 * nim_sha1_hex: SHA-1, the name Redis gives a script (sha1.h, for nim.redis). */
#include <stdint.h>

#include <nettle/sha1.h>
#include <nettle/sha2.h>

#include "binding.h"
#include "sha1.h"

static void hex_of(const uint8_t *digest, size_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
}

/* The name Redis gives a script (EVALSHA): SHA-1, not for security. */
void nim_sha1_hex(const void *data, size_t n, char hex[41]) {
    struct sha1_ctx ctx;
    uint8_t digest[SHA1_DIGEST_SIZE];
    sha1_init(&ctx);
    sha1_update(&ctx, n, data);
    sha1_digest(&ctx, sizeof digest, digest);
    hex_of(digest, sizeof digest, hex);
    hex[40] = '\0';
}

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
    struct sha256_ctx ctx;
    uint8_t digest[SHA256_DIGEST_SIZE];
    char out[2 * SHA256_DIGEST_SIZE];
    int top = lua_gettop(L);
    sha256_init(&ctx);
    for (int i = 1; i <= top; i++)
        add_part(L, &ctx, i);
    sha256_digest(&ctx, sizeof digest, digest);
    hex_of(digest, sizeof digest, out);
    lua_pushlstring(L, out, sizeof out);
    return 1;
}
