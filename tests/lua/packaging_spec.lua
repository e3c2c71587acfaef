-- Packaging for the people who use nimrank: a C host built from an installed prefix with
-- pkg-config alone, a stock lua5.4 using a LuaRocks tree, and the Makefile's promises
-- (your CFLAGS never drop the project's, header dependencies, the prefix rebuilt on install).
local spec = require "spec"
local h = require "helpers"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match
local q, sh = h.q, h.sh

local TMP = os.tmpname()
os.remove(TMP)
sh("mkdir -p " .. q(TMP))
local PREFIX = TMP .. "/prefix"

local HOST = [[
#include <stdio.h>
#include <lauxlib.h>
#include <lualib.h>
#include <nimrank.h>
int main(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nim", luaopen_nim, 1);
    lua_pop(L, 1);
    if (luaL_dostring(L, "nim.load_config({ model_list = { { model_name = 'g', "
                         "litellm_params = { model = 'local/bm25' } } } })\n"
                         "local r = assert(nim.rerank{ model = 'g', query = 'gpu',"
                         " documents = { 'cats', 'gpu memory' } })\n"
                         "io.write(r.meta.model_group, ' ', r.results[1].index)") != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_close(L);
    nimrank_global_cleanup();
    return 0;
}
]]

test("c_host_builds_from_an_installed_prefix_with_pkg_config_alone", function()
  local out, code = sh(("make -s install PREFIX=%s BUILD=%s/build 2>&1"):format(q(PREFIX), q(TMP)))
  eq(code, 0, "make install: " .. out)
  local f = assert(io.open(TMP .. "/host.c", "w"))
  f:write(HOST)
  f:close()
  out, code = sh(("cd %s && cc host.c -o host $(PKG_CONFIG_PATH=%s/lib/pkgconfig pkg-config "
    .. "--cflags --libs nimrank) 2>&1"):format(q(TMP), q(PREFIX)))
  eq(code, 0, "cc host.c $(pkg-config --cflags --libs nimrank): " .. out)
  -- run from elsewhere: the host finds the Lua layer under the prefix it was installed to
  out, code = sh(("cd / && %s/host 2>&1"):format(q(TMP)))
  eq(code, 0, "host runs: " .. out)
  eq(out, "g 1", "the router (Lua layer) and the native call both work")
  out = sh(("PKG_CONFIG_PATH=%s/lib/pkgconfig pkg-config --modversion nimrank"):format(q(PREFIX)))
  match(out, "^%d+%.%d+%.%d+", "version")
end)

test("installed_tree_is_relocatable_and_serves_stock_lua", function()
  local moved = TMP .. "/moved"
  sh(("cp -r %s %s"):format(q(PREFIX), q(moved)))
  local out = sh(("cd / && %s/bin/nimrank rerank -q gpu --json cats gpu 2>/dev/null")
    :format(q(moved)))
  eq(h.decode(out).results[1].index, 1, "installed binary finds its Lua layer after a move")
  out = sh(("cd / && LD_PRELOAD=%s LUA_CPATH='%s/lib/lua/5.4/?.so;;' "
    .. "lua5.4 -e 'print(require(\"nim.json\").encode(require(\"nim\").array{}))'")
    :format(q(os.getenv("NIMRANK_PRELOAD") or ""), moved))
  eq(out, "[]\n", "stock lua5.4 uses the installed module and its Lua layer, no LUA_PATH")
end)

test("stock_lua_requires_the_module_from_a_luarocks_tree", function()
  local out, code = sh(("luarocks --lua-version 5.4 --tree %s/tree make "
    .. "rockspecs/nimrank-scm-1.rockspec 2>&1"):format(q(TMP)))
  eq(code, 0, "luarocks make: " .. out)
  out, code = sh(("eval \"$(luarocks --lua-version 5.4 --tree %s/tree path)\" && cd / && "
    .. "env LD_PRELOAD=%s lua5.4 -e %s 2>&1"):format(q(TMP),
    q(os.getenv("NIMRANK_PRELOAD") or ""), q("local nim = require 'nim'\n"
    .. "local r = nim.rerank{ model = 'local/bm25', query = 'gpu', documents = { 'x', 'gpu' } }\n"
    .. "io.write(r.results[1].index, ' ', tostring(nim.load_config ~= nil))")))
  eq(code, 0, "lua5.4: " .. out)
  eq(out, "1 true", "native call and Lua layer from the rocks tree")
end)

test("user_cflags_keep_the_projects_own_and_headers_are_tracked", function()
  local build = TMP .. "/b2"
  local out, code = sh(("make -s BUILD=%s CFLAGS=-O0 %s/nim.so 2>&1"):format(q(build), q(build)))
  eq(code, 0, "make CFLAGS=-O0: " .. out)
  out = sh(("LUA_CPATH=%s/?.so lua5.4 -e %s 2>&1"):format(q(build),
    q("io.write(require('nim').native.rerank{model='local/bm25', query='q', "
    .. "documents={'q'}}.results[1].index)")))
  eq(out, "0", "nim.so built with CFLAGS=-O0 still loads (-fPIC kept)")
  out = sh(("make -n BUILD=%s PREFIX=/opt/elsewhere %s/nim.so 2>&1"):format(q(build), q(build)))
  match(out, "lua_dir%.c", "a new PREFIX rebuilds what embeds it")
  ok(not out:find("bm25%.c"), "and nothing else")
  local deps = io.open(build .. "/obj/bm25.d"):read("a")
  match(deps, "src/ranking%.h", "header dependencies are tracked (-MMD)")
  out = sh(("make -n BUILD=%s LUA_INCDIR=/opt/lua54/include %s/nim.so 2>&1"):format(q(build .. "x"),
    q(build .. "x")))
  match(out, "%-I/opt/lua54/include", "LUA_INCDIR (from LuaRocks) picks the Lua headers")
  out = sh("make help")
  match(out, "make test", "make help lists the targets")
end)

test("zz_cleanup", function() sh("rm -rf " .. q(TMP)) end)
