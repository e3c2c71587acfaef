/* The Redis client's pure C: redis:// URLs (redis_url.c) and the SHA-1 that names scripts
 * (sha1.h, Nettle's, in digest.c). Table-driven. */
#include <stdlib.h>
#include <string.h>

#include "../../src/redis_url.h"
#include "../../src/sha1.h"
#include "ctest.h"

static void urls_give_host_port_credentials_and_db(void) {
    static const struct {
        const char *url, *host;
        int port;
        const char *user, *pass;
        long long db;
    } cases[] = {
        {"redis://127.0.0.1:6379/0", "127.0.0.1", 6379, "", "", 0},
        {"redis://localhost", "localhost", 0, "", "", -1},
        {"redis://localhost/", "localhost", 0, "", "", -1},
        {"redis://", "", 0, "", "", -1},
        {"REDIS://Cache.Example.com:7000/15", "Cache.Example.com", 7000, "", "", 15},
        {"redis://:s3cret@h:1/2", "h", 1, "", "s3cret", 2},
        {"redis://app:s3cret@h", "h", 0, "app", "s3cret", -1},
        {"redis://:p%40ss%3Aw%2Fd@h", "h", 0, "", "p@ss:w/d", -1},
        {"redis://:a@b@h:6380", "h", 6380, "", "a@b", -1}, /* the last '@' ends the userinfo */
        {"redis://[::1]:6390/3", "::1", 6390, "", "", 3},
        {"redis://[fe80::1%25eth0]", "fe80::1%eth0", 0, "", "", -1},
        {"redis://:pw@[::1]", "::1", 0, "", "pw", -1},
        {"redis://h:65535/2147483647", "h", 65535, "", "", 2147483647LL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nim_redis_url u;
        char err[256] = "";
        int rc = nim_redis_url_parse(cases[i].url, &u, err, sizeof err);
        if (rc != 0) fprintf(stderr, "  %s: %s\n", cases[i].url, err);
        CHECK(rc == 0);
        CHECK_STR(u.host, cases[i].host);
        CHECK(u.port == cases[i].port);
        CHECK_STR(u.username, cases[i].user);
        CHECK_STR(u.password, cases[i].pass);
        CHECK(u.db == cases[i].db);
    }
}

static void bad_urls_are_refused_without_repeating_the_secret(void) {
    static const struct {
        const char *url, *says;
    } cases[] = {
        {"rediss://:hunter22@h:6380", "rediss:// (TLS) is not supported"},
        {"http://h", "must start with redis://"},
        {"unix:///tmp/redis.sock", "must start with redis://"},
        {"redis://hunter22@h", "has no ':'"},
        {"redis://user:@h", "needs a password"},
        {"redis://:hunter22@h:0", "port"},
        {"redis://:hunter22@h:65536", "port"},
        {"redis://:hunter22@h:12a", "port"},
        {"redis://:hunter22@h:", "port"},
        {"redis://:hunter22@h/x", "path"},
        {"redis://:hunter22@h/-1", "path"},
        {"redis://:hunter22@h/2147483648", "path"},
        {"redis://:hunter22@h/1/2", "path"},
        {"redis://:hunter22@h/0?ssl=1", "query"},
        {"redis://:hunter22@h#x", "query"},
        {"redis://:hunter%2@h", "two hex digits"},
        {"redis://:hunter%00x@h", "NUL"},
        {"redis://:hunter 22@h", "control"},
        {"redis://:hunter22@h_ x", "host"},
        {"redis://:hunter22@::1", "port"}, /* IPv6 needs brackets */
        {"redis://:hunter22@[::1", "closing"},
        {"redis://:hunter22@[::1]x", "after an IPv6"},
        {"redis://:hunter22@[]", "host"},
        {"redis://:hunter22@ho/st", "path"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nim_redis_url u;
        char err[256] = "";
        CHECK(nim_redis_url_parse(cases[i].url, &u, err, sizeof err) == -1);
        if (!strstr(err, cases[i].says))
            fprintf(stderr, "  %s: %s (want %s)\n", cases[i].url, err, cases[i].says);
        CHECK(strstr(err, cases[i].says) != NULL);
        CHECK(strstr(err, "hunter") == NULL);
    }
}

static void long_credentials_and_hosts_are_refused(void) {
    char *url = malloc(2048);
    nim_redis_url u;
    char err[256];
    strcpy(url, "redis://:");
    memset(url + 9, 'p', 600);
    strcpy(url + 609, "@h");
    CHECK(nim_redis_url_parse(url, &u, err, sizeof err) == -1 && strstr(err, "longer"));
    strcpy(url, "redis://");
    memset(url + 8, 'h', 300);
    url[308] = '\0';
    CHECK(nim_redis_url_parse(url, &u, err, sizeof err) == -1 && strstr(err, "longer"));
    free(url);
}

static void host_rule(void) {
    CHECK(nim_redis_host_ok("127.0.0.1"));
    CHECK(nim_redis_host_ok("redis-1.internal_zone"));
    CHECK(nim_redis_host_ok("::1"));
    CHECK(!nim_redis_host_ok(""));
    CHECK(!nim_redis_host_ok("h:6379x/"));
    CHECK(!nim_redis_host_ok("a b"));
    CHECK(!nim_redis_host_ok("h%2"));
}

static void sha1_matches_the_standard_vectors(void) {
    static const struct {
        const char *in, *hex;
    } cases[] = {
        {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
        {"return redis.call('GET', KEYS[1])", "d3c21d0c2b9ca22f82737626a27bcaf5d288f99f"},
    };
    char hex[41];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nim_sha1_hex(cases[i].in, strlen(cases[i].in), hex);
        CHECK_STR(hex, cases[i].hex);
    }
    /* the padding's edges: 55, 56 and 64 bytes; and a million */
    static const struct {
        size_t n;
        const char *hex;
    } sizes[] = {
        {55, "cef734ba81a024479e09eb5a75b6ddae62e6abf1"},
        {56, "901305367c259952f4e7af8323f480d59f81335b"},
        {64, "bb2fa3ee7afb9f54c6dfb5d021f14b1ffe40c163"},
    };
    char x[64];
    memset(x, 'x', sizeof x);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        nim_sha1_hex(x, sizes[i].n, hex);
        CHECK_STR(hex, sizes[i].hex);
    }
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    nim_sha1_hex(a, 1000000, hex);
    CHECK_STR(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(a);
}

int main(void) {
    RUN(urls_give_host_port_credentials_and_db);
    RUN(bad_urls_are_refused_without_repeating_the_secret);
    RUN(long_credentials_and_hosts_are_refused);
    RUN(host_rule);
    RUN(sha1_matches_the_standard_vectors);
    return CTEST_SUMMARY("test_redis_url");
}
