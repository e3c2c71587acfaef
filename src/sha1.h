/* sha1.h: SHA-1 (Nettle's, in digest.c), for the names Redis gives scripts (EVALSHA). Not
 * for security: Redis chose it as a script's name, and the client must compute the same. */
#ifndef NIM_SHA1_H
#define NIM_SHA1_H

#include <stddef.h>

/* Writes the digest of data[0..n) as 40 lower-case hex digits and a NUL into hex. */
void nim_sha1_hex(const void *data, size_t n, char hex[41]);

#endif
