-- The Lua-module face: require "nim" from stock lua5.4 (build/nim.so), no host program.
local spec = require "spec"
local h = require "helpers"
local test, eq, ok = spec.test, spec.eq, spec.ok

test("require_nim_from_stock_lua", function()
  local nim = require "nim"
  eq(type(nim.rerank), "function", "rerank")
  eq(type(nim.native.rerank), "function", "native rerank")
  spec.match(nim.version, "^%d+%.%d+%.%d+$", "version")
  eq(rawget(_G, "nim"), nil, "no global leaked by require")
  eq(rawget(_G, "cjson"), nil, "no cjson global")
end)

test("rerank_through_the_module", function()
  local nim = require "nim"
  local res, err = nim.rerank(h.args({ top_n = 2 }))
  ok(res, tostring(err))
  eq(#res.results, 2, "results")
  eq(res.results[1].index, 2, "H100 first")
end)

test("module_and_system_cjson_coexist", function()
  local cjson = require "cjson"
  cjson.encode_keep_buffer(false)
  local nim = require "nim"
  ok(nim.rerank(h.args()), "nim keeps its own cjson settings")
  eq(cjson.encode({ 1, 2 }), "[1,2]", "system cjson unaffected")
end)

test("garbage_collection_after_many_calls", function()
  local nim = require "nim"
  for _ = 1, 20 do ok(nim.rerank(h.args()), "call") end
  collectgarbage()
  collectgarbage()
  ok(nim.rerank(h.args()), "still works after full GC")
end)

test("require_has_no_side_effects_and_opening_twice_is_the_same_module", function()
  local path, cpath = package.path, package.cpath
  local nim = require "nim"
  eq(package.path, path, "package.path untouched")
  eq(package.cpath, cpath, "package.cpath untouched")
  package.loaded.nim = nil
  local again = require "nim"
  eq(again, nim, "the same module table")
  eq(rawget(_G, "NIMRANK_INIT_RAN"), nil, "NIMRANK_INIT is the host program's, not the library's")
  eq(require("nim.json"), require("nim.json"), "the layer's modules load from its own directory")
end)
