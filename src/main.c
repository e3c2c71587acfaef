/* main.c: the `nimrank` host program. Creates the Lua state, opens `nim`, finds the Lua layer
 * and dispatches a subcommand. All set-up runs inside one protected call (as lua.c's pmain). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <lua-cjson.h>

#include "lalloc.h"
#include "nimrank.h"
#include "serve.h"

static const char *progname = "nimrank";

static const char usage[] =
    "usage: nimrank [options] [SCRIPT.lua [ARGS...]]\n"
    "       nimrank COMMAND [options]\n"
    "\n"
    "nimrank runs Lua 5.4 scripts with the `nim` reranking module preloaded.\n"
    "\n"
    "Commands:\n"
    "  rerank           rerank documents against a query and print the ranking (a table\n"
    "                   on a terminal, JSON when piped)\n"
    "                   (nimrank rerank --help for its options)\n"
    "  serve            a LiteLLM-compatible rerank gateway (POST /rerank)\n"
    "                   (nimrank serve --help for its options)\n"
    "\n"
    "Options:\n"
    "  --config FILE    load a LiteLLM-style config.yaml (or .lua) first; works with every\n"
    "                   command, before or after it\n"
    "  -e CODE          run CODE (a Lua chunk)\n"
    "  -h, --help       show this help\n"
    "  -v, --version    print the version\n"
    "\n"
    "Environment:\n"
    "  NVIDIA_NIM_API_KEY          key for the hosted NVIDIA API\n"
    "  NVIDIA_NIM_RERANK_API_BASE  base URL for reranking (wins over NVIDIA_NIM_API_BASE)\n"
    "  NVIDIA_NIM_API_BASE         base URL (ignored when it names integrate.api.nvidia.com)\n"
    "  NIMRANK_MODEL               default model of `nimrank rerank`\n"
    "  NIMRANK_CONFIG              config file loaded when --config is not given\n"
    "  NIMRANK_LUA_PATH            directory holding the Lua layer (nim/*.lua); default: beside\n"
    "                              the program, then the install prefix, then package.path\n"
    "  NIMRANK_INIT                a Lua file this program runs at start-up, with nim as its\n"
    "                              argument (your filters, catalog entries)\n"
    "  NIMRANK_CA_BUNDLE           CA certificate bundle for TLS verification\n"
    "  NIMRANK_NVCF_STATUS_URL     where NVCF status polls go (202 answers)\n"
    "  NIMRANK_LUA_ALLOC           libc: Lua's objects from malloc, not the program's pool\n"
    "                              (for memory checkers such as valgrind)\n";

/* The message handler of every chunk: the error plus a traceback. */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    return status;
}

static int report(lua_State *L, int status) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: %s\n", progname, msg ? msg : "(error)");
        fflush(stderr);
        lua_pop(L, 1);
    }
    return status;
}

