-- nim.json: cjson plus [] for empty marked lists, clean slashes, and a pretty printer.
local spec = require "spec"
local nim = require "nim"
local json = require "nim.json"
local test, eq = spec.test, spec.eq

test("empty_marked_list_encodes_as_list_unmarked_as_object", function()
  local mixed = json.encode({ a = nim.array{}, b = {} })
  spec.match(mixed, '"a":%[%]', "marked list")
  spec.match(mixed, '"b":{}', "plain table")
  local s = json.encode({ x = nim.array{} })
  eq(s, '{"x":[]}', "list")
  eq(json.encode({ y = {} }), '{"y":{}}', "object")
  eq(json.encode(nim.array{}), "[]", "top level")
end)

test("encode_does_not_modify_the_callers_tables", function()
  local inner = nim.array{}
  local t = { results = inner, n = 1 }
  json.encode(t)
  eq(t.results, inner, "same table")
  eq(getmetatable(t.results), nim.array_mt, "still marked")
end)

test("sentinel_text_in_user_strings_is_left_alone", function()
  local s = json.encode({ t = "@@nimrank:empty_array:x@@", a = nim.array{} })
  eq(json.decode(s).t, "@@nimrank:empty_array:x@@", "user string")
end)

test("slashes_written_plainly_and_escaped_backslashes_kept", function()
  eq(json.encode({ m = "nvidia/llama" }), '{"m":"nvidia/llama"}', "slash")
  for _, s in ipairs({ "a\\/b", "a\\\\/b", "\\", "/", "\\\\\\/", "x/\\" }) do
    eq(json.decode(json.encode({ s = s })).s, s, "round trip of " .. s)
  end
end)

test("pretty_sorts_keys_and_indents", function()
  local s = json.pretty({ b = 1, a = { 1, 2 }, c = nim.array{}, d = {} })
  eq(s, '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1,\n  "c": [],\n  "d": {}\n}', "pretty")
  spec.deep_eq(json.decode(s), { a = { 1, 2 }, b = 1, c = {}, d = {} }, "parses back")
end)
