/* engine.c: the HTTP engine. One CURLM per engine gives connection reuse across calls; easy
 * handles are pooled; completions are collected after every socket action. */
#include "engine.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "curl_lazy.h"

#define EVENTS_MAX 64
/* epoll data of a source's socket: the fd with this bit; a curl socket's is the fd alone. */
#define SOURCE_TAG (1ull << 32)

/* A socket curl asked us to watch: found again through curl's socketp, never by search. */
typedef struct nim_sock {
    int fd, events;
    void *host; /* the host's own pointer for this fd (nim_engine_assign) */
    struct nim_sock *next, *prev;
} nim_sock;

/* Another protocol's socket and deadline on the same loop (engine.h). Few per engine (one per
 * Redis client), so finding one by fd is a walk of a short list. */
struct nim_source {
    nim_engine *engine;
    int fd, events; /* what is watched; fd -1: nothing */
    double due;     /* monotonic seconds; < 0: none */
    int busy;
    nim_source_fn on;
    void *ud;
    void *host; /* the host's own pointer for this fd (nim_engine_assign) */
    struct nim_source *next, *prev;
};

struct nim_transfer {
    nim_engine *engine;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char *resp;
    size_t resp_len, resp_cap, max_response;
    int done, too_large, deferred;
    int custom;        /* the easy handle has an option of its own (release_easy) */
    double not_before; /* deferred: added to the multi at this time */
    nim_xfer_result result;
    long status;
    double retry_after;
    char coding[32]; /* the answer's Content-Encoding other than identity, or "" */
    double seconds;
    size_t nwant;
    char want_name[NIM_ENGINE_MAX_WANT][64];
    char want_value[NIM_ENGINE_MAX_WANT][NIM_ENGINE_HEADER_MAX];
    char errbuf[CURL_ERROR_SIZE];
    nim_transfer *next, *prev; /* attached list */
};

struct nim_engine {
    CURLM *multi;
    int epfd;
    double timer_at; /* monotonic seconds when curl wants its timeout action; < 0: none */
    nim_watch_fn watch;
    nim_timer_fn timer;
    void *watch_ud;
    nim_sock *socks;
    nim_sock *announcing; /* the socket whose watch() call is under way (nim_engine_assign) */
    nim_source *announcing_src;
    nim_source *sources;
    int busy;    /* the sources' pending operations, summed */
    CURL **pool; /* easy handles kept for reuse: as many as connections may be open */
    int npool, pool_cap;
    int running; /* attached and not done, deferred ones included */
    int deferred;
    long max_connections;
    nim_transfer *attached;
    int reset_each; /* reset every easy handle between transfers (release_easy) */
};

static double earliest(double a, double b) { return a < 0 ? b : (b < 0 || a < b) ? a : b; }

/* The earliest due time of a source; < 0: none. */
static double sources_due(const nim_engine *e) {
    double due = -1;
    for (const nim_source *s = e->sources; s; s = s->next)
        due = earliest(due, s->due);
    return due;
}

/* The earliest moment something must happen without socket activity: curl's timer, a
 * deferred start or a source's deadline. < 0: none. */
static double next_due(const nim_engine *e) {
    double due = e->timer_at;
    if (e->deferred)
        for (const nim_transfer *t = e->attached; t; t = t->next)
            if (t->deferred) due = earliest(due, t->not_before);
    return earliest(due, sources_due(e));
}

/* Tells a host's loop when to call back (the earliest of curl's timer and deferred starts). */
static void arm_host_timer(nim_engine *e) {
    if (!e->timer) return;
    double due = next_due(e);
    if (due < 0) {
        e->timer(e->watch_ud, -1);
        return;
    }
    double ms = ceil((due - nim_now()) * 1000.0);
    e->timer(e->watch_ud, ms > 0 ? (long)ms : 0);
}

const char *nim_engine_backend(void) {
    if (nim_curl_load(NULL, 0) != 0) return "libcurl/none";
    return nim_curl_version();
}

