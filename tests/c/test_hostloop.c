/* The C API for a host's own loop (nimrank.h) and opening the module, from a C host. */
#include <poll.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../../src/nimrank.h"
#include "ctest.h"

static lua_State *open_state(const char *layer_path) {
    setenv("NIMRANK_LUA_PATH", layer_path, 1);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nim", luaopen_nim, 1);
    lua_pop(L, 1);
    return L;
}

static int run(lua_State *L, const char *code) {
    return luaL_dostring(L, code) == LUA_OK ? 0 : (lua_pop(L, 1), -1);
}

static void opening_twice_gives_the_same_module(void) {
    lua_State *L = open_state("lua");
    luaL_requiref(L, "nim", luaopen_nim, 0);
    lua_getglobal(L, "nim");
    CHECK(lua_rawequal(L, -1, -2));
    lua_pop(L, 2);
    CHECK(lua_gettop(L) == 0);
    lua_close(L);
}

static void poll_failure_pushes_its_message(void) {
    lua_State *L = open_state("lua");
    CHECK(run(L, "nim.spawn(function() error('boom in a task') end)") == 0);
    int top = lua_gettop(L);
    CHECK(nimrank_poll(L) == -1);
    CHECK(lua_gettop(L) == top + 1);
    CHECK(lua_type(L, -1) == LUA_TSTRING && strstr(lua_tostring(L, -1), "boom in a task"));
    lua_pop(L, 1);
    CHECK(nimrank_poll(L) == 0); /* nothing left */
    CHECK(lua_gettop(L) == top);
    lua_close(L);
}

static void without_the_layer_poll_still_moves_transfers(void) {
    lua_State *L = open_state("/nonexistent");
    int top = lua_gettop(L);
    CHECK(nimrank_poll(L) == 0);     /* no error, nothing pending */
    CHECK(nimrank_timeout(L) == -1); /* nothing pending */
    CHECK(lua_gettop(L) == top);     /* nothing pushed on success */
    int fds[4], events[4];
    CHECK(nimrank_fds(L, fds, events, 4) == 1); /* one epoll set */
    CHECK(fds[0] >= 0 && events[0] == NIMRANK_WATCH_IN);
    CHECK(run(L, "assert(nim.native.layer_error:find('NIMRANK_LUA_PATH'))") == 0);
    CHECK(run(L, "nim.load_config({})") == -1); /* the stub says the layer is missing */
    lua_close(L);
}

static void assign_needs_a_watched_socket(void) {
    lua_State *L = open_state("lua");
    int top = lua_gettop(L);
    CHECK(nimrank_assign(L, 12345, NULL) == -1);
    CHECK(lua_gettop(L) == top + 1 && lua_type(L, -1) == LUA_TSTRING);
    lua_close(L);
}

/* The socket-callback style: every call for a socket after nimrank_assign() hands back the
 * pointer stored for it, so the host never searches its own table. */
typedef struct {
    lua_State *L;
    int calls, with_pointer, wrong_pointer, stops;
    int slot_fd[8];
} host_loop;

static void watch(void *ud, int fd, int events, void *socketp) {
    host_loop *h = ud;
    h->calls++;
    if (socketp) {
        h->with_pointer++;
        if (*(int *)socketp != fd) h->wrong_pointer++;
    }
    if (events == 0) {
        h->stops++;
        if (socketp) *(int *)socketp = -1;
        return;
    }
    if (!socketp) {
        for (int i = 0; i < 8; i++) {
            if (h->slot_fd[i] < 0) {
                h->slot_fd[i] = fd;
                CHECK(nimrank_assign(h->L, fd, &h->slot_fd[i]) == 0);
                break;
            }
        }
    }
}

static void timer(void *ud, long ms) {
    (void)ud;
    (void)ms;
}

