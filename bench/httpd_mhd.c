/* httpd_mhd: the HTTP layer of `nimrank serve` alone, for bench/httpd.sh. libmicrohttpd driven
 * as src/server.c drives it: external epoll mode (MHD_USE_EPOLL | MHD_USE_TURBO, suspend and
 * resume allowed), a listening socket of its own passed in, MHD's epoll fd inside the loop's
 * own epoll set next to a signalfd, every connection's socket in that set for hang-ups
 * (edge-triggered EPOLLRDHUP, once per connection), the request's body collected into a
 * growing buffer, then the connection suspended. The gateway resumes it when the upstream
 * answers; here the answer is ready as soon as MHD's turn is over (httpd_h2o defers its answer
 * the same way): the connection is resumed with a response made from the canned bytes without
 * a copy (a free callback, as for the gateway's Lua string), and MHD runs again (and at most
 * twice more while it reports work queued) to queue and send it. No Lua, no upstream: what
 * is left is what the gateway pays libmicrohttpd.
 * Usage: httpd_mhd PORT ANSWER_FILE   (PORT 0: any free port; prints "PORT n" once listening;
 * answers POST /rerank with ANSWER_FILE's bytes, 404 to anything else; SIGTERM/SIGINT stop it) */
#define _GNU_SOURCE
#include <microhttpd.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>

#include "httpd_common.h"

enum { PH_HEAD, PH_BODY, PH_WAITING, PH_ANSWERED, PH_REFUSED };
enum { TAG_MHD = 1, TAG_SIGNAL = 2 }; /* anything else in an event is a connection's record */

typedef struct conn {
    int fd, watched, hup;
} conn;

typedef struct req {
    struct MHD_Connection *c;
    conn *sc;
    int phase;
    char *body;
    size_t len, cap;
    struct MHD_Response *resp;
    struct req *next; /* waiting for its answer (the next loop turn) */
} req;

static struct {
    struct MHD_Daemon *d;
    int ep;
    req *waiting;
    int resumed; /* a connection was resumed: MHD runs this turn */
    const char *answer;
    size_t answer_len;
} S;

static void answer_sent(void *cls) { (void)cls; } /* the gateway drops a Lua reference here */

/* The request line came: its record is born (the gateway starts its clock here). */
static void *uri_started(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)cls, (void)uri;
    req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->c = c;
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->sc = sc ? sc->socket_context : NULL;
    return r;
}

static enum MHD_Result queue(req *r, unsigned status) {
    enum MHD_Result ok = MHD_queue_response(r->c, status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)cls, (void)version;
    req *r = *con_cls;
    if (!r) return MHD_NO;
    if (r->phase == PH_HEAD) { /* headers complete */
        if (strcmp(url, "/rerank") != 0 || strcmp(method, "POST") != 0) {
            static const char nf[] = "{\"error\":\"not found\"}";
            r->phase = PH_REFUSED; /* the body is never read: MHD closes the connection */
            r->resp =
                MHD_create_response_from_buffer(sizeof nf - 1, (void *)nf, MHD_RESPMEM_PERSISTENT);
            if (!r->resp) return MHD_NO;
            MHD_add_response_header(r->resp, "Content-Type", "application/json");
            return queue(r, 404);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > 64u << 20) return MHD_NO;
        r->phase = PH_BODY;
        return MHD_YES;
    }
    if (r->phase == PH_BODY && *upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->len + n > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + n)
                cap *= 2;
            char *p = realloc(r->body, cap);
            if (!p) return MHD_NO;
            r->body = p, r->cap = cap;
        }
        memcpy(r->body + r->len, upload, n);
        r->len += n;
        return MHD_YES;
    }
    if (r->phase == PH_BODY) { /* the whole request is here: park it until its answer */
        r->phase = PH_WAITING;
        MHD_suspend_connection(c);
        r->next = S.waiting;
        S.waiting = r;
        return MHD_YES;
    }
    if (r->phase == PH_ANSWERED && r->resp) return queue(r, MHD_HTTP_OK); /* resumed */
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (r->resp) MHD_destroy_response(r->resp);
    free(r->body);
    free(r);
}

