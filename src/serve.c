/* serve.c: the `nimrank serve` command and its supervisor.
 *
 * The supervisor checks the config (the host loaded it; proxy.setup checks what the gateway
 * needs of it), holds the port (a bound, never-listening SO_REUSEPORT socket, so port 0 picks
 * one port for all and a restarted worker gets the same), forks the workers, and then only
 * watches: a worker that dies is replaced (after a pause that grows while they keep dying);
 * SIGHUP checks the config file again and, when it is good, passes the signal on (each worker
 * reloads it itself; a bad file is reported and everyone keeps the old one); SIGTERM or SIGINT
 * is passed on and waited for (the workers drain: no new connections, in-flight requests
 * finish within the grace period), then it exits 0.
 *
 * A worker is a fork of the supervisor: it inherits the Lua state with the config already
 * loaded and libcurl initialised (no network has been touched: no handle or connection of
 * libcurl is shared), and dies with it (PR_SET_PDEATHSIG). Each worker opens its own
 * listening socket on the port: the kernel spreads connections across them. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "binding.h"
#include "clock.h"
#include "lalloc.h"
#include "nimrank.h"
#include "serve.h"

static const char serve_usage[] =
    "usage: nimrank serve [--config FILE] [options]\n"
    "\n"
    "A LiteLLM-compatible rerank gateway: POST /rerank, /v1/rerank, /v2/rerank (Cohere-style),\n"
    "GET /health/liveliness (/health/liveness), /health/readiness, /v1/models (/models),\n"
    "/metrics. Reads LiteLLM's config.yaml: model_list, router_settings, litellm_settings,\n"
    "general_settings.master_key (clients send it as 'Authorization: Bearer KEY' or\n"
    "'x-api-key: KEY') and general_settings.max_request_size_mb (default 10).\n"
    "\n"
    "Options:\n"
    "  --config FILE        the config (also NIMRANK_CONFIG)\n"
    "  --host HOST          address to listen on (default 0.0.0.0 with a master key,\n"
    "                       127.0.0.1 without one)\n"
    "  --port PORT          port (default 4000; 0 picks a free one)\n"
    "  --workers N          worker processes (default: the number of cores)\n"
    "  --check              check the config and exit (0 when good, 2 with the errors)\n"
    "  --log FILE           append the JSON log lines to FILE (default: standard error)\n"
    "  --log-level LEVEL    debug, info (default: a line per request), warn or error\n"
    "  --grace SECONDS      on SIGTERM/SIGINT, how long in-flight requests may take (30)\n"
    "  --header-timeout S   a request's headers must arrive within S seconds of its first\n"
    "                       line (10)\n"
    "  --body-timeout S     and its body within S seconds more (30)\n"
    "  --idle-timeout S     a connection silent for S seconds is closed (60)\n"
    "  --max-connections N  per worker (default: what the open-file limit allows)\n"
    "  -h, --help           this help\n"
    "\n"
    "Signals: SIGHUP reloads the config without dropping a request; SIGTERM/SIGINT drain.\n"
    "Once serving it prints 'nimrank serve: listening on http://HOST:PORT (N workers)' on\n"
    "standard error.\n";

static const char *const LEVEL_NAMES[] = {"debug", "info", "warn", "error"};

static int parse_value(const char *opt, const char *s, double min, double max, int integer,
                       double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max) || (integer && v != (long)v)) {
        fprintf(stderr, "nimrank serve: %s: expected %s from %g to %g, got '%s'\n", opt,
                integer ? "an integer" : "a number", min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}
#define parse_number(opt, s, min, max, out) parse_value(opt, s, min, max, 0, out)
#define parse_int(opt, s, min, max, out) parse_value(opt, s, min, max, 1, out)

static int parse_opts(int argc, char **argv, nim_serve_opts *o, int *check) {
    static const struct option longs[] = {{"host", required_argument, NULL, 'H'},
                                          {"port", required_argument, NULL, 'p'},
                                          {"workers", required_argument, NULL, 'w'},
                                          {"check", no_argument, NULL, 'c'},
                                          {"log", required_argument, NULL, 'l'},
                                          {"log-level", required_argument, NULL, 'L'},
                                          {"grace", required_argument, NULL, 'g'},
                                          {"header-timeout", required_argument, NULL, 't'},
                                          {"body-timeout", required_argument, NULL, 'b'},
                                          {"idle-timeout", required_argument, NULL, 'i'},
                                          {"max-connections", required_argument, NULL, 'm'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (nim_serve_opts){.host = "127.0.0.1",
                          .port = 4000,
                          .workers = cores > 0 ? (int)cores : 1,
                          .log_level = NIM_LOG_INFO,
                          .grace_s = 30,
                          .header_timeout_s = 10,
                          .body_timeout_s = 30,
                          .idle_timeout_s = 60};
    optind = 1;
    opterr = 0;
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "+h", longs, NULL)) != -1) {
        switch (c) {
        case 'H': o->host = optarg, o->host_given = 1; break;
        case 'p':
            if (parse_int("--port", optarg, 0, 65535, &v)) return 2;
            o->port = (int)v;
            break;
        case 'w':
            if (parse_int("--workers", optarg, 1, 256, &v)) return 2;
            o->workers = (int)v;
            break;
        case 'c': *check = 1; break;
        case 'l': o->log_path = optarg; break;
        case 'L': {
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, LEVEL_NAMES[i]) == 0) found = i;
            if (found < 0) {
                fprintf(stderr,
                        "nimrank serve: --log-level: expected debug, info, warn or "
                        "error, got '%s'\n",
                        optarg);
                return 2;
            }
            o->log_level = found;
            break;
        }
        case 'g':
            if (parse_number("--grace", optarg, 0, 86400, &o->grace_s)) return 2;
            break;
        case 't':
            if (parse_number("--header-timeout", optarg, 0.1, 3600, &o->header_timeout_s)) return 2;
            break;
        case 'b':
            if (parse_number("--body-timeout", optarg, 0.1, 3600, &o->body_timeout_s)) return 2;
            break;
        case 'i':
            if (parse_int("--idle-timeout", optarg, 1, 86400, &v)) return 2;
            o->idle_timeout_s = (unsigned)v;
            break;
        case 'm':
            if (parse_int("--max-connections", optarg, 1, 1e6, &v)) return 2;
            o->max_connections = (unsigned)v;
            break;
        case 'h': fputs(serve_usage, stdout); return 0;
        default:
            fprintf(stderr, "nimrank serve: unknown or incomplete option '%s'\n%s",
                    argv[optind - 1], serve_usage);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "nimrank serve: unexpected argument '%s'\n%s", argv[optind], serve_usage);
        return 2;
    }
    return -1; /* go on */
}

