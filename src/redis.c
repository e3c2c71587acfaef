/* redis.c: the Redis client on the engine's loop (redis.h).
 *
 * A connection's life: nim_redis_send finds none (idle, or down with its backoff over) and
 * connects: hiredis starts a non-blocking connect, AUTH and SELECT are queued first, then the
 * caller's commands, all written together when the socket becomes writable. hiredis asks for
 * read and write interest through its ev hooks, which become the source's epoll interest; the
 * source's deadline is the connect deadline while connecting, else the oldest pending
 * operation's reply deadline (replies come in order, so the oldest is due first).
 *
 * A connection ends in one of few ways, and ev_cleanup (hiredis calls it whenever it frees the
 * context) is the one place that decides what comes next:
 *   - a failure (refused, reset, closed with commands pending, no reply in time, AUTH refused):
 *     every pending command fails, the state is down and the next attempt waits the backoff,
 *     which doubles with each failure in a row up to backoff_max and is reset by any reply;
 *   - the server closed a connection that had nothing pending (its idle timeout, a restart):
 *     idle, the next command reconnects at once;
 *   - nim_redis_close, or the engine going away (nimrank serve drops it before forking): idle.
 * Whoever drops a connection first says why (set_why); the callbacks hiredis then runs with a
 * NULL reply for every pending command read it. */
#define _GNU_SOURCE
#include "redis.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "hiredis_lazy.h"

#define MSG_MAX 320

struct nim_redis_op {
    nim_redis *r; /* while pending */
    nim_redis_op *next, *prev;
    double issued;
    int ncmds, outstanding, nreplies;
    int done, abandoned, expired;
    nim_redis_failure failure;
    char message[MSG_MAX];
    nim_redis_value *replies[];
};

struct nim_redis {
    char *host, *username, *password;
    int port;
    long long db;
    double timeout, connect_timeout, backoff, backoff_max;
    size_t max_reply_bytes;
    char label[NIM_REDIS_LABEL_MAX];

    nim_engine *engine;
    nim_source *src;
    redisAsyncContext *ac;
    int watch; /* what hiredis asked to watch */

    nim_redis_state state;
    double since;
    char error[MSG_MAX]; /* "" when none */
    nim_redis_failure last_failure;
    unsigned long attempts;
    int failures; /* in a row, for the backoff */
    double retry_at;
    double connect_deadline, connected_at;
    nim_redis_op *head, *tail;
    int nops;
    int closed;

    /* the connection being dropped: why, and how it is counted */
    nim_redis_failure why;
    char why_msg[MSG_MAX];
    int quiet;       /* not a failure: closed by us, engine gone, found closed while idle */
    int cmd_timeout; /* a reply deadline passed: the others only went down with it */
    int dropped_ops;
};

/* ---- small helpers -------------------------------------------------------------------------- */

/* A message into a fixed buffer; a long host name may cut its end, which is fine. */
__attribute__((format(printf, 3, 4))) static void msgf(char *dst, size_t cap, const char *fmt,
                                                       ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

static void set_state(nim_redis *r, nim_redis_state st) {
    if (r->state == st) return;
    r->state = st;
    r->since = nim_now();
}

/* Records why the connection goes down, unless someone already has. */
static void set_why(nim_redis *r, nim_redis_failure why, const char *fmt, ...) {
    if (r->why != NIM_RF_NONE) return;
    r->why = why;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why_msg, sizeof r->why_msg, fmt, ap);
    va_end(ap);
}

static double op_deadline(const nim_redis *r, const nim_redis_op *op) {
    double from = op->issued > r->connected_at ? op->issued : r->connected_at;
    return from + r->timeout;
}

/* The source's interest, due time and pending count, from the connection's state. */
static void sync_source(nim_redis *r) {
    if (!r->src) return;
    nim_source_busy(r->src, r->nops);
    double due = -1;
    if (r->ac && r->state == NIM_REDIS_CONNECTING)
        due = r->connect_deadline;
    else if (r->ac && r->head)
        due = op_deadline(r, r->head);
    nim_source_due(r->src, due);
}