static int epoll_events(int events) {
    return ((events & NIM_WATCH_IN) ? EPOLLIN : 0) | ((events & NIM_WATCH_OUT) ? EPOLLOUT : 0);
}

/* CURLMOPT_SOCKETFUNCTION: keeps the epoll set and the host's watchers in step with curl. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *socketp) {
    (void)easy;
    nim_engine *e = ud;
    nim_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (!s) return 0;
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        if (e->watch) e->watch(e->watch_ud, s->fd, 0, s->host);
        if (s->prev)
            s->prev->next = s->next;
        else
            e->socks = s->next;
        if (s->next) s->next->prev = s->prev;
        curl_multi_assign(e->multi, fd, NULL);
        free(s);
        return 0;
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= NIM_WATCH_IN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= NIM_WATCH_OUT;
    struct epoll_event ev = {.events = (uint32_t)epoll_events(events),
                             .data.u64 = (uint64_t)(uint32_t)fd};
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return -1; /* curl fails the transfer: out of memory */
        s->fd = (int)fd;
        s->next = e->socks;
        if (e->socks) e->socks->prev = s;
        e->socks = s;
        curl_multi_assign(e->multi, fd, s);
        epoll_ctl(e->epfd, EPOLL_CTL_ADD, s->fd, &ev);
    } else {
        epoll_ctl(e->epfd, EPOLL_CTL_MOD, s->fd, &ev);
    }
    s->events = events;
    if (e->watch) {
        e->announcing = s;
        e->watch(e->watch_ud, s->fd, events, s->host);
        e->announcing = NULL;
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: remembered for blocking waits, passed on to a host's loop. */
static int on_timer(CURLM *multi, long timeout_ms, void *ud) {
    (void)multi;
    nim_engine *e = ud;
    e->timer_at = timeout_ms < 0 ? -1 : nim_now() + (double)timeout_ms / 1000.0;
    arm_host_timer(e);
    return 0;
}

long nim_engine_default_max_connections(void) {
    struct rlimit r;
    long n = 512;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY) n = (long)r.rlim_cur / 2;
    return n < 16 ? 16 : (n > 1024 ? 1024 : n);
}

void nim_engine_set_max_connections(nim_engine *e, long n) {
    if (n < 1 || n == e->max_connections) return;
    if (n > e->pool_cap) { /* room to keep as many easy handles as connections */
        CURL **p = realloc(e->pool, (size_t)n * sizeof *p);
        if (p) {
            e->pool = p;
            e->pool_cap = (int)n;
        }
    }
    e->max_connections = n;
    curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n);
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, n);
}

nim_engine *nim_engine_new(char *err, size_t errlen) {
    if (nim_curl_load(err, errlen) != 0) return NULL;
    nim_engine *e = calloc(1, sizeof *e);
    if (!e) goto oom;
    e->timer_at = -1;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        snprintf(err, errlen, "engine: epoll_create1: %s", strerror(errno));
        free(e);
        return NULL;
    }
    e->multi = curl_multi_init();
    if (!e->multi) {
        close(e->epfd);
        free(e);
        goto oom;
    }
    nim_engine_set_max_connections(e, nim_engine_default_max_connections());
    e->reset_each = curl_version_info(CURLVERSION_NOW)->version_num < 0x081100; /* 8.17.0 */
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    return e;
oom:
    snprintf(err, errlen, "engine: out of memory");
    return NULL;
}

/* What every transfer of this engine sets alike: set once per easy handle, when it is made
 * (or after a reset), not again for each transfer that reuses it. */
static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud);
static size_t on_header(char *line, size_t size, size_t nmemb, void *ud);
static void base_options(CURL *easy) {
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    /* No CURLOPT_ACCEPT_ENCODING: prepare() asks for identity, and says why. */
}

static CURL *new_easy(void) {
    CURL *easy = curl_easy_init();
    if (easy) base_options(easy);
    return easy;
}

