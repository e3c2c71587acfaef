/* The gateway's strict JSON reader (encode.c, server.decode_json): whatever it reads must be
 * what lua-cjson's decode gives for the same text (values, number types, cjson.null, and the
 * order pairs() walks a table in); whatever it does not read it leaves to cjson. Checked on
 * hand-picked texts and on seeded mutations of them. */
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../../src/nimrank.h"
#include "ctest.h"

int nim_l_decode_json(lua_State *L); /* src/encode.c (binding.h) */

/* same(text) -> nil when the reader agrees with cjson, else what differs. */
static const char *lua_checks =
    "local cjson = require 'cjson'\n"
    "local function same(a, b, path)\n"
    "  if type(a) ~= type(b) then return path .. ': ' .. type(a) .. ' vs ' .. type(b) end\n"
    "  if type(a) == 'number' then\n"
    "    if math.type(a) ~= math.type(b) then return path .. ': number type' end\n"
    "    if a ~= b and (a == a or b == b) then return path .. ': ' .. a .. ' vs ' .. b end\n"
    "    if 1 / a ~= 1 / b and a == 0 then return path .. ': the sign of zero' end\n"
    "    return nil\n"
    "  end\n"
    "  if type(a) ~= 'table' then\n"
    "    return a ~= b and path .. ': ' .. tostring(a) .. ' vs ' .. tostring(b) or nil\n"
    "  end\n"
    "  if getmetatable(a) ~= getmetatable(b) then return path .. ': metatable' end\n"
    "  local ka, kb = next(a), next(b)\n"
    "  while ka ~= nil or kb ~= nil do -- the same keys, in the same order\n"
    "    if ka ~= kb then return path .. ': key order ' .. tostring(ka) .. ' vs ' .. tostring(kb) "
    "end\n"
    "    local d = same(a[ka], b[kb], path .. '.' .. tostring(ka))\n"
    "    if d then return d end\n"
    "    ka, kb = next(a, ka), next(b, kb)\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "local read, taken, left = 0, 0, 0\n"
    "function check(text)\n"
    "  local done, v = decode_fast(text)\n"
    "  read = read + 1\n"
    "  if not done then left = left + 1 return nil end\n"
    "  taken = taken + 1\n"
    "  local ok, w = pcall(cjson.decode, text)\n"
    "  if not ok then return ('%q: read, but cjson refuses it: %s'):format(text, w) end\n"
    "  local d = same(v, w, '$')\n"
    "  return d and ('%q: %s'):format(text, d)\n"
    "end\n"
    "function counts() return read, taken, left end\n"
    "local seed = 42\n"
    "local function rnd(n) seed = (seed * 16807) % 2147483647 return seed % n + 1 end\n"
    "local alphabet = { '{', '}', '[', ']', ',', ':', '\"', '\\\\', 'u', '0', '1', '-', '.',\n"
    "  'e', '+', ' ', '\\n', '\\t', 'a', 'n', 't', 'f', '\\0', '\\1', '\\xc3', '\\xa9', 'D8',\n"
    "  '00', 'null', 'true', '1e400', '0x1', 'inf', '/', 'b' }\n"
    "function mutate(text)\n"
    "  local n = rnd(3)\n"
    "  for _ = 1, n do\n"
    "    local at = rnd(#text + 1) - 1\n"
    "    local how = rnd(3)\n"
    "    if how == 1 then text = text:sub(1, at) .. alphabet[rnd(#alphabet)] .. text:sub(at + 1)\n"
    "    elseif how == 2 then text = text:sub(1, at) .. text:sub(at + 2)\n"
    "    else text = text:sub(1, at) .. alphabet[rnd(#alphabet)] .. text:sub(at + 2) end\n"
    "  end\n"
    "  return text\n"
    "end\n";

