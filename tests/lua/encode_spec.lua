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
    { { index = 12345, relevance_score = -0.0 }, { index = -12, relevance_score = -7.0 },
      { index = 3, relevance_score = 12345.0, document = {} } },
  }
  for i, results in ipairs(cases) do
    local text = native.encode_results(results)
    ok(text, "case " .. i .. " encoded")
    spec.deep_eq(json.decode(text), json.decode(json.encode(results)), "case " .. i)
  end
  eq(native.encode_results({}), "[]", "an empty list is []")
  eq(native.encode_results({ { index = -12, relevance_score = -7.0 } }),
    '[{"index":-12,"relevance_score":-7}]', "integers and integral floats as integers")
  eq(native.encode_results({ { index = math.mininteger, relevance_score = 0.1 } }),
    ('[{"index":%d,"relevance_score":0.1}]'):format(math.mininteger), "the least integer")
end)

test("encode_results_writes_head_and_tail_around_the_list", function()
  local results = { { index = 0, relevance_score = 0.5, document = { text = "a" } } }
  eq(native.encode_results(results, '{"id":"x","results":', ',"meta":{}}'),
    '{"id":"x","results":[{"index":0,"relevance_score":0.5,"document":{"text":"a"}}],"meta":{}}')
  eq(native.encode_results({}, "<", ">"), "<[]>", "an empty list")
  eq(native.encode_results({ { index = 0, relevance_score = 1, extra = 1 } }, "<", ">"), nil,
    "a shape for cjson is still nil")
end)

test("encode_results_writes_scores_as_string_format_does", function()
  -- %.14g, as lua-cjson (and string.format) writes it: exact ties round half to even
  local function check(v)
    local want = ('[{"index":0,"relevance_score":%.14g}]'):format(v)
    eq(native.encode_results({ { index = 0, relevance_score = v } }), want, ("%.17g"):format(v))
  end
  for k = 16385, 163839, 6 do check(k / 16384); check(-k / 16384) end -- 15 digits, last a 5
  for _, v in ipairs({ 9.99999999999995, 9.999999999999949, 0.000099999999999995, 0.0001,
    0.00010000000000000001, 9999999999999.5, 999999999999.99, 1e13 - 0.5, 0.1, 2 / 3, 4.9375,
    1e-4 * 0.99999999999999, 1e-300, 1.5e13, 123456789012345.6 }) do
    check(v); check(-v)
  end
  local x = 12345 -- seeded (Park-Miller): the same values on every run
  local function rng() x = (x * 16807) % 2147483647 return x / 2147483647 end
  for _ = 1, 20000 do
    local v = (rng() - 0.5) * 10 ^ math.floor(rng() * 24 - 7)
    if v ~= math.floor(v) then check(v) end
  end
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
