/* The config loader: YAML bytes in. Any error is fine; a crash, a hang (libFuzzer's -timeout)
 * or memory blowing up (-rss_limit_mb) is a finding. */
#include <string.h>

#include "fuzz_lua.h"

static const char *code = "local config = require 'nim.config'\n"
                          "return function(text)\n"
                          "  local ok, err = pcall(config.load_yaml, text, 'fuzz.yaml')\n"
                          "  return ok or type(err) == 'string'\n"
                          "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fn;
    lua_State *L = fuzz_state(code, &fn);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
    lua_pushlstring(L, (const char *)data, size);
    FUZZ_ASSERT(lua_pcall(L, 1, 1, 0) == LUA_OK);
    FUZZ_ASSERT(lua_toboolean(L, -1)); /* an error is a message, never a stray object */
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
