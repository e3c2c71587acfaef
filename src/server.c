/* server.c: one worker of `nimrank serve`. One event loop (epoll) drives libmicrohttpd (in
 * its external epoll mode, connections suspended while their request waits) and the state's
 * engine; one lua_State; one nim task (a coroutine) per request, running
 * lua/nim/proxy.lua's handler, which yields while the upstream call is in flight, as
 * lua-nginx-module does.
 *
 * A request's life: MHD reads the request line (uri_started: the request is born, its clock
 * starts), the headers, the body (collected here, within the limit proxy.lua decides); then
 * proxy.dispatch(req) starts its task. A task that answers at once (health, auth, bad input)
 * has called respond() before dispatch returns and the answer is queued straight away;
 * otherwise the connection is suspended while the client hanging up is watched for (which
 * cancels the task, and with it the upstream transfer). respond() from the task later
 * stores the answer and resumes the connection; MHD calls back and it is queued.
 *
 * The hang-up watch is a connection's, not a request's: its socket joins the loop's epoll set
 * once, edge-triggered for EPOLLRDHUP, when it opens (two epoll_ctl calls a request fewer). A
 * hang-up while no request is suspended is remembered; one that came before a request is
 * suspended is reported again (EPOLL_CTL_MOD) when it is.
 *
 * Lua never sees a pointer: a request is a handle (slot index and generation), so an answer
 * for a request that is gone is refused, never written to freed memory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <microhttpd.h>

#include "binding.h"
#include "clock.h"
#include "lalloc.h"
#include "nimrank.h"
#include "serve.h"

/* Where a request is. */
enum { PH_HEAD, PH_BODY, PH_RUNNING, PH_SUSPENDED, PH_ANSWERED };

struct srv_conn;
typedef struct srv_req {
    struct MHD_Connection *conn;
    struct srv_conn *sc;         /* its connection's record (which outlives the request) */
    struct srv_req *prev, *next; /* the list of requests still being read (timeouts) */
    int phase;
    int fd;
    int too_large;
    const char *bad_head; /* why the head is refused (a static message), or NULL */
    uint32_t slot;
    double t0; /* the request line arrived */
    char *body;
    size_t len, cap;
    struct MHD_Response *resp;
    unsigned status;
} srv_req;

/* A connection: when it came or last finished a request, and the request it is on. */
typedef struct srv_conn {
    struct srv_conn *prev, *next;
    int fd;
    int watched;     /* the socket is in our epoll set, for hang-ups */
    int hup;         /* the client hung up (or shut its sending side) */
    unsigned served; /* requests answered on it */
    double t_mark;   /* accepted, or the last request finished */
    srv_req *cur;
} srv_conn;

typedef struct {
    srv_req *req;
    uint32_t gen;
    uint32_t next_free;
} slot_t;

typedef struct {
    lua_State *L;
    const nim_serve_opts *o;
    struct MHD_Daemon *d;
    int ep, sigfd, engine_fd, listen_fd;
    nim_board *board;
    int worker;
    slot_t *slots;
    uint32_t nslots, free_head;
    srv_req reading; /* list head */
    srv_conn conns;  /* list head: every open connection */
    size_t inflight; /* requests whose body is complete and answer not yet sent */
    size_t live;     /* requests alive at all (for draining) */
    size_t max_body;
    int draining;
    int dispatched; /* a task started this turn: its transfer goes out in the same turn */
    int resumed;    /* a connection was resumed: MHD runs again this turn, to send its answer */
    double drain_deadline;
    int ref_dispatch, ref_cancel, ref_reload, ref_tick, ref_precheck;
    int ref_traceback;
} server;

static server *S; /* one per process: signal-free code reaches it from MHD's callbacks */

#define TAG_MHD 1u
#define TAG_ENGINE 2u
#define TAG_SIGNAL 3u
#define TAG_CLIENT (1ull << 63) /* | its srv_conn: a connection's socket, for hang-ups */

/* ---- logging: one JSON object a line; request lines come from Lua, already JSON -------------
 * Lines are gathered and written once a loop turn, in pieces of whole lines up to PIPE_BUF
 * bytes, so the lines of several workers sharing a pipe never interleave mid-line. */
static int log_fd = 2;
static int log_min = NIM_LOG_INFO;
static char *logbuf;
static size_t loglen, logcap;
static const char *const LEVELS[] = {"debug", "info", "warn", "error"};