/* Back to the pool. A handle is reset first when it had an option of its own (a CA
 * bundle), or always when libcurl keeps state across transfers that only a reset clears:
 * before 8.17.0 its count of retries on dead reused connections (a handle whose count
 * reached 5 fails the next such retry, "Connection died, tried 5 times"; curl commit
 * 5e46318414). Otherwise every per-transfer option is set by each transfer (set_options). */
static void release_easy(nim_engine *e, CURL *easy, int custom) {
    if (!easy) return;
    if (e && e->npool < e->pool_cap) {
        if (custom || e->reset_each) {
            curl_easy_reset(easy);
            base_options(easy);
        } else { /* no pointer into the finished transfer stays behind */
            curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
            curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, NULL);
            curl_easy_setopt(easy, CURLOPT_WRITEDATA, NULL);
            curl_easy_setopt(easy, CURLOPT_HEADERDATA, NULL);
            curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        }
        e->pool[e->npool++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

static void detach(nim_transfer *t) {
    nim_engine *e = t->engine;
    if (!e) return;
    if (t->easy) {
        if (!t->deferred) curl_multi_remove_handle(e->multi, t->easy);
        release_easy(e, t->easy, t->custom);
        t->easy = NULL;
    }
    if (t->deferred) {
        t->deferred = 0;
        e->deferred--;
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
    e->watch = NULL; /* what the engine itself closes is not announced (see nimrank.h) */
    e->timer = NULL;
    while (e->sources) { /* each owner lets go of its source; one that does not is freed */
        nim_source *s = e->sources;
        s->on(s->ud, NIM_SOURCE_GONE);
        if (e->sources == s) nim_source_free(s);
    }
    while (e->attached) {
        nim_transfer *t = e->attached;
        if (!t->done) {
            t->done = 1;
            t->result = NIM_XFER_CANCELLED;
            e->running--;
        }
        detach(t);
    }
    for (int i = 0; i < e->npool; i++)
        curl_easy_cleanup(e->pool[i]);
    free(e->pool);
    curl_multi_cleanup(e->multi);
    while (e->socks) { /* sockets curl did not report removed while cleaning up */
        nim_sock *s = e->socks;
        e->socks = s->next;
        free(s);
    }
    close(e->epfd);
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
        size_t cap = t->resp_cap ? t->resp_cap : 2048; /* most answers are small */
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

/* Retry-After (RFC 9110): delay-seconds (1*DIGIT) or an HTTP-date; anything else (a sign,
 * a fraction, hex, "inf", 1e999) is ignored. Capped at a day: the router decides whether it
 * waits that long. */
#define RETRY_AFTER_MAX 86400.0
static void parse_retry_after(nim_transfer *t, const char *v) {
    if (*v >= '0' && *v <= '9') {
        double s = 0;
        for (; *v >= '0' && *v <= '9'; v++)
            if ((s = s * 10 + (*v - '0')) > RETRY_AFTER_MAX) s = RETRY_AFTER_MAX;
        if (*v == '\0') t->retry_after = s;
        return;
    }
    time_t when = curl_getdate(v, NULL);
    if (when != -1) {
        double d = difftime(when, time(NULL));
        t->retry_after = d <= 0 ? 0 : (d > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : d);
    }
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud) {
    nim_transfer *t = ud;
    size_t n = size * nmemb;
    char v[NIM_ENGINE_HEADER_MAX];
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new response (e.g. after 100) */
        t->retry_after = -1;
        t->coding[0] = '\0';
        for (size_t i = 0; i < t->nwant; i++)
            t->want_value[i][0] = '\0';
        return n;
    }
    if (header_value(line, n, "Content-Encoding", v, sizeof v)) {
        if (strcasecmp(v, "identity") != 0) snprintf(t->coding, sizeof t->coding, "%.31s", v);
        return n;
    }
    if (header_value(line, n, "Retry-After", v, sizeof v)) {
        parse_retry_after(t, v);
        return n;
    }
    for (size_t i = 0; i < t->nwant; i++)
        if (header_value(line, n, t->want_name[i], t->want_value[i], sizeof t->want_value[i]))
            break;
    return n;
}

/* Fills the header list (the caller's lines plus "Expect:") and the asked-for names. */
static int prepare(nim_transfer *t, const nim_request *r, char *err, size_t errlen) {
    for (size_t i = 0; i < r->nheaders; i++) {
        struct curl_slist *h = curl_slist_append(t->headers, r->headers[i]);
        if (!h) goto oom;
        t->headers = h;
    }
    /* No compressed answers (an answer is a fraction of its request, and decoding costs
     * libcurl ~8,000 instructions a transfer, compressed or not): said explicitly, so a
     * server may not choose a coding itself (RFC 9110 12.5.3). A caller's own wins. */
    int own_coding = 0;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strncasecmp(r->headers[i], "Accept-Encoding:", 16) == 0) own_coding = 1;
    if (!own_coding) {
        struct curl_slist *ae = curl_slist_append(t->headers, "Accept-Encoding: identity");
        if (!ae) goto oom;
        t->headers = ae;
    }
    /* Without "Expect:" libcurl waits up to a second for "100 Continue" on large bodies. */
    struct curl_slist *h = curl_slist_append(t->headers, "Expect:");
    if (!h) goto oom;
    t->headers = h;
    if (r->nwant > NIM_ENGINE_MAX_WANT) {
        snprintf(err, errlen, "engine: at most %d response headers can be kept",
                 NIM_ENGINE_MAX_WANT);
        return -1;
    }
    for (size_t i = 0; i < r->nwant; i++)
        snprintf(t->want_name[i], sizeof t->want_name[i], "%s", r->want_headers[i]);
    t->nwant = r->nwant;
    return 0;
oom:
    snprintf(err, errlen, "engine: out of memory");
    return -1;
}

/* A transfer's own options. Each is set on every transfer, to its value or to libcurl's
 * default, so nothing carries over from the handle's last transfer; base_options holds the
 * rest. */
static void set_options(CURL *easy, nim_transfer *t, const nim_request *r) {
    curl_easy_setopt(easy, CURLOPT_URL, r->url);
    if (r->get) {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t->body ? t->body : "");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->errbuf);
    if (r->ca_bundle) {
        curl_easy_setopt(easy, CURLOPT_CAINFO, r->ca_bundle);
        t->custom = 1; /* reset before the handle's next transfer (release_easy) */
    }
    /* libcurl 7.88 runs a 1 ms limit as 200 ms (measured): 2 ms is the least it keeps.
     * 0 is libcurl's default: no total limit, its own connect limit. */
    long total = r->timeout_ms > 0 ? (r->timeout_ms < 2 ? 2L : r->timeout_ms) : 0L;
    long connect =
        r->connect_timeout_ms > 0 ? (r->connect_timeout_ms < 2 ? 2L : r->connect_timeout_ms) : 0L;
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, total);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, connect);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
}