/* A connection's socket joins the loop's set once, for hang-ups, as in the gateway. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn *k = calloc(1, sizeof *k);
        if (!k) return;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : -1;
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET, .data.ptr = k};
        if (k->fd >= 0 && epoll_ctl(S.ep, EPOLL_CTL_ADD, k->fd, &ev) == 0) k->watched = 1;
        *socket_context = k;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        conn *k = *socket_context;
        if (k->watched) epoll_ctl(S.ep, EPOLL_CTL_DEL, k->fd, NULL);
        free(k);
        *socket_context = NULL;
    }
}

/* Every waiting request gets its answer (the canned bytes, not copied) and is resumed. */
static void answer_waiting(void) {
    while (S.waiting) {
        req *r = S.waiting;
        S.waiting = r->next;
        r->resp = MHD_create_response_from_buffer_with_free_callback_cls(
            S.answer_len, (void *)S.answer, answer_sent, NULL);
        if (r->resp) MHD_add_response_header(r->resp, "Content-Type", "application/json");
        r->phase = PH_ANSWERED;
        S.resumed = 1;
        MHD_resume_connection(r->c);
    }
}

/* MHD's turn, as the gateway's mhd_run: once, and at most twice more while it has work. */
static void mhd_run(void) {
    MHD_UNSIGNED_LONG_LONG mt;
    S.resumed = 0;
    MHD_run(S.d);
    for (int i = 0; i < 2 && MHD_get_timeout(S.d, &mt) == MHD_YES && mt == 0; i++)
        MHD_run(S.d);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int ep_add(int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    return epoll_ctl(S.ep, EPOLL_CTL_ADD, fd, &ev);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: httpd_mhd PORT ANSWER_FILE\n");
        return 2;
    }
    S.answer = httpd_slurp(argv[2], &S.answer_len);
    int port, lfd = httpd_listen(atoi(argv[1]), &port);
    if (!S.answer || lfd < 0) return 1;
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    S.ep = epoll_create1(EPOLL_CLOEXEC);
    if (sigfd < 0 || S.ep < 0) return 1;
    S.d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, NULL, MHD_OPTION_LISTEN_SOCKET, lfd, MHD_OPTION_URI_LOG_CALLBACK, uri_started,
        NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_CONNECTION_LIMIT, 8192u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_END);
    const union MHD_DaemonInfo *di = S.d ? MHD_get_daemon_info(S.d, MHD_DAEMON_INFO_EPOLL_FD) : 0;
    if (!di || ep_add(di->epoll_fd, TAG_MHD) != 0 || ep_add(sigfd, TAG_SIGNAL) != 0) {
        fprintf(stderr, "httpd_mhd: libmicrohttpd would not start\n");
        return 1;
    }
    printf("PORT %d\n", port);
    fflush(stdout);

    struct epoll_event evs[256];
    for (int stop = 0; !stop;) {
        double now = now_ms();
        long wait = 1000, mhd_wait = -1;
        MHD_UNSIGNED_LONG_LONG mt;
        if (MHD_get_timeout(S.d, &mt) == MHD_YES)
            wait = mhd_wait = (long long)mt < wait ? (long)mt : wait;
        if (S.waiting) wait = 0; /* suspended in MHD's last pass: their answers are ready */
        int n = epoll_wait(S.ep, evs, 256, (int)wait);
        int mhd_ready = 0;
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_MHD) {
                mhd_ready = 1;
            } else if (tag == TAG_SIGNAL) {
                stop = 1;
            } else {
                ((conn *)evs[i].data.ptr)->hup = 1; /* the gateway would cancel its request */
            }
        }
        if (mhd_ready || (mhd_wait >= 0 && now_ms() - now >= (double)mhd_wait)) mhd_run();
        /* The "upstream" answered: the waiting connections are resumed and MHD runs again, as
         * in the gateway's turn where the engine's poll answers (`if (srv.resumed) mhd_run()`) */
        answer_waiting();
        if (S.resumed) mhd_run();
    }
    answer_waiting(); /* MHD aborts when stopped with connections suspended */
    MHD_run(S.d);
    MHD_stop_daemon(S.d);
    close(S.ep);
    close(sigfd);
    return 0;
}