static void free_value(nim_redis_value *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n; i++)
        free_value(v->elem[i]);
    free(v->elem);
    free(v);
}

/* A copy of hiredis's reply; NULL: out of memory. */
static nim_redis_value *copy_reply(const redisReply *x) {
    int has_str = x->type == REDIS_REPLY_STRING || x->type == REDIS_REPLY_STATUS ||
                  x->type == REDIS_REPLY_ERROR;
    size_t extra = has_str ? x->len + 1 : 0;
    nim_redis_value *v = calloc(1, sizeof *v + extra);
    if (!v) return NULL;
    switch (x->type) {
    case REDIS_REPLY_STRING: v->type = NIM_RV_STRING; break;
    case REDIS_REPLY_STATUS: v->type = NIM_RV_STATUS; break;
    case REDIS_REPLY_ERROR: v->type = NIM_RV_ERROR; break;
    case REDIS_REPLY_INTEGER: v->type = NIM_RV_INTEGER; break;
    case REDIS_REPLY_ARRAY: v->type = NIM_RV_ARRAY; break;
    default: v->type = NIM_RV_NIL; break;
    }
    if (has_str) {
        char *s = (char *)(v + 1);
        if (x->len) memcpy(s, x->str, x->len);
        s[x->len] = '\0';
        v->str = s;
        v->len = x->len;
    }
    v->integer = x->integer;
    if (v->type == NIM_RV_ARRAY && x->elements) {
        v->elem = calloc(x->elements, sizeof *v->elem);
        if (!v->elem) goto oom;
        v->n = x->elements;
        for (size_t i = 0; i < x->elements; i++)
            if (!(v->elem[i] = copy_reply(x->element[i]))) goto oom;
    }
    return v;
oom:
    free_value(v);
    return NULL;
}

static void op_fail(nim_redis_op *op, nim_redis_failure why, const char *msg) {
    if (op->failure != NIM_RF_NONE) return;
    op->failure = why;
    snprintf(op->message, sizeof op->message, "%s", msg);
}

static void op_free(nim_redis_op *op) {
    for (int i = 0; i < op->nreplies; i++)
        free_value(op->replies[i]);
    free(op);
}

/* Every reply (or the connection's end) has come: the operation leaves the client. */
static void op_finish(nim_redis *r, nim_redis_op *op) {
    if (op->r) {
        if (op->prev)
            op->prev->next = op->next;
        else
            r->head = op->next;
        if (op->next)
            op->next->prev = op->prev;
        else
            r->tail = op->prev;
        op->r = NULL;
        r->nops--;
    }
    op->done = 1;
    if (op->abandoned) op_free(op);
}

/* ---- hiredis's hooks -------------------------------------------------------------------------
 * hiredis runs these from inside redisAsync* calls; none runs Lua, none drops the connection
 * but through hiredis's own deferred free. */

static void ev_sync(nim_redis *r) {
    if (r->src && r->ac) nim_source_watch(r->src, r->ac->c.fd, r->watch);
}
static void ev_add_read(void *p) {
    nim_redis *r = p;
    r->watch |= NIM_WATCH_IN;
    ev_sync(r);
}
static void ev_del_read(void *p) {
    nim_redis *r = p;
    r->watch &= ~NIM_WATCH_IN;
    ev_sync(r);
}
static void ev_add_write(void *p) {
    nim_redis *r = p;
    r->watch |= NIM_WATCH_OUT;
    ev_sync(r);
}
static void ev_del_write(void *p) {
    nim_redis *r = p;
    r->watch &= ~NIM_WATCH_OUT;
    ev_sync(r);
}

