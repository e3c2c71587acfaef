/* frameloop: a host program with its own poll(2) loop that embeds Lua and nim, renders
 * "frames" at ~60 Hz and reranks in the background. Build and run:
 *     make examples
 *     build/frameloop [--callbacks] [BASE_URL [QUERY]]    (default http://localhost:8000)
 * The request goes to a NIM container's /v1/ranking at BASE_URL; the Lua callback stores the
 * answer. Without --callbacks the loop uses nimrank_fds()/nimrank_timeout()/nimrank_poll();
 * with it, nimrank_set_loop() tells the loop which sockets to watch and
 * nimrank_socket_action() reports readiness (curl's socket API, as in libuv or epoll loops).
 * Build it like any host: cc frameloop.c $(pkg-config --cflags --libs nimrank) */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "nimrank.h"

#define MAX_WATCH 64
#define FRAME_MS 16

/* The socket-callback style: nimrank tells us what to watch and when to call back. Each
 * watched socket gets a slot; nimrank_assign() hands the slot back with every later call for
 * that socket, so nothing is searched. A free slot has fd -1, which poll(2) ignores. */
static struct pollfd watched[MAX_WATCH];
static long timer_ms = -1;

static void on_watch(void *ud, int fd, int events, void *socketp) {
    lua_State *L = ud;
    struct pollfd *slot = socketp;
    if (events == 0) { /* stop watching */
        if (slot) slot->fd = -1;
        return;
    }
    if (!slot) {
        for (int i = 0; i < MAX_WATCH && !slot; i++)
            if (watched[i].fd < 0) slot = &watched[i];
        if (!slot) return; /* full: a real program would grow its table */
        nimrank_assign(L, fd, slot);
    }
    slot->fd = fd;
    slot->events = (short)(((events & NIMRANK_WATCH_IN) ? POLLIN : 0) |
                           ((events & NIMRANK_WATCH_OUT) ? POLLOUT : 0));
}

static void on_timer(void *ud, long ms) {
    (void)ud;
    timer_ms = ms;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static const char *script =
    "local base, query = ...\n"
    "done = false\n"
    "nim.rerank_async({\n"
    "  model = 'nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2', api_base = base,\n"
    "  query = query,\n"
    "  documents = { 'Blocking network calls on the main thread stall the frame.',\n"
    "                'Pine trees keep their needles in winter.',\n"
    "                'Texture uploads and shader compiles cause frame hitches.' },\n"
    "  top_n = 2,\n"
    "}, function(res, err)\n"
    "  done = true\n"
    "  if not res then answer = 'error: ' .. tostring(err) return end\n"
    "  local lines = {}\n"
    "  for _, r in ipairs(res.results) do\n"
    "    lines[#lines + 1] = ('[%d] %.3f %s'):format(r.index, r.relevance_score, r.document.text)\n"
    "  end\n"
    "  answer = table.concat(lines, '\\n')\n"
    "end)\n";

static int lua_bool(lua_State *L, const char *global) {
    lua_getglobal(L, global);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

int main(int argc, char **argv) {
    int callbacks = argc > 1 && strcmp(argv[1], "--callbacks") == 0;
    const char *base = argc > 1 + callbacks ? argv[1 + callbacks] : "http://localhost:8000";
    const char *query =
        argc > 2 + callbacks ? argv[2 + callbacks] : "what slows down a game frame?";
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nim", luaopen_nim, 1); /* also loads the Lua layer (rerank_async) */
    lua_pop(L, 1);
    for (int i = 0; i < MAX_WATCH; i++)
        watched[i].fd = -1;
    if (callbacks && nimrank_set_loop(L, on_watch, on_timer, L) != 0) {
        fprintf(stderr, "frameloop: %s\n", lua_tostring(L, -1));
        return 1;
    }
    if (luaL_loadstring(L, script) != LUA_OK) return 1;
    lua_pushstring(L, base);
    lua_pushstring(L, query);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        fprintf(stderr, "frameloop: %s\n", lua_tostring(L, -1));
        return 1;
    }

    int frames = 0;
    double worst = 0, start = now_ms(), next_frame = start;
    while (!lua_bool(L, "done") && now_ms() - start < 30000) {
        /* Wait for the network, but never past the next frame. */
        double budget = next_frame - now_ms();
        int wait = budget > 0 ? (int)budget : 0;
        int rc;
        if (callbacks) {
            if (timer_ms >= 0 && timer_ms < wait) wait = (int)timer_ms;
            int n = poll(watched, MAX_WATCH, wait);
            rc = 0;
            if (n == 0 && timer_ms >= 0) rc = nimrank_socket_action(L, -1, 0);
            for (int i = 0; i < MAX_WATCH && n > 0 && rc >= 0; i++) {
                if (watched[i].fd < 0 || !watched[i].revents) continue;
                int ev =
                    ((watched[i].revents & (POLLIN | POLLHUP | POLLERR)) ? NIMRANK_WATCH_IN : 0) |
                    ((watched[i].revents & POLLOUT) ? NIMRANK_WATCH_OUT : 0);
                rc = nimrank_socket_action(L, watched[i].fd, ev);
            }
        } else {
            int fds[MAX_WATCH], events[MAX_WATCH];
            struct pollfd p[MAX_WATCH];
            int n = nimrank_fds(L, fds, events, MAX_WATCH);
            for (int i = 0; i < n; i++) {
                p[i].fd = fds[i];
                p[i].events = (short)(((events[i] & NIMRANK_WATCH_IN) ? POLLIN : 0) |
                                      ((events[i] & NIMRANK_WATCH_OUT) ? POLLOUT : 0));
            }
            long t = nimrank_timeout(L);
            if (t >= 0 && t < wait) wait = (int)t;
            poll(p, (nfds_t)(n > 0 ? n : 0), wait);
            rc = nimrank_poll(L);
        }
        if (rc < 0) {
            fprintf(stderr, "frameloop: %s\n", lua_tostring(L, -1));
            return 1;
        }
        double t = now_ms();
        if (t >= next_frame) { /* "render" a frame */
            double late = t - next_frame;
            if (late > worst) worst = late;
            frames++;
            next_frame += FRAME_MS;
            if (next_frame < t) next_frame = t + FRAME_MS;
        }
    }
    lua_getglobal(L, "answer");
    printf("%s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no answer)");
    printf("frames rendered while reranking: %d, latest frame %.1f ms late (%s mode)\n", frames,
           worst, callbacks ? "socket-callback" : "simple");
    lua_close(L);
    nimrank_global_cleanup();
    return 0;
}