/* proxy.setup(config_path, reload) -> info table on the stack; or the error message and -1.
 * With reload the file is loaded again first (a bad one raises and the old config stays). */
static int proxy_setup(lua_State *L, const char *config_path, int reload) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "nim.proxy");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) return -1;
    lua_getfield(L, -1, "setup");
    lua_remove(L, -2);
    if (config_path)
        lua_pushstring(L, config_path);
    else
        lua_pushnil(L);
    lua_pushboolean(L, reload);
    return lua_pcall(L, 2, 1, 0) == LUA_OK ? 0 : -1;
}

/* More connections need more descriptors: the soft limit goes up to the hard one. */
static unsigned raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur > 1000000 ? 1000000u : (unsigned)rl.rlim_cur;
}

/* A socket bound to host:port with SO_REUSEPORT (listening or not); -1 with a message. */
static int bind_port(const char *host, int port, int listening, char *err, size_t errlen) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "--host %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || (listening && listen(fd, 4096) != 0)) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        if (fd >= 0) close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static int bound_port(int fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

typedef struct {
    pid_t pid;
    double started;
    int fails; /* quick deaths in a row */
    double restart_at;
} worker_t;

/* Forks worker i. In the child this never returns: it serves, then exits. */
static pid_t spawn_worker(lua_State *L, const nim_serve_opts *o, nim_board *board, int i,
                          int ready_fd, int hold_fd) {
    /* A config script (or NIMRANK_INIT) that made a call left the state an engine: a worker
     * must not share its sockets and epoll set with the others. */
    nim_ctx_drop_engine(L);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid; /* -1: counted as a worker that died at once */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(0); /* the supervisor is already gone */
    /* the signals stay blocked: the worker takes them from its own signalfd */
    close(hold_fd);
    char err[256];
    int fd = bind_port(o->host, o->port, 1, err, sizeof err);
    if (fd < 0) {
        nim_serve_log(NIM_LOG_ERROR, "start_failed", err);
        _exit(1);
    }
    int code = nim_server_run(L, o, fd, board, i, ready_fd);
    lua_close(L); /* cancels what is left and closes the engine */
    fflush(NULL);
    _exit(code);
}

static void say(int level, const char *event, const char *fmt, ...);

/* Worker i is gone (or never forked): it is started again after a pause that doubles, up to
 * 6.4 s, while it keeps dying within 5 s of its start. */