static void log_flush(void) {
    size_t off = 0;
    while (off < loglen) {
        size_t n = loglen - off;
        if (n > 4096) { /* whole lines only */
            n = 4096;
            while (n > 0 && logbuf[off + n - 1] != '\n')
                n--;
            if (n == 0) n = loglen - off < 4096 ? loglen - off : 4096; /* one huge line */
        }
        ssize_t w = write(log_fd, logbuf + off, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break; /* a log that cannot be written is not a reason to stop serving */
        off += (size_t)w;
    }
    loglen = 0;
}

static void log_append(const char *s, size_t n) {
    if (loglen + n + 1 > logcap) {
        size_t cap = logcap ? logcap : 65536;
        while (cap < loglen + n + 1)
            cap *= 2;
        char *p = realloc(logbuf, cap);
        if (!p) return;
        logbuf = p, logcap = cap;
    }
    memcpy(logbuf + loglen, s, n);
    loglen += n;
    if (n == 0 || s[n - 1] != '\n') logbuf[loglen++] = '\n';
    if (loglen > 256 * 1024) log_flush();
}

/* JSON string escaping for the C side's own lines (Lua's go through lua-cjson). */
static void json_str(char *out, size_t cap, const char *s) {
    size_t o = 0;
    out[o++] = '"';
    for (; s && *s && o + 8 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\', out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
}

/* "2026-11-28T22:00:00.000Z" (cap: 25 bytes at least). The seconds are formatted once a
 * second (every request's log line asks), the milliseconds each time. */
static void iso_time(char *buf, size_t cap) {
    static time_t kept_sec = (time_t)-1;
    static char kept[24];
    static size_t kept_n;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != kept_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        kept_n = strftime(kept, sizeof kept, "%Y-%m-%dT%H:%M:%S", &tm);
        kept_sec = ts.tv_sec;
    }
    if (cap < kept_n + 6) {
        if (cap) buf[0] = '\0';
        return;
    }
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    memcpy(buf, kept, kept_n);
    char *p = buf + kept_n;
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    *p = '\0';
}

void nim_serve_log(int level, const char *event, const char *message) {
    if (level < log_min) return;
    char t[40], ev[128], msg[2048], line[2400];
    iso_time(t, sizeof t);
    json_str(ev, sizeof ev, event);
    json_str(msg, sizeof msg, message);
    int n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"level\":\"%s\",\"pid\":%d,\"event\":%s,"
                     "\"message\":%s}\n",
                     t, LEVELS[level], (int)getpid(), ev, msg);
    if (n < 0) return;
    log_append(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    if (!S) log_flush(); /* the supervisor writes at once */
}

int nim_serve_log_open(const nim_serve_opts *o) {
    log_min = o->log_level;
    if (!o->log_path) return 0;
    int fd = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return -1;
    log_fd = fd;
    return 0;
}

/* ---- request slots ------------------------------------------------------------------------ */
static lua_Integer handle_of(const srv_req *r) {
    return (lua_Integer)(((uint64_t)S->slots[r->slot].gen << 32) | r->slot);
}

static srv_req *req_of(lua_Integer h) {
    uint64_t u = (uint64_t)h;
    uint32_t i = (uint32_t)(u & 0xffffffffu), gen = (uint32_t)(u >> 32);
    if (h < 0 || i >= S->nslots || S->slots[i].gen != gen) return NULL;
    return S->slots[i].req;
}

static int slot_take(srv_req *r) {
    if (S->free_head == UINT32_MAX) {
        uint32_t n = S->nslots ? S->nslots * 2 : 1024;
        slot_t *p = realloc(S->slots, n * sizeof *p);
        if (!p) return -1;
        for (uint32_t i = S->nslots; i < n; i++)
            p[i] = (slot_t){NULL, 1, i + 1 < n ? i + 1 : UINT32_MAX};
        S->slots = p;
        S->free_head = S->nslots;
        S->nslots = n;
    }
    uint32_t i = S->free_head;
    S->free_head = S->slots[i].next_free;
    S->slots[i].req = r;
    r->slot = i;
    return 0;
}

static void slot_give(srv_req *r) {
    slot_t *s = &S->slots[r->slot];
    s->req = NULL;
    s->gen = (s->gen + 1) & 0x7fffffffu; /* every handle of this request is stale now; */
    if (s->gen == 0) s->gen = 1;         /* 31 bits: a handle is never negative */
    s->next_free = S->free_head;
    S->free_head = r->slot;
}

static void reading_unlink(srv_req *r) {
    if (!r->prev) return;
    r->prev->next = r->next;
    r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* A connection's socket in the loop's epoll set (op ADD), or its hang-up reported again
 * (MOD: an edge-triggered watch reports what is true already when it is modified). */
static void watch(srv_conn *conn, int op) {
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLET,
                             .data.u64 = TAG_CLIENT | (uint64_t)(uintptr_t)conn};
    if (epoll_ctl(S->ep, op, conn->fd, &ev) == 0) conn->watched = 1;
}

/* ---- Lua calls ---------------------------------------------------------------------------- */
/* Calls the function under ref with nargs arguments already pushed; on error logs it with its
 * traceback and returns -1 (results dropped either way beyond nres). */
static int call_ref(int ref, int nargs, int nres, const char *what) {
    lua_State *L = S->L;
    int base = lua_gettop(L) - nargs;
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->ref_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_rotate(L, base + 1, 2);
    int rc = lua_pcall(L, nargs, nres, base + 1);
    if (rc != LUA_OK) {
        nim_serve_log(NIM_LOG_ERROR, what, lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error)");
        lua_settop(L, base);
        return -1;
    }
    lua_remove(L, base + 1);
    return 0;
}

static struct MHD_Response *plain_response(unsigned status, const char *type, const char *msg,
                                           unsigned *status_out) {
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,"
                     "\"code\":\"%u\"}}",
                     msg, type, status);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
    if (resp) MHD_add_response_header(resp, "Content-Type", "application/json");
    *status_out = status;
    return resp;
}

