-- LuaRocks: `luarocks --lua-version 5.4 make rockspecs/nimrank-scm-1.rockspec` from the source
-- tree builds nim.so with the project's Makefile and installs it with the Lua layer into the
-- rocks tree (lib/lua/5.4/nim.so, share/lua/5.4/nim/*.lua), where `require "nim"` finds both.
-- The Debian packages liblua5.4-dev, lua-cjson-dev, nettle-dev and libhiredis-dev must be
-- installed (make deps).
rockspec_format = "3.0"
package = "nimrank"
version = "scm-1"
source = {
  url = "git+file://./",
}
description = {
  summary = "NVIDIA NIM reranking for Lua 5.4, with a router, batching and an offline reranker",
  detailed = [[
The nim module: nim.rerank (NVIDIA NIM's two endpoint families, LiteLLM's model strings and
config.yaml, retries, fallbacks, filters), non-blocking calls, auto-batching, and local/bm25,
an embedded reranker that needs no key and no network.]],
}
dependencies = { "lua >= 5.4, < 5.5" }
build = {
  type = "make",
  build_target = "rock",
  build_variables = { CFLAGS = "$(CFLAGS)", LUA_INCDIR = "$(LUA_INCDIR)" },
  install_target = "rock-install",
  install_variables = { INST_LIBDIR = "$(LIBDIR)", INST_LUADIR = "$(LUADIR)" },
}
