/* redis:// URLs (redis_url.c): the bytes as one URL. Whatever comes in, a URL that parses has
 * clean parts (a host by the host rule, a port and db in range; credentials may hold any byte
 * but NUL once decoded: AUTH sends them binary-safe), and one that does not has a message that
 * never repeats the password. */
#include <string.h>

#include "../../src/redis_url.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    nim_redis_url u;
    char err[256];
    memset(err, 'x', sizeof err);
    if (nim_redis_url_parse(s, &u, err, sizeof err) == 0) {
        FUZZ_ASSERT(u.host[0] == '\0' || nim_redis_host_ok(u.host));
        FUZZ_ASSERT(u.port >= 0 && u.port <= 65535);
        FUZZ_ASSERT(u.db >= -1 && u.db <= 2147483647LL);
        FUZZ_ASSERT(!u.username[0] || u.password[0]); /* a user name comes with a password */
    } else {
        FUZZ_ASSERT(memchr(err, '\0', sizeof err) && err[0]);
        /* the password, as written (between ':' and the last '@'), is not in the message */
        const char *auth = strstr(s, "://");
        const char *at = auth ? strrchr(auth, '@') : NULL;
        const char *colon = at ? memchr(auth + 3, ':', (size_t)(at - auth - 3)) : NULL;
        if (colon && at - colon > 8) {
            size_t n = (size_t)(at - colon - 1);
            char *pw = strndup(colon + 1, n);
            if (pw && strlen(pw) == n && !strchr(pw, '/')) FUZZ_ASSERT(!strstr(err, pw));
            free(pw);
        }
    }
    free(s);
    return 0;
}