/* arg table as lua.c builds it: script at 0, its arguments from 1, the program before. */
static void create_arg_table(lua_State *L, char **argv, int argc, int script) {
    lua_createtable(L, argc - script - 1, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int run_script(lua_State *L, char **argv, int argc, int script) {
    create_arg_table(L, argv, argc, script);
    const char *fname = strcmp(argv[script], "-") == 0 ? NULL : argv[script];
    int status = luaL_loadfile(L, fname);
    if (status != LUA_OK) return status;
    int n = argc - script - 1;
    luaL_checkstack(L, n, "too many arguments to script");
    for (int i = script + 1; i < argc; i++)
        lua_pushstring(L, argv[i]);
    return docall(L, n, 0);
}

/* nimrank COMMAND args...: require("nim.cli").main(command, {args}) -> exit code. */
static int run_command(lua_State *L, char **argv, int argc, int *exit_code) {
    lua_getglobal(L, "nim");
    lua_getfield(L, -1, "native");
    if (lua_getfield(L, -1, "layer_error") == LUA_TSTRING) { /* say it once, plainly */
        fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
        *exit_code = 1;
        lua_pop(L, 3);
        return LUA_OK;
    }
    lua_pop(L, 3);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "nim.cli");
    int status = docall(L, 1, 1);
    if (status != LUA_OK) return status;
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_pushstring(L, argv[1]);
    lua_createtable(L, argc - 2, 0);
    for (int i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    status = docall(L, 2, 1);
    if (status == LUA_OK) {
        *exit_code = (int)luaL_optinteger(L, -1, 0);
        lua_pop(L, 1);
    }
    return status;
}

static int is_command(const char *s) { return strcmp(s, "rerank") == 0 || strcmp(s, "serve") == 0; }

static const char *config_path; /* what --config (or NIMRANK_CONFIG) named: serve reloads it */

/* nim.load_config(path): warnings go to stderr; an invalid config is an error (exit 2). */
static int load_config(lua_State *L, const char *path) {
    lua_getglobal(L, "nim");
    lua_getfield(L, -1, "load_config");
    lua_remove(L, -2);
    lua_pushstring(L, path);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
        fprintf(stderr, "%s: config %s: %s\n", progname, path, lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    for (lua_Integer i = 1; lua_istable(L, -1) && lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
        fprintf(stderr, "%s: config %s: warning: %s\n", progname, path, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    return 1;
}

/* Takes every "--config FILE" (or --config=FILE) out of argv; returns the last FILE, or NULL.
 * Before a script (or -e CODE) it is nimrank's option; after a script name the rest belongs to
 * the script. A command's own options never hold a script, so after a command it is taken
 * anywhere until "--" (after which everything is a document). */
static const char *take_config(int *argc, char **argv, int *missing_value) {
    const char *path = NULL;
    int out = 1, i = 1, command = 0;
    for (; i < *argc; i++) {
        if (command && strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= *argc) {
                *missing_value = 1;
                break;
            }
            path = argv[++i];
            continue;
        }
        if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
            continue;
        }
        argv[out++] = argv[i];
        if (command) continue;
        if (is_command(argv[i])) {
            command = 1;
        } else if (strcmp(argv[i], "-e") == 0 && i + 1 < *argc) {
            argv[out++] = argv[++i];
        } else if (argv[i][0] != '-') { /* a script: the rest is its own */
            i++;
            break;
        }
    }
    for (; i < *argc; i++)
        argv[out++] = argv[i];
    argv[out] = NULL;
    *argc = out;
    return path;
}

/* NIMRANK_INIT: a Lua file the host program runs at start-up with nim as its argument (your
 * filters, catalog entries). Only the host program does this; a library never runs code
 * because an environment variable says so. */
static int run_init(lua_State *L) {
    const char *init = getenv("NIMRANK_INIT");
    if (!init || !*init) return LUA_OK;
    int status = luaL_loadfile(L, init);
    if (status != LUA_OK) return status;
    lua_getglobal(L, "nim");
    return docall(L, 1, 0);
}

static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    int *exit_code = lua_touserdata(L, 3);
    luaL_checkversion(L);
    luaL_openlibs(L);
    /* cjson is linked in: `require "cjson"` needs no cjson.so beside the binary. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pop(L, 1);
    luaL_requiref(L, "nim", luaopen_nim, 1); /* also the global `nim`; loads the Lua layer */
    lua_pop(L, 1);
    if (report(L, run_init(L)) != LUA_OK) {
        *exit_code = 1;
        return 0;
    }

    int missing = 0;
    const char *config = take_config(&argc, argv, &missing);
    if (missing) {
        fprintf(stderr, "%s: --config needs a file name\n", progname);
        *exit_code = 2;
        return 0;
    }
    if (!config) config = getenv("NIMRANK_CONFIG");
    config_path = config && *config ? config : NULL;
    if (config && *config && !load_config(L, config)) {
        *exit_code = 2;
        return 0;
    }

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        *exit_code = argc < 2 ? 2 : 0;
        return 0;
    }
    if (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("nimrank %s (%s)\n", NIMRANK_VERSION, LUA_RELEASE);
        return 0;
    }
    int status;
    if (strcmp(argv[1], "-e") == 0) {
        if (argc < 3) {
            fprintf(stderr, "%s: -e needs an argument\n%s", progname, usage);
            *exit_code = 2;
            return 0;
        }
        create_arg_table(L, argv, argc, 0);
        status = luaL_loadbuffer(L, argv[2], strlen(argv[2]), "=(command line)");
        if (status == LUA_OK) status = docall(L, 0, 0);
    } else if (strcmp(argv[1], "serve") == 0) {
        *exit_code = nim_serve_main(L, config_path, argc - 1, argv + 1);
        return 0;
    } else if (is_command(argv[1])) {
        status = run_command(L, argv, argc, exit_code);
    } else if (argv[1][0] == '-' && argv[1][1] != '\0') {
        fprintf(stderr, "%s: unknown option '%s'\n%s", progname, argv[1], usage);
        *exit_code = 2;
        return 0;
    } else {
        status = run_script(L, argv, argc, 1);
    }
    if (report(L, status) != LUA_OK) *exit_code = 1;
    return 0;
}

/* Lua's stock panic and warning behaviour (luaL_newstate's), for a state made with our own
 * allocator: warnings start off; a message of one piece "@on" or "@off" turns them on or off;
 * a warning made of pieces (tocont) is printed as one line. The state of the switch is which
 * function is installed. */
static int panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n",
            msg ? msg : "error object is not a string");
    return 0;
}

