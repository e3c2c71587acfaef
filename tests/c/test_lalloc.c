/* lalloc.c: the host's Lua allocator keeps every block's bytes through resizes across its
 * size classes and into and out of libc's, reuses freed blocks, hands out aligned blocks
 * that never overlap, and runs a whole Lua state (valgrind and ASan check the chunks). */
#include <stdint.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../../src/lalloc.h"
#include "ctest.h"

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 31 + i);
}

static int same(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 31 + i)) return 0;
    return 1;
}

static void resizes_keep_the_bytes_across_every_size(void) {
    nim_pool *pool = nim_pool_new();
    CHECK(pool != NULL);
    /* from 1 byte up past the small limit and back down, one step at a time */
    size_t sizes[] = {1, 15, 16, 17, 100, 256, 511, 512, 513, 4000, 513, 512, 48, 16, 3};
    unsigned char *p = nim_pool_alloc(pool, NULL, LUA_TTABLE, sizes[0]); /* a kind, not a size */
    fill(p, sizes[0], 7);
    for (size_t i = 1; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t keep = sizes[i - 1] < sizes[i] ? sizes[i - 1] : sizes[i];
        p = nim_pool_alloc(pool, p, sizes[i - 1], sizes[i]);
        CHECK(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0); /* any Lua object may live there */
        CHECK(same(p, keep, 7));
        fill(p, sizes[i], 7);
    }
    CHECK(nim_pool_alloc(pool, p, 3, 0) == NULL); /* a free answers NULL */
    nim_pool_free(pool);
}

static void freed_blocks_are_reused_and_live_ones_never_overlap(void) {
    nim_pool *pool = nim_pool_new();
    enum { N = 20000 }; /* several chunks of every size */
    static unsigned char *blocks[N];
    static size_t sizes[N];
    for (size_t i = 0; i < N; i++) {
        sizes[i] = 1 + (i * 37) % 600; /* small and large mixed */
        blocks[i] = nim_pool_alloc(pool, NULL, 0, sizes[i]);
        CHECK(blocks[i] != NULL);
        fill(blocks[i], sizes[i], (unsigned)i);
    }
    int intact = 1;
    for (size_t i = 0; i < N; i++)
        intact &= same(blocks[i], sizes[i], (unsigned)i);
    CHECK(intact); /* no block was written by another's fill */
    void *freed = blocks[5];
    size_t freed_size = sizes[5];
    nim_pool_alloc(pool, freed, freed_size, 0);
    CHECK(nim_pool_alloc(pool, NULL, 0, freed_size) == freed); /* the last freed comes first */
    for (size_t i = 0; i < N; i++)
        nim_pool_alloc(pool, blocks[i], sizes[i], 0);
    nim_pool_free(pool);
}

static void trim_returns_the_chunks_without_live_objects(void) {
    nim_pool *pool = nim_pool_new();
    enum { N = 30000 };
    static void *blocks[N];
    for (size_t i = 0; i < N; i++)
        blocks[i] = nim_pool_alloc(pool, NULL, 0, 48);
    size_t peak = nim_pool_bytes(pool);
    CHECK(peak >= (size_t)N * 48);
    /* every block but one in the first chunk and one in the last is freed */
    for (size_t i = 1; i < N - 1; i++)
        nim_pool_alloc(pool, blocks[i], 48, 0);
    nim_pool_trim(pool);
    size_t kept = nim_pool_bytes(pool);
    CHECK(kept <= 3 * 64 * 1024); /* the two with a live block, and the current one */
    CHECK(kept >= 64 * 1024);
    /* the lists hold no block of a chunk that went: new blocks are usable and distinct */
    unsigned char *a = nim_pool_alloc(pool, NULL, 0, 48), *b = nim_pool_alloc(pool, NULL, 0, 48);
    CHECK(a && b && a != b);
    fill(a, 48, 1);
    fill(b, 48, 2);
    CHECK(same(a, 48, 1) && same(b, 48, 2));
    for (size_t i = 0; i < N - 2; i++) /* the lists refill from the kept chunks and new ones */
        blocks[i] = nim_pool_alloc(pool, NULL, 0, 48);
    nim_pool_trim(pool);
    CHECK(nim_pool_bytes(pool) >= peak / 2); /* all live: nothing to return */
    nim_pool_free(pool);
}

static void a_lua_state_runs_on_it(void) {
    nim_pool *pool = nim_pool_new();
    lua_State *L = lua_newstate(nim_pool_alloc, pool);
    CHECK(L != NULL);
    luaL_openlibs(L);
    const char *code = "local t = {}\n"
                       "for i = 1, 20000 do t[i] = { index = i, text = ('x'):rep(i % 700) } end\n"
                       "local s = 0\n"
                       "for i = 1, 20000, 3 do t[i] = nil end\n"
                       "collectgarbage()\n"
                       "for i = 2, 20000, 3 do s = s + #t[i].text end\n"
                       "return s";
    CHECK(luaL_dostring(L, code) == LUA_OK);
    lua_Integer want = 0;
    for (lua_Integer i = 2; i <= 20000; i += 3)
        want += i % 700;
    CHECK(lua_tointeger(L, -1) == want);
    lua_settop(L, 0);
    size_t before = nim_pool_bytes(pool);
    CHECK(luaL_dostring(L, "collectgarbage()") == LUA_OK); /* the table is garbage now */
    nim_lua_trim(L);
    CHECK(nim_pool_bytes(pool) < before / 2); /* the table's chunks went back */
    CHECK(luaL_dostring(L, "local t = {} for i = 1, 1000 do t[i] = {i} end return #t") == LUA_OK);
    CHECK(lua_tointeger(L, -1) == 1000);
    lua_close(L);
    nim_pool_free(pool);
}

int main(void) {
    RUN(resizes_keep_the_bytes_across_every_size);
    RUN(freed_blocks_are_reused_and_live_ones_never_overlap);
    RUN(trim_returns_the_chunks_without_live_objects);
    RUN(a_lua_state_runs_on_it);
    return CTEST_SUMMARY("lalloc");
}
