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

int nim_transfer_done(const nim_transfer *t);
nim_xfer_result nim_transfer_result(const nim_transfer *t);
long nim_transfer_status(const nim_transfer *t);
const char *nim_transfer_body(const nim_transfer *t, size_t *len);
const char *nim_transfer_error(const nim_transfer *t); /* libcurl's words, no secrets */
double nim_transfer_retry_after(const nim_transfer *t); /* seconds, or -1 if absent */
const char *nim_transfer_header(const nim_transfer *t, const char *name); /* NVCF-REQID */
double nim_transfer_seconds(const nim_transfer *t);
/* Detaches (cancelling if still running) and frees. Safe on NULL. */
void nim_transfer_free(nim_transfer *t);

#endif