static void replace_later(worker_t *w, int i, const char *how, int code) {
    double lived = nim_now() - w[i].started;
    int pid = w[i].pid;
    w[i].pid = 0;
    w[i].fails = lived < 5.0 ? w[i].fails + 1 : 0;
    double pause = w[i].fails ? 0.1 * (1 << (w[i].fails < 6 ? w[i].fails : 6)) : 0;
    w[i].restart_at = nim_now() + pause;
    say(NIM_LOG_ERROR, "worker_died", "worker %d (pid %d) %s %d; replacing it in %.1f s", i, pid,
        how, code, pause);
}

/* A dead worker's counters stay in the sums: its last figures are added to the board's last
 * slot (which no worker writes), its gauges dropped (nim.metrics.retire). */
static void retire_metrics(lua_State *L, nim_board *board, int i, int nworkers) {
    static char dead[NIM_BOARD_SLOT_BYTES], kept[NIM_BOARD_SLOT_BYTES];
    size_t nd = nim_board_read(board, i, dead, sizeof dead);
    nim_board_clear(board, i);
    if (nd == 0) return;
    size_t nk = nim_board_read(board, nworkers, kept, sizeof kept);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "nim.metrics");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        lua_getfield(L, -1, "retire");
        lua_pushlstring(L, kept, nk);
        lua_pushlstring(L, dead, nd);
        if (lua_pcall(L, 2, 1, 0) == LUA_OK) {
            size_t n;
            const char *text = lua_tolstring(L, -1, &n);
            if (text) nim_board_pin(board, nworkers, text, n);
        }
    }
    lua_settop(L, 0);
}

static void say(int level, const char *event, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    nim_serve_log(level, event, msg);
}

