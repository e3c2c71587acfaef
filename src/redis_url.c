/* redis_url.c: redis:// URLs (redis_url.h). */
#include "redis_url.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (cap bytes with the NUL). 0, or -1 with err filled. */
static int decode(const char *s, size_t n, char *out, size_t cap, const char *what, char *err,
                  size_t errlen) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                snprintf(err, errlen, "the %s has a '%%' that is not followed by two hex digits",
                         what);
                return -1;
            }
            c = hi * 16 + lo;
            i += 2;
            if (c == 0) {
                snprintf(err, errlen, "the %s contains a NUL byte (%%00)", what);
                return -1;
            }
        } else if (c < 0x21 || c == 0x7f) {
            snprintf(err, errlen, "the %s contains a space or a control character", what);
            return -1;
        }
        if (k + 1 >= cap) {
            snprintf(err, errlen, "the %s is longer than %zu bytes", what, cap - 1);
            return -1;
        }
        out[k++] = (char)c;
    }
    out[k] = '\0';
    return 0;
}

int nim_redis_host_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= NIM_REDIS_HOST_MAX) return 0;
    int colon = strchr(s, ':') != NULL;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 c == '-' || c == '.' || c == '_' || (colon && (c == ':' || c == '%'));
        if (!ok) return 0;
    }
    return 1;
}

int nim_redis_url_parse(const char *url, nim_redis_url *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->db = -1;
    if (strncasecmp(url, "rediss://", 9) == 0) {
        snprintf(err, errlen,
                 "rediss:// (TLS) is not supported: hiredis 0.14 has no TLS; use redis:// "
                 "(through a TLS tunnel when the link needs encryption)");
        return -1;
    }
    if (strncasecmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen,
                 "must start with redis:// (unix sockets and other schemes are "
                 "not supported)");
        return -1;
    }
    const char *a = url + 8;
    const char *end = a + strcspn(a, "/?#");
    if (strpbrk(a, "?#")) {
        snprintf(err, errlen,
                 "query parameters and fragments are not supported (use the "
                 "options: db, password, timeout, ...)");
        return -1;
    }
    /* the user information ends at the last '@' of the authority */
    const char *at = NULL;
    for (const char *p = a; p < end; p++)
        if (*p == '@') at = p;
    if (at) {
        const char *colon = memchr(a, ':', (size_t)(at - a));
        if (!colon) {
            snprintf(err, errlen,
                     "the user information has no ':' (write "
                     "redis://:password@host for a password alone, "
                     "redis://user:password@host with a user)");
            return -1;
        }
        if (decode(a, (size_t)(colon - a), out->username, sizeof out->username, "user name", err,
                   errlen) != 0 ||
            decode(colon + 1, (size_t)(at - colon - 1), out->password, sizeof out->password,
                   "password", err, errlen) != 0)
            return -1;
        if (out->username[0] && !out->password[0]) {
            snprintf(err, errlen, "a user name needs a password (redis://user:password@host)");
            return -1;
        }
        a = at + 1;
    }
    /* host, bracketed when it is an IPv6 address, then :port */
    const char *host = a, *host_end, *p;
    if (*a == '[') {
        host = a + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end) {
            snprintf(err, errlen, "an IPv6 host has no closing ']'");
            return -1;
        }
        p = host_end + 1;
        if (p < end && *p != ':') {
            snprintf(err, errlen, "after an IPv6 host's ']' only :port may follow");
            return -1;
        }
    } else {
        host_end = memchr(a, ':', (size_t)(end - a));
        if (!host_end) host_end = end;
        p = host_end;
    }
    size_t hn = (size_t)(host_end - host);
    if (*a == '[') { /* RFC 6874: a zone's '%' is written %25 */
        if (decode(host, hn, out->host, sizeof out->host, "host", err, errlen) != 0) return -1;
        hn = strlen(out->host);
    } else if (hn >= sizeof out->host) {
        snprintf(err, errlen, "the host is longer than %zu bytes", sizeof out->host - 1);
        return -1;
    } else {
        memcpy(out->host, host, hn);
        out->host[hn] = '\0';
    }
    int v6 = strchr(out->host, ':') != NULL;
    if ((*a == '[' && (hn == 0 || !v6)) ||
        (hn && (!nim_redis_host_ok(out->host) || (*a == '[') != v6))) {
        snprintf(err, errlen, "the host is not a host name or an address (IPv6 in brackets)");
        return -1;
    }
    if (p < end) { /* ':' port */
        p++;
        long port = 0;
        int digits = 0;
        for (; p < end && *p >= '0' && *p <= '9' && digits < 6; p++, digits++)
            port = port * 10 + (*p - '0');
        if (p != end || digits == 0 || port < 1 || port > 65535) {
            snprintf(err, errlen, "the port must be a number from 1 to 65535");
            return -1;
        }
        out->port = (int)port;
    }
    /* path: "", "/" or "/<db>" */
    p = end;
    if (*p == '/') p++;
    if (*p) {
        long long db = 0;
        int digits = 0;
        for (; *p >= '0' && *p <= '9' && digits < 10; p++, digits++)
            db = db * 10 + (*p - '0');
        if (*p || digits == 0 || db > 2147483647LL) {
            snprintf(err, errlen,
                     "the path must be /<database number> (0 or more), as in "
                     "redis://host:6379/0");
            return -1;
        }
        out->db = db;
    }
    return 0;
}
