/* engine.h: a provider-neutral HTTP engine on one libcurl multi handle. It posts (or gets) a
 * body to a URL with header lines and hands back the status, the response headers the caller
 * asked for, and the body. It knows nothing of NIM, Lua or error taxonomies, and nothing of
 * libcurl leaks through this header.
 *
 * The engine is always driven through curl's socket API (never curl_multi_perform): its own
 * epoll set holds every socket curl wants watched, so a blocking wait (nim_engine_step with a
 * timeout) and a host's event loop (nim_engine_set_watchers) drive the same multi the same
 * way, as curl's multi-uv.c and ephiperfifo.c examples do. */
#ifndef NIM_ENGINE_H
#define NIM_ENGINE_H

#include <stddef.h>

typedef struct nim_engine nim_engine;
typedef struct nim_transfer nim_transfer;

#define NIM_ENGINE_MAX_RESPONSE (16u * 1024u * 1024u)
#define NIM_ENGINE_MAX_WANT 4     /* response headers a transfer may ask to keep */
#define NIM_ENGINE_HEADER_MAX 256 /* bytes kept of each asked-for header's value */

typedef struct {
    const char *url;
    int get;                    /* a GET instead of a POST of body */
    const char *const *headers; /* "Name: value" lines, copied by nim_engine_start */
    size_t nheaders;
    char *body; /* malloc'ed; ownership passes to the engine */
    size_t body_len;
    long timeout_ms;                 /* total; must be > 0 */
    long connect_timeout_ms;         /* 0 = libcurl's default */
    size_t max_response;             /* bytes; 0 = NIM_ENGINE_MAX_RESPONSE */
    const char *ca_bundle;           /* NULL = the system store */
    const char *const *want_headers; /* response header names to keep (case-insensitive) */
    size_t nwant;                    /* at most NIM_ENGINE_MAX_WANT */
    double not_before;               /* monotonic seconds (clock.h); 0 = start now */
} nim_request;

typedef enum {
    NIM_XFER_OK = 0,            /* an HTTP response arrived (any status) */
    NIM_XFER_TIMEOUT,           /* connect or total timeout */
    NIM_XFER_CONNECTION,        /* resolve/connect/reset/TLS failure */
    NIM_XFER_TOO_LARGE,         /* response exceeded max_response */
    NIM_XFER_HEADERS_TOO_LARGE, /* a response header line longer than libcurl takes */
    NIM_XFER_CANCELLED,
    NIM_XFER_OTHER
} nim_xfer_result;

/* Loads libcurl if needed. NULL with err filled on failure. */
nim_engine *nim_engine_new(char *err, size_t errlen);
void nim_engine_free(nim_engine *e); /* cancels every transfer still attached */
/* "libcurl/7.88.1": what moves the bytes, for User-Agent lines. */
const char *nim_engine_backend(void);

/* Starts a request. Returns NULL with err filled (and body freed) on failure. */
nim_transfer *nim_engine_start(nim_engine *e, nim_request *r, char *err, size_t errlen);

/* Connections kept and used at once (CURLMOPT_MAX_TOTAL_CONNECTIONS and MAXCONNECTS): more
 * requests than that wait in the engine for a connection instead of failing for want of file
 * descriptors. */
void nim_engine_set_max_connections(nim_engine *e, long n);
/* The default: half the process's open-file limit, between 16 and 1024. */
long nim_engine_default_max_connections(void);

/* Moves every transfer: waits at most timeout_ms (0 = never blocks) for socket activity or
 * curl's timer, then acts on what is ready. Returns the number still running, or -1 on a
 * multi-level error. */
int nim_engine_step(nim_engine *e, int timeout_ms);
int nim_engine_running(const nim_engine *e);

