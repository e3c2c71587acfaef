/* nimrank.h: the public C API of nimrank (libnimrank.a).
 * A C program that hosts Lua registers the module with
 *     luaL_requiref(L, "nim", luaopen_nim, 1);
 * and from then on Lua code calls nim.rerank{...}. */
#ifndef NIMRANK_H
#define NIMRANK_H

#include <lua.h>

#define NIMRANK_VERSION "0.1.0"

#if defined(__GNUC__)
#define NIMRANK_API __attribute__((visibility("default")))
#else
#define NIMRANK_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Opens the `nim` module: pushes its table. libcurl's global state is set up on the first
 * network call; a threaded host should call nimrank_global_init() first, before threads. */
NIMRANK_API int luaopen_nim(lua_State *L);

/* Loads libcurl and runs curl_global_init, once per process. Optional: the first network call
 * does it; a threaded host calls it before starting threads. 0 on success. */
NIMRANK_API int nimrank_global_init(void);
/* curl_global_cleanup, if libcurl was loaded. At exit, after every lua_State is closed. */
NIMRANK_API void nimrank_global_cleanup(void);

/* ---- Driving nimrank from your own event loop ---------------------------------------------
 * Each lua_State that opened `nim` has one network engine. A host with its own loop (a game,
 * an editor) drives it in one of two ways; completed requests then run their Lua callbacks
 * (nim.rerank_async(args, fn)) and resume nim's tasks, inside these calls. Every function
 * that returns -1 has pushed its error message on the Lua stack.
 *
 * 1. Simple: each turn of your loop, wait until the descriptor from nimrank_fds() is readable
 *    (it is an epoll set holding nimrank's sockets) for at most nimrank_timeout() ms
 *    (shortened to your frame budget), then call nimrank_poll().
 * 2. Socket callbacks (curl's CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION style, as in curl's
 *    multi-uv.c): call nimrank_set_loop() once. nimrank calls watch(ud, fd, events, socketp)
 *    to start or change (events NIMRANK_WATCH_IN|OUT) or stop (events 0) watching a socket;
 *    socketp is what you stored for that fd with nimrank_assign() (NULL until then), so your
 *    watcher is found without a search. timer(ud, ms) asks for a call back after ms (-1:
 *    cancel). On readiness call nimrank_socket_action(L, fd, events); when the timer fires,
 *    nimrank_socket_action(L, -1, 0).
 * nimrank's sockets are its HTTP transfers' and its Redis connections' (nim.redis) alike.
 * Blocking calls (nim.rerank outside a task, req:wait()) keep working in both modes: they
 * drive the same sockets through the same epoll set, never a second mechanism.
 * Closing the state cancels what is pending, and that stops the watching of its sockets: a
 * host whose loop is gone before lua_close detaches first, nimrank_set_loop(L, NULL, NULL,
 * NULL), and then hears nothing more. */
enum { NIMRANK_WATCH_IN = 1, NIMRANK_WATCH_OUT = 2 };
typedef void (*nimrank_watch_fn)(void *ud, int fd, int events, void *socketp);
typedef void (*nimrank_timer_fn)(void *ud, long timeout_ms);

NIMRANK_API int nimrank_set_loop(lua_State *L, nimrank_watch_fn watch, nimrank_timer_fn timer,
                                 void *ud);
/* Stores socketp for fd: watch() passes it back from then on. 0, or -1 (not a socket of
 * nimrank's). */
NIMRANK_API int nimrank_assign(lua_State *L, int fd, void *socketp);
NIMRANK_API int nimrank_socket_action(lua_State *L, int fd, int events);
/* ms until nimrank wants nimrank_poll() (network timers and nim.sleep in tasks); -1: nothing
 * pending, 0: now. Never fails: an error shows up from the next nimrank_poll(). */
NIMRANK_API long nimrank_timeout(lua_State *L);
/* Fills fds[0] and events[0] with the one descriptor to wait on (NIMRANK_WATCH_IN); returns
 * the count (1, or 0 when max < 1). */
NIMRANK_API int nimrank_fds(lua_State *L, int *fds, int *events, int max);
/* Moves transfers without blocking and runs what completed (nim.poll()). Returns the number of
 * requests and tasks still pending. */
NIMRANK_API int nimrank_poll(lua_State *L);

#ifdef __cplusplus
}
#endif
#endif
