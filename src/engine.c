/* engine.c: libcurl multi engine. One CURLM per engine gives connection reuse across calls;
 * easy handles are pooled; completions are reported from nim_engine_step only. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>
#include <time.h>

#define POOL_MAX 16
#define REQID_MAX 128

struct nim_transfer {
    nim_engine *engine;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char *resp;
    size_t resp_len, resp_cap, max_response;
    int done, too_large;
    nim_xfer_result result;
    long status;
    double retry_after;
    double seconds;
    char reqid[REQID_MAX];
    char errbuf[CURL_ERROR_SIZE];
    nim_done_fn on_done;
    void *ud;
    nim_transfer *next, *prev; /* attached list */
};

struct nim_engine {
    CURLM *multi;
    nim_watch_fn watch;
    nim_timer_fn timer;
    void *watch_ud;
    CURL *pool[POOL_MAX];
    int npool;
    int running;
    nim_transfer *attached;
};

nim_engine *nim_engine_new(void) {
    nim_engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->multi = curl_multi_init();
    if (!e->multi) {
        free(e);
        return NULL;
    }
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, 64L);
    return e;
}

static void release_easy(nim_engine *e, CURL *easy) {
    if (!easy) return;
    if (e && e->npool < POOL_MAX) {
        curl_easy_reset(easy);
        e->pool[e->npool++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

static void detach(nim_transfer *t) {
    nim_engine *e = t->engine;
    if (!e) return;
    if (t->easy) {
        curl_multi_remove_handle(e->multi, t->easy);
        release_easy(e, t->easy);
        t->easy = NULL;
    }
    if (t->prev)
        t->prev->next = t->next;
    else
        e->attached = t->next;
    if (t->next) t->next->prev = t->prev;
    t->next = t->prev = NULL;
    t->engine = NULL;
}

void nim_engine_free(nim_engine *e) {
    if (!e) return;
    while (e->attached) {
        nim_transfer *t = e->attached;
        if (!t->done) {
            t->done = 1;
            t->result = NIM_XFER_CANCELLED;
        }
        detach(t);
    }
    for (int i = 0; i < e->npool; i++)
        curl_easy_cleanup(e->pool[i]);
    curl_multi_cleanup(e->multi);
    free(e);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud) {
    nim_transfer *t = ud;
    size_t n = size * nmemb;
    if (t->resp_len + n > t->max_response) {
        t->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (t->resp_len + n + 1 > t->resp_cap) {
        size_t cap = t->resp_cap ? t->resp_cap : 16384;
        while (cap < t->resp_len + n + 1)
            cap *= 2;
        char *p = realloc(t->resp, cap);
        if (!p) return 0;
        t->resp = p;
        t->resp_cap = cap;
    }
    memcpy(t->resp + t->resp_len, ptr, n);
    t->resp_len += n;
    t->resp[t->resp_len] = '\0';
    return n;
}

/* Copies the value of header `name` (case-insensitive) into out, trimmed. */
static int header_value(const char *line, size_t n, const char *name, char *out, size_t cap) {
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':') return 0;
    const char *v = line + k + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t len = (size_t)(end - v);
    if (len >= cap) len = cap - 1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 1;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud) {
    nim_transfer *t = ud;
    size_t n = size * nmemb;
    char v[REQID_MAX];
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new response (e.g. after 100) */
        t->retry_after = -1;
        t->reqid[0] = '\0';
    } else if (header_value(line, n, "Retry-After", v, sizeof v)) {
        char *endp;
        double s = strtod(v, &endp);
        if (endp != v && *endp == '\0' && s >= 0) {
            t->retry_after = s;
        } else { /* an HTTP-date */
            time_t when = curl_getdate(v, NULL);
            if (when != -1) {
                double d = difftime(when, time(NULL));
                t->retry_after = d > 0 ? d : 0;
            }
        }
    } else if (header_value(line, n, "NVCF-REQID", v, sizeof v)) {
        memcpy(t->reqid, v, sizeof t->reqid);
    }
    return n;
}

nim_transfer *nim_engine_start(nim_engine *e, nim_post *p, char *err, size_t errlen) {
    nim_transfer *t = calloc(1, sizeof *t);
    CURL *easy = NULL;
    if (!t) goto oom;
    easy = e->npool ? e->pool[--e->npool] : curl_easy_init();
    if (!easy) goto oom;
    t->engine = e;
    t->easy = easy;
    /* Without "Expect:" libcurl waits up to a second for "100 Continue" on large bodies. */
    t->headers = curl_slist_append(p->headers, "Expect:");
    if (!t->headers) t->headers = p->headers;
    t->body = p->body;
    t->max_response = p->max_response ? p->max_response : NIM_ENGINE_MAX_RESPONSE;
    t->retry_after = -1;
    t->on_done = p->on_done;
    t->ud = p->ud;
    p->headers = NULL;
    p->body = NULL;

    curl_easy_setopt(easy, CURLOPT_URL, p->url);
    if (p->get) {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t->body ? t->body : "");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->body_len);
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, ""); /* gzip/deflate if the server likes */
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    if (p->ca_bundle) curl_easy_setopt(easy, CURLOPT_CAINFO, p->ca_bundle);
    if (p->timeout_ms > 0) curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, p->timeout_ms);
    if (p->connect_timeout_ms > 0)
        curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, p->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);

    CURLMcode mc = curl_multi_add_handle(e->multi, easy);
    if (mc != CURLM_OK) {
        snprintf(err, errlen, "engine: %s", curl_multi_strerror(mc));
        t->engine = NULL;
        curl_easy_cleanup(easy);
        t->easy = NULL;
        nim_transfer_free(t);
        return NULL;
    }
    t->next = e->attached;
    if (e->attached) e->attached->prev = t;
    e->attached = t;
    e->running++;
    return t;