/* ---- what Lua may call: nim.server (proxy.lua's `native`) ----------------------------------- */

/* A header line Lua asks for: a token name, a value without control characters. */
static int header_ok(const char *name, const char *value) {
    if (!*name) return 0;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 32 || *p == ':' || (unsigned char)*p >= 127) return 0;
    for (const char *p = value; *p; p++)
        if (((unsigned char)*p < 32 && *p != '\t') || *p == 127) return 0;
    return 1;
}

/* A response's body is the Lua string's own bytes, kept alive by a registry reference until
 * MHD lets the response go (sent, or the connection ended): the answer is not copied again.
 * MHD calls this from its own calls (MHD_run, MHD_destroy_response, MHD_stop_daemon), never
 * while Lua runs a step that could be disturbed by it. */
static void body_sent(void *cls) {
    if (S) luaL_unref(S->L, LUA_REGISTRYINDEX, (int)(intptr_t)cls);
}

/* respond(handle, status, headers, body) -> true | false (the request is gone). */
static int l_respond(lua_State *L) {
    srv_req *r = req_of(luaL_checkinteger(L, 1));
    lua_Integer status = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    size_t len;
    const char *body = luaL_checklstring(L, 4, &len);
    luaL_argcheck(L, status >= 100 && status <= 599, 2, "an HTTP status (100-599)");
    if (!r || r->resp || r->phase < PH_RUNNING) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushvalue(L, 4);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(
        len, (void *)body, body_sent, (void *)(intptr_t)ref);
    if (!resp) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "respond: out of memory");
    }
    lua_pushnil(L);
    while (lua_next(L, 3)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
            header_ok(lua_tostring(L, -2), lua_tostring(L, -1)))
            MHD_add_response_header(resp, lua_tostring(L, -2), lua_tostring(L, -1));
        else
            nim_serve_log(NIM_LOG_WARN, "bad_header",
                          "a response header was not a valid "
                          "name and value; left out");
        lua_pop(L, 1);
    }
    if (S->draining) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    r->resp = resp;
    r->status = (unsigned)status;
    if (r->phase == PH_SUSPENDED) {
        r->phase = PH_ANSWERED;
        S->resumed = 1;
        MHD_resume_connection(r->conn);
    } else {
        r->phase = PH_ANSWERED; /* answered inside dispatch: queued when it returns */
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_log(lua_State *L) {
    size_t n;
    const char *line = luaL_checklstring(L, 1, &n);
    log_append(line, n);
    return 0;
}

static int l_pin(lua_State *L) {
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    nim_board_pin(S->board, S->worker, text, n);
    return 0;
}

/* peers() -> { text, ... }: what the other workers last pinned. */
static int l_peers(lua_State *L) {
    static char buf[NIM_BOARD_SLOT_BYTES]; /* not malloc'ed: a raise below would leak it */
    lua_newtable(L);
    int k = 0;
    for (int i = 0; i < nim_board_slots(S->board); i++) {
        if (i == S->worker) continue;
        size_t n = nim_board_read(S->board, i, buf, NIM_BOARD_SLOT_BYTES);
        if (n == 0) continue;
        lua_pushlstring(L, buf, n);
        lua_rawseti(L, -2, ++k);
    }
    return 1;
}

static int l_draining(lua_State *L) {
    lua_pushboolean(L, S->draining);
    return 1;
}

static int l_stats(lua_State *L) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)S->inflight);
    lua_setfield(L, -2, "inflight");
    lua_pushinteger(L, (lua_Integer)S->live);
    lua_setfield(L, -2, "live");
    lua_pushinteger(L, S->worker);
    lua_setfield(L, -2, "worker");
    lua_pushinteger(L, (lua_Integer)S->max_body);
    lua_setfield(L, -2, "max_body");
    return 1;
}

/* same_secret(given, key) -> bool, in time that depends on the key's length only: how much of
 * a guess was right does not show in how long the answer took. */
static int l_same_secret(lua_State *L) {
    size_t gn, kn;
    const unsigned char *g = (const unsigned char *)luaL_checklstring(L, 1, &gn);
    const unsigned char *k = (const unsigned char *)luaL_checklstring(L, 2, &kn);
    unsigned diff = (unsigned)(gn != kn);
    for (size_t i = 0; i < kn; i++)
        diff |= (unsigned)(k[i] ^ (i < gn ? g[i] : (unsigned char)~k[i]));
    lua_pushboolean(L, diff == 0);
    return 1;
}

