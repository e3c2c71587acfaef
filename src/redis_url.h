/* redis_url.h: redis:// URLs for the Redis client's options (pure C: no Lua, no hiredis).
 *   redis://[[user]:password@]host[:port][/db]
 * IPv6 hosts in brackets; user and password percent-decoded. rediss:// (TLS) is refused:
 * hiredis 0.14 has no TLS. A message never repeats the URL or its user information. */
#ifndef NIM_REDIS_URL_H
#define NIM_REDIS_URL_H

#include <stddef.h>

#define NIM_REDIS_HOST_MAX 256
#define NIM_REDIS_CRED_MAX 512
#define NIM_REDIS_DEFAULT_HOST "127.0.0.1"
#define NIM_REDIS_DEFAULT_PORT 6379

typedef struct {
    char host[NIM_REDIS_HOST_MAX];     /* without brackets; "" when the URL has none */
    int port;                          /* 0 when the URL has none */
    char username[NIM_REDIS_CRED_MAX]; /* "" when none (AUTH password alone) */
    char password[NIM_REDIS_CRED_MAX]; /* "" when none (no AUTH) */
    long long db;                      /* -1 when the URL has none */
} nim_redis_url;

/* 0, or -1 with err filled (no "url:" prefix: the caller names the field). */
int nim_redis_url_parse(const char *url, nim_redis_url *out, char *err, size_t errlen);

/* Whether s is a host name or address the client accepts (the url's and the host option's
 * one rule): letters, digits, '-', '.', '_', or an IPv6 address's hex digits, ':' and '%'. */
int nim_redis_host_ok(const char *s);

#endif
