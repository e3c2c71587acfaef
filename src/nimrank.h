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

#ifdef __cplusplus
}
#endif
#endif