nim_transfer *nim_engine_start(nim_engine *e, nim_request *r, char *err, size_t errlen) {
    nim_transfer *t = calloc(1, sizeof *t);
    if (!t) {
        free(r->body);
        r->body = NULL;
        snprintf(err, errlen, "engine: out of memory");
        return NULL;
    }
    t->body = r->body; /* ours from here, whatever happens */
    r->body = NULL;
    t->max_response = r->max_response ? r->max_response : NIM_ENGINE_MAX_RESPONSE;
    t->retry_after = -1;
    if (prepare(t, r, err, errlen) != 0) {
        nim_transfer_free(t);
        return NULL;
    }
    CURL *easy = e->npool ? e->pool[--e->npool] : new_easy();
    if (!easy) {
        snprintf(err, errlen, "engine: out of memory");
        nim_transfer_free(t);
        return NULL;
    }
    set_options(easy, t, r);
    if (r->not_before > nim_now()) { /* added to the multi when its time comes */
        t->deferred = 1;
        t->not_before = r->not_before;
        e->deferred++;
    } else {
        CURLMcode mc = curl_multi_add_handle(e->multi, easy);
        if (mc != CURLM_OK) {
            snprintf(err, errlen, "engine: %s", curl_multi_strerror(mc));
            curl_easy_cleanup(easy);
            nim_transfer_free(t);
            return NULL;
        }
    }
    t->engine = e;
    t->easy = easy;
    t->next = e->attached;
    if (e->attached) e->attached->prev = t;
    e->attached = t;
    e->running++;
    if (t->deferred) arm_host_timer(e);
    return t;
}