/* time() -> "2026-11-28T22:00:00.000Z": the log lines' clock. */
static int l_time(lua_State *L) {
    char t[40];
    iso_time(t, sizeof t);
    lua_pushstring(L, t);
    return 1;
}

/* new_id() -> 32 hex digits: a request id, random per worker, then counted (splitmix64). */
static uint64_t id_state;
static int l_new_id(lua_State *L) {
    if (!id_state && getrandom(&id_state, sizeof id_state, 0) != (ssize_t)sizeof id_state)
        id_state = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
    uint64_t out[2];
    for (int i = 0; i < 2; i++) {
        uint64_t z = (id_state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        out[i] = z ^ (z >> 31);
    }
    char buf[33];
    snprintf(buf, sizeof buf, "%016llx%016llx", (unsigned long long)out[0],
             (unsigned long long)out[1]);
    lua_pushstring(L, buf);
    return 1;
}

static const luaL_Reg server_fns[] = {{"respond", l_respond},
                                      {"log", l_log},
                                      {"pin", l_pin},
                                      {"peers", l_peers},
                                      {"draining", l_draining},
                                      {"stats", l_stats},
                                      {"same_secret", l_same_secret},
                                      {"time", l_time},
                                      {"new_id", l_new_id},
                                      {NULL, NULL}};

/* ---- MHD callbacks ------------------------------------------------------------------------ */

/* The request line has arrived: the request is born (MHD keeps the pointer as its context). */
static void *uri_started(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)cls, (void)uri;
    srv_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (slot_take(r) != 0) {
        free(r);
        return NULL;
    }
    r->conn = c;
    r->t0 = nim_now();
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    srv_conn *conn = sc ? sc->socket_context : NULL;
    if (conn) conn->cur = r;
    r->sc = conn;
    r->next = S->reading.next;
    r->prev = &S->reading;
    S->reading.next->prev = r;
    S->reading.next = r;
    S->live++;
    return r;
}

static enum MHD_Result push_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
    (void)kind;
    lua_State *L = cls;
    char name[128];
    size_t n = strlen(key);
    if (n >= sizeof name) return MHD_YES; /* no header of ours is that long */
    for (size_t i = 0; i < n; i++)
        name[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    const char *v = value ? value : "";
    lua_pushlstring(L, name, n); /* made once: the lookup and the store share it */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) { /* repeated: joined, as RFC 9110 allows */
        lua_pushliteral(L, ", ");
        lua_pushstring(L, v);
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushstring(L, v);
    }
    lua_rawset(L, -3); /* a new table of ours: no metamethods to skip */
    return MHD_YES;
}

/* What a head must not have (RFC 9112 sections 3.2, 5.1 and 6): two different
 * Content-Lengths, a Content-Length beside a Transfer-Encoding, a coding other than chunked
 * (libmicrohttpd reads the first and ignores the rest, which is how requests are smuggled past
 * a proxy), a name with white space before its colon ("Content-Length :", which libmicrohttpd
 * keeps as a name of its own: the length would frame nothing), a bare CR in a value, or, in
 * HTTP/1.1, no Host. (A NUL in a value never gets here: libmicrohttpd ends the value at it.) */
typedef struct {
    const char *cl; /* the first Content-Length */
    size_t cl_len;
    int te, bad_cl, host;
    const char *bad;
} head_scan;

/* RFC 9110 section 5.6.2: the characters of a token, which a field name is. */
static int is_token(const char *s, size_t n) {
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch && strchr(extra, ch))))
            return 0;
    }
    return 1;
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size) {
    (void)kind;
    head_scan *h = cls;
    if (!is_token(key, key_size))
        h->bad = "a header name holds a character a name may not have (white space before "
                 "its colon?)";
    if (value && memchr(value, '\r', value_size)) h->bad = "a header value holds a CR byte";
    if (key_size == 4 && strncasecmp(key, "Host", 4) == 0) h->host++;
    if (key_size == 14 && strncasecmp(key, "Content-Length", 14) == 0) {
        if (h->cl && (value_size != h->cl_len || memcmp(value, h->cl, value_size) != 0))
            h->bad_cl = 1;
        h->cl = value, h->cl_len = value_size;
    } else if (key_size == 17 && strncasecmp(key, "Transfer-Encoding", 17) == 0) {
        h->te = 1;
        if (!value || value_size != 7 || strncasecmp(value, "chunked", 7) != 0)
            h->bad = "Transfer-Encoding: only chunked is taken";
    }
    return MHD_YES;
}

static const char *head_problem(struct MHD_Connection *c, const char *version) {
    head_scan h = {0};
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, scan_header, &h);
    if (h.bad_cl) return "two different Content-Length headers";
    if (h.te && h.cl) return "Content-Length and Transfer-Encoding together";
    /* 1.1 and any later 1.x, which libmicrohttpd takes as 1.1 */
    int http11 = strncmp(version, "HTTP/1.", 7) == 0 && strcmp(version, MHD_HTTP_VERSION_1_0) != 0;
    if (!h.bad && h.host > 1) return "more than one Host header";
    if (!h.bad && !h.host && http11) return "no Host header (HTTP/1.1 requires one)";
    return h.bad;
}