static double backoff_after(const nim_redis *r, int failures) {
    double b = r->backoff * ldexp(1.0, failures > 30 ? 30 : failures - 1);
    return b < r->backoff_max ? b : r->backoff_max;
}

/* The context is being freed (after hiredis ran every pending callback): what comes next. */
static void ev_cleanup(void *p) {
    nim_redis *r = p;
    int was_connecting = r->state == NIM_REDIS_CONNECTING;
    r->watch = 0;
    if (r->src) nim_source_watch(r->src, -1, 0); /* before hiredis closes the fd */
    r->ac = NULL;
    if (r->why == NIM_RF_NONE)
        set_why(r, NIM_RF_CONNECTION, "redis %s: the server closed the connection", r->label);
    msgf(r->error, sizeof r->error, "%s", r->why_msg);
    int failed = !r->quiet &&
                 (was_connecting || r->dropped_ops > 0 || r->why == NIM_RF_TIMEOUT ||
                  r->why == NIM_RF_AUTH || r->why == NIM_RF_SETUP || r->why == NIM_RF_BAD_REPLY);
    if (failed) {
        r->failures++;
        r->last_failure = r->why;
        r->retry_at = nim_now() + backoff_after(r, r->failures);
        set_state(r, NIM_REDIS_DOWN);
    } else {
        set_state(r, NIM_REDIS_IDLE);
    }
    r->why = NIM_RF_NONE;
    r->why_msg[0] = '\0';
    r->quiet = r->cmd_timeout = r->dropped_ops = 0;
    sync_source(r);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    nim_redis *r = ac->data;
    if (status != REDIS_OK) { /* hiredis frees the context next: ev_cleanup */
        set_why(r, NIM_RF_CONNECTION, "redis %s: %s", r->label,
                ac->c.errstr[0] ? ac->c.errstr : "connect failed");
        return;
    }
    set_state(r, NIM_REDIS_CONNECTED);
    r->connected_at = nim_now();
    r->error[0] = '\0';
    sync_source(r);
}

/* The reason of a connection hiredis itself is dropping (read or write error, EOF). */
static void why_from_hiredis(nim_redis *r, const redisAsyncContext *ac) {
    if (ac->c.err)
        set_why(r, NIM_RF_CONNECTION, "redis %s: %s", r->label, ac->c.errstr);
    else
        set_why(r, NIM_RF_CONNECTION, "redis %s: the connection was closed", r->label);
}

#define SETUP_AUTH ((void *)1)
#define SETUP_SELECT ((void *)2)

/* AUTH's and SELECT's replies: a refusal ends the connection, and the commands behind them
 * fail with its message (the server's words: they never hold the password). */
static void on_setup(redisAsyncContext *ac, void *reply, void *privdata) {
    nim_redis *r = ac->data;
    redisReply *x = reply;
    if (!x) {
        why_from_hiredis(r, ac);
        return;
    }
    if (x->type != REDIS_REPLY_ERROR) return;
    if (privdata == SETUP_AUTH)
        set_why(r, NIM_RF_AUTH, "redis %s: AUTH refused: %s", r->label, x->str);
    else
        set_why(r, NIM_RF_SETUP, "redis %s: SELECT %lld refused: %s", r->label, r->db, x->str);
    redisAsyncFree(ac); /* inside a callback: hiredis frees it when this returns */
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    nim_redis *r = ac->data;
    nim_redis_op *op = privdata;
    redisReply *x = reply;
    op->outstanding--;
    if (x) {
        r->failures = 0; /* the server answers: the next failure starts the backoff afresh */
        if (op->failure == NIM_RF_NONE && !op->abandoned) {
            nim_redis_value *v = copy_reply(x);
            if (v)
                op->replies[op->nreplies++] = v;
            else
                op_fail(op, NIM_RF_UNAVAILABLE, "out of memory");
        }
    } else if (op->failure == NIM_RF_NONE) {
        why_from_hiredis(r, ac);
        r->dropped_ops++;
        if (r->cmd_timeout && !op->expired) {
            char msg[MSG_MAX];
            msgf(msg, sizeof msg,
                 "redis %s: the connection was dropped because an earlier command got no "
                 "reply in time (replies come in order)",
                 r->label);
            op_fail(op, NIM_RF_CONNECTION, msg);
        } else {
            op_fail(op, r->why, r->why_msg);
        }
    }
    if (op->outstanding == 0) op_finish(r, op);
}