/* ---- driving the engine from someone else's event loop ---------------------------------
 * Socket style: watch(ud, fd, events, socketp) starts (events NIM_WATCH_IN|OUT) or stops
 * (events 0) watching a socket; socketp is what the host stored for that fd with
 * nim_engine_assign (NULL until then). timer(ud, ms) asks for a call back after ms (-1: none).
 * On readiness the host calls nim_engine_socket_action(e, fd, events); when the timer fires,
 * nim_engine_socket_action(e, -1, 0).
 * Simple style: wait until nim_engine_fd is readable, or nim_engine_timeout ms pass, then
 * nim_engine_step(e, 0).
 * Both styles drive the engine's sources too (below): a host watches their sockets through the
 * same watch() calls and the same timer. */
enum { NIM_WATCH_IN = 1, NIM_WATCH_OUT = 2 };
typedef void (*nim_watch_fn)(void *ud, int fd, int events, void *socketp);
typedef void (*nim_timer_fn)(void *ud, long timeout_ms);
void nim_engine_set_watchers(nim_engine *e, nim_watch_fn watch, nim_timer_fn timer, void *ud);
int nim_engine_assign(nim_engine *e, int fd, void *socketp); /* 0, or -1: fd not watched */
int nim_engine_socket_action(nim_engine *e, int fd, int events);
/* ms until the engine's timer (curl's, a deferred start, a source's) is due; -1 when none is. */
long nim_engine_timeout(nim_engine *e);
/* One descriptor (an epoll set) that is readable whenever a socket of the engine is ready. */
int nim_engine_fd(const nim_engine *e);

/* ---- sources: other protocols on the same loop ---------------------------------------------
 * A client of another protocol (the Redis client, redis.c) adds a source: its socket joins
 * the engine's epoll set and its deadline the engine's timer, so whatever drives the engine (a
 * blocking wait, nimrank_poll, a host's loop through the watchers above, nimrank serve's loop)
 * drives the source too, and nim_engine_fd stays the one descriptor that stands for all nimrank
 * waits on. on(ud, events) runs from nim_engine_step and nim_engine_socket_action, with
 * NIM_WATCH_IN|OUT when the socket is ready (an error or hang-up counts as ready for what is
 * watched), NIM_SOURCE_DUE when the due time has come (the due time is cleared first), and
 * NIM_SOURCE_GONE when the engine is being freed: the owner then stops watching, fails what it
 * has pending and calls nim_source_free. on() may change its own source (watch, due, busy,
 * free), never another's. */
enum { NIM_SOURCE_DUE = 4, NIM_SOURCE_GONE = 8 };
typedef struct nim_source nim_source;
typedef void (*nim_source_fn)(void *ud, int events);
nim_source *nim_source_new(nim_engine *e, nim_source_fn on, void *ud); /* NULL: out of memory */
/* Watches fd for events (NIM_WATCH_IN|OUT), replacing what the source watched; fd < 0 or
 * events 0 stops watching. Call it with -1 before closing the fd. 0, or -1 (epoll_ctl). */
int nim_source_watch(nim_source *s, int fd, int events);
void nim_source_due(nim_source *s, double at); /* monotonic seconds (clock.h); < 0: none */
/* Operations of the source still pending: counted in what nim_engine_step returns, so a
 * blocking wait or a host knows there is work although no HTTP transfer runs. */
void nim_source_busy(nim_source *s, int n);
void nim_source_free(nim_source *s); /* stops watching; safe on NULL */

int nim_transfer_done(const nim_transfer *t);
nim_xfer_result nim_transfer_result(const nim_transfer *t);
long nim_transfer_status(const nim_transfer *t);
const char *nim_transfer_body(const nim_transfer *t, size_t *len);
const char *nim_transfer_error(const nim_transfer *t); /* libcurl's words, no secrets */
/* The value of an asked-for response header of the final response, or NULL. */
const char *nim_transfer_header(const nim_transfer *t, const char *name);
double nim_transfer_retry_after(const nim_transfer *t); /* seconds, or -1 if absent */
/* The answer's Content-Encoding when it is not identity (the engine decodes none), or NULL. */
const char *nim_transfer_coding(const nim_transfer *t);
double nim_transfer_seconds(const nim_transfer *t);
/* Detaches (cancelling if still running) and frees. Safe on NULL. */
void nim_transfer_free(nim_transfer *t);

#endif