/* MHD_OPTION_UNESCAPE_CALLBACK: libmicrohttpd's own decoding of %HH, except that a path
 * holding %00 is left as it came (a C string would end at the NUL: "/rerank%00x" would be
 * routed as "/rerank"); no route has one, so it is a 404. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    for (const char *p = strchr(s, '%'); p; p = strchr(p + 1, '%'))
        if (p[1] == '0' && p[2] == '0') return strlen(s);
    return MHD_http_unescape(s);
}

typedef struct {
    srv_req *r;
    const char *method, *url, *version;
    int head_only; /* the request's head only: the body is still to come */
} req_view;

/* Pushes the request table Lua sees; run under lua_pcall (memory errors stay ours). */
static int push_request(lua_State *L) {
    const req_view *v = lua_touserdata(L, 1);
    srv_req *r = v->r;
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, handle_of(r));
    lua_setfield(L, -2, "handle");
    lua_pushstring(L, v->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, v->url);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, v->version);
    lua_setfield(L, -2, "version");
    lua_pushnumber(L, r->t0);
    lua_setfield(L, -2, "t0");
    if (r->bad_head) {
        lua_pushstring(L, r->bad_head);
        lua_setfield(L, -2, "bad_head");
    }
    if (r->too_large) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "too_large");
    } else if (!v->head_only) {
        lua_pushlstring(L, r->body ? r->body : "", r->len);
        lua_setfield(L, -2, "body");
    }
    lua_createtable(L, 0, 8); /* room for a usual request's headers without a rehash */
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, push_header, L);
    lua_setfield(L, -2, "headers");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        char host[64] = "";
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        lua_pushstring(L, host);
        lua_setfield(L, -2, "remote");
    }
    return 1;
}

/* Hands the request to Lua: proxy.dispatch(req) starts its task; with head_only,
 * proxy.precheck(req) answers at once what the head decides (route, method, key). 0, or -1
 * (logged; the caller answers 500). */
static int to_lua(srv_req *r, const char *method, const char *url, const char *version,
                  int head_only) {
    lua_State *L = S->L;
    req_view v = {r, method, url, version, head_only};
    lua_pushcfunction(L, push_request);
    lua_pushlightuserdata(L, &v);
    int rc = lua_pcall(L, 1, 1, 0);
    if (!head_only) { /* Lua has its copy (or it failed): the body is done with */
        free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
    }
    if (rc != LUA_OK) {
        nim_serve_log(NIM_LOG_ERROR, "dispatch_failed", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    S->dispatched = 1;
    return call_ref(head_only ? S->ref_precheck : S->ref_dispatch, 1, 0, "dispatch_failed");
}

static enum MHD_Result queue(srv_req *r) {
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ok; /* in flight until on_completed: the answer may still be on its way */
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)cls;
    srv_req *r = *con_cls;
    if (!r) return MHD_NO;     /* out of memory when the request line came: drop the connection */
    if (r->phase == PH_HEAD) { /* headers complete */
        r->phase = PH_BODY;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > S->max_body) r->too_large = 1;
        r->bad_head =
            head_problem(c, version); /* answered 400 on its head (precheck), body unread */
        /* A large body (or one of unknown length) is read only for a request its head allows:
         * the route, the method and the key are decided first. */
        if (r->bad_head || (!r->too_large && (!cl || strtoull(cl, NULL, 10) > 65536) &&
                            strcmp(method, "GET") != 0)) {
            r->phase = PH_RUNNING;
            S->inflight++;
            if (to_lua(r, method, url, version, 1) != 0 && !r->resp)
                r->resp = plain_response(500, "internal_error", "the gateway failed", &r->status);
            if (r->resp) {
                reading_unlink(r);
                return queue(r); /* the body is never read: MHD closes the connection */
            }
            S->inflight--;
            r->phase = PH_BODY;
        }
        if (r->too_large) { /* answered before the body is read; MHD then closes */
            reading_unlink(r);
            S->inflight++;
            r->phase = PH_RUNNING;
            if (to_lua(r, method, url, version, 0) != 0 || !r->resp)
                r->resp = plain_response(500, "internal_error", "the gateway failed", &r->status);
            return r->resp ? queue(r) : MHD_NO;
        }
        return MHD_YES;
    }
    if (r->phase == PH_BODY && *upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_large || r->len + n > S->max_body) { /* chunked, or a lying Content-Length */
            r->too_large = 1;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return MHD_YES;
        }
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
    if (r->phase == PH_BODY) { /* the whole request is here */
        reading_unlink(r);
        S->inflight++;
        r->phase = PH_RUNNING;
        if (to_lua(r, method, url, version, 0) != 0 && !r->resp)
            r->resp = plain_response(500, "internal_error", "the gateway failed", &r->status);
        if (r->resp) return queue(r);
        /* waiting for the upstream: park the connection; a hang-up seen already is reported
         * again (the watch is edge-triggered), so it cancels the request next turn */
        r->phase = PH_SUSPENDED;
        MHD_suspend_connection(c);
        if (r->sc && r->sc->hup && r->sc->watched) watch(r->sc, EPOLL_CTL_MOD);
        return MHD_YES;
    }
    if (r->phase == PH_ANSWERED && r->resp) return queue(r); /* resumed with its answer */
    return MHD_NO;
}