/* ---- the source: readiness and deadlines from the engine ------------------------------------ */

/* Drops the connection now (never from inside a hiredis callback): hiredis fails what is
 * pending through the callbacks, then ev_cleanup decides what comes next. */
static void drop(nim_redis *r, nim_redis_failure why, int quiet, const char *msg) {
    if (!r->ac) return;
    set_why(r, why, "%s", msg);
    r->quiet = quiet;
    redisAsyncFree(r->ac);
}

static void check_deadlines(nim_redis *r) {
    double now = nim_now();
    char msg[MSG_MAX];
    if (!r->ac) return;
    if (r->state == NIM_REDIS_CONNECTING) {
        if (now < r->connect_deadline) return;
        msgf(msg, sizeof msg, "redis %s: no connection within %g s (connect_timeout)", r->label,
             r->connect_timeout);
        drop(r, NIM_RF_TIMEOUT, 0, msg);
        return;
    }
    if (!r->head || now < op_deadline(r, r->head)) return;
    for (nim_redis_op *op = r->head; op; op = op->next)
        if (now >= op_deadline(r, op)) op->expired = 1;
    r->cmd_timeout = 1;
    msgf(msg, sizeof msg, "redis %s: no reply within %g s (timeout); the connection is dropped",
         r->label, r->timeout);
    drop(r, NIM_RF_TIMEOUT, 0, msg);
}

/* hiredis 0.14 writes with write(2): a peer that has gone raises SIGPIPE, which would kill a
 * host that did not ignore it. The signal is blocked around the write and a SIGPIPE it caused
 * is taken back (the way libcurl and OpenSSL users do), leaving the host's handling alone. */