static nim_xfer_result classify(CURLcode rc, int too_large, const char *errbuf) {
    if (too_large) return NIM_XFER_TOO_LARGE;
    switch (rc) {
    case CURLE_OK: return NIM_XFER_OK;
    case CURLE_OUT_OF_MEMORY: /* what libcurl 7.88 returns for a header over its 100 KB */
        return NIM_XFER_HEADERS_TOO_LARGE;
    case CURLE_RECV_ERROR: /* and for headers over 300 KB in all: said only in its message */
        return strstr(errbuf, "Too large response headers") ? NIM_XFER_HEADERS_TOO_LARGE
                                                            : NIM_XFER_CONNECTION;
    case CURLE_OPERATION_TIMEDOUT: return NIM_XFER_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
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
        if (rc != CURLE_OK && !t->errbuf[0])
            snprintf(t->errbuf, sizeof t->errbuf, "%s", curl_easy_strerror(rc));
        t->result = classify(rc, t->too_large, t->errbuf);
        t->done = 1;
        e->running--;
        /* The easy handle goes back to the pool now: its connection stays in the multi. */
        curl_multi_remove_handle(e->multi, t->easy);
        release_easy(e, t->easy, t->custom);
        t->easy = NULL;
    }
}

static int act(nim_engine *e, curl_socket_t fd, int mask) {
    int still;
    return curl_multi_socket_action(e->multi, fd, mask, &still) == CURLM_OK ? 0 : -1;
}

/* Adds the deferred transfers whose time has come. */
static int start_due(nim_engine *e) {
    if (!e->deferred) return 0;
    double now = nim_now();
    for (nim_transfer *t = e->attached; t; t = t->next) {
        if (!t->deferred || t->not_before > now) continue;
        t->deferred = 0;
        e->deferred--;
        if (curl_multi_add_handle(e->multi, t->easy) != CURLM_OK) return -1;
    }
    return 0;
}

/* Finds the source watching fd. */
static nim_source *source_of(const nim_engine *e, int fd) {
    for (nim_source *s = e->sources; s; s = s->next)
        if (s->fd == fd) return s;
    return NULL;
}

/* epoll's report for a source's socket: an error or hang-up wakes what it watches, so the
 * owner's read or write finds out what happened. */
static void source_ready(nim_engine *e, int fd, uint32_t r) {
    nim_source *s = source_of(e, fd);
    if (!s) return; /* stopped watching earlier in this batch */
    int events = ((r & EPOLLIN) ? NIM_WATCH_IN : 0) | ((r & EPOLLOUT) ? NIM_WATCH_OUT : 0);
    if (r & (EPOLLERR | EPOLLHUP)) events |= s->events;
    events &= s->events;
    if (events) s->on(s->ud, events);
}

/* Calls on() of every source whose time has come. A source may re-arm or free itself from
 * on(), so the list is walked afresh each time; each is due at most once per call. */
static void run_due_sources(nim_engine *e) {
    double now = nim_now();
    int n = 0;
    for (nim_source *s = e->sources; s; s = s->next)
        n++;
    while (n-- > 0) {
        nim_source *s = e->sources;
        while (s && !(s->due >= 0 && s->due <= now))
            s = s->next;
        if (!s) return;
        s->due = -1;
        s->on(s->ud, NIM_SOURCE_DUE);
    }
}

