-- The binding's contracts: which keys the native call takes, misuse at the caller's line,
-- structured checks, one error constructor, the one ranking rule, module opening.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local test, eq, ok, raises = spec.test, spec.eq, spec.ok, spec.raises

local THIS = "tests/lua/binding_spec.lua:"

test("native_call_refuses_policy_keys_it_does_not_handle", function()
  for _, k in ipairs({ "filters", "fallbacks", "num_retries", "batch_size", "concurrency",
    "on_progress", "metadata" }) do
    local err = raises(function()
      nim.native.rerank({ model = "local/bm25", query = "q", documents = { "d" }, [k] = 1 })
    end, k, "nim.rerank")
    spec.no_match(err, "unsupported", k .. " is not called unsupported")
  end
  -- what the native call lists is what the layer strips: nim.rerank takes them all
  ok(nim.rerank({ model = "local/bm25", query = "q", documents = { "d" }, filters = { "dedupe" },
    num_retries = 1, batch_size = 5, concurrency = 2, metadata = { x = 1 } }), "routed call")
  local keys = nim.native.keys
  ok(#keys.request > 0 and #keys.transport > 0 and #keys.policy > 0, "keys exposed")
end)

-- Misuse through every path (router, batching, async, native, resolve) names the caller's
-- file and line, never a file of the library.
test("misuse_points_at_the_callers_line", function()
  local docs = {}
  for i = 1, 600 do docs[i] = "doc " .. i end
  local cases = {
    function() nim.rerank(h.args({ top_n = 0 })) end,
    function() nim.rerank({ model = h.RANKING, query = "q", documents = docs, top_n = 0 }) end,
    function() nim.rerank({ model = h.RANKING, query = "q", documents = docs, batch_size = 0 }) end,
    function() nim.rerank(h.args({ filters = { "nope" } })) end,
    function() nim.rerank(h.args({ fallbacks = 42 })) end,
    function() nim.native.rerank(h.args({ top_n = 0 })) end,
    function() nim.native.start(h.args({ top_n = 0 })) end,
    function() nim.resolve(h.RETRIEVAL, { api_base = 1 }) end,
    function() nim.rerank_async(h.args({ top_n = 0 })) end,
    function() nim.rerank_many({ { query = "q" }, concurrency = 0 }) end,
  }
  for i, fn in ipairs(cases) do
    local okc, err = pcall(fn)
    eq(okc, false, "case " .. i .. " raised")
    spec.match(tostring(err), "^" .. THIS:gsub("%p", "%%%0") .. "%d+: nim%.",
      "case " .. i .. " at the caller's line")
    spec.no_match(tostring(err), "lua/nim/", "case " .. i .. " names no library file")
  end
  local err = raises(function() nim.resolve(h.RETRIEVAL, { api_base = 1 }) end, "api_base")
  spec.match(err, "nim%.resolve: api_base:", "resolve names itself, not nim.rerank")
end)

test("check_returns_misuse_as_fields", function()
  eq(nim.check(h.args()), true, "valid")
  local cases = {
    { { top_n = 0 }, "top_n", "must be an integer >= 1" },
    { { truncate = "MIDDLE" }, "truncate", "NONE" },
    { { batch_size = -1 }, "batch_size", "integer" },
    { { filters = { "nope" } }, "filters[1]", "unknown filter" },
    { { headers = { ["X-A"] = "a\nb" } }, "headers['X-A']", "control characters" },
    { { headers = { ["Content-Length"] = "0" } }, "headers['Content-Length']", "frames" },
    { { headers = { ["X-A"] = 5 } }, "headers['X-A']", "expected string, got number" },
    { { timeout = 0 / 0 }, "timeout", "seconds" },
  }
  for _, c in ipairs(cases) do
    local valid, bad = nim.check(h.args(c[1]))
    eq(valid, nil, c[2] .. " invalid")
    eq(bad.field, c[2], "field")
    spec.match(bad.message, c[3], "message")
    eq(bad.fn, "nim.rerank", "function")
  end
  local before = h.last()
  nim.check(h.args({ query = "checked, never sent" }))
  eq(h.last().body, before.body, "check sends nothing")
end)

test("every_error_comes_from_one_constructor", function()
  local e = nim.native.error({ type = "rate_limit", message = "m", status = 429, retry_after = 2 })
  eq(getmetatable(e), nim.error_mt, "metatable")
  eq(e.retryable, true, "retryable by type")
  eq(e.provider, "nimrank", "nimrank decided")
  eq(e.retry_after, 2, "extra fields kept")
  eq(tostring(e), "nim: rate_limit (HTTP 429): m", "tostring")
  raises(function() nim.native.error({ type = "oops", message = "m" }) end, "unknown error type")
  -- cancelled comes from the same enum, from C and from the scheduler alike
  local t = nim.native.start(h.args({ query = "!delay=2000 " .. h.QUERY .. " cancel" }))
  t:cancel()
  local _, err = t:result()
  eq(err.type, "cancelled", "C")
  eq(err.provider, "nvidia_nim", "the provider the call was for")
  local req = nim.rerank_async(h.args({ query = "!delay=2000 " .. h.QUERY .. " cancel2" }))
  req:cancel()
  local _, err2 = req:wait()
  eq(err2.type, "cancelled", "scheduler")
  eq(err2.provider, "nvidia_nim", "same rule")
  eq(getmetatable(err2), nim.error_mt, "same metatable")
end)

test("one_ranking_rule_for_providers_and_batches", function()
  local docs = {}
  for i = 1, 40 do docs[i] = (i % 3 == 0) and "gpu gpu" or ((i % 3 == 1) and "gpu" or "cat") end
  local single = assert(nim.native.rerank({ model = h.RANKING, query = "!ties gpu",
    documents = docs, api_base = h.open_url }))
  local batched = assert(nim.rerank({ model = h.RANKING, query = "!ties gpu", documents = docs,
    api_base = h.open_url, batch_size = 7 }))
  eq(batched.meta.batches, 6, "batched")
  for i = 2, #batched.results do
    local a, b = batched.results[i - 1], batched.results[i]
    ok(a.relevance_score > b.relevance_score or
      (a.relevance_score == b.relevance_score and a.index < b.index), "score, then index")
    eq(b.index, single.results[i].index, "the same order as one request")
  end
  local merged = nim.native.merge({
    { id = "a", results = { { index = 3, relevance_score = 1 } }, meta = {} },
    { id = "b", results = { { index = 1, relevance_score = 1 },
      { index = 0, relevance_score = 0 } }, meta = { billed_units = { total_tokens = 5 } } } }, 2)
  eq(merged.results[1].index, 1, "ties by index")
  eq(#merged.results, 2, "top_n")
  eq(merged.meta.billed_units.total_tokens, 5, "tokens summed")
end)

test("limits_and_key_spelling_are_asked_not_repeated", function()
  eq(nim.native.max_passages(h.RETRIEVAL), 512, "NIM default")
  eq(nim.native.max_passages("local/bm25"), nil, "no limit offline")
  eq(nim.native.catalog_key("nvidia_nim/ranking/nvidia/x-y"), "nvidia/x-y", "prefixes stripped")
  ok(nim.native.catalog_entry("nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2"),
    "a dotted ranking name finds the underscore entry")
  local catalog = require "nim.catalog"
  eq(catalog.max_passages("local/bm25"), math.huge, "catalog.lua asks the binding")
  local name, explicit = nim.native.provider_of("nvidia/x")
  eq(name, "nvidia_nim", "bare names are NIM")
  eq(explicit, false, "without a prefix")
  raises(function() nim.native.provider_of("local/nope") end, "unknown local model")
end)

test("a_batched_call_runs_the_router_once", function()
  local calls = 0
  local r = require("nim.router").new(nil, { call = function(a, batch)
    calls = calls + 1
    return require("nim.batch").call(a, batch)
  end })
  local docs = {}
  for i = 1, 30 do docs[i] = "gpu doc " .. i end
  local res = assert(r:rerank({ model = h.RANKING, query = "gpu", documents = docs,
    api_base = h.open_url, batch_size = 10, num_retries = 1 }))
  eq(res.meta.batches, 3, "three batches")
  eq(calls, 1, "one provider call from the router")
  eq(#res.meta.attempts, 1, "one attempt recorded")
end)

test("configured_router_refuses_unknown_names", function()
  nim.load_config({ model_list = { { model_name = "known", litellm_params = {
    model = "local/bm25" } } }, router_settings = { model_group_alias = { k = "known" } } })
  local res, err = nim.rerank({ model = "nvidia/llama-nemotron-rerank-1b-v2", query = "q",
    documents = { "d" } })
  local ok2 = nim.rerank({ model = "local/bm25", query = "q", documents = { "d" } })
  local ok3 = nim.rerank({ model = "k", query = "q", documents = { "d" } })
  nim.load_config({})
  eq(res, nil, "not sent upstream")
  eq(err.type, "not_found", "not_found")
  eq(err.status, 404, "status")
  spec.match(err.message, "configured: k, known", "names the configured groups and aliases")
  ok(ok2, "a provider prefix still works")
  ok(ok3, "an alias works")
  ok(nim.rerank({ model = "nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2", query = "q",
    documents = {}, api_base = h.url }), "no config: bare and prefixed names are NIM models")
end)

test("registry_holds_no_named_keys_and_the_layer_is_located", function()
  ok(nim.native.layer_dir and nim.native.layer_dir:find("lua$"), "layer found in lua/")
  for k in pairs(debug.getregistry()) do
    if type(k) == "string" then spec.no_match(k, "nim", "no named registry key " .. k) end
  end
end)

-- Regressions found in review (each was demonstrated on the code before the fix).
test("arguments_made_up_by_index_metamethods_stay_alive_for_the_call", function()
  local calls = 0
  local args = setmetatable({}, { __index = function(_, k)
    calls = calls + 1
    collectgarbage() -- whatever was made before and not anchored is freed now
    local v = ({ model = "local/" .. ("bm25"), query = ("gpu %s"):format("memory"),
      documents = { "gpu memory", "cats" }, truncate = ("EN") .. "D",
      api_base = ("http://127.0.0.1:%d"):format(1) })[k]
    return v
  end })
  local res = assert(nim.native.rerank(args))
  ok(calls > 3, "read through __index")
  eq(res.results[1].index, 0, "answered")
  eq(nim.resolve(setmetatable({}, { __index = function() return nil end }) and h.RETRIEVAL,
    setmetatable({}, { __index = function(_, k)
      collectgarbage()
      if k == "api_base" then return ("http://127.0.0.1:%d/v1"):format(8000) end
    end })).url, "http://127.0.0.1:8000/v1/retrieval/nvidia/llama-nemotron-rerank-1b-v2/reranking",
    "nim.resolve's api_base from __index")
end)

test("a_provider_without_a_limit_is_never_split", function()
  local docs = { "gpu", "cats", "gpu gpu memory", "dogs", "memory", "gpu memory bandwidth" }
  local whole = assert(nim.rerank({ model = "local/bm25", query = "gpu memory", documents = docs }))
  local asked = assert(nim.rerank({ model = "local/bm25", query = "gpu memory", documents = docs,
    batch_size = 2 }))
  eq(asked.meta.batches, nil, "not split")
  for i = 1, #docs do eq(asked.results[i].index, whole.results[i].index, "rank " .. i) end
end)

test("batching_honours_top_k_the_alias_of_top_n", function()
  local docs = {}
  for i = 1, 30 do docs[i] = "gpu doc " .. i end
  local res = assert(nim.rerank({ model = h.RANKING, query = "gpu", documents = docs,
    api_base = h.open_url, batch_size = 7, top_k = 5 }))
  eq(res.meta.batches, 5, "batched")
  eq(#res.results, 5, "top_k applied after the merge")
end)

test("no_model_is_named_before_any_option", function()
  spec.raises(function() nim.rerank({ query = "q", documents = { "d" }, concurrency = 2,
    filters = { "dedupe" } }) end, "model: required")
end)

test("step_with_a_long_wait_blocks_rather_than_spins", function()
  local t = nim.native.start(h.args({ query = "!delay=150 " .. h.QUERY .. " step" }))
  local steps = 0
  while not t:done() and steps < 50 do
    nim.native.step(5e6) -- far beyond an int of milliseconds
    steps = steps + 1
  end
  ok(t:done(), "finished")
  ok(steps <= 10, "a few steps, not a spin: " .. steps)
end)

test("one_raising_item_of_rerank_many_keeps_the_others", function()
  local results, errors = nim.rerank_many({
    { query = "gpu" }, { query = "gpu", filters = { function() error("boom in a filter") end } },
    { query = "memory" }, model = "local/bm25", documents = { "gpu memory", "cats" } })
  ok(results[1] and results[3], "the other items answered")
  eq(results[2], false, "the raising one did not")
  spec.match(errors[2].message, "boom in a filter", "its error says why")
end)

-- nim.check and the CLI (which checks first) with a caller's header long enough to be kept
-- as a possible credential: checked, never a crash.
test("checking_headers_keeps_their_values_as_secrets_safely", function()
  for _, v in ipairs({ "abc", "abcd", ("v"):rep(300) }) do
    eq(nim.check(h.args({ headers = { ["X-Trace"] = v } })), true, #v .. "-byte value")
  end
  local out, code = h.sh(("%s rerank -m %s --api-base %s -H %s -q hello a b 2>&1"):format(
    h.nimrank, h.RANKING, h.q(h.open_url), h.q("X-Trace: abcd")))
  eq(code, 0, "the CLI with -H: " .. out)
end)

-- A batch's partial result is a Lua table a script can edit; merge trusts only what C keeps,
-- reads every table raw and once, and anchors what it points into for the whole merge.
test("merge_trusts_no_field_a_script_can_edit", function()
  local docs = {}
  for i = 1, 64 do docs[i] = "gpu memory " .. i end
  local function part(first)
    local t = nim.native.start({ model = h.RANKING, api_base = h.open_url, query = "gpu",
      documents = docs }, first, 32, true)
    return assert(t:wait())
  end
  local part1 = part(1)
  eq(type(part1.rankings), "userdata", "a partial result holds its rankings in C")
  local want = assert(nim.native.merge({ part1 }, 0))
  part1.nrankings, part1.offset = 1 << 40, -5
  local got = assert(nim.native.merge({ part1 }, 0))
  eq(#got.results, #want.results, "the count the binding kept")
  eq(got.results[1].index, want.results[1].index, "indices unchanged")
  -- a later batch whose metamethods drop an earlier batch's rankings and collect garbage
  local p1, p2 = part(1), part(33)
  local parts
  local sneaky = setmetatable({ texts = p2.texts, id = p2.id, meta = p2.meta }, {
    __index = function(_, k)
      if k == "rankings" then
        parts[1].rankings = nil
        collectgarbage()
        return p2.rankings
      end
    end })
  parts = { p1, sneaky }
  raises(function() nim.native.merge(parts, 0) end, "not a batch's partial result")
  local merged = assert(nim.native.merge({ p1, p2 }, 0))
  eq(#merged.results, 64, "two real batches merge")
  -- results lists that change size or type between reads: read once, raw
  local calls, small, big = 0, { { index = 0, relevance_score = 1 } }, {}
  for i = 1, 1000 do big[i] = { index = i, relevance_score = -i } end
  local shifty = setmetatable({ meta = {} }, { __index = function(_, k)
    if k == "results" then calls = calls + 1; return calls == 1 and small or big end
  end })
  raises(function() nim.native.merge({ shifty }, 0) end, "results")
  eq(#assert(nim.native.merge({ { results = big, meta = {} } }, 0)).results, 1000, "plain lists")
  part1.rankings = io.stdout
  raises(function() nim.native.merge({ part1 }, 0) end, "not a batch's partial result")
  raises(function() nim.native.merge({ { rankings = io.stderr, texts = {} } }, 0) end,
    "not a batch's partial result")
end)

-- A new coroutine inherits the budget's hook but counts afresh: the count is shared, so
-- starting coroutines cannot multiply a budget, and their errors reach the budgeted code.
test("a_budget_is_shared_by_the_coroutines_a_script_starts", function()
  local spins = 0
  local okc, err = pcall(nim.native.budget, 5000, "spinner", function()
    for _ = 1, 1000 do
      pcall(coroutine.wrap(function() for _ = 1, 450 do spins = spins + 1 end end))
    end
  end)
  eq(okc, false, "stopped")
  spec.match(tostring(err), "spinner: stopped after its instruction budget", "named")
  ok(spins < 20000, "at most a few coroutines' worth ran: " .. spins)
  eq(nim.native.budget(5000, "small", function() return 1 + 1 end), 2, "within budget")
  -- nested budgets (a filter whose code makes its own budgeted call) spend the outer one too
  local nested = 0
  okc, err = pcall(nim.native.budget, 200000, "outer", function()
    while true do
      nested = nested + 1
      nim.native.budget(100, "inner", function() end)
    end
  end)
  eq(okc, false, "the outer budget ends a loop of nested budgets")
  spec.match(tostring(err), "outer: stopped", "named: " .. tostring(err))
  ok(nested <= 200, "each nested budget is charged to the outer: " .. nested)
  okc, err = pcall(nim.native.budget, 100000, "outer2", function()
    for _ = 1, 50 do nim.native.budget(100000, "inner2", function()
      for _ = 1, 1000 do end
    end) end
  end)
  eq(okc, false, "the inner's work counts against the outer")
  spec.match(tostring(err), "stopped", tostring(err))
end)

-- A call's total time has one rule, the binding's: the router and batching ask it, so an
-- unset nim.settings.timeout means the default there too, never an error.
test("the_call_timeout_rule_is_asked_not_repeated", function()
  local saved = nim.settings.timeout
  nim.settings.timeout = nil
  eq(nim.native.call_timeout({}), 60, "the default")
  eq(nim.native.call_timeout({ request_timeout = 2 }), 2, "request_timeout")
  eq(nim.native.call_timeout({ timeout = 1, request_timeout = 2 }), 1, "timeout first")
  ok(nim.rerank({ model = "local/bm25", query = "gpu", documents = h.DOCS, num_retries = 1 }),
    "routed")
  ok(nim.rerank({ model = "local/bm25", query = "gpu", documents = h.DOCS, batch_size = 2 }),
    "batched")
  nim.settings.timeout = 5
  eq(nim.native.call_timeout({}), 5, "the setting")
  nim.settings.timeout = saved
  raises(function() nim.native.call_timeout({ timeout = -1 }) end, "timeout")
end)