/* The request is over: answered, or the client went away, or the daemon stops. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)toe;
    srv_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    srv_conn *conn = sc ? sc->socket_context : NULL;
    if (conn && conn->cur == r) {
        conn->cur = NULL;
        conn->served++;
        conn->t_mark = nim_now(); /* the next request's line is due within --idle-timeout */
    }
    reading_unlink(r);
    if (r->phase == PH_RUNNING || r->phase == PH_SUSPENDED) { /* its task still runs: stop it */
        lua_pushinteger(S->L, handle_of(r));
        call_ref(S->ref_cancel, 1, 0, "cancel_failed");
    }
    if (r->resp) MHD_destroy_response(r->resp);
    if (r->phase >= PH_RUNNING) S->inflight--;
    slot_give(r);
    free(r->body);
    free(r);
    S->live--;
}

/* A connection opens or closes: kept in a list, for the first-request and idle timeouts, and
 * watched for hang-ups. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        srv_conn *conn = calloc(1, sizeof *conn);
        if (!conn) return;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn->fd = ci ? ci->connect_fd : -1;
        conn->t_mark = nim_now();
        if (conn->fd >= 0) watch(conn, EPOLL_CTL_ADD);
        conn->next = S->conns.next;
        conn->prev = &S->conns;
        S->conns.next->prev = conn;
        S->conns.next = conn;
        *socket_context = conn;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        srv_conn *conn = *socket_context;
        /* out of the set before the record goes (MHD closes the socket after this call) */
        if (conn->watched) epoll_ctl(S->ep, EPOLL_CTL_DEL, conn->fd, NULL);
        conn->prev->next = conn->next;
        conn->next->prev = conn->prev;
        free(conn);
        *socket_context = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    nim_serve_log(NIM_LOG_DEBUG, "http", msg);
}

/* ---- the loop ----------------------------------------------------------------------------- */

/* A suspended request's client hung up: stop its task, and let MHD close the connection. */
static void abandon(lua_Integer h, unsigned status, const char *type, const char *msg) {
    srv_req *r = req_of(h);
    if (!r || r->phase != PH_SUSPENDED) return;
    lua_pushinteger(S->L, h);
    lua_pushinteger(S->L, status); /* what the client is told (or would be): for the log */
    char id[160] = "";             /* the request's id (proxy.lua makes ids of at most 128 bytes) */
    if (call_ref(S->ref_cancel, 2, 1, "cancel_failed") == 0) {
        size_t n = 0;
        const char *s = lua_tolstring(S->L, -1, &n);
        if (s && n < sizeof id) memcpy(id, s, n + 1);
        lua_pop(S->L, 1);
    }
    r = req_of(h);
    if (!r || r->phase != PH_SUSPENDED) return; /* cancel answered it */
    r->resp = plain_response(status, type, msg, &r->status);
    if (r->resp && id[0]) MHD_add_response_header(r->resp, "x-request-id", id);
    r->phase = PH_ANSWERED;
    S->resumed = 1;
    MHD_resume_connection(r->conn);
}

static void client_gone(lua_Integer h) { /* MHD finds the socket closed and ends the request */
    abandon(h, 499, "client_closed", "the client closed the connection");
}

/* The worker stops with requests still waiting (the grace period ran out): MHD may not stop
 * with connections suspended (it aborts the process), so each is cancelled and resumed with
 * a 503 first. */
static void abandon_all(void) {
    for (uint32_t i = 0; i < S->nslots; i++) {
        srv_req *r = S->slots[i].req;
        if (r && r->phase == PH_SUSPENDED)
            abandon(handle_of(r), 503, "service_unavailable", "the gateway is shutting down");
    }
}

/* Requests too slow to arrive: their sockets are shut, so MHD sees the end and closes. */
static void sweep_slow(double now) {
    for (srv_req *r = S->reading.next; r != &S->reading; r = r->next) {
        double limit = S->o->header_timeout_s + (r->phase == PH_BODY ? S->o->body_timeout_s : 0);
        if (now - r->t0 > limit && r->fd >= 0) shutdown(r->fd, SHUT_RDWR);
    }
    /* Between requests: a new connection's first request line is due within the header
     * timeout; a kept-alive one's next, within the idle timeout, however slowly it trickles
     * (libmicrohttpd's own timeout counts silence only). */
    for (srv_conn *c = S->conns.next; c != &S->conns; c = c->next) {
        if (c->cur || c->fd < 0) continue;
        double limit = c->served ? (double)S->o->idle_timeout_s : S->o->header_timeout_s;
        if (now - c->t_mark > limit) shutdown(c->fd, SHUT_RDWR);
    }
}

