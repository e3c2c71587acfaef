/* httpd_h2o: the same HTTP layer as bench/httpd_mhd.c on Debian's h2o (libh2o-evloop, 2.2.5:
 * its own epoll loop, HTTP/1.1), for bench/httpd.sh. A listening socket of its own, one
 * handler on /rerank. h2o has read the whole body into memory (req->entity) before the handler
 * runs; the handler does not answer there but defers the answer to the loop (a zero timeout,
 * run by the loop after the sockets' work of the same turn, as httpd_mhd resumes its
 * connections once MHD's turn is over), where the response is started and the canned bytes
 * sent without a copy.
 * Usage: httpd_h2o PORT ANSWER_FILE   (PORT 0: any free port; prints "PORT n" once listening;
 * answers POST /rerank with ANSWER_FILE's bytes, 404 to anything else; SIGTERM/SIGINT stop it) */
#define _GNU_SOURCE
#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0 /* the evloop build (libh2o-evloop), not libuv's */
#endif
#include <h2o.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>

#include "httpd_common.h"

static h2o_globalconf_t config;
static h2o_context_t ctx;
static h2o_accept_ctx_t accept_ctx;
static const char *answer;
static size_t answer_len, body_bytes;
static volatile sig_atomic_t stopping;

/* A request waiting for its answer; in the request's pool, so it goes with the request. */
typedef struct {
    h2o_timeout_entry_t te;
    h2o_req_t *req;
} waiting;

static void answer_now(h2o_timeout_entry_t *te) {
    static h2o_generator_t generator = {NULL, NULL}; /* one final send: nothing to proceed */
    h2o_req_t *req = H2O_STRUCT_FROM_MEMBER(waiting, te, te)->req;
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = answer_len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_start_response(req, &generator);
    h2o_iovec_t buf = h2o_iovec_init(answer, answer_len);
    h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

static void waiting_gone(void *p) {
    waiting *w = p;
    if (h2o_timeout_is_linked(&w->te)) h2o_timeout_unlink(&w->te);
}

static int on_rerank(h2o_handler_t *self, h2o_req_t *req) {
    (void)self;
    /* POST /rerank exactly (the path conf matches its prefix); anything else is 404 */
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")) ||
        !h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/rerank")))
        return -1;
    body_bytes += req->entity.len; /* the whole body, in h2o's buffer */
    waiting *w = h2o_mem_alloc_shared(&req->pool, sizeof *w, waiting_gone);
    memset(w, 0, sizeof *w);
    w->req = req;
    w->te.cb = answer_now;
    h2o_timeout_link(ctx.loop, &ctx.zero_timeout, &w->te);
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err) {
    if (err) return;
    h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
    if (sock) h2o_accept(&accept_ctx, sock);
}

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: httpd_h2o PORT ANSWER_FILE\n");
        return 2;
    }
    answer = httpd_slurp(argv[2], &answer_len);
    int port, lfd = httpd_listen(atoi(argv[1]), &port);
    if (!answer || lfd < 0) return 1;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    h2o_config_init(&config);
    h2o_hostconf_t *host =
        h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/rerank", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof *handler);
    handler->on_req = on_rerank;
    h2o_context_init(&ctx, h2o_evloop_create(), &config);
    accept_ctx.ctx = &ctx;
    accept_ctx.hosts = config.hosts;
    h2o_socket_t *listener = h2o_evloop_socket_create(ctx.loop, lfd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(listener, on_accept);
    printf("PORT %d\n", port);
    fflush(stdout);

    while (!stopping)
        h2o_evloop_run(ctx.loop, 1000); /* a signal ends its epoll_wait (EINTR) */

    h2o_socket_read_stop(listener);
    h2o_socket_close(listener);
    fprintf(stderr, "httpd_h2o: %zu body bytes read\n", body_bytes);
    return 0;
}
