-- model = "hybrid" (lua/nim/hybrid.lua): several rerankers on the same documents at once,
-- fused by reciprocal rank fusion or a weighted sum of min-max normalised scores. Expected
-- scores are computed here from the components' own answers; nothing asserts a speed.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local router = require "nim.router"
local config = require "nim.config"
local ndcg = require "ndcg"
local test, eq, ok, near, raises, match = spec.test, spec.eq, spec.ok, spec.near, spec.raises,
  spec.match

local NIM = h.RETRIEVAL                 -- on the keyed fake (h.url, h.key)
local OPEN = h.RANKING                  -- on the open fake (h.open_url): its lexical scorer
local BM25 = "local/bm25"

-- nim.router is r while fn runs (nim.rerank, rerank_async and spawn look it up per call).
local function with_router(r, fn)
  local saved = nim.router
  nim.router = r
  local ok_, e = pcall(fn)
  nim.router = saved
  if not ok_ then error(e, 0) end
end

-- A router whose provider calls are counted: calls, and the most in flight at once (a call
-- is in flight from its start until its answer is back: inside a task it yields meanwhile).
local function spy_router(cfg)
  local s = { calls = 0, inflight = 0, max = 0, models = {} }
  local batch = require "nim.batch"
  local r = router.new(cfg and config.load(cfg) or nil, { call = function(a, b)
    s.calls = s.calls + 1
    s.models[#s.models + 1] = a.model
    s.inflight = s.inflight + 1
    s.max = math.max(s.max, s.inflight)
    local res, err = batch.call(a, b)
    s.inflight = s.inflight - 1
    return res, err
  end })
  return r, s
end

-- A router whose provider calls answer from a table: model -> result (or {err = e}).
local function canned_router(answers)
  return router.new(nil, { call = function(a)
    local x = answers[a.model]
    if x.err then return nil, x.err end
    return x
  end })
end

-- A provider's answer: list of { index, score } in the provider's rank order.
local function answer(provider, list, tokens)
  local results = nim.array{}
  for i, x in ipairs(list) do
    results[i] = { index = x[1], relevance_score = x[2], document = { text = "d" .. x[1] } }
  end
  return { id = "id-" .. provider, results = results,
    meta = { provider = provider, model = provider, latency_ms = 1,
      billed_units = { total_tokens = tokens or 0 } } }
end

local A, B, C = "nvidia_nim/acme/a", "nvidia_nim/acme/b", "nvidia_nim/acme/c"
local DOCS4 = { "d0", "d1", "d2", "d3" }

local function by_index(res)
  local t = {}
  for _, r in ipairs(res.results) do t[r.index] = r end
  return t
end

local function indices(res)
  local t = {}
  for i, r in ipairs(res.results) do t[i] = r.index end
  return table.concat(t, ",")
end

-- ---- fusion, exactly as specified ------------------------------------------------------------

test("rrf_is_the_sum_of_weight_over_k_plus_rank", function()
  -- A ranks 2, 0, 1, 3; B ranks 0, 1 only (cut by a top_n of its own): doc 2 and 3 get no
  -- term from B
  local r = canned_router({
    [A] = answer("a", { { 2, 9.5 }, { 0, 3 }, { 1, -1 }, { 3, -7 } }, 10),
    [B] = answer("b", { { 0, 0.9 }, { 1, 0.8 } }, 5),
  })
  local res = assert(r:rerank({ model = "hybrid", models = { A, B }, query = "q",
    documents = DOCS4 }))
  local want = {
    [0] = 1 / (60 + 2) + 1 / (60 + 1),
    [1] = 1 / (60 + 3) + 1 / (60 + 2),
    [2] = 1 / (60 + 1),
    [3] = 1 / (60 + 4),
  }
  eq(indices(res), "0,1,2,3", "fused order")
  for i, x in pairs(by_index(res)) do eq(x.relevance_score, want[i], "rrf score of " .. i) end
  eq(res.meta.provider, "hybrid", "provider")
  eq(res.meta.fusion, "rrf", "fusion")
  eq(res.meta.rrf_k, 60, "k")
  eq(res.meta.billed_units.total_tokens, 15, "tokens summed")
  eq(res.id, "id-a", "the first answering component's id")

  -- weights and k
  res = assert(r:rerank({ model = "hybrid", models = { A, B }, query = "q", documents = DOCS4,
    rrf_k = 0, weights = { 1, 3 } }))
  want = { [0] = 1 / 2 + 3 / 1, [1] = 1 / 3 + 3 / 2, [2] = 1 / 1, [3] = 1 / 4 }
  for i, x in pairs(by_index(res)) do eq(x.relevance_score, want[i], "weighted rrf of " .. i) end
  eq(indices(res), "0,1,2,3", "order")
end)

test("weighted_fusion_sums_min_max_normalised_scores", function()
  local r = canned_router({
    [A] = answer("a", { { 2, 9 }, { 0, 3 }, { 1, -1 }, { 3, -7 } }),
    [B] = answer("b", { { 3, 0.5 }, { 1, 0.25 }, { 0, 0 } }),
    [C] = answer("c", { { 0, 4 }, { 1, 4 }, { 2, 4 }, { 3, 4 } }), -- constant: adds nothing
  })
  local res = assert(r:rerank({ model = "hybrid", models = { A, B, C }, query = "q",
    documents = DOCS4, fusion = "weighted", weights = { 0.5, 2, 7 } }))
  local function na(s) return (s - -7) / (9 - -7) end
  local function nb(s) return (s - 0) / (0.5 - 0) end
  local want = {
    [0] = 0.5 * na(3) + 2 * nb(0) + 0,
    [1] = 0.5 * na(-1) + 2 * nb(0.25) + 0,
    [2] = 0.5 * na(9) + 0,  -- B did not rank it
    [3] = 0.5 * na(-7) + 2 * nb(0.5) + 0,
  }
  for i, x in pairs(by_index(res)) do near(x.relevance_score, want[i], 1e-12, "score " .. i) end
  eq(indices(res), "3,1,2,0", "fused order")
  eq(res.meta.fusion, "weighted", "fusion")
  eq(res.meta.rrf_k, nil, "no k")
end)

test("ties_go_by_index_and_one_component_alone_keeps_its_order", function()
  -- A and B disagree exactly: every fused score ties, the lower index first
  local r = canned_router({
    [A] = answer("a", { { 0, 2 }, { 1, 1 } }),
    [B] = answer("b", { { 1, 2 }, { 0, 1 } }),
    [C] = { err = nim.native.error({ type = "provider", status = 503, message = "down" }) },
  })
  local res = assert(r:rerank({ model = "hybrid", models = { B, A }, query = "q",
    documents = { "x", "y" } }))
  eq(indices(res), "0,1", "tie by index")
  -- C fails: B's answer alone, in its own order, both fusions
  for _, fusion in ipairs({ "rrf", "weighted" }) do
    res = assert(r:rerank({ model = "hybrid", models = { C, B }, query = "q",
      documents = { "x", "y" }, fusion = fusion }))
    eq(indices(res), "1,0", fusion .. ": the survivor's order")
  end
end)

-- ---- against the fake NIM server and local/bm25 ---------------------------------------------

local QUERY = "What is the GPU memory bandwidth of H100 SXM?"
local DOCS = {
  "H100 SXM delivers 3.35 TB/s of HBM3 memory bandwidth per GPU.",
  "The A100 GPU has 2 TB/s of memory bandwidth.",
  "Sourdough bread needs a hot oven.",
  "GPU memory bandwidth decides how fast a model's weights stream into the cores.",
  "H100 bandwidth",
}

-- The rrf scores of the components' own answers (each a result), in the models' order.
local function rrf_of(answers, k, weights)
  local score = {}
  for i, res in ipairs(answers) do
    for rank, x in ipairs(res.results) do
      score[x.index] = (score[x.index] or 0) + (weights and weights[i] or 1) / (k + rank)
    end
  end
  return score
end

test("rrf_of_fake_nim_and_bm25_matches_their_own_answers", function()
  local args = { query = QUERY, documents = DOCS, api_key = h.key, api_base = h.url }
  local function call(over)
    local a = {}
    for k, v in pairs(args) do a[k] = v end
    for k, v in pairs(over) do a[k] = v end
    return assert(nim.rerank(a))
  end
  with_router(router.new(nil), function()
    local nim_alone, bm25_alone = call({ model = NIM }), call({ model = BM25 })
    local res = call({ model = "hybrid", models = { NIM, BM25 } })
    local want = rrf_of({ nim_alone, bm25_alone }, 60)
    eq(#res.results, #DOCS, "every document")
    for _, x in ipairs(res.results) do
      eq(x.relevance_score, want[x.index], "rrf of " .. x.index)
      eq(#x.components, 2, "both components ranked it")
      eq(x.components[1].model, NIM, "components in models order")
      eq(x.components[2].model, BM25, "then bm25")
      eq(x.document.text, DOCS[x.index + 1], "document")
    end
    for i = 2, #res.results do
      ok(res.results[i - 1].relevance_score >= res.results[i].relevance_score, "sorted")
    end
    local first = res.results[1]
    for _, c in ipairs(first.components) do
      local alone = c.model == NIM and nim_alone or bm25_alone
      eq(alone.results[c.rank].index, first.index, c.model .. ": its rank")
      eq(alone.results[c.rank].relevance_score, c.relevance_score, c.model .. ": its score")
    end
    local m = res.meta
    eq(#m.components, 2, "meta.components")
    eq(m.components[1].model, NIM, "first")
    eq(m.components[1].provider, "nvidia_nim", "its provider")
    eq(m.components[2].provider, "local", "bm25's")
    ok(m.components[1].ok and m.components[2].ok, "both ok")
    ok(type(m.components[1].seconds) == "number", "seconds")
    eq(m.billed_units.total_tokens, nim_alone.meta.billed_units.total_tokens
      + bm25_alone.meta.billed_units.total_tokens, "tokens summed")
    eq(m.warnings, nil, "no warnings")
  end)
end)

test("top_n_and_return_documents_apply_to_the_fused_answer", function()
  local r, s = spy_router()
  local full = assert(r:rerank({ model = "hybrid", models = { NIM, BM25 }, query = QUERY,
    documents = DOCS, api_key = h.key, api_base = h.url }))
  local res = assert(r:rerank({ model = "hybrid", models = { NIM, BM25 }, query = QUERY,
    documents = DOCS, api_key = h.key, api_base = h.url, top_n = 2, return_documents = false }))
  eq(#res.results, 2, "top_n on the fused answer")
  for i = 1, 2 do
    eq(res.results[i].index, full.results[i].index, "the fused top 2")
    eq(res.results[i].relevance_score, full.results[i].relevance_score, "same scores")
    eq(res.results[i].document, nil, "no documents")
  end
  local body = h.decode(h.last(h.url).body)
  eq(body.top_k, nil, "the NIM component was asked for every document")
  eq(#body.passages, #DOCS, "all of them")
  eq(res.results[1].components[2].rank ~= nil, true, "bm25 ranked them all too")
  eq(s.calls, 4, "two calls per hybrid")
  -- top_k (the alias) too
  res = assert(r:rerank({ model = "hybrid", models = { NIM, BM25 }, query = QUERY,
    documents = DOCS, api_key = h.key, api_base = h.url, top_k = 1 }))
  eq(#res.results, 1, "top_k")
end)

test("components_go_through_the_router_and_a_document_a_component_cut_has_no_entry", function()
  local r = router.new(config.load({ model_list = {
    { model_name = "nim-top2", litellm_params = { model = NIM, api_base = h.url,
      api_key = h.key, top_n = 2 } },
  }, router_settings = { model_group_alias = { ["nim-alias"] = "nim-top2" } } }))
  local res = assert(r:rerank({ model = "hybrid", models = { "nim-alias", BM25 },
    query = QUERY, documents = DOCS }))
  eq(#res.results, #DOCS, "bm25 ranked every document")
  local from_nim = 0
  for _, x in ipairs(res.results) do
    local names = {}
    for _, c in ipairs(x.components) do names[#names + 1] = c.model end
    if #names == 2 then from_nim = from_nim + 1 end
    eq(names[#names], BM25, "bm25 always")
    ok(#names == 2 or names[1] == BM25, "the NIM entry only when it ranked the document")
  end
  eq(from_nim, 2, "the group's top_n = 2 cut the NIM component's answer")
end)

-- ---- failures ---------------------------------------------------------------------------------

test("one_side_failing_returns_the_other_with_a_warning", function()
  local r = router.new(nil)
  -- the fake fails on the directive in the query; bm25 sees two harmless words
  local q = ("!status=503 u%d %s"):format(math.random(1, 1e9), QUERY)
  local res, err = r:rerank({ model = "hybrid", models = { NIM, BM25 }, query = q,
    documents = DOCS, api_key = h.key, api_base = h.url })
  ok(res, tostring(err))
  local alone = assert(r:rerank({ model = BM25, query = q, documents = DOCS }))
  eq(indices(res), indices(alone), "bm25's own order")
  for _, x in ipairs(res.results) do
    eq(#x.components, 1, "one component")
    eq(x.components[1].model, BM25, "bm25")
  end
  eq(#res.meta.warnings, 1, "one warning")
  local w = res.meta.warnings[1]
  match(w, NIM:gsub("%p", "%%%0"), "names the failed component")
  match(w, "provider", "its error type")
  match(w, "injected failure 503", "its message")
  spec.no_match(w, h.key, "never the key")
  eq(res.meta.components[1].ok, false, "meta says it failed")
  eq(res.meta.components[1].error, "provider", "with its type")
  eq(res.meta.components[2].ok, true, "bm25 ok")

  -- a deployment on a closed port: a connection error, through the component's group
  r = router.new(config.load({ model_list = {
    { model_name = "dead", litellm_params = { model = NIM, api_base = "http://127.0.0.1:1",
      api_key = h.key } } } }))
  res = assert(r:rerank({ model = "hybrid", models = { BM25, "dead" }, query = QUERY,
    documents = DOCS }))
  match(res.meta.warnings[1], '"dead" failed %(connection', "the group named, connection")
  eq(res.meta.components[2].ok, false, "dead failed")
end)

test("all_failing_is_nil_and_the_first_error_with_each_components", function()
  local r = router.new(nil)
  local q = ("!status=503 u%d %s"):format(math.random(1, 1e9), QUERY)
  local res, err = r:rerank({ model = "hybrid", models = { NIM, OPEN }, query = q,
    documents = DOCS, api_key = h.key, api_base = h.url })
  eq(res, nil, "no answer")
  eq(err.type, "provider", "the first component's error")
  eq(err.status, 503, "its status")
  eq(#err.components, 2, "each component")
  eq(err.components[1].model, NIM, "first")
  eq(err.components[2].model, OPEN, "second")
  for _, c in ipairs(err.components) do
    eq(c.ok, false, "failed")
    eq(c.error, "provider", "type")
    match(c.message, "injected failure 503", "message")
  end
  spec.no_match(tostring(err), h.key, "never the key")
end)

test("a_component_that_leads_back_to_a_hybrid_fails_without_recursing", function()
  -- "inner" fails and falls back to the hybrid group: the component's call ends there
  local r = router.new(config.load({ model_list = {
    { model_name = "inner", litellm_params = { model = NIM, api_base = "http://127.0.0.1:1",
      api_key = h.key } },
    { model_name = "fused", litellm_params = { model = "hybrid", models = { BM25, OPEN } } },
  }, router_settings = { num_retries = 0, fallbacks = { { inner = { "fused" } } } } }))
  local res = assert(r:rerank({ model = "hybrid", models = { "inner", BM25 }, query = QUERY,
    documents = DOCS, api_base = h.open_url }))
  eq(res.meta.components[1].ok, false, "inner failed")
  match(res.meta.warnings[1], "may not itself be hybrid", "said why")
end)

-- ---- misuse -------------------------------------------------------------------------------

test("misuse_names_the_field_at_the_callers_line_and_sends_nothing", function()
  local r, s = spy_router({ model_list = {
    { model_name = "fused", litellm_params = { model = "hybrid", models = { BM25, NIM } } },
    { model_name = "nim", litellm_params = { model = NIM } } } })
  local NONE = {}
  local function call(over)
    local a = { model = "hybrid", models = { NIM, BM25 }, query = QUERY, documents = DOCS,
      api_key = h.key, api_base = h.url }
    for k, v in pairs(over) do
      if v == NONE then a[k] = nil else a[k] = v end
    end
    with_router(r, function() nim.rerank(a) end)
  end
  local cases = {
    { { models = NONE }, "models", 'required with model = "hybrid"' },
    { { models = false }, "models", "expected a list" },
    { { models = nim.array{} }, "models", "at least 2" },
    { { models = { NIM } }, "models", "at least 2 model names to fuse (got 1)" },
    { { models = { NIM, 7 } }, "models[2]", "expected a model name" },
    { { models = { NIM, NIM } }, "models[2]", "listed twice" },
    { { models = { "hybrid", BM25 } }, "models[1]", "may not itself be hybrid" },
    { { models = { BM25, "fused" } }, "models[2]", '"fused" is hybrid itself' },
    { { fusion = "borda" }, "fusion", 'must be "rrf" or "weighted" (got "borda")' },
    { { rrf_k = -1 }, "rrf_k", "must be a number >= 0" },
    { { rrf_k = 0 / 0 }, "rrf_k", "must be a number >= 0" },
    { { fusion = "weighted", rrf_k = 10 }, "rrf_k", 'only for fusion = "rrf"' },
    { { weights = { 1 } }, "weights", "one per model: 1 weights for 2 models" },
    { { weights = { 1, -1 } }, "weights[2]", "must be a number >= 0" },
    { { weights = { 0, 0 } }, "weights", "must not all be 0" },
    { { weights = "1,1" }, "weights", "expected a list of numbers" },
    { { top_n = 0 }, "top_n", "" },           -- the fused answer's, by the binding's rule
    { { query = "" }, "query", "" },          -- a component's, before either is sent
    { { truncate = "START" }, "truncate", "" },
  }
  for _, c in ipairs(cases) do
    local msg = raises(function() call(c[1]) end, "nim.rerank: " .. c[2] .. ": ", c[3])
    match(msg, "^[^\n]*hybrid_spec%.lua:%d+:", c[2] .. ": at the caller's line")
  end
  spec.no_match(raises(function() call({ models = NONE }) end), "lua/nim/",
    "never a path of ours")
  eq(s.calls, 0, "nothing was sent")
  -- nim.check returns the same, sending nothing
  with_router(r, function()
    local okc, bad = nim.check({ model = "hybrid", models = { NIM }, query = "q",
      documents = DOCS })
    eq(okc, nil, "not ok")
    eq(bad.field, "models", "field")
    eq(nim.check({ model = "hybrid", models = { NIM, BM25 }, query = "q", documents = DOCS,
      api_key = h.key }), true, "a good one checks")
    eq(select(2, nim.check({ model = "fused", query = "q", documents = DOCS, top_n = 0 })).field,
      "top_n", "a hybrid group is checked too")
  end)
  eq(s.calls, 0, "still nothing sent")
end)

-- ---- whose key: a call-level api_key, api_base, headers go to one provider only -----------

local COHERE = "cohere/rerank-v3.5"
local function fake_get(base, path)
  return h.decode((h.sh("curl -s " .. h.q(base .. path))))
end
local function posts(base, dialect)
  return fake_get(base, "/_fake/stats").requests[dialect] or 0
end
local function no_cohere_env()
  for _, v in ipairs({ "COHERE_API_KEY", "CO_API_KEY", "COHERE_API_BASE" }) do
    assert(not os.getenv(v), v .. " is set in the test environment: this test needs it unset")
  end
end
local COHERE_GROUPS = { model_list = {
  -- on the keyed fake without a key of its own; on the open fake with one
  { model_name = "cohere-env", litellm_params = { model = COHERE, api_base = h.url .. "/cohere" } },
  { model_name = "cohere-own", litellm_params = { model = COHERE, api_key = "cohere-own-key",
    api_base = h.open_url .. "/cohere" } },
  { model_name = "fused", litellm_params = { model = "hybrid", models = { NIM, COHERE } } },
  { model_name = "fused-env", litellm_params = { model = "hybrid",
    models = { "cohere-env", BM25 } } },
} }

test("components_of_two_providers_that_would_take_the_calls_key_are_misuse", function()
  no_cohere_env()
  local r, s = spy_router(COHERE_GROUPS)
  local before = posts(h.url, "cohere")
  local cases = {
    { { models = { NIM, COHERE }, api_key = h.key }, "api_key" },
    { { models = { NIM, BM25, COHERE }, api_base = h.url }, "api_base" },
    { { models = { COHERE, NIM }, headers = { ["X-Nim-Tenant"] = "t" } }, "headers" },
    -- a group without a key of its own would take it
    { { models = { NIM, "cohere-env" }, api_key = h.key, api_base = h.url }, "api_key" },
    -- a group's own key wins, its call headers would not
    { { models = { NIM, "cohere-own" }, api_key = h.key, headers = { ["X-A"] = "a" } },
      "api_key" },
    -- a hybrid group likewise
    { { model = "fused", api_key = h.key }, "api_key" },
  }
  for _, c in ipairs(cases) do
    local a = { model = "hybrid", query = QUERY, documents = DOCS }
    for k, v in pairs(c[1]) do a[k] = v end
    local msg = raises(function() with_router(r, function() nim.rerank(a) end) end,
      "nim.rerank: " .. c[2] .. ": ", "components are of different providers")
    match(msg, "nvidia_nim: models%[%d%]", "names the NIM component")
    match(msg, "cohere: models%[%d%]", "and the Cohere one")
    match(msg, "as a model group with its own api_key", "says what to do")
    match(msg, "^[^\n]*hybrid_spec%.lua:%d+:", "at the caller's line")
    spec.no_match(msg, h.key, "never the key")
    with_router(r, function()
      local valid, bad = nim.check(a)
      eq(valid, nil, "nim.check returns it")
      eq(bad.field, c[2], "naming the field")
    end)
  end
  eq(s.calls, 0, "nothing was sent")
  eq(posts(h.url, "cohere"), before, "nothing reached Cohere")
end)

test("a_call_level_key_goes_to_the_components_of_its_one_provider_only", function()
  no_cohere_env()
  local r = router.new(config.load(COHERE_GROUPS))
  local nim_before = posts(h.url, "nim")
  -- NIM + a Cohere group with its own key + bm25: the call's key and base go to NIM only
  local res = assert(r:rerank({ model = "hybrid", models = { NIM, "cohere-own", BM25 },
    query = QUERY, documents = DOCS, api_key = h.key, api_base = h.url }))
  ok(res.meta.components[1].ok and res.meta.components[2].ok and res.meta.components[3].ok,
    "every component answered")
  eq(res.meta.components[2].provider, "cohere", "Cohere's")
  local last = fake_get(h.open_url, "/_fake/last/cohere")
  eq(last.headers.authorization, "Bearer cohere-own-key", "the Cohere group's own key")
  spec.no_match(h.sh("curl -s " .. h.q(h.open_url .. "/_fake/last/cohere")), h.key,
    "never the NIM key")
  eq(fake_get(h.url, "/_fake/last/nim").headers.authorization, "Bearer " .. h.key,
    "NIM got the call's key")
  eq(posts(h.url, "nim"), nim_before + 1, "at the call's base")
  -- every numeric billed unit summed: NIM's tokens and Cohere's search units
  local nim_alone = assert(r:rerank({ model = NIM, query = QUERY, documents = DOCS,
    api_key = h.key, api_base = h.url }))
  local bm_alone = assert(r:rerank({ model = BM25, query = QUERY, documents = DOCS }))
  eq(res.meta.billed_units.total_tokens, nim_alone.meta.billed_units.total_tokens
    + bm_alone.meta.billed_units.total_tokens, "tokens summed")
  eq(res.meta.billed_units.search_units, 1, "Cohere's search units (5 documents: 1)")
  -- the same with a NIM group as the component: the call's key does not beat the group's
  r = router.new(config.load({ model_list = {
    { model_name = "nim-own", litellm_params = { model = NIM, api_base = h.url,
      api_key = "nim-own-key" } } } }))
  res = assert(r:rerank({ model = "hybrid", models = { "nim-own", BM25 }, query = QUERY,
    documents = DOCS, api_key = h.key }))
  eq(res.meta.components[1].error, "auth", "the group's own (wrong) key was used")
  eq(fake_get(h.url, "/_fake/last/nim").headers.authorization, "Bearer nim-own-key",
    "the group's key, not the call's")
end)

test("a_hybrid_fallback_gets_none_of_the_calls_key", function()
  no_cohere_env()
  local r = router.new(config.load(COHERE_GROUPS))
  local before = posts(h.url, "cohere")
  -- a NIM model that fails (404) with the NIM key: the hybrid fallback's Cohere component
  -- must not get it
  local res, err = r:rerank({ model = "nvidia_nim/nvidia/no-such", query = QUERY,
    documents = DOCS, api_key = h.key, api_base = h.url, num_retries = 0,
    fallbacks = { "fused-env" } })
  ok(res, tostring(err))
  eq(res.meta.fallback, "fused-env", "the hybrid fallback answered")
  eq(res.meta.components[1].ok, false, "its Cohere component had no key")
  eq(res.meta.components[1].error, "auth", "an auth error")
  match(res.meta.components[1].message, "COHERE_API_KEY", "naming Cohere's variable")
  eq(posts(h.url, "cohere"), before, "nothing was sent to Cohere")
end)

test("billed_units_are_summed_field_by_field", function()
  local a = answer("a", { { 0, 1 }, { 1, 0 } }, 10)
  local b = answer("b", { { 1, 1 }, { 0, 0 } })
  b.meta.billed_units = { search_units = 2 }
  local c = answer("c", { { 0, 1 } }, 5)
  c.meta.billed_units.search_units = 1
  local r = canned_router({ [A] = a, [B] = b, [C] = c })
  local res = assert(r:rerank({ model = "hybrid", models = { A, B, C }, query = "q",
    documents = { "x", "y" } }))
  eq(res.meta.billed_units.total_tokens, 15, "total_tokens")
  eq(res.meta.billed_units.search_units, 3, "search_units")
  eq(math.type(res.meta.billed_units.search_units), "integer", "still an integer")
  res = assert(r:rerank({ model = "hybrid", models = { B, C }, query = "q",
    documents = { "x", "y" } }))
  eq(res.meta.billed_units.search_units, 3, "search units alone")
  eq(res.meta.billed_units.total_tokens, 5, "and c's tokens")
end)

-- ---- config -----------------------------------------------------------------------------

local function yaml_config(body)
  return (body:gsub("NIM_BASE", h.url):gsub("OPEN_BASE", h.open_url):gsub("NIM_KEY", h.key))
end

test("config_deployment_form", function()
  local cfg, warnings = config.load_yaml(yaml_config([[
model_list:
  - model_name: nim
    litellm_params: {model: nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2, api_base: NIM_BASE,
                     api_key: NIM_KEY}
  - model_name: offline
    litellm_params: {model: local/bm25, models: [a, b]}
  - model_name: fused
    litellm_params:
      model: hybrid
      models: [nim, offline]
      fusion: weighted
      weights: [0.7, 0.3]
      top_n: 3
router_settings:
  fallbacks: [{offline: [hybrid]}]
]]))
  eq(#warnings, 1, "one warning")
  match(warnings[1], "model_list%[2%]%.litellm_params%.models: only used with model: hybrid",
    "hybrid options elsewhere are ignored, with a warning")
  local r = router.new(cfg)
  local res = assert(r:rerank({ model = "fused", query = QUERY, documents = DOCS }))
  eq(res.meta.provider, "hybrid", "hybrid")
  eq(res.meta.model_group, "fused", "the group")
  eq(res.meta.fusion, "weighted", "fusion from the config")
  eq(#res.results, 3, "the deployment's top_n, on the fused answer")
  eq(res.results[1].components[1].model, "nim", "components named as in the config")
  eq(#res.meta.attempts, 1, "one attempt, recorded as any")
  local nim_alone = assert(r:rerank({ model = "nim", query = QUERY, documents = DOCS }))
  local bm_alone = assert(r:rerank({ model = "offline", query = QUERY, documents = DOCS }))
  local function norm(res_, i)
    local lo, hi = math.huge, -math.huge
    for _, x in ipairs(res_.results) do
      lo, hi = math.min(lo, x.relevance_score), math.max(hi, x.relevance_score)
    end
    for _, x in ipairs(res_.results) do
      if x.index == i then return (x.relevance_score - lo) / (hi - lo) end
    end
  end
  for _, x in ipairs(res.results) do
    near(x.relevance_score, 0.7 * norm(nim_alone, x.index) + 0.3 * norm(bm_alone, x.index),
      1e-12, "weighted score of " .. x.index)
  end
  -- "hybrid" is a servable name with a config: as the model, and in check_names
  ok(r:unknown("hybrid") == nil, "not unknown")
  res = assert(r:rerank({ model = "hybrid", models = { "nim", "offline" }, query = QUERY,
    documents = DOCS }))
  eq(res.meta.provider, "hybrid", "the request's own hybrid")
end)

test("config_errors_name_the_key_path", function()
  local function load(params, extra)
    local list = { { model_name = "nim", litellm_params = { model = NIM } },
      { model_name = "fused", litellm_params = params } }
    for _, d in ipairs(extra or {}) do list[#list + 1] = d end
    return config.load({ model_list = list })
  end
  local P = "model_list[2].litellm_params."
  raises(function() load({ model = "hybrid" }) end, P .. "models: required")
  raises(function() load({ model = "hybrid", models = { "nim" } }) end, P .. "models:",
    "at least 2")
  raises(function() load({ model = "hybrid", models = { "nim", BM25 }, fusion = "max" }) end,
    P .. "fusion:", '"rrf" or "weighted"')
  raises(function() load({ model = "hybrid", models = { "nim", BM25 }, weights = { 1 } }) end,
    P .. "weights:", "one per model")
  raises(function() load({ model = "hybrid", models = { "nim", "nope" } }) end,
    P .. "models[2]:", "neither a model_name")
  raises(function() load({ model = "hybrid", models = { "nim", "fused" } }) end,
    P .. "models[2]:", "hybrid itself")
  raises(function()
    load({ model = "hybrid", models = { "nim", "other" } }, { { model_name = "other",
      litellm_params = { model = "hybrid", models = { "nim", BM25 } } } })
  end, P .. "models[2]:", "hybrid itself")
  local msg = raises(function()
    config.load({ model_list = { { model_name = "f", litellm_params = { model = "hybrid",
      models = { "os.environ/FAKE_KEY", BM25 } } } } })
  end, "models[1]", "os.environ/ is not allowed here")
  spec.no_match(msg, h.key, "the value is never printed")
end)

-- ---- concurrency --------------------------------------------------------------------------

test("components_are_in_flight_at_once_outside_and_inside_tasks", function()
  -- the keyed fake and the open one (through a deployment: its own base), each answer held
  -- 100 ms, so both transfers really wait on the network together
  local r, s = spy_router({ model_list = {
    { model_name = "open", litellm_params = { model = OPEN, api_base = h.open_url } } } })
  local function hybrid_args(tag)
    return { model = "hybrid", models = { NIM, "open" }, query = ("!delay=100 %s %s")
      :format(tag, QUERY), documents = DOCS, api_key = h.key, api_base = h.url }
  end
  -- outside any task: the call drives the scheduler itself
  local res = assert(r:rerank(hybrid_args("outside")))
  eq(s.max, 2, "outside a task: both calls in flight at once")
  ok(res.meta.components[1].ok and res.meta.components[2].ok, "both answered")
  -- inside a task (nim.spawn), and as a request (rerank_async), with other work going on
  s.max = 0
  local got, ticks = nil, 0
  with_router(r, function()
    nim.spawn(function() got = assert(nim.rerank(hybrid_args("inside"))) end)
    nim.spawn(function()
      while not got do ticks = ticks + 1; nim.sleep(0.01) end
    end)
    nim.run(30)
  end)
  eq(s.max, 2, "inside a task: both calls in flight at once")
  ok(ticks > 0, "the other task ran while the hybrid waited")
  eq(#got.results, #DOCS, "answered")
  s.max = 0
  with_router(r, function()
    local req = nim.rerank_async(hybrid_args("async"))
    local res2 = assert(req:wait(30))
    eq(#res2.results, #DOCS, "rerank_async answered")
  end)
  eq(s.max, 2, "rerank_async: both in flight")
end)

test("cancelling_a_hybrid_request_cancels_its_components", function()
  local r = router.new(config.load({ model_list = {
    { model_name = "open", litellm_params = { model = OPEN, api_base = h.open_url } } } }))
  local async = require "nim.async"
  with_router(r, function()
    local before = async.pending()
    local req = nim.rerank_async({ model = "hybrid", models = { NIM, "open" },
      query = "!delay=2000 " .. QUERY, documents = DOCS, api_key = h.key, api_base = h.url })
    nim.poll()
    eq(async.pending(), before + 3, "the request and its two components are pending")
    req:cancel()
    eq(async.pending(), before, "none of them is left")
    local _, _, err = req:poll()
    eq(err.type, "cancelled", "cancelled")
  end)
end)

-- ---- the gateway --------------------------------------------------------------------------

test("a_hybrid_group_through_nimrank_serve", function()
  local srv = h.serve(yaml_config([[
model_list:
  - model_name: nim
    litellm_params: {model: nvidia_nim/nvidia/llama-nemotron-rerank-1b-v2, api_base: NIM_BASE,
                     api_key: NIM_KEY}
  - model_name: fused
    litellm_params: {model: hybrid, models: [nim, local/bm25]}
]]))
  local okc, e = pcall(function()
    local body = require("nim.json").encode({ model = "fused", query = "!delay=100 " .. QUERY,
      documents = DOCS, top_n = 2 })
    local out = h.sh(("curl -s --max-time 20 -H 'Content-Type: application/json' -d %s %s")
      :format(h.q(body), h.q(srv.url .. "/v1/rerank")))
    local res = h.decode(out)
    ok(res.results, "answered: " .. out)
    eq(#res.results, 2, "top_n")
    eq(#res.results[1].components, 2, "components in the JSON")
  end)
  srv.stop()
  if not okc then error(e, 0) end
end)

-- ---- evaluation -----------------------------------------------------------------------------

test("ndcg_at_3_of_bm25_the_fake_cross_encoder_and_their_rrf_fusion", function()
  local data = ndcg.labelled()
  local r = router.new(nil)
  local answers = {}
  local function rank(model)
    return function(query, docs)
      local res = assert(r:rerank({ model = model, query = query, documents = docs,
        api_base = h.open_url }))
      answers[query] = answers[query] or {}
      answers[query][model] = res
      return res
    end
  end
  local bm25 = ndcg.mean(data, 3, rank(BM25))
  local fake = ndcg.mean(data, 3, rank(OPEN))
  local fused = ndcg.mean(data, 3, function(query, docs)
    local res = assert(r:rerank({ model = "hybrid", models = { OPEN, BM25 }, query = query,
      documents = docs, api_base = h.open_url }))
    -- the fusion as specified, from the components' own answers
    local want = rrf_of({ answers[query][OPEN], answers[query][BM25] }, 60)
    for _, x in ipairs(res.results) do eq(x.relevance_score, want[x.index], "rrf") end
    return res
  end)
  local weighted = ndcg.mean(data, 3, function(query, docs)
    return r:rerank({ model = "hybrid", models = { OPEN, BM25 }, query = query,
      documents = docs, api_base = h.open_url, fusion = "weighted" })
  end)
  print(("     nDCG@3 over %d queries: local/bm25 %.3f, fake cross-encoder %.3f, "
    .. "rrf fusion %.3f, weighted fusion %.3f"):format(#data.queries, bm25, fake, fused,
    weighted))
end)