static const char *const texts[] = {
    "{\"model\":\"nvidia-rerank\",\"query\":\"which gpu\",\"documents\":[\"a\",\"b\",\"c\"],"
    "\"top_n\":3,\"return_documents\":true}",
    "{\"model\":\"m\",\"query\":{\"text\":\"q\"},\"documents\":[{\"text\":\"x\"},{\"image\":"
    "\"data:image/png;base64,AA\"},null,3,false,[]],\"top_n\":null,\"extra\":{}}",
    "  {\"a\" : [ 1 , -0 , 0.5 , 1e3 , -2.5E-3 , 1e400 , 123456789012345678901234567890 ] } \n",
    "{\"esc\":\"q\\\"b\\\\s\\/b\\bf\\fn\\nr\\rt\\tu\\u00e9\\u20ac\\u0041\\u0000end\"}",
    "{\"dup\":1,\"dup\":2,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "\"a string alone\"",
    "{\"long\":\"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ\\n0123456789abcdef\\\"xyz01234567"
    "89 document 1: the accelerator pairs tensor cores with stacked memory\\u00e9\"}",
    "null",
    "true",
    "-12.75",
    "{\"text\":\"h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac\"}",
    "{\"s\":\"\\ud83d\\ude00\"}", /* a surrogate pair: cjson's */
    "{\"x\":0x10}",
    "{\"x\":+1}",
    "{\"x\":01}",
    "{\"x\":inf}",
    "{\"x\":\"tab\there\"}",
    "{\"x\":1,}",
    "[1 2]",
    "{} x",
    "",
    "   ",
    "{\"a\":\"\\x\"}",
    "{\"a\":\"\\u12\"}",
    "{\"a\":tru}",
    "{\"a\":1.}",
    "{\"a\":.5}",
    "{\"a\":1e}",
    "{\"a\":-}",
    "{\"a\"}",
    "{1:2}",
};

static lua_State *state(void) {
    setenv("NIMRANK_LUA_PATH", "lua", 1);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "nim", luaopen_nim, 1);
    lua_pop(L, 1);
    lua_register(L, "decode_fast", nim_l_decode_json);
    if (luaL_dostring(L, lua_checks) != LUA_OK) {
        fprintf(stderr, "  %s\n", lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    return L;
}

/* check(text): CHECKs that reader and cjson agree on text. */
static void check(lua_State *L, const char *text, size_t len) {
    lua_getglobal(L, "check");
    lua_pushlstring(L, text, len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isnil(L, -1)) {
        fprintf(stderr, "  %s\n", lua_tostring(L, -1));
        CHECK(0);
    }
    lua_pop(L, 1);
}

static void reads_what_cjson_reads_alike(void) {
    lua_State *L = state();
    CHECK(L != NULL);
    if (!L) return;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        check(L, texts[i], strlen(texts[i]));
    /* the bodies that are strict JSON are read here; the others are left to cjson */
    CHECK(luaL_dostring(L, "local r, t, l = counts() return t == 12 and l == 20") == LUA_OK &&
          lua_toboolean(L, -1));
    lua_close(L);
}

static void agrees_on_mutated_texts(void) {
    lua_State *L = state();
    CHECK(L != NULL);
    if (!L) return;
    for (int round = 0; round < 20000; round++) {
        size_t i = (size_t)round % (sizeof texts / sizeof texts[0]);
        lua_getglobal(L, "mutate");
        lua_pushstring(L, texts[i]);
        lua_call(L, 1, 1);
        size_t n;
        const char *text = lua_tolstring(L, -1, &n);
        check(L, text, n);
        lua_pop(L, 1);
    }
    CHECK(luaL_dostring(L, "local r, t, l = counts() return t > 1000 and l > 1000") == LUA_OK &&
          lua_toboolean(L, -1));
    lua_close(L);
}

int main(void) {
    RUN(reads_what_cjson_reads_alike);
    RUN(agrees_on_mutated_texts);
    nimrank_global_cleanup();
    return CTEST_SUMMARY("c/decode_json");
}