oom:
    if (t) {
        t->headers = p->headers;
        t->body = p->body;
        p->headers = NULL;
        p->body = NULL;
        nim_transfer_free(t);
    } else {
        curl_slist_free_all(p->headers);
        free(p->body);
        p->headers = NULL;
        p->body = NULL;
    }
    snprintf(err, errlen, "engine: out of memory");
    return NULL;
}

static nim_xfer_result classify(CURLcode rc, int too_large) {
    if (too_large) return NIM_XFER_TOO_LARGE;
    switch (rc) {
    case CURLE_OK: return NIM_XFER_OK;
    case CURLE_OPERATION_TIMEDOUT: return NIM_XFER_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY: return NIM_XFER_CONNECTION;
    default: return NIM_XFER_OTHER;
    }
}

static void complete_finished(nim_engine *e) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(e->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        nim_transfer *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (!t || t->done) continue;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
        curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &t->seconds);
        t->result = classify(rc, t->too_large);
        if (rc != CURLE_OK && !t->errbuf[0])
            snprintf(t->errbuf, sizeof t->errbuf, "%s", curl_easy_strerror(rc));
        t->done = 1;
        e->running--;
        /* The easy handle goes back to the pool now: its connection stays in the multi. */
        curl_multi_remove_handle(e->multi, t->easy);
        release_easy(e, t->easy);
        t->easy = NULL;
        if (t->on_done) t->on_done(t, t->ud);
    }
}

int nim_engine_step(nim_engine *e, int timeout_ms) {
    int still;
    if (e->watch && timeout_ms == 0) { /* the host's loop moves the sockets */
        complete_finished(e);
        return e->running;
    }
    if (curl_multi_perform(e->multi, &still) != CURLM_OK) return -1;
    complete_finished(e);
    if (e->running > 0 && timeout_ms != 0) {
        if (curl_multi_poll(e->multi, NULL, 0, timeout_ms, NULL) != CURLM_OK) return -1;
        if (curl_multi_perform(e->multi, &still) != CURLM_OK) return -1;
        complete_finished(e);
    }
    return e->running;
}

int nim_engine_running(const nim_engine *e) { return e->running; }
int nim_transfer_done(const nim_transfer *t) { return t->done; }
nim_xfer_result nim_transfer_result(const nim_transfer *t) { return t->result; }
long nim_transfer_status(const nim_transfer *t) { return t->status; }
double nim_transfer_retry_after(const nim_transfer *t) { return t->retry_after; }
double nim_transfer_seconds(const nim_transfer *t) { return t->seconds; }
const char *nim_transfer_error(const nim_transfer *t) { return t->errbuf; }

const char *nim_transfer_header(const nim_transfer *t, const char *name) {
    if (strcasecmp(name, "NVCF-REQID") == 0) return t->reqid[0] ? t->reqid : NULL;
    return NULL;
}

const char *nim_transfer_body(const nim_transfer *t, size_t *len) {
    if (len) *len = t->resp_len;
    return t->resp ? t->resp : "";
}

void nim_transfer_free(nim_transfer *t) {
    if (!t) return;
    if (t->engine) {
        if (!t->done) t->engine->running--;
        detach(t);
    }
    curl_slist_free_all(t->headers);
    free(t->body);
    free(t->resp);
    free(t);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *socketp) {
    (void)easy;
    (void)socketp;
    nim_engine *e = ud;
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= NIM_WATCH_IN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= NIM_WATCH_OUT;
    e->watch(e->watch_ud, (int)fd, events); /* CURL_POLL_REMOVE: events 0 */
    return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *ud) {
    (void)multi;
    nim_engine *e = ud;
    e->timer(e->watch_ud, timeout_ms);
    return 0;
}

void nim_engine_set_watchers(nim_engine *e, nim_watch_fn watch, nim_timer_fn timer, void *ud) {
    e->watch = watch;
    e->timer = timer;
    e->watch_ud = ud;
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, watch ? on_socket : NULL);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer ? on_timer : NULL);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
}

int nim_engine_socket_action(nim_engine *e, int fd, int events) {
    int running, mask = 0;
    if (events & NIM_WATCH_IN) mask |= CURL_CSELECT_IN;
    if (events & NIM_WATCH_OUT) mask |= CURL_CSELECT_OUT;
    if (curl_multi_socket_action(e->multi, fd < 0 ? CURL_SOCKET_TIMEOUT : (curl_socket_t)fd, mask,
                                 &running) != CURLM_OK)
        return -1;
    complete_finished(e);
    return e->running;
}

long nim_engine_timeout(nim_engine *e) {
    long ms = -1;
    if (e->running == 0) return -1;
    if (curl_multi_timeout(e->multi, &ms) != CURLM_OK) return 0;
    return ms;
}

int nim_engine_fds(nim_engine *e, int *fds, int *events, int max) {
    fd_set r, w, x;
    int maxfd = -1, n = 0;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&x);
    if (curl_multi_fdset(e->multi, &r, &w, &x, &maxfd) != CURLM_OK) return 0;
    for (int fd = 0; fd <= maxfd && n < max; fd++) {
        int ev = (FD_ISSET(fd, &r) ? NIM_WATCH_IN : 0) | (FD_ISSET(fd, &w) ? NIM_WATCH_OUT : 0);
        if (!ev) continue;
        fds[n] = fd;
        events[n++] = ev;
    }
    return n;
}
