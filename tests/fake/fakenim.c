#define _GNU_SOURCE /* memmem */
/* fakenim: a NIM-compatible reranking server for tests and benchmarks, on loopback only.
 * libmicrohttpd moves the bytes (a thread per connection, so delays do not block others);
 * the API rules live in fakenim.lua, run in one Lua state under a mutex. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <lualib.h>

#define MAX_BODY (64u * 1024u * 1024u)

static lua_State *L;
static pthread_mutex_t lua_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long connections_opened; /* under lua_lock */
static unsigned long delays_aborted;     /* under lua_lock: delays whose client hung up */
static char *canned;       /* --canned N: "{index,logit}," for 0..N-1, the answer to every POST */
static size_t *canned_end; /* canned_end[k]: the bytes of the first k entries */
static long canned_max;

typedef struct {
    char *buf;
    size_t len, cap;
    int too_large;
    long nth; /* this request's number on its connection, from 1 */
} upload;

typedef struct {
    int status;
    char *body;
    size_t body_len;
    char *headers; /* "Name: value\n" lines */
    long delay_ms;
    int drop;
    char *stream; /* hostile answers: "trickle", "reset", "endless"; NULL = plain */
    long trickle_ms;
    char *file; /* the body is this file's bytes (a prepared gzip bomb) */
} reply;

static void answer_canned(const upload *u, reply *r);

static volatile int stopping; /* set before shutdown: long waits end early */

/* Sleeps ms in short steps, so a fake told to stay silent still stops when asked. */
static void pause_ms(long ms) {
    for (long waited = 0; waited < ms && !stopping; waited += 20) {
        long step = ms - waited < 20 ? ms - waited : 20;
        struct timespec ts = {0, step * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        }
    }
}

/* Waits ms before an answer; a client that hangs up meanwhile ends the wait early (counted,
 * so tests can see that a cancelled call really closed its connection). 1 when it hung up. */
static int delay_answer(struct MHD_Connection *c, long ms) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1;
    for (long waited = 0; waited < ms && !stopping; waited += 20) {
        pause_ms(ms - waited < 20 ? ms - waited : 20);
        struct pollfd p = {fd, POLLRDHUP, 0};
        if (fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            pthread_mutex_lock(&lua_lock);
            delays_aborted++;
            pthread_mutex_unlock(&lua_lock);
            return 1;
        }
    }
    return 0;
}

/* A body sent by a reader callback: trickled, cut off mid-way, or endless. */
typedef struct {
    char *body;
    size_t len;
    int mode; /* 't' trickle, 'r' reset, 'e' endless */
    long trickle_ms;
} stream;

static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max) {
    stream *st = cls;
    if (stopping) return MHD_CONTENT_READER_END_WITH_ERROR;
    switch (st->mode) {
    case 't': /* one byte at a time */
        if (pos >= st->len) return MHD_CONTENT_READER_END_OF_STREAM;
        pause_ms(st->trickle_ms);
        buf[0] = st->body[pos];
        return 1;
    case 'r': /* half the body, then the connection is reset */
        if (pos >= st->len / 2) return MHD_CONTENT_READER_END_WITH_ERROR;
        buf[0] = st->body[pos];
        return 1;
    default: /* endless chunks of white space: valid JSON padding, never an end */
        memset(buf, ' ', max);
        return (ssize_t)max;
    }
}

static void free_stream(void *cls) {
    stream *st = cls;
    free(st->body);
    free(st);
}

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value) {
    (void)kind;
    lua_State *S = cls;
    char lower[256];
    size_t i;
    for (i = 0; i < sizeof lower - 1 && key[i]; i++)
        lower[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    lower[i] = '\0';
    lua_pushstring(S, value ? value : "");
    lua_setfield(S, -2, lower);
    return MHD_YES;
}

static char *dup_field(lua_State *S, int idx, const char *field, size_t *len) {
    lua_getfield(S, idx, field);
    size_t n = 0;
    const char *s = lua_tolstring(S, -1, &n);
    char *out = NULL;
    if (s) {
        out = malloc(n + 1);
        if (out) memcpy(out, s, n + 1);
    }
    if (len) *len = out ? n : 0;
    lua_pop(S, 1);
    return out;
}

/* Runs handle(req) under the lock and copies the reply out of Lua. */
static void run_handler(struct MHD_Connection *c, const char *method, const char *url,
                        const upload *u, reply *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_lock(&lua_lock);
    int top = lua_gettop(L);
    lua_getglobal(L, "handle");
    lua_createtable(L, 0, 4);
    lua_pushstring(L, method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, url);
    lua_setfield(L, -2, "path");
    lua_newtable(L);
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, L);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, u->buf ? u->buf : "", u->len);
    lua_setfield(L, -2, "body");
    lua_pushboolean(L, u->too_large);
    lua_setfield(L, -2, "too_large");
    lua_pushinteger(L, u->nth);
    lua_setfield(L, -2, "nth");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "fakenim: handler error: %s\n", lua_tostring(L, -1));
        r->status = 500;
        r->body = strdup("{\"error\":\"fake server handler error\"}");
        r->body_len = strlen(r->body);
    } else {
        r->status = (lua_getfield(L, -1, "status"), (int)lua_tointeger(L, -1));
        lua_pop(L, 1);
        r->body = dup_field(L, -1, "body", &r->body_len);
        r->headers = dup_field(L, -1, "headers", NULL);
        r->delay_ms = (lua_getfield(L, -1, "delay_ms"), (long)lua_tointeger(L, -1));
        lua_pop(L, 1);
        r->drop = (lua_getfield(L, -1, "drop"), lua_toboolean(L, -1));
        lua_pop(L, 1);
        r->stream = dup_field(L, -1, "stream", NULL);
        r->trickle_ms = (lua_getfield(L, -1, "trickle_ms"), (long)lua_tointeger(L, -1));
        lua_pop(L, 1);
        r->file = dup_field(L, -1, "file", NULL);
    }
    lua_settop(L, top);
    pthread_mutex_unlock(&lua_lock);
}

