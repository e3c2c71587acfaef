-- encode.c: results written as JSON by C (the gateway's answers), and the UTF-8 check.
local spec = require "spec"
local json = require "nim.json"
local test, eq, ok = spec.test, spec.eq, spec.ok
local native = nim.native

test("encode_results_matches_cjson_for_nims_shapes", function()
  local cases = {
    {},
    { { index = 0, relevance_score = 1.5 } },
    { { index = 2, relevance_score = -3.4970703125, document = { text = "q\"uote\\ \n\t\1 é /" } },
      { index = 0, relevance_score = 2, document = { text = "" } } },
    { { index = 1, relevance_score = 0.1, document = { image = "data:image/png;base64,AA" } } },
    { { index = 1, relevance_score = 1e-300, document = { text = "t", image = "i" } } },
  }
  for i, results in ipairs(cases) do
    local text = native.encode_results(results)
    ok(text, "case " .. i .. " encoded")
    spec.deep_eq(json.decode(text), json.decode(json.encode(results)), "case " .. i)
  end
  eq(native.encode_results({}), "[]", "an empty list is []")
end)

test("encode_results_leaves_other_shapes_to_cjson", function()
  local others = {
    { { index = 0, relevance_score = 1, extra = true } },
    { { index = 0, relevance_score = 1, document = { text = "x", title = "y" } } },
    { { index = 0, relevance_score = 0 / 0 } },
    { { index = 0, relevance_score = math.huge } },
    { { index = "0", relevance_score = 1 } },
    { { index = 0, relevance_score = 1, document = "plain" } },
    { setmetatable({ index = 0, relevance_score = 1 }, {}) },
    { 42 },
  }
  for i, results in ipairs(others) do
    eq(native.encode_results(results), nil, "case " .. i)
  end
end)

test("utf8_error_finds_the_first_bad_byte", function()
  local cases = {
    { "", nil }, { "plain ascii, longer than eight bytes", nil }, { "héllo wörld €𝄞", nil },
    { "\xff", 1 }, { "ab\xc0\x80", 3 }, { "\xc1\xbf", 1 },        -- overlong
    { "\xed\xa0\x80", 1 },                                          -- a surrogate
    { "\xf4\x90\x80\x80", 1 }, { "\xf5\x80\x80\x80", 1 },           -- past U+10FFFF
    { "x\xe2\x82", 2 }, { "x\xe2\x28\xa1", 2 }, { "12345678\x80", 9 }, -- cut, bad continuation
    { "\xe0\x80\x80", 1 }, { "\xf0\x80\x80\x80", 1 },               -- overlong 3 and 4 bytes
  }
  for _, c in ipairs(cases) do
    eq(native.utf8_error(c[1]), c[2], ("%q"):format(c[1]))
  end
end)

return spec