int nim_serve_main(lua_State *L, const char *config_path, int argc, char **argv) {
    nim_serve_opts o;
    int check = 0;
    int rc = parse_opts(argc, argv, &o, &check);
    if (rc >= 0) return rc;
    o.config_path = config_path;
    if (proxy_setup(L, config_path, 0) != 0) {
        fprintf(stderr, "nimrank serve: %s\n", lua_tostring(L, -1));
        return 2;
    }
    lua_getfield(L, -1, "master_key");
    int has_key = lua_toboolean(L, -1);
    lua_getfield(L, -2, "summary");
    const char *summary = lua_tostring(L, -1);
    if (check) {
        printf("nimrank serve: config OK%s%s\n", summary ? ": " : "", summary ? summary : "");
        return 0;
    }
    lua_settop(L, 0);
    if (nim_serve_log_open(&o) != 0) {
        fprintf(stderr, "nimrank serve: --log %s: %s\n", o.log_path, strerror(errno));
        return 2;
    }
    if (!has_key && !o.host_given) {
        say(NIM_LOG_WARN, "no_master_key",
            "general_settings.master_key is not set: anyone who can connect may call; "
            "listening on 127.0.0.1 only (give --host to choose)");
    } else if (!o.host_given) {
        o.host = "0.0.0.0";
        /* every address, because of the key: a reload may not take the key away */
        (void)luaL_dostring(L, "require('nim.proxy').settings.key_required = true");
        lua_settop(L, 0);
    }
    unsigned fds = raise_fd_limit();
    /* half the descriptors for clients: the other half is the engine's (its default) */
    if (!o.max_connections) o.max_connections = fds / 2 > 64 ? fds / 2 - 32 : 32;

    char err[256];
    int hold = bind_port(o.host, o.port, 0, err, sizeof err);
    if (hold < 0) {
        fprintf(stderr, "nimrank serve: %s\n", err);
        return 1;
    }
    o.port = bound_port(hold);
    nim_board *board = nim_board_new(o.workers + 1); /* + the retired workers' counters */
    int ready[2];
    if (!board || pipe2(ready, O_CLOEXEC) != 0) {
        fprintf(stderr, "nimrank serve: cannot set up: %s\n", strerror(errno));
        close(hold);
        nim_board_free(board);
        return 1;
    }

    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);

    worker_t *w = calloc((size_t)o.workers, sizeof *w);
    /* libcurl is loaded and initialised once, here, rather than by each worker: what its
     * start-up writes (relocations, OpenSSL's tables) is then shared by the workers, not a
     * copy each, and what only its start-up reads is never in a worker's memory. No handle
     * or connection is made: a worker's engine is its own. Without libcurl the workers
     * report it as before. */
    (void)nimrank_global_init();
    /* The config load's garbage goes before the forks: every worker would carry its pages. */
    nim_lua_trim(L); /* a full collection, then free memory back to the system */
    for (int i = 0; i < o.workers; i++) {
        w[i].pid = spawn_worker(L, &o, board, i, ready[1], hold);
        w[i].started = nim_now();
        if (w[i].pid < 0) replace_later(w, i, "could not be forked", errno);
    }
    int announced = 0, readied = 0, stopping = 0, status = 0;
    double kill_at = 0;
    for (;;) {
        int alive = 0;
        double now = nim_now(), next = now + 1.0;
        for (int i = 0; i < o.workers; i++) {
            if (w[i].pid > 0)
                alive++;
            else if (!stopping && w[i].restart_at > 0 && w[i].restart_at < next)
                next = w[i].restart_at;
        }
        if (stopping && alive == 0) break;
        struct pollfd pfd[2] = {{sfd, POLLIN, 0}, {ready[0], POLLIN, 0}};
        int timeout = (int)((next - now) * 1000.0) + 1;
        if (poll(pfd, announced ? 1 : 2, timeout < 0 ? 0 : timeout) < 0 && errno != EINTR) break;
        if (!announced && (pfd[1].revents & POLLIN)) {
            char b[64];
            ssize_t n = read(ready[0], b, sizeof b);
            if (n > 0) readied += (int)n;
            if (readied >= o.workers) {
                announced = 1;
                fprintf(stderr, "nimrank serve: listening on http://%s%s%s:%d (%d worker%s)\n",
                        strchr(o.host, ':') ? "[" : "", o.host, strchr(o.host, ':') ? "]" : "",
                        o.port, o.workers, o.workers == 1 ? "" : "s");
                fflush(stderr);
            }
        }
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (si.ssi_signo == SIGHUP && !stopping) {
                /* loaded here too: a worker started later is a fork of this state */
                if (proxy_setup(L, config_path, 1) != 0) {
                    say(NIM_LOG_ERROR, "reload_refused", "the config was not reloaded: %s",
                        lua_tostring(L, -1));
                } else {
                    say(NIM_LOG_INFO, "reload", "config checked; workers reload it");
                    for (int i = 0; i < o.workers; i++)
                        if (w[i].pid > 0) kill(w[i].pid, SIGHUP);
                }
                lua_settop(L, 0);
            } else if ((si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) && !stopping) {
                stopping = 1;
                kill_at = nim_now() + o.grace_s + 5.0;
                say(NIM_LOG_INFO, "stopping", "draining %d worker(s), grace %g s", alive,
                    o.grace_s);
                for (int i = 0; i < o.workers; i++)
                    if (w[i].pid > 0) kill(w[i].pid, SIGTERM);
            }
        }
        int wst;
        pid_t pid;
        while ((pid = waitpid(-1, &wst, WNOHANG)) > 0) {
            for (int i = 0; i < o.workers; i++) {
                if (w[i].pid != pid) continue;
                int clean = WIFEXITED(wst) && WEXITSTATUS(wst) == 0;
                if (stopping) {
                    w[i].pid = 0;
                    nim_board_clear(board, i);
                    if (!clean) status = 1;
                    break;
                }
                retire_metrics(L, board, i, o.workers);
                replace_later(w, i, WIFSIGNALED(wst) ? "was killed by signal" : "exited with",
                              WIFSIGNALED(wst) ? WTERMSIG(wst) : WEXITSTATUS(wst));
                if (!announced && w[i].fails >= 5) { /* it cannot start: say so and stop */
                    say(NIM_LOG_ERROR, "start_failed",
                        "worker %d failed %d times in a row "
                        "before serving; stopping",
                        i, w[i].fails);
                    stopping = 1;
                    status = 1;
                    kill_at = nim_now() + o.grace_s + 5.0;
                    for (int k = 0; k < o.workers; k++)
                        if (w[k].pid > 0) kill(w[k].pid, SIGTERM);
                }
            }
        }
        now = nim_now();
        for (int i = 0; i < o.workers && !stopping; i++) {
            if (w[i].pid == 0 && w[i].restart_at > 0 && w[i].restart_at <= now) {
                w[i].restart_at = 0;
                w[i].pid = spawn_worker(L, &o, board, i, -1, hold);
                w[i].started = now;
                if (w[i].pid < 0)
                    replace_later(w, i, "could not be forked", errno);
                else
                    say(NIM_LOG_INFO, "worker_started", "worker %d is pid %d", i, (int)w[i].pid);
            }
        }
        if (stopping && now >= kill_at) {
            for (int i = 0; i < o.workers; i++)
                if (w[i].pid > 0) kill(w[i].pid, SIGKILL);
            status = 1;
            kill_at = now + 1.0;
        }
    }
    say(NIM_LOG_INFO, "stopped", "all workers stopped");
    free(w);
    close(sfd);
    close(ready[0]);
    close(ready[1]);
    close(hold);
    nim_board_free(board);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return status;
}