/* The reply's body becomes the named file's bytes. */
static void load_file(reply *r) {
    FILE *f = fopen(r->file, "rb");
    if (!f) return;
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
    size_t cap = 0;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        char *p = realloc(r->body, cap + n);
        if (!p) break;
        r->body = p;
        memcpy(r->body + cap, chunk, n);
        cap += n;
    }
    r->body_len = cap;
    fclose(f);
}

static struct MHD_Response *make_response(reply *r) {
    if (!r->stream)
        return MHD_create_response_from_buffer(r->body_len, r->body ? r->body : (char *)"",
                                               MHD_RESPMEM_MUST_COPY);
    stream *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->body = r->body;
    st->len = r->body_len;
    st->mode = r->stream[0];
    st->trickle_ms = r->trickle_ms;
    r->body = NULL; /* the stream owns it now */
    uint64_t size = st->mode == 'e' ? MHD_SIZE_UNKNOWN : (uint64_t)st->len;
    return MHD_create_response_from_callback(size, st->mode == 'e' ? 65536 : 1, read_stream, st,
                                             free_stream);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls) {
    (void)cls;
    (void)version;
    upload *u = *con_cls;
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u) return MHD_NO;
        *con_cls = u;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        long *count = ci ? ci->socket_context : NULL;
        u->nth = count ? ++*count : 1;
        return MHD_YES;
    }
    if (*data_size) {
        if (u->len + *data_size > MAX_BODY) {
            u->too_large = 1;
        } else {
            if (u->len + *data_size > u->cap) {
                size_t cap = u->cap ? u->cap * 2 : 65536;
                while (cap < u->len + *data_size)
                    cap *= 2;
                char *p = realloc(u->buf, cap);
                if (!p) return MHD_NO;
                u->buf = p;
                u->cap = cap;
            }
            memcpy(u->buf + u->len, data, *data_size);
            u->len += *data_size;
        }
        *data_size = 0;
        return MHD_YES;
    }
    reply r;
    if (canned && strcmp(method, "POST") == 0) { /* no parsing, no scoring: client cost only */
        memset(&r, 0, sizeof r);
        r.status = 200;
        answer_canned(u, &r);
        r.headers = strdup("Content-Type: application/json\n");
    } else {
        run_handler(c, method, url, u, &r);
    }
    if (r.delay_ms > 0 && delay_answer(c, r.delay_ms)) r.drop = 1;
    if (r.file) load_file(&r);
    enum MHD_Result ret = MHD_NO;
    struct MHD_Response *resp = (!r.drop && !stopping) ? make_response(&r) : NULL;
    if (resp) {
        for (char *line = r.headers, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = '\0';
            char *colon = strchr(line, ':');
            if (!colon) continue;
            *colon = '\0';
            MHD_add_response_header(resp, line, colon + 1 + (colon[1] == ' '));
        }
        ret = MHD_queue_response(c, (unsigned)r.status, resp);
        MHD_destroy_response(resp);
    }
    free(r.body);
    free(r.headers);
    free(r.stream);
    free(r.file);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    upload *u = *con_cls;
    if (u) {
        free(u->buf);
        free(u);
    }
    *con_cls = NULL;
}

/* Counts TCP connections, so tests can see whether a client reuses them, and keeps each
 * connection's count of requests (socket_context). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    (void)cls;
    (void)c;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        free(*socket_context);
        *socket_context = NULL;
        return;
    }
    *socket_context = calloc(1, sizeof(long));
    pthread_mutex_lock(&lua_lock);
    connections_opened++;
    pthread_mutex_unlock(&lua_lock);
}

/* FAKE.connections() -> connections accepted so far (called with lua_lock held) */
static int lua_connections(lua_State *S) {
    lua_pushinteger(S, (lua_Integer)connections_opened);
    return 1;
}