int nim_engine_step(nim_engine *e, int timeout_ms) {
    if (e->running == 0 && !e->sources) return 0;
    if (start_due(e) != 0) return -1;
    /* With nothing pending, what is ready (an idle source's hang-up) is handled, not waited for.
     * A source's deadline counts as pending. */
    int idle = e->running == 0 && e->busy == 0 && sources_due(e) < 0;
    int wait = timeout_ms < 0 || idle ? 0 : timeout_ms;
    double due = next_due(e);
    if (due >= 0) {
        double left_ms = ceil((due - nim_now()) * 1000.0);
        if (left_ms < wait) wait = left_ms > 0 ? (int)left_ms : 0;
    }
    struct epoll_event ev[EVENTS_MAX];
    int n = epoll_wait(e->epfd, ev, EVENTS_MAX, wait);
    if (n < 0 && errno != EINTR) return -1;
    for (int i = 0; i < n; i++) {
        uint32_t r = ev[i].events;
        if (ev[i].data.u64 & SOURCE_TAG) {
            source_ready(e, (int)(uint32_t)ev[i].data.u64, r);
            continue;
        }
        int mask = ((r & (EPOLLIN | EPOLLHUP)) ? CURL_CSELECT_IN : 0) |
                   ((r & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                   ((r & EPOLLERR) ? CURL_CSELECT_ERR : 0);
        if (act(e, (curl_socket_t)(uint32_t)ev[i].data.u64, mask) != 0) return -1;
    }
    if (e->timer_at >= 0 && nim_now() >= e->timer_at) {
        e->timer_at = -1; /* curl sets the next one from inside the action */
        if (act(e, CURL_SOCKET_TIMEOUT, 0) != 0) return -1;
    }
    run_due_sources(e);
    if (start_due(e) != 0) return -1;
    complete_finished(e);
    return e->running + e->busy;
}

int nim_engine_running(const nim_engine *e) { return e->running + e->busy; }

void nim_engine_set_watchers(nim_engine *e, nim_watch_fn watch, nim_timer_fn timer, void *ud) {
    e->watch = watch;
    e->timer = timer;
    e->watch_ud = ud;
    /* Sockets already open are announced, so a host may join at any time. */
    for (nim_sock *s = e->socks; s && watch; s = s->next)
        watch(ud, s->fd, s->events, s->host);
    for (nim_source *s = e->sources; s && watch; s = s->next)
        if (s->fd >= 0) watch(ud, s->fd, s->events, s->host);
    if (timer && next_due(e) >= 0) arm_host_timer(e);
}

int nim_engine_assign(nim_engine *e, int fd, void *socketp) {
    if (e->announcing && e->announcing->fd == fd) { /* from inside watch(): the usual case */
        e->announcing->host = socketp;
        return 0;
    }
    if (e->announcing_src && e->announcing_src->fd == fd) {
        e->announcing_src->host = socketp;
        return 0;
    }
    for (nim_sock *s = e->socks; s; s = s->next) {
        if (s->fd == fd) {
            s->host = socketp;
            return 0;
        }
    }
    nim_source *src = fd >= 0 ? source_of(e, fd) : NULL;
    if (!src) return -1;
    src->host = socketp;
    return 0;
}

int nim_engine_socket_action(nim_engine *e, int fd, int events) {
    nim_source *src = fd >= 0 ? source_of(e, fd) : NULL;
    if (src) {
        events &= src->events;
        if (events) src->on(src->ud, events);
        return e->running + e->busy;
    }
    int mask = 0;
    if (events & NIM_WATCH_IN) mask |= CURL_CSELECT_IN;
    if (events & NIM_WATCH_OUT) mask |= CURL_CSELECT_OUT;
    if (fd < 0) { /* the host's timer fired: deferred starts, then curl's timeout action */
        if (start_due(e) != 0) return -1;
        e->timer_at = -1; /* curl re-arms it if needed */
    }
    if (act(e, fd < 0 ? CURL_SOCKET_TIMEOUT : (curl_socket_t)fd, mask) != 0) return -1;
    if (fd < 0) run_due_sources(e);
    complete_finished(e);
    if (fd < 0 && (e->deferred || e->sources)) arm_host_timer(e);
    return e->running + e->busy;
}

/* curl's own timer counts only while a transfer runs (it also keeps one for idle connections,
 * which must not wake a host); a source's deadline always counts. */
long nim_engine_timeout(nim_engine *e) {
    double due = e->running ? next_due(e) : sources_due(e);
    if (due < 0) return -1;
    double left = ceil((due - nim_now()) * 1000.0);
    return left > 0 ? (long)left : 0;
}

int nim_engine_fd(const nim_engine *e) { return e->epfd; }

int nim_transfer_done(const nim_transfer *t) { return t->done; }
nim_xfer_result nim_transfer_result(const nim_transfer *t) { return t->result; }
long nim_transfer_status(const nim_transfer *t) { return t->status; }
double nim_transfer_retry_after(const nim_transfer *t) { return t->retry_after; }
double nim_transfer_seconds(const nim_transfer *t) { return t->seconds; }
const char *nim_transfer_error(const nim_transfer *t) { return t->errbuf; }

const char *nim_transfer_coding(const nim_transfer *t) { return t->coding[0] ? t->coding : NULL; }

const char *nim_transfer_header(const nim_transfer *t, const char *name) {
    for (size_t i = 0; i < t->nwant; i++)
        if (strcasecmp(t->want_name[i], name) == 0)
            return t->want_value[i][0] ? t->want_value[i] : NULL;
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
    if (t->headers) curl_slist_free_all(t->headers);
    free(t->body);
    free(t->resp);
    free(t);
}

/* ---- sources ------------------------------------------------------------------------------- */

nim_source *nim_source_new(nim_engine *e, nim_source_fn on, void *ud) {
    nim_source *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->engine = e;
    s->fd = -1;
    s->due = -1;
    s->on = on;
    s->ud = ud;
    s->next = e->sources;
    if (e->sources) e->sources->prev = s;
    e->sources = s;
    return s;
}

static void announce(nim_source *s) {
    nim_engine *e = s->engine;
    if (!e->watch) return;
    e->announcing_src = s;
    e->watch(e->watch_ud, s->fd, s->events, s->host);
    e->announcing_src = NULL;
}

int nim_source_watch(nim_source *s, int fd, int events) {
    nim_engine *e = s->engine;
    events &= NIM_WATCH_IN | NIM_WATCH_OUT;
    if (fd < 0 || !events) fd = -1, events = 0;
    if (s->fd >= 0 && s->fd != fd) { /* the old socket first: it is about to be closed */
        epoll_ctl(e->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        int old = s->fd;
        s->fd = -1;
        s->events = 0;
        if (e->watch) e->watch(e->watch_ud, old, 0, s->host);
        s->host = NULL;
    }
    if (fd < 0 || (fd == s->fd && events == s->events)) return 0;
    struct epoll_event ev = {.events = (uint32_t)epoll_events(events),
                             .data.u64 = SOURCE_TAG | (uint32_t)fd};
    if (epoll_ctl(e->epfd, s->fd < 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0) return -1;
    s->fd = fd;
    s->events = events;
    announce(s);
    return 0;
}

void nim_source_due(nim_source *s, double at) {
    if (at < 0) at = -1;
    if (at == s->due) return;
    s->due = at;
    arm_host_timer(s->engine);
}

void nim_source_busy(nim_source *s, int n) {
    s->engine->busy += n - s->busy;
    s->busy = n;
}

void nim_source_free(nim_source *s) {
    if (!s) return;
    nim_engine *e = s->engine;
    nim_source_watch(s, -1, 0);
    nim_source_busy(s, 0);
    if (s->prev)
        s->prev->next = s->next;
    else
        e->sources = s->next;
    if (s->next) s->next->prev = s->prev;
    double due = s->due;
    free(s);
    if (due >= 0) arm_host_timer(e);
}
