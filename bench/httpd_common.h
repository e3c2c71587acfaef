/* httpd_common.h: what bench/httpd_mhd.c and bench/httpd_h2o.c share, so both listen and answer
 * alike: the listening socket (127.0.0.1, as `nimrank serve` opens its own: non-blocking,
 * SO_REUSEADDR, backlog 4096) and the canned answer read once into memory. */
#ifndef HTTPD_COMMON_H
#define HTTPD_COMMON_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* A listening socket on 127.0.0.1:port (0: any free port); its port in *bound. -1 on error. */
static int httpd_listen(int port, int *bound) {
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4096) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("listen");
        if (fd >= 0) close(fd);
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

/* The whole file in a malloc'd buffer (never freed: the servers answer with it until they
 * exit); its length in *n. NULL on error. */
static char *httpd_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *p = malloc(cap);
    size_t got;
    while (p && (got = fread(p + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *q = realloc(p, cap *= 2);
            if (!q) free(p);
            p = q;
        }
    }
    fclose(f);
    *n = len;
    return p;
}

#endif