static void write_without_sigpipe(redisAsyncContext *ac) {
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    redisAsyncHandleWrite(ac);
    if (!was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Reads and dispatches replies: redisAsyncHandleRead's work for a connected context, done here
 * because hiredis 0.14 assert()s (async.c:478, an abort) on a reply no callback waits for: a
 * buggy or hostile server, or a proxy answering twice, would kill the process. Here a reply
 * with no command behind it drops the connection instead, and so does a reply over
 * max_reply_bytes (hiredis buffers any size). Anything else (connecting, read errors, EOF)
 * stays hiredis's own.
 *
 * This mirrors hiredis 0.14.1's redisProcessCallbacks for a context never subscribed nor
 * monitoring (the binding refuses those commands): the callback list (async.h's public
 * redisCallbackList, nodes malloc'd by hiredis and freed with free), REDIS_IN_CALLBACK around a
 * callback so redisAsyncFree inside it is deferred, REDIS_FREEING honoured after it. It relies
 * on those 0.14 internals; hiredis_lazy.c loads only the major.minor it was built against.
 * Residual risk: hiredis 0.14's reader has no limit on an array's element count, so a header
 * such as "*1000000000" makes it allocate that many pointers before the cap can see any
 * buffered bytes; and max_reply_bytes caps the unparsed bytes, not the memory of elements
 * already parsed into a large array reply. */
static void handle_read(nim_redis *r) {
    redisAsyncContext *ac = r->ac;
    redisContext *c = &ac->c;
    char msg[MSG_MAX];
    if (!(c->flags & REDIS_CONNECTED) || c->err) {
        redisAsyncHandleRead(ac);
        return;
    }
    if (!ac->replies.head) { /* nothing asked: only an EOF (or an error) is expected */
        char b;
        if (recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
            msgf(msg, sizeof msg,
                 "redis %s: the server sent a reply no command asked for; the connection was "
                 "dropped",
                 r->label);
            drop(r, NIM_RF_CONNECTION, 0, msg);
            return;
        }
        redisAsyncHandleRead(ac); /* hiredis sees the EOF or the error and disconnects */
        return;
    }
    if (redisBufferRead(c) != REDIS_OK) { /* c->err is set: hiredis disconnects at once */
        redisAsyncHandleRead(ac);
        return;
    }
    redisReader *rd = c->reader;
    if (r->max_reply_bytes && rd->len - rd->pos > r->max_reply_bytes) {
        msgf(msg, sizeof msg,
             "redis %s: reply larger than %zu bytes (max_reply_bytes); the connection was "
             "dropped",
             r->label, r->max_reply_bytes);
        drop(r, NIM_RF_BAD_REPLY, 0, msg);
        return;
    }
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(rd, &reply) != REDIS_OK) {
            msgf(msg, sizeof msg, "redis %s: protocol error: %s", r->label,
                 rd->errstr[0] ? rd->errstr : "bad reply");
            drop(r, NIM_RF_CONNECTION, 0, msg);
            return;
        }
        if (!reply) break; /* the rest has not come yet */
        redisCallback *node = ac->replies.head;
        if (!node) {
            const redisReply *x = reply;
            if (x->type == REDIS_REPLY_ERROR) /* e.g. "max number of clients reached" */
                msgf(msg, sizeof msg, "redis %s: %s", r->label, x->str);
            else
                msgf(msg, sizeof msg,
                     "redis %s: the server sent more replies than commands; the connection "
                     "was dropped",
                     r->label);
            rd->fn->freeObject(reply);
            drop(r, NIM_RF_CONNECTION, 0, msg);
            return;
        }
        redisCallback cb = *node;
        ac->replies.head = node->next;
        if (!ac->replies.head) ac->replies.tail = NULL;
        free(node); /* hiredis 0.14 allocates them with malloc */
        if (cb.fn) {
            c->flags |= REDIS_IN_CALLBACK;
            cb.fn(ac, reply, cb.privdata);
            c->flags &= ~REDIS_IN_CALLBACK;
        }
        rd->fn->freeObject(reply);
        if (c->flags & REDIS_FREEING) { /* redisAsyncFree was called inside the callback */
            redisAsyncFree(ac);
            return;
        }
    }
}

static void on_source(void *ud, int events) {
    nim_redis *r = ud;
    if (events & NIM_SOURCE_GONE) {
        char msg[MSG_MAX];
        msgf(msg, sizeof msg, "redis %s: the network engine was closed", r->label);
        drop(r, NIM_RF_CONNECTION, 1, msg);
        nim_source_free(r->src);
        r->src = NULL;
        r->engine = NULL;
        return;
    }
    if (events & NIM_SOURCE_DUE) check_deadlines(r);
    if (r->ac && (events & NIM_WATCH_IN)) handle_read(r);
    if (r->ac && (events & NIM_WATCH_OUT)) write_without_sigpipe(r->ac);
    sync_source(r);
}

/* ---- connecting ------------------------------------------------------------------------------ */

static int attach(nim_redis *r, nim_engine *e) {
    if (r->src) { /* another engine's: cannot happen while that engine lives */
        drop(r, NIM_RF_CONNECTION, 1, "the network engine changed");
        nim_source_free(r->src);
        r->src = NULL;
    }
    r->engine = NULL;
    r->src = nim_source_new(e, on_source, r);
    if (!r->src) return -1;
    r->engine = e;
    return 0;
}

/* A connection attempt that failed before hiredis had a context to drop. */
static void failed_at_once(nim_redis *r, nim_redis_failure why, const char *msg) {
    msgf(r->error, sizeof r->error, "%s", msg);
    r->failures++;
    r->last_failure = why;
    r->retry_at = nim_now() + backoff_after(r, r->failures);
    set_state(r, NIM_REDIS_DOWN);
}

static int start_connect(nim_redis *r) {
    char err[MSG_MAX];
    if (nim_hiredis_load(err, sizeof err) != 0) {
        msgf(r->error, sizeof r->error, "redis: %s", err);
        r->last_failure = NIM_RF_UNAVAILABLE;
        return -1;
    }
    r->attempts++;
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        msgf(err, sizeof err, "redis %s: %s", r->label, ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac); /* no hooks yet: only the socket is closed */
        failed_at_once(r, NIM_RF_CONNECTION, err);
        return -1;
    }
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    r->ac = ac;
    r->connect_deadline = nim_now() + r->connect_timeout;
    set_state(r, NIM_REDIS_CONNECTING);
    redisAsyncSetConnectCallback(ac, on_connect); /* watches for writable: connected */
    if (r->password) { /* AUTH [user] password: a user name for Redis 6 ACLs */
        const char *argv[3];
        size_t lens[3];
        int argc = 0;
        argv[argc] = "AUTH", lens[argc++] = 4;
        if (r->username) argv[argc] = r->username, lens[argc++] = strlen(r->username);
        argv[argc] = r->password, lens[argc++] = strlen(r->password);
        redisAsyncCommandArgv(ac, on_setup, SETUP_AUTH, argc, argv, lens);
    }
    if (r->db > 0) {
        char db[24];
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, (size_t)snprintf(db, sizeof db, "%lld", r->db)};
        redisAsyncCommandArgv(ac, on_setup, SETUP_SELECT, 2, argv, lens);
    }
    return 0;
}

