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

/* Opens the `nim` module: pushes its table. libcurl's global state must have been set up
 * (nimrank_global_init) before threads start; luaopen_nim does it lazily when it was not. */
NIMRANK_API int luaopen_nim(lua_State *L);

/* curl_global_init, once per process. Call it early in a threaded host. 0 on success. */
NIMRANK_API int nimrank_global_init(void);

#ifdef __cplusplus
}
#endif
#endif
