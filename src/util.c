/* util.c: small functions of the nim table: the clock, sleeping, terminals, JSON lists, and
 * the nim.Request handle the Lua scheduler fills with methods. */
#include <errno.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "binding.h"
#include "clock.h"

/* nim.now() -> seconds on a monotonic clock (for timing and frame loops). */
int nim_l_now(lua_State *L) {
    lua_pushnumber(L, nim_now());
    return 1;
}

/* nim.sleep(seconds): blocks this thread (the router's default wait between retries). */
int nim_l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s < 1e7, 1, "seconds must be between 0 and 1e7");
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
    return 0;
}

/* nim.isatty(fd) -> boolean (0 stdin, 1 stdout, 2 stderr) */
int nim_l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* nim.terminal_width(fd) -> columns of the terminal on fd, or nil when it is none. */
int nim_l_terminal_width(lua_State *L) {
    struct winsize w;
    if (ioctl((int)luaL_checkinteger(L, 1), TIOCGWINSZ, &w) != 0 || w.ws_col == 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, w.ws_col);
    return 1;
}

/* nim.array([t]) -> t marked as a JSON array (so an empty one encodes as []). */
int nim_l_array(lua_State *L) {
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    else
        luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    nim_mark_array(L, 1);
    return 1;
}

/* nim.native.handle(task) -> a nim.Request userdata whose user value is task. The methods,
 * __gc and __close come from the Lua scheduler (lua/nim/async.lua), which fills
 * nim.native.request_mt: a userdata, so `type(req)` is what users expect of a handle. */
int nim_l_handle(lua_State *L) {
    luaL_checkany(L, 1);
    lua_newuserdatauv(L, 1, 1);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    nim_setmeta(L, &nim_key_request_mt);
    return 1;
}

/* nim.native.task_of(handle) -> the task table of a nim.Request */
int nim_l_task_of(lua_State *L) {
    nim_checkudata(L, 1, &nim_key_request_mt, "nim.Request");
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* ---- instruction budgets for scripts that must not hang the caller (as Redis does) -------- */

/* The budget being spent, shared by every coroutine: a new thread inherits its creator's hook
 * but counts afresh, so the hook fires every BUDGET_STEP instructions in any thread and takes
 * from one shared count; creating coroutines cannot multiply a budget. */
typedef struct {
    lua_Integer left;
    lua_State *owner; /* the thread that runs the budgeted function */
} budget;
#define BUDGET_STEP 1000

static const char budget_key = 0; /* registry: the budget userdata (its name as user value) */

static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &budget_key);
    budget *b = lua_touserdata(L, -1);
    if (!b) { /* a thread that outlived its budget's call: nothing to count against */
        lua_pop(L, 1);
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    b->left -= lua_gethookcount(L);
    if (b->left > 0) {
        lua_pop(L, 1);
        return;
    }
    /* Every instruction now, here and in the budget's own thread (a coroutine's error would
     * only come back from resume): pcall cannot swallow it for long. */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    lua_sethook(b->owner, budget_hook, LUA_MASKCOUNT, 1);
    lua_getiuservalue(L, -1, 1);
    luaL_error(L, "nim: %s: stopped after its instruction budget (a runaway loop?)",
               lua_tostring(L, -1));
}

/* nim.native.budget(instructions, name, fn, ...) -> fn's results: runs fn with a count hook
 * that raises, naming `name`, once it (and any coroutine it starts) has run that many VM
 * instructions. The caller's own hook (a debugger's) is restored afterwards. Time spent
 * inside C functions is not counted. */
int nim_l_budget(lua_State *L) {
    lua_Integer count = luaL_checkinteger(L, 1);
    luaL_argcheck(L, count > 0 && count <= 0x7fffffff, 1, "must be between 1 and 2^31-1");
    luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_Hook old = lua_gethook(L);
    int old_mask = lua_gethookmask(L), old_count = lua_gethookcount(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &budget_key); /* the outer budget, if nested */
    budget *outer = lua_touserdata(L, -1);
    if (outer) {
        /* Nested (a filter's own budgeted call): setting our hook restarts the outer one's
         * count, so the outer is charged a whole step for the instructions that loses, and
         * the inner may spend no more than the outer has left. */
        outer->left -= BUDGET_STEP;
        if (outer->left <= 0) {
            lua_getiuservalue(L, -1, 1);
            return luaL_error(L, "nim: %s: stopped after its instruction budget (a runaway loop?)",
                              lua_tostring(L, -1));
        }
        if (count > outer->left) count = outer->left;
    }
    budget *b = lua_newuserdatauv(L, sizeof *b, 1);
    b->left = count;
    b->owner = L;
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &budget_key);
    lua_insert(L, 3); /* slot 3: the outer budget; the function and its arguments above */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, count < BUDGET_STEP ? (int)count : BUDGET_STEP);
    int status = lua_pcall(L, lua_gettop(L) - 4, LUA_MULTRET, 0);
    lua_sethook(L, old, old_mask, old_count);
    lua_pushvalue(L, 3);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &budget_key);
    if (outer) {
        outer->left -= count - b->left; /* what the inner spent is the outer's too */
        if (outer->left <= 0) lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1); /* stop it next */
    }
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L) - 3;
}