static void warn_on(void *ud, const char *msg, int tocont);
static void warn_off(void *ud, const char *msg, int tocont);

/* A control message ("@..." in one piece): switches and returns 1; else 0. */
static int warn_control(lua_State *L, const char *msg, int tocont) {
    if (tocont || msg[0] != '@') return 0;
    if (strcmp(msg + 1, "on") == 0) lua_setwarnf(L, warn_on, L);
    if (strcmp(msg + 1, "off") == 0) lua_setwarnf(L, warn_off, L);
    return 1;
}

static void warn_off(void *ud, const char *msg, int tocont) { warn_control(ud, msg, tocont); }

/* The pieces after the first of a warning: no control messages in between. */
static void warn_rest(void *ud, const char *msg, int tocont) {
    fputs(msg, stderr);
    if (tocont) return;
    fputs("\n", stderr);
    lua_setwarnf(ud, warn_on, ud);
}

static void warn_on(void *ud, const char *msg, int tocont) {
    if (warn_control(ud, msg, tocont)) return;
    fputs("Lua warning: ", stderr);
    lua_setwarnf(ud, warn_rest, ud);
    warn_rest(ud, msg, tocont);
}

/* The host's state: Lua's small objects from the pool allocator (lalloc.c), unless
 * NIMRANK_LUA_ALLOC=libc asks for libc's (what memory checkers see through), and always
 * under AddressSanitizer, whose checks of our C code's writes into Lua's memory need
 * libc's blocks. */
static lua_State *new_state(nim_pool **pool) {
    const char *choice = getenv("NIMRANK_LUA_ALLOC");
#if defined(__SANITIZE_ADDRESS__)
    choice = "libc";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    choice = "libc";
#endif
#endif
    if (choice && strcmp(choice, "libc") == 0) return luaL_newstate();
    *pool = nim_pool_new();
    if (!*pool) return NULL;
    lua_State *L = lua_newstate(nim_pool_alloc, *pool);
    if (!L) {
        nim_pool_free(*pool);
        *pool = NULL;
        return NULL;
    }
    lua_atpanic(L, panic);
    lua_setwarnf(L, warn_off, L);
    return L;
}

int main(int argc, char **argv) {
    int exit_code = 0;
    signal(SIGPIPE, SIG_IGN); /* a closed stdout or socket is an error, not a death */
    nim_pool *pool = NULL;
    lua_State *L = new_state(&pool);
    if (!L) {
        fprintf(stderr, "%s: cannot create state: not enough memory\n", progname);
        return 1;
    }
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    lua_pushlightuserdata(L, &exit_code);
    int status = lua_pcall(L, 3, 0, 0);
    report(L, status);
    lua_close(L);
    nim_pool_free(pool);
    nimrank_global_cleanup();
    if (status == LUA_OK && exit_code == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        /* what print(), --help and --version wrote did not arrive: that is a failure */
        fprintf(stderr, "%s: cannot write standard output: %s\n", progname, strerror(errno));
        return 1;
    }
    return status == LUA_OK ? exit_code : 1;
}