/* FAKE.aborted() -> delayed answers whose client hung up first (called with lua_lock held) */
static int lua_aborted(lua_State *S) {
    lua_pushinteger(S, (lua_Integer)delays_aborted);
    return 1;
}

static int lua_now_ms(lua_State *S) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(S, (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6);
    return 1;
}

/* Up to n rankings, logits descending, prebuilt: each answer is a prefix of them. */
static int build_canned(long n) {
    size_t cap = 64 + (size_t)n * 48, len = 0;
    canned = malloc(cap);
    canned_end = malloc(((size_t)n + 1) * sizeof *canned_end);
    if (!canned || !canned_end) return -1;
    canned_end[0] = 0;
    for (long i = 0; i < n; i++) {
        len += (size_t)snprintf(canned + len, cap - len, "{\"index\":%ld,\"logit\":%.4f},", i,
                                10.0 - (double)i / 100.0);
        canned_end[i + 1] = len;
    }
    canned_max = n;
    return 0;
}

/* The canned answer for as many passages as the request carries (counted, not parsed). */
static void answer_canned(const upload *u, reply *r) {
    long k = 0;
    const char *end = u->buf + u->len;
    const char *start = u->buf ? memmem(u->buf, u->len, "\"passages\":[", 12) : NULL;
    for (const char *p = start; p && p < end; k++) {
        p = memmem(p, (size_t)(end - p), "{\"text\":", 8);
        if (!p) break;
        p += 8;
    }
    if (k > canned_max) k = canned_max;
    size_t n = canned_end[k];
    r->body = malloc(n + 128);
    if (!r->body) return;
    memcpy(r->body, "{\"rankings\":[", 13);
    memcpy(r->body + 13, canned, n);
    size_t len = 13 + (k ? n - 1 : 0); /* the last entry's comma goes */
    len += (size_t)snprintf(r->body + len, 128,
                            "],\"usage\":{\"prompt_tokens\":%ld,"
                            "\"total_tokens\":%ld}}",
                            k, k);
    r->body_len = len;
}

static void usage(void) {
    fputs("usage: fakenim [--port N] [--api-key KEY] [--max-passages N] [--lifetime SECONDS]\n"
          "               [--script PATH] [--canned N]\n"
          "Serves the NIM reranking API on 127.0.0.1 and prints 'PORT <n>' once listening.\n",
          stderr);
}

int main(int argc, char **argv) {
    int port = 0, lifetime = 1800, max_passages = 512;
    const char *api_key = NULL;
    const char *script = FAKENIM_SCRIPT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--port") == 0 && v)
            port = atoi(argv[++i]);
        else if (strcmp(a, "--api-key") == 0 && v)
            api_key = argv[++i];
        else if (strcmp(a, "--max-passages") == 0 && v)
            max_passages = atoi(argv[++i]);
        else if (strcmp(a, "--lifetime") == 0 && v)
            lifetime = atoi(argv[++i]);
        else if (strcmp(a, "--script") == 0 && v)
            script = argv[++i];
        else if (strcmp(a, "--canned") == 0 && v) {
            if (build_canned(atol(argv[++i])) != 0) return 1;
        } else {
            usage();
            return 2;
        }
    }
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    if (api_key) {
        lua_pushstring(L, api_key);
        lua_setfield(L, -2, "api_key");
    }
    lua_pushinteger(L, max_passages);
    lua_setfield(L, -2, "max_passages");
    lua_pushcfunction(L, lua_now_ms);
    lua_setfield(L, -2, "now_ms");
    lua_pushcfunction(L, lua_connections);
    lua_setfield(L, -2, "connections");
    lua_pushcfunction(L, lua_aborted);
    lua_setfield(L, -2, "aborted");
    lua_setglobal(L, "FAKE");
    if (luaL_dofile(L, script) != LUA_OK) {
        fprintf(stderr, "fakenim: %s\n", lua_tostring(L, -1));
        return 1;
    }

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(1024 * 1024), MHD_OPTION_END); /* room for a hostile 200 KB header */
    if (!d) {
        fprintf(stderr, "fakenim: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("PORT %u\n", info ? (unsigned)info->port : (unsigned)port);
    fflush(stdout);

    /* Runs until SIGTERM/SIGINT or the lifetime ends: it never outlives a lost test run. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    struct timespec ts = {lifetime, 0};
    sigtimedwait(&set, NULL, &ts);
    stopping = 1;
    MHD_stop_daemon(d);
    lua_close(L);
    free(canned);
    free(canned_end);
    return 0;
}
