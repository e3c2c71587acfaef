/* A call's secrets (secrets.c): which forms of a URL's credentials are kept for redaction,
 * that redaction finds them, and which hosts count as this machine for the plain-http
 * warning. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../../src/binding.h"
#include "../../src/wire.h"
#include "ctest.h"

/* Redacts s[0..n) with the secrets of url in a fresh call user value; returns the result (its
 * length in *out_n when asked), which stays on the stack until the test's settop. */
static const char *redacted_n(lua_State *L, const char *url, const char *s, size_t n,
                              size_t *out_n) {
    luaL_checkstack(L, 8, NULL); /* results pile up on the stack within a test */
    lua_newtable(L);             /* uv */
    lua_newtable(L);
    nim_secrets_add_url(L, lua_gettop(L), url);
    lua_setfield(L, -2, "secrets");
    lua_pushlstring(L, s, n);
    nim_redact(L, -1, lua_gettop(L) - 1);
    return lua_tolstring(L, -1, out_n);
}

static const char *redacted(lua_State *L, const char *url, const char *s) {
    return redacted_n(L, url, s, strlen(s), NULL);
}

static void a_url_password_is_redacted_in_every_form_it_travels(void) {
    lua_State *L = luaL_newstate();
    const char *url = "http://ad%40min:p%3Ass%20word-0123@127.0.0.1:9/v1";
    /* as written, decoded, and as libcurl's Basic credentials: base64("ad@min:p:ss word-0123") */
    CHECK_STR(redacted(L, url, "x p%3Ass%20word-0123 y"), "x [redacted] y");
    CHECK_STR(redacted(L, url, "x p:ss word-0123 y"), "x [redacted] y");
    CHECK_STR(redacted(L, url, "Basic YWRAbWluOnA6c3Mgd29yZC0wMTIz"), "Basic [redacted]");
    CHECK_STR(redacted(L, url, "ad@min:p:ss word-0123"), "[redacted]");
    CHECK_STR(redacted(L, "http://h/v1", "nothing to hide"), "nothing to hide");
    /* a NUL byte before the secret hides nothing; a %00 in a password ends nothing */
    size_t n;
    const char *s = redacted_n(L, "http://u:%00abcd@h/", "x\0y \0abcd z", 11, &n);
    CHECK(n == 16 && memcmp(s, "x\0y [redacted] z", 16) == 0);
    s = redacted_n(L, "http://u:p4ssw0rd-secret@h/", "a\0b p4ssw0rd-secret", 19, &n);
    CHECK(n == 14 && memcmp(s, "a\0b [redacted]", 14) == 0);
    lua_close(L);
}

/* What a reader of a raw body sees is what redaction must see: JSON escapes decoded. */
static void escapes_are_decoded_before_redaction(void) {
    lua_State *L = luaL_newstate();
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "plain"},
        {"a\\u006e\\u0076b", "anvb"},
        {"\\/\\\"\\\\\\n", "/\"\\\n"},
        {"\\ud83d\\ude00", "\xf0\x9f\x98\x80"},
        {"\\u00e9", "\xc3\xa9"},
        {"\\u12", "\\u12"},
        {"\\x\\", "\\x\\"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lua_pushstring(L, cases[i].in);
        nim_wire_unescape(L, -1);
        CHECK_STR(lua_tostring(L, -1), cases[i].out);
        lua_pop(L, 1);
    }
    lua_close(L);
}

static void only_this_machine_counts_as_loopback(void) {
    static const struct {
        const char *url;
        int loopback;
    } cases[] = {
        {"http://127.0.0.1:8000/v1", 1},
        {"http://127.9.9.9/v1", 1},
        {"http://localhost:8000", 1},
        {"http://LOCALHOST", 1},
        {"http://[::1]:8000/", 1},
        {"http://user:pw@127.0.0.1:1/", 1},
        {"http://localhost.attacker.example/", 0},
        {"http://127.attacker.example/", 0},
        {"http://127.0.0.1.nip.io/", 0},
        {"http://localhostx/", 0},
        {"http://[::1].example/", 0},
        {"http://128.0.0.1/", 0},
        {"http://2130706433/", 0}, /* 127.0.0.1 in decimal: not recognised, so warned */
        {"http://127.0.0.1@evil.example/", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = nim_url_is_loopback(cases[i].url);
        CHECK(got == cases[i].loopback);
        if (got != cases[i].loopback) fprintf(stderr, "  %s: got %d\n", cases[i].url, got);
    }
}

int main(void) {
    RUN(a_url_password_is_redacted_in_every_form_it_travels);
    RUN(escapes_are_decoded_before_redaction);
    RUN(only_this_machine_counts_as_loopback);
    return CTEST_SUMMARY("c/secrets");
}
