-- nim.filters: post-filters, per call and per model group, for every provider.
local spec = require "spec"
local nim = require "nim"
local filters = require "nim.filters"
local test, eq, ok, raises = spec.test, spec.eq, spec.ok, spec.raises

local DOCS = { "gpu memory", "gpu memory", "cats and dogs", "gpu", "memory bandwidth of gpu" }

local function run(fs, over)
  local a = { model = "local/bm25", query = "gpu memory", documents = DOCS, filters = fs }
  for k, v in pairs(over or {}) do a[k] = v end
  return assert(nim.rerank(a))
end

test("top_n_filter", function()
  eq(#run({ { top_n = 2 } }).results, 2, "kept 2")
end)

test("min_score_filter", function()
  local res = run({ { min_score = 0.0001 } })
  for _, r in ipairs(res.results) do ok(r.relevance_score >= 0.0001, "above min") end
  eq(#res.results, 4, "the zero-score document dropped")
end)

test("normalize_sigmoid_adds_probability_keeps_raw_score", function()
  local res = run({ { normalize = "sigmoid" } })
  for _, r in ipairs(res.results) do
    spec.near(r.probability, 1 / (1 + math.exp(-r.relevance_score)), 1e-12, "probability")
  end
  res = run({ { normalize = "sigmoid" }, { min_score = 0.6 } })
  for _, r in ipairs(res.results) do ok(r.probability >= 0.6, "min_score on probability") end
  raises(function() run({ { normalize = "softmax" } }) end, "sigmoid")
end)

test("dedupe_keeps_the_best_of_identical_texts", function()
  local res = run({ "dedupe" })
  local seen = {}
  for _, r in ipairs(res.results) do
    ok(not seen[r.document.text], "unique text")
    seen[r.document.text] = true
  end
  eq(#res.results, 4, "one duplicate removed")
end)

test("return_documents_false_filter", function()
  for _, r in ipairs(run({ { return_documents = false } }).results) do eq(r.document, nil,
    "no doc") end
end)

test("user_function_and_registered_filter", function()
  local seen_ctx
  local res = run({ function(results, ctx)
    seen_ctx = ctx
    local out = {}
    for _, r in ipairs(results) do if r.index % 2 == 0 then out[#out + 1] = r end end
    return out
  end })
  for _, r in ipairs(res.results) do eq(r.index % 2, 0, "even only") end
  eq(seen_ctx.query, "gpu memory", "ctx has the query")
  eq(require("nim.json").encode(run({ function() return {} end }).results), "[]", "empty is a list")
  filters.register("first_only", function(results) return { results[1] } end)
  eq(#run({ "first_only" }).results, 1, "registered filter by name")
end)

test("pipeline_order_matters", function()
  local a = run({ "dedupe", { top_n = 2 } })
  local b = run({ { top_n = 2 }, "dedupe" })
  eq(#a.results, 2, "dedupe then top 2")
  eq(#b.results, 1, "top 2 (identical) then dedupe")
end)

test("bad_pipelines_raise_naming_the_entry", function()
  raises(function() run({ "nope" }) end, "filters[1]", "unknown filter")
  raises(function() run({ { a = 1, b = 2 } }) end, "filters[1]")
  raises(function() run({ 42 }) end, "filters[1]")
  raises(function() run("dedupe") end, "filters")
  raises(function() run({ { top_n = 0 } }) end, "top_n")
  raises(function() run({ function() return 5 end }) end, "must return the results list")
end)

test("group_filters_from_config", function()
  nim.load_config({
    model_list = { { model_name = "clean", litellm_params = { model = "local/bm25" } } },
    nimrank_settings = { filters = { clean = { "dedupe", { top_n = 1 } } } },
  })
  local res = assert(nim.rerank({ model = "clean", query = "gpu memory", documents = DOCS }))
  nim.load_config({})
  eq(#res.results, 1, "group pipeline applied")
  raises(function()
    nim.load_config({ nimrank_settings = { filters = { g = { "bogus" } } } })
  end, "nimrank_settings.filters.g[1]", "unknown filter")
end)

test("a_runaway_filter_or_config_script_is_stopped_naming_it", function()
  local before = nim.settings.script_budget
  nim.settings.script_budget = 100000
  filters.register("spinner", function(results)
    while true do end
    return results -- luacheck: ignore (never reached)
  end)
  local res = { results = nim.array{ { index = 0, relevance_score = 1 } } }
  local err = raises(function() filters.apply(res, { "spinner" }, {}) end, "filter spinner",
    "instruction budget")
  ok(not err:find("traceback"), "one line")
  raises(function() filters.apply(res, { function()
    for _ = 1, 10 do pcall(function() while true do end end) end -- pcall cannot swallow it
    return {}
  end }, {}) end, "filters[1]", "instruction budget")
  local path = os.tmpname()
  local f = io.open(path, "w")
  f:write("local n = 0 while true do n = n + 1 end")
  f:close()
  raises(function() nim.load_config({ nimrank_settings = { scripts = { path } } }) end,
    "script " .. path, "instruction budget")
  os.remove(path)
  nim.settings.script_budget = before
  nim.load_config({})
  ok(filters.apply(res, { "dedupe" }, {}), "ordinary filters run within it")
end)

-- A built-in filter's argument is checked before any request: by nim.check, and by
-- nim.rerank before it sends anything (the fake sees no request with this query).
test("built_in_filter_arguments_are_checked_before_anything_is_sent", function()
  local h = require "helpers"
  local bad = { { top_n = 0 }, { top_n = 1.5 }, "top_n", { min_score = "x" },
    { min_score = 0 / 0 }, { normalize = "softmax" }, "normalize", { dedupe = "yes" },
    { return_documents = 1 } }
  for i, f in ipairs(bad) do
    local name = type(f) == "string" and f or next(f)
    local query = ("gpu never sent %d-%d"):format(i, math.random(1, 1e9))
    local args = { model = h.RANKING, api_base = h.open_url, query = query,
      documents = { "gpu" }, filters = { "dedupe", f } }
    local valid, why = nim.check(args)
    eq(valid, nil, name .. ": nim.check refuses it")
    eq(why.field, "filters[2]." .. name, name .. ": names the entry and the filter")
    local err = raises(function() nim.rerank(args) end, "nim.rerank: filters[2]." .. name)
    spec.match(err, "^[^\n]*filters_spec%.lua:%d+: ", name .. ": at the caller's line")
    local last = h.last(h.open_url)
    spec.no_match(last and last.body or "", query, name .. ": nothing was sent")
  end
  ok(nim.check({ model = "local/bm25", query = "q", documents = { "d" }, filters = {
    { top_n = 1 }, { min_score = -1 }, { normalize = "sigmoid" }, "dedupe",
    { dedupe = false }, { return_documents = false } } }), "good arguments pass")
end)

test("a_bad_script_budget_is_misuse_naming_the_setting", function()
  local before = nim.settings.script_budget
  for _, v in ipairs({ 1e12, 0.5, 0, "x", 0 / 0 }) do
    nim.settings.script_budget = v
    local okr, err = pcall(run, { "dedupe" })
    local valid, why = nim.check({ model = "local/bm25", query = "q", documents = { "d" },
      filters = { "dedupe" } })
    nim.settings.script_budget = before
    eq(okr, false, tostring(v) .. ": refused")
    spec.match(tostring(err), "^[^\n]*filters_spec%.lua:%d+: nim%.settings: script_budget: "
      .. "must be an integer between 1 and 2%^31%-1", tostring(v) .. ": misuse at my line")
    eq(valid, nil, tostring(v) .. ": nim.check refuses it too")
    eq(why.fn .. "." .. why.field, "nim.settings.script_budget", tostring(v) .. ": named")
  end
end)
