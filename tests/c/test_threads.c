/* Two lua_States on two threads at once: each opens nim, reranks offline and (with a fake
 * server) over the network. `make test-tsan` runs this under ThreadSanitizer; the plain suite
 * runs it too. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../../src/nimrank.h"
#include "ctest.h"

#define THREADS 2

static const char *work =
    "local url = ...\n"
    "for i = 1, 30 do\n"
    "  local r = assert(nim.rerank{model = 'local/bm25', query = 'gpu memory',\n"
    "    documents = {'cats', 'gpu memory bandwidth', 'memory'}})\n"
    "  assert(r.results[1].index == 1)\n"
    "end\n"
    "if url then\n"
    "  for i = 1, 10 do\n"
    "    local r, err = nim.rerank{model = "
    "'nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2',\n"
    "      api_base = url, query = 'gpu memory', documents = {'cats', 'gpu memory'}}\n"
    "    assert(r, tostring(err))\n"
    "    assert(r.results[1].index == 1)\n"
    "  end\n"
    "end\n"
    "return 'done'\n";

typedef struct {
    int ok;
    char err[256];
} outcome;

static void *worker(void *ud) {
    outcome *o = ud;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nim", luaopen_nim, 1);
    lua_pop(L, 1);
    const char *url = getenv("FAKE_OPEN_URL");
    if (luaL_loadstring(L, work) == LUA_OK) {
        if (url)
            lua_pushstring(L, url);
        else
            lua_pushnil(L);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) o->ok = 1;
    }
    if (!o->ok) snprintf(o->err, sizeof o->err, "%s", lua_tostring(L, -1));
    lua_close(L);
    return NULL;
}

static void two_states_on_two_threads(void) {
    pthread_t t[THREADS];
    outcome o[THREADS] = {{0}};
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, &o[i]) == 0);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        if (!o[i].ok) fprintf(stderr, "  thread %d: %s\n", i, o[i].err);
        CHECK(o[i].ok);
    }
}

int main(void) {
    setenv("NIMRANK_LUA_PATH", "lua", 1); /* before any thread: setenv is not thread-safe */
    if (!getenv("FAKE_OPEN_URL")) printf("(no FAKE_OPEN_URL: offline part only)\n");
    CHECK(nimrank_global_init() == 0); /* libcurl's global set-up, before threads */
    RUN(two_states_on_two_threads);
    nimrank_global_cleanup();
    return CTEST_SUMMARY("c/threads");
}
