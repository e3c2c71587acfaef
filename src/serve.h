/* serve.h: `nimrank serve`, the LiteLLM-compatible rerank gateway. serve.c is the command and
 * the supervisor (options, the port, worker processes, signals); server.c is one worker (the
 * event loop that drives libmicrohttpd and the engine, and the bridge to lua/nim/proxy.lua);
 * board.c is the shared memory the workers pin their metrics on. Only the program links these:
 * libnimrank.a and nim.so stay free of libmicrohttpd. */
#ifndef NIM_SERVE_H
#define NIM_SERVE_H

#include <lua.h>

#include "board.h"

enum { NIM_LOG_DEBUG, NIM_LOG_INFO, NIM_LOG_WARN, NIM_LOG_ERROR };

typedef struct {
    const char *config_path; /* NULL: no config (provider model strings only) */
    const char *host;
    int host_given;
    int port;
    int workers;
    const char *log_path; /* NULL: stderr */
    int log_level;
    double grace_s;          /* SIGTERM: how long in-flight requests may take */
    double header_timeout_s; /* from a request's first line to the end of its headers */
    double body_timeout_s;   /* from there to the end of its body */
    unsigned idle_timeout_s; /* a connection with no traffic for this long is closed */
    unsigned max_connections;
} nim_serve_opts;

/* `nimrank serve ...` inside the host's protected call: L has `nim` open and the config (if
 * any) loaded. Returns the exit code. */
int nim_serve_main(lua_State *L, const char *config_path, int argc, char **argv);

/* One worker: serves on listen_fd until drained. Writes one byte to ready_fd once serving. */
int nim_server_run(lua_State *L, const nim_serve_opts *o, int listen_fd, nim_board *board,
                   int worker, int ready_fd);

/* The log line writer the supervisor and the workers share: one JSON object a line. */
void nim_serve_log(int level, const char *event, const char *message);
int nim_serve_log_open(const nim_serve_opts *o); /* 0, or -1 with errno */

#endif