static void reload(void) {
    lua_pushstring(S->L, S->o->config_path ? S->o->config_path : "");
    if (call_ref(S->ref_reload, 1, 1, "reload_failed") == 0) {
        lua_Integer max = lua_tointeger(S->L, -1);
        if (max > 0) S->max_body = (size_t)max;
        lua_pop(S->L, 1);
    }
}

static void tick(void) { call_ref(S->ref_tick, 0, 0, "tick_failed"); }

static int setup_lua(lua_State *L) {
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    S->ref_traceback = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "nim.proxy");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        nim_serve_log(NIM_LOG_ERROR, "start_failed", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_getfield(L, -1, "start_worker");
    luaL_newlib(L, server_fns);
    lua_pushinteger(L, S->o->log_level);
    lua_setfield(L, -2, "log_level");
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_setfield(L, -2, "pid");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        nim_serve_log(NIM_LOG_ERROR, "start_failed",
                      lua_isstring(L, -1) ? lua_tostring(L, -1) : "proxy.start_worker failed");
        lua_settop(L, 0);
        return -1;
    }
    /* start_worker returns { dispatch =, cancel =, reload =, tick =, max_body = } */
    lua_getfield(L, -1, "dispatch");
    S->ref_dispatch = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "cancel");
    S->ref_cancel = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "reload");
    S->ref_reload = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "tick");
    S->ref_tick = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "precheck");
    S->ref_precheck = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "max_body");
    S->max_body = (size_t)luaL_optinteger(L, -1, 10 * 1024 * 1024);
    lua_settop(L, 0);
    return 0;
}

/* MHD's turn: run, and again (a few times at most) while it says it has work queued (a
 * connection it must try once more after an answer went out, until its socket reads
 * EAGAIN), rather than a loop turn each time. */
static void mhd_run(void) {
    MHD_UNSIGNED_LONG_LONG mt;
    S->resumed = 0;
    MHD_run(S->d);
    for (int i = 0; i < 2 && MHD_get_timeout(S->d, &mt) == MHD_YES && mt == 0; i++)
        MHD_run(S->d);
}

static int ep_add(int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    return epoll_ctl(S->ep, EPOLL_CTL_ADD, fd, &ev);
}