/* Whether an idle connection was closed by the server meanwhile (nobody read its EOF): then a
 * command sent on it would fail for nothing. One non-blocking peek. */
static int found_closed(const nim_redis *r) {
    char b;
    ssize_t n = recv(r->ac->c.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* ---- the API --------------------------------------------------------------------------------- */

static char *dup_or_null(const char *s) {
    if (!s || !*s) return NULL;
    return strdup(s);
}

nim_redis *nim_redis_new(const nim_redis_config *cfg) {
    nim_redis *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->host = strdup(cfg->host);
    r->username = dup_or_null(cfg->username);
    r->password = dup_or_null(cfg->password);
    if (!r->host || (cfg->username && *cfg->username && !r->username) ||
        (cfg->password && *cfg->password && !r->password)) {
        nim_redis_free(r);
        return NULL;
    }
    if (!r->password) { /* a user name alone cannot AUTH */
        free(r->username);
        r->username = NULL;
    }
    r->port = cfg->port;
    r->db = cfg->db;
    r->timeout = cfg->timeout;
    r->connect_timeout = cfg->connect_timeout;
    r->backoff = cfg->backoff;
    r->backoff_max = cfg->backoff_max < cfg->backoff ? cfg->backoff : cfg->backoff_max;
    r->max_reply_bytes = cfg->max_reply_bytes;
    snprintf(r->label, sizeof r->label, strchr(r->host, ':') ? "[%s]:%d" : "%s:%d", r->host,
             r->port);
    r->state = NIM_REDIS_IDLE;
    r->since = nim_now();
    return r;
}

const char *nim_redis_label(const nim_redis *r) { return r->label; }
int nim_redis_closed(const nim_redis *r) { return r->closed; }
const char *nim_redis_secret(const nim_redis *r) { return r->password; }

void nim_redis_close(nim_redis *r) {
    if (!r || r->closed) return;
    r->closed = 1;
    char msg[MSG_MAX];
    msgf(msg, sizeof msg, "redis %s: the client was closed", r->label);
    drop(r, NIM_RF_CONNECTION, 1, msg);
    nim_source_free(r->src);
    r->src = NULL;
    r->engine = NULL;
    set_state(r, NIM_REDIS_IDLE);
}

void nim_redis_free(nim_redis *r) {
    if (!r) return;
    nim_redis_close(r);
    free(r->host);
    free(r->username);
    free(r->password);
    free(r);
}

void nim_redis_get_status(const nim_redis *r, nim_redis_status *st) {
    st->state = r->state;
    st->since = r->since;
    st->error = r->error[0] ? r->error : NULL;
    st->reconnects = r->attempts > 1 ? r->attempts - 1 : 0;
    double left = r->retry_at - nim_now();
    st->retry_in = r->state == NIM_REDIS_DOWN && left > 0 ? left : 0;
    st->pending = r->nops;
    st->closed = r->closed;
}

nim_redis_op *nim_redis_send(nim_redis *r, nim_engine *e, int ncmds, const int *argc,
                             const char *const *argv, const size_t *lens) {
    nim_redis_op *op = calloc(1, sizeof *op + (size_t)ncmds * sizeof op->replies[0]);
    if (!op) return NULL;
    op->ncmds = ncmds;
    op->issued = nim_now();
    char msg[MSG_MAX];
    if (r->closed) {
        msgf(msg, sizeof msg, "redis %s: the client was closed", r->label);
        op_fail(op, NIM_RF_UNAVAILABLE, msg);
        op->done = 1;
        return op;
    }
    if (r->engine != e && attach(r, e) != 0) {
        op_fail(op, NIM_RF_UNAVAILABLE, "out of memory");
        op->done = 1;
        return op;
    }
    if (r->ac && r->state == NIM_REDIS_CONNECTED && r->nops == 0 && found_closed(r)) {
        msgf(msg, sizeof msg, "redis %s: the server closed the connection while it was idle",
             r->label);
        drop(r, NIM_RF_CONNECTION, 1, msg);
    }
    if (!r->ac) {
        double left = r->retry_at - op->issued;
        if (r->state == NIM_REDIS_DOWN && left > 0) { /* fail fast: no attempt before retry_at */
            msgf(msg, sizeof msg, "%s (down; next attempt in %.2f s)", r->error, left);
            op_fail(op, r->last_failure, msg);
            op->done = 1;
            return op;
        }
        if (start_connect(r) != 0) {
            op_fail(op, r->last_failure, r->error);
            op->done = 1;
            return op;
        }
    }
    /* hiredis's prototype takes char ** without const; it only reads them */
    const char **av = (const char **)(void *)argv;
    size_t k = 0;
    for (int i = 0; i < ncmds; i++) {
        if (redisAsyncCommandArgv(r->ac, on_reply, op, argc[i], av + k, lens + k) != REDIS_OK)
            break;
        op->outstanding++;
        k += (size_t)argc[i];
    }
    if (op->outstanding < ncmds) { /* only while hiredis is closing the context: never here */
        msgf(msg, sizeof msg, "redis %s: the connection is closing", r->label);
        op_fail(op, NIM_RF_CONNECTION, msg);
        if (op->outstanding == 0) {
            op->done = 1;
            return op;
        }
    }
    op->r = r;
    op->prev = r->tail;
    if (r->tail)
        r->tail->next = op;
    else
        r->head = op;
    r->tail = op;
    r->nops++;
    sync_source(r);
    return op;
}

int nim_redis_op_done(const nim_redis_op *op) { return op->done; }

nim_redis_failure nim_redis_op_failure(const nim_redis_op *op, const char **message) {
    if (message) *message = op->message;
    return op->failure;
}

int nim_redis_op_count(const nim_redis_op *op) { return op->nreplies; }

const nim_redis_value *nim_redis_op_reply(const nim_redis_op *op, int i) {
    return i >= 0 && i < op->nreplies ? op->replies[i] : NULL;
}

void nim_redis_op_release(nim_redis_op *op) {
    if (!op) return;
    if (op->done)
        op_free(op);
    else
        op->abandoned = 1;
}
