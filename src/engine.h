/* engine.h: one libcurl multi handle moving HTTP POSTs. Knows nothing of NIM or Lua.
 * A blocking call is nim_engine_start + nim_engine_step until nim_transfer_done. */
#ifndef NIM_ENGINE_H
#define NIM_ENGINE_H

#include <stddef.h>
#include "curl_lazy.h"

typedef struct nim_engine nim_engine;
typedef struct nim_transfer nim_transfer;

/* Called from nim_engine_step (never from inside a libcurl callback) when a transfer ends. */
typedef void (*nim_done_fn)(nim_transfer *t, void *ud);

typedef struct {
    const char *url;
    int get;                    /* a GET (NVCF status polls) instead of a POST of body */
    struct curl_slist *headers; /* ownership passes to the transfer */
    char *body;                 /* malloc'ed; ownership passes to the transfer */
    size_t body_len;
    long timeout_ms;         /* total; 0 = none */
    long connect_timeout_ms; /* 0 = libcurl default */
    size_t max_response;     /* bytes; 0 = NIM_ENGINE_MAX_RESPONSE */
    const char *ca_bundle;   /* NULL = system store */
    nim_done_fn on_done;
    void *ud;
} nim_post;

#define NIM_ENGINE_MAX_RESPONSE (16u * 1024u * 1024u)

typedef enum {
    NIM_XFER_OK = 0,     /* an HTTP response arrived (any status) */
    NIM_XFER_TIMEOUT,    /* connect or total timeout */
    NIM_XFER_CONNECTION, /* resolve/connect/reset/TLS failure */
    NIM_XFER_TOO_LARGE,  /* response exceeded max_response */
    NIM_XFER_CANCELLED,
    NIM_XFER_OTHER
} nim_xfer_result;

nim_engine *nim_engine_new(void);
void nim_engine_free(nim_engine *e); /* cancels and frees every transfer still attached */

/* Starts a POST. Returns NULL with err filled (and headers/body freed) on failure. */
nim_transfer *nim_engine_start(nim_engine *e, nim_post *p, char *err, size_t errlen);

/* Moves every transfer; waits at most timeout_ms for activity (0 = never block).
 * Returns the number still running, or -1 on a multi-level error. */
int nim_engine_step(nim_engine *e, int timeout_ms);
int nim_engine_running(const nim_engine *e);

/* ---- driving the engine from someone else's event loop ---------------------------------
 * Socket style (curl's CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION): the engine says which sockets
 * to watch (events: NIM_WATCH_IN|OUT, or 0 to stop watching) and when to call back (ms; -1 =
 * no timer); the host calls nim_engine_socket_action on readiness (fd -1 when the timer fires).
 * Simple style: nim_engine_timeout and nim_engine_fds say what to wait for; then
 * nim_engine_step(e, 0). With external driving on, nim_engine_step(e, 0) only collects
 * completions; blocking waits (timeout_ms != 0) still drive the engine themselves. */
enum { NIM_WATCH_IN = 1, NIM_WATCH_OUT = 2 };
typedef void (*nim_watch_fn)(void *ud, int fd, int events);
typedef void (*nim_timer_fn)(void *ud, long timeout_ms);
void nim_engine_set_watchers(nim_engine *e, nim_watch_fn watch, nim_timer_fn timer, void *ud);
int nim_engine_socket_action(nim_engine *e, int fd, int events);
long nim_engine_timeout(nim_engine *e);
/* Fills fds (fd, events as NIM_WATCH_*) with up to max sockets; returns how many. */
int nim_engine_fds(nim_engine *e, int *fds, int *events, int max);

int nim_transfer_done(const nim_transfer *t);
nim_xfer_result nim_transfer_result(const nim_transfer *t);
long nim_transfer_status(const nim_transfer *t);
const char *nim_transfer_body(const nim_transfer *t, size_t *len);
const char *nim_transfer_error(const nim_transfer *t);  /* libcurl's words, no secrets */
double nim_transfer_retry_after(const nim_transfer *t); /* seconds, or -1 if absent */
const char *nim_transfer_header(const nim_transfer *t, const char *name); /* NVCF-REQID */
double nim_transfer_seconds(const nim_transfer *t);
/* Detaches (cancelling if still running) and frees. Safe on NULL. */
void nim_transfer_free(nim_transfer *t);

#endif