int nim_server_run(lua_State *L, const nim_serve_opts *o, int listen_fd, nim_board *board,
                   int worker, int ready_fd) {
    static server srv;
    S = &srv;
    /* No glibc fastbins in a worker: every request allocates a few blocks above 1 KB (the
     * body, its Lua string, the answer, curl's buffers), and each such malloc with fastbins
     * in use first consolidates them all; small blocks still come from the thread cache. */
    mallopt(M_MXFAST, 0);
    srv.L = L, srv.o = o, srv.board = board, srv.worker = worker, srv.listen_fd = listen_fd;
    srv.free_head = UINT32_MAX;
    srv.reading.next = srv.reading.prev = &srv.reading;
    srv.conns.next = srv.conns.prev = &srv.conns;
    /* workers are forks of one process: each seeds its own result ids */
    nim_ctx *ctx = nim_ctx_get(L);
    if (ctx) ctx->uuid_state[1] = 0;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    srv.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    srv.ep = epoll_create1(EPOLL_CLOEXEC);
    if (srv.sigfd < 0 || srv.ep < 0 || setup_lua(L) != 0) return 1;

    if (nimrank_fds(L, &srv.engine_fd, &(int){0}, 1) != 1) {
        nim_serve_log(NIM_LOG_ERROR, "start_failed", lua_tostring(L, -1));
        return 1;
    }
    srv.d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, NULL, MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_URI_LOG_CALLBACK,
        uri_started, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_CONNECTION_TIMEOUT,
        o->idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, o->max_connections,
        /* 16 KB a connection (MHD's default is 32): request heads up to about 8 KB, and a
         * thousand connections cost 16 MB less (bench/proxy_rss.sh) */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_UNESCAPE_CALLBACK, unescape,
        NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!srv.d) {
        nim_serve_log(NIM_LOG_ERROR, "start_failed", "libmicrohttpd would not start");
        return 1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || ep_add(di->epoll_fd, TAG_MHD) != 0 || ep_add(srv.engine_fd, TAG_ENGINE) != 0 ||
        ep_add(srv.sigfd, TAG_SIGNAL) != 0) {
        nim_serve_log(NIM_LOG_ERROR, "start_failed", "epoll");
        return 1;
    }
    /* What setting up left behind (the supervisor's config load, this worker's start) goes
     * back to the system before the worker waits for its first request. */
    nim_lua_trim(L); /* a full collection, then free memory back to the system */
    if (ready_fd >= 0) {
        char b = (char)worker;
        (void)!write(ready_fd, &b, 1);
        close(ready_fd);
    }

    double next_tick = nim_now() + 1.0;
    size_t peak_live = 0;
    int gc_floor_kb = 32 * 1024; /* an idle worker's Lua heap above this is collected */
    struct epoll_event evs[256];
    int code = 0;
    for (;;) {
        double now = nim_now();
        long wait = 1000, mhd_wait = -1;
        MHD_UNSIGNED_LONG_LONG mt;
        if (MHD_get_timeout(srv.d, &mt) == MHD_YES) {
            mhd_wait = (long long)mt < wait ? (long)mt : wait;
            wait = mhd_wait;
        }
        long nt = nimrank_timeout(L);
        if (nt >= 0 && nt < wait) wait = nt;
        long tt = (long)((next_tick - now) * 1000.0) + 1;
        if (tt < wait) wait = tt < 0 ? 0 : tt;
        if (srv.draining) {
            long dt = (long)((srv.drain_deadline - now) * 1000.0) + 1;
            if (dt < wait) wait = dt < 0 ? 0 : dt;
        }
        log_flush();
        int n = epoll_wait(srv.ep, evs, 256, (int)wait);
        if (n < 0 && errno != EINTR) {
            nim_serve_log(NIM_LOG_ERROR, "epoll_failed", strerror(errno));
            code = 1;
            break;
        }
        int engine_ready = 0, mhd_ready = 0;
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag & TAG_CLIENT) {
                srv_conn *conn = (srv_conn *)(uintptr_t)(tag & ~TAG_CLIENT);
                conn->hup = 1; /* (the record lives: it leaves the set before it is freed) */
                if (conn->cur && conn->cur->phase == PH_SUSPENDED)
                    client_gone(handle_of(conn->cur));
            } else if (tag == TAG_ENGINE) {
                engine_ready = 1;
            } else if (tag == TAG_MHD) {
                mhd_ready = 1;
            } else if (tag == TAG_SIGNAL) {
                struct signalfd_siginfo si;
                while (read(srv.sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
                    if (si.ssi_signo == SIGHUP) {
                        reload();
                    } else if (!srv.draining) {
                        srv.draining = 1;
                        srv.drain_deadline = nim_now() + o->grace_s;
                        int lfd = MHD_quiesce_daemon(srv.d); /* no new connections */
                        if (lfd >= 0) close(lfd);
                        nim_serve_log(NIM_LOG_INFO, "draining",
                                      "stopped accepting; finishing "
                                      "the requests in flight");
                    }
                }
            }
        }
        /* MHD runs when its sockets moved, its timeout is due (0 while it has work queued), or
         * a hang-up's 499 resumed a connection; not on every turn the engine wakes. */
        if (mhd_ready || srv.resumed || (mhd_wait >= 0 && (nim_now() - now) * 1000.0 >= mhd_wait))
            mhd_run();
        /* The scheduler runs when the network moved, a request started a call (its transfer
         * goes out now, not a turn later), or a timer (curl's, a task's sleep) is due. */
        if (engine_ready || srv.dispatched || (nt >= 0 && (nim_now() - now) * 1000.0 >= nt)) {
            srv.dispatched = 0;
            if (nimrank_poll(L) < 0) {
                nim_serve_log(NIM_LOG_ERROR, "poll_failed", lua_tostring(L, -1));
                lua_settop(L, 0);
            }
            if (srv.resumed) mhd_run(); /* answers the poll produced go out in this turn */
        }
        now = nim_now();
        if (now >= next_tick) {
            sweep_slow(now);
            tick();
            next_tick = now + 1.0;
            /* A burst, or one large request, over: what it took goes back to the system. Lua's
             * collector runs only as Lua allocates, so an idle worker would keep the garbage;
             * glibc and the Lua pool (lalloc.c) keep freed memory. */
            if (srv.inflight == 0 && srv.live == 0 &&
                (peak_live > 64 || lua_gc(L, LUA_GCCOUNT) > gc_floor_kb)) {
                nim_lua_trim(L); /* a full collection, then free memory back to the system */
                peak_live = 0;
                int live_kb = lua_gc(L, LUA_GCCOUNT); /* what stays: collect again at twice */
                gc_floor_kb = live_kb * 2 > 32 * 1024 ? live_kb * 2 : 32 * 1024;
            }
        }
        if (srv.live > peak_live) peak_live = srv.live;
        /* drained: no request left, answered or still arriving (idle connections do not count) */
        if (srv.draining && (srv.live == 0 || now >= srv.drain_deadline)) break;
    }
    if (srv.inflight)
        nim_serve_log(NIM_LOG_WARN, "drain_timeout",
                      "grace period over: requests in flight "
                      "are cancelled");
    abandon_all();
    MHD_run(srv.d);         /* the 503s are queued (and, when the socket takes them, sent) */
    MHD_stop_daemon(srv.d); /* ends every connection; on_completed cancels their tasks */
    nimrank_poll(L);
    tick();
    nim_serve_log(NIM_LOG_INFO, "stopped", "worker stopped");
    log_flush();
    close(srv.ep);
    close(srv.sigfd);
    free(srv.slots);
    free(logbuf);
    logbuf = NULL;
    S = NULL;
    return code;
}