static void watch_gets_back_the_pointer_assigned_to_its_socket(void) {
    const char *url = getenv("FAKE_OPEN_URL");
    if (!url) {
        printf("  (no FAKE_OPEN_URL: skipped)\n");
        return;
    }
    lua_State *L = open_state("lua");
    host_loop h = {L, 0, 0, 0, 0, {-1, -1, -1, -1, -1, -1, -1, -1}};
    CHECK(nimrank_set_loop(L, watch, timer, &h) == 0);
    lua_pushstring(L, url);
    lua_setglobal(L, "URL");
    /* blocking calls drive the same sockets: two of them, on one kept-alive connection */
    CHECK(run(L, "for i = 1, 2 do assert(nim.rerank{model = "
                 "'nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2', api_base = URL, "
                 "query = 'gpu', documents = {'gpu', 'cat'}}) end") == 0);
    lua_close(L);
    CHECK(h.calls >= 2);
    CHECK(h.with_pointer >= 1); /* the later calls came with the pointer */
    CHECK(h.wrong_pointer == 0);
}

/* The simple loop drives bare nim.Transfer handles too, with the Lua layer loaded: each turn
 * waits on the one descriptor, then nimrank_poll moves the engine. */
static void simple_loop_completes_a_bare_transfer(void) {
    const char *url = getenv("FAKE_OPEN_URL");
    if (!url) return;
    lua_State *L = open_state("lua");
    lua_pushstring(L, url);
    lua_setglobal(L, "URL");
    CHECK(run(L, "t = nim.native.start{model = "
                 "'nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2', api_base = URL, "
                 "query = '!delay=100 gpu bare', documents = {'gpu', 'cat'}}") == 0);
    int turns = 0, done = 0;
    while (!done && turns < 2000) {
        int fds[1], events[1];
        int n = nimrank_fds(L, fds, events, 1);
        long wait = nimrank_timeout(L);
        struct pollfd p = {fds[0], POLLIN, 0};
        poll(&p, n > 0 ? 1 : 0, wait < 0 || wait > 50 ? 50 : (int)wait);
        CHECK(nimrank_poll(L) >= 0);
        turns++;
        lua_getglobal(L, "t");
        lua_getfield(L, -1, "done");
        lua_insert(L, -2);
        lua_call(L, 1, 1);
        done = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    CHECK(done);
    CHECK(turns < 100); /* it waited, it did not spin */
    lua_close(L);
}

/* A host whose loop goes before its state detaches first: then lua_close calls nothing. */
static int closing, after_close;
static void counting_watch(void *ud, int fd, int events, void *socketp) {
    (void)ud, (void)fd, (void)events, (void)socketp;
    if (closing) after_close++;
}
static void counting_timer(void *ud, long ms) {
    (void)ud, (void)ms;
    if (closing) after_close++;
}

static void no_callbacks_while_closing(void) {
    const char *url = getenv("FAKE_OPEN_URL");
    if (!url) return;
    lua_State *L = open_state("lua");
    CHECK(nimrank_set_loop(L, counting_watch, counting_timer, NULL) == 0);
    lua_pushstring(L, url);
    lua_setglobal(L, "URL");
    CHECK(run(L, "assert(nim.native.rerank{model = "
                 "'nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2', api_base = URL, "
                 "query = 'gpu', documents = {'gpu'}})\n"
                 "pending = nim.native.start{model = "
                 "'nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2', api_base = URL, "
                 "query = '!delay=2000 gpu pending', documents = {'gpu'}}\n"
                 "nim.native.step(0.05)") == 0);
    CHECK(nimrank_set_loop(L, NULL, NULL, NULL) == 0);
    closing = 1;
    lua_close(L); /* a pending transfer and a kept-alive connection */
    CHECK(after_close == 0);
    closing = 0;
}

int main(void) {
    RUN(opening_twice_gives_the_same_module);
    RUN(poll_failure_pushes_its_message);
    RUN(without_the_layer_poll_still_moves_transfers);
    RUN(assign_needs_a_watched_socket);
    RUN(watch_gets_back_the_pointer_assigned_to_its_socket);
    RUN(simple_loop_completes_a_bare_transfer);
    RUN(no_callbacks_while_closing);
    nimrank_global_cleanup();
    return CTEST_SUMMARY("c/hostloop");
}
