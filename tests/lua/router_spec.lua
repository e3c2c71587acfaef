-- nim.router: aliases, load balancing, retries, Retry-After, cooldowns, fallbacks. A fake
-- clock: sleeping only advances it, so nothing here really waits.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local router = require "nim.router"
local config = require "nim.config"
local json = require "nim.json"
local test, eq, ok = spec.test, spec.eq, spec.ok

local fake_time, seeded = h.fake_time, h.seeded

local function dep(name, model, params, id)
  local p = { model = model, api_base = h.url, api_key = h.key }
  for k, v in pairs(params or {}) do p[k] = v end
  return { model_name = name, litellm_params = p, model_info = id and { id = id } or nil }
end

local function make(cfg, opts)
  local t = fake_time()
  opts = opts or {}
  opts.clock, opts.sleep = t.clock, t.sleep
  opts.random = opts.random or seeded(42)
  return router.new(config.load(cfg), opts), t
end

local QUERY = h.QUERY
local function unique(directives) -- fault directives count per query text: keep tests apart
  return ("%s u%d %s"):format(directives, math.random(1, 1e9), QUERY)
end

test("alias_resolution", function()
  local r = make({ model_list = { dep("nvidia-rerank", h.RETRIEVAL) },
    router_settings = { model_group_alias = { ["my-alias"] = "nvidia-rerank" } } })
  local res = assert(r:rerank({ model = "my-alias", query = QUERY, documents = h.DOCS }))
  eq(res.meta.model_group, "nvidia-rerank", "group")
  eq(res.results[1].index, 2, "answered")
end)

test("weighted_random_distribution", function()
  local seen = {}
  local r = make({ model_list = {
    dep("g", "local/bm25", { weight = 1 }, "light"),
    dep("g", "local/bm25", { weight = 3 }, "heavy"),
  } }, { random = seeded(7) })
  local n = 2000
  for _ = 1, n do
    local res = assert(r:rerank({ model = "g", query = "q", documents = { "q" } }))
    seen[res.meta.deployment] = (seen[res.meta.deployment] or 0) + 1
  end
  local share = seen.heavy / n
  print(("     weight 3:1 -> heavy share %.3f over %d calls"):format(share, n))
  spec.near(share, 0.75, 0.03, "heavy deployment share")
end)

test("rpm_used_as_weight_when_no_weight", function()
  local seen = { a = 0, b = 0 }
  local r = make({ model_list = { dep("g", "local/bm25", { rpm = 10 }, "a"),
    dep("g", "local/bm25", { rpm = 90 }, "b") } }, { random = seeded(3) })
  for _ = 1, 1000 do
    local res = r:rerank({ model = "g", query = "q", documents = { "q" } })
    seen[res.meta.deployment] = seen[res.meta.deployment] + 1
  end
  spec.near(seen.b / 1000, 0.9, 0.03, "rpm share")
end)

test("lower_order_first", function()
  local r = make({ model_list = { dep("g", "local/bm25", { order = 2 }, "second"),
    dep("g", "local/bm25", { order = 1 }, "first") } })
  for _ = 1, 20 do
    eq(r:rerank({ model = "g", query = "q", documents = { "q" } }).meta.deployment, "first",
      "order 1")
  end
end)

test("retry_then_success_on_503", function()
  local r, t = make({ model_list = { dep("g", h.RETRIEVAL) } })
  local res, err = r:rerank({ model = "g", query = unique("!status=503 !times=1"),
    documents = h.DOCS })
  ok(res, tostring(err))
  eq(#res.meta.attempts, 2, "two attempts")
  eq(res.meta.attempts[1].status, 503, "first failed")
  eq(res.meta.attempts[1].error, "provider", "type recorded")
  eq(res.meta.attempts[2].status, 200, "second succeeded")
  eq(#t.slept, 1, "one backoff")
  ok(t.slept[1] >= 0.5 and t.slept[1] <= 0.625, "backoff 0.5 s plus jitter")
  eq(res.meta.attempts[2].wait, t.slept[1], "wait recorded")
end)

test("retry_moves_to_an_untried_deployment_without_waiting", function()
  local r, t = make({ model_list = {
    dep("g", h.RETRIEVAL, { api_base = "http://127.0.0.1:1" }, "down"), -- connection refused
    dep("g", h.RETRIEVAL, nil, "up"),
  } }, { random = function() return 0 end }) -- the first ready deployment, every time
  local res, err = r:rerank({ model = "g", query = QUERY, documents = h.DOCS })
  ok(res, tostring(err))
  eq(res.meta.attempts[1].deployment, "down", "first choice")
  eq(res.meta.attempts[1].error, "connection", "its error")
  eq(res.meta.deployment, "up", "the retry went to the sibling")
  eq(res.meta.attempts[2].wait, 0, "no backoff before a sibling")
  eq(#t.slept, 0, "nothing slept")
end)

test("every_deployment_tried_once_before_backoff", function()
  local r, t = make({
    model_list = { dep("g", h.RETRIEVAL, nil, "a"), dep("g", h.RETRIEVAL, nil, "b") },
    router_settings = { num_retries = 3, allowed_fails = 100 } },
    { random = function() return 0 end })
  local res, err = r:rerank({ model = "g", query = unique("!status=503"), documents = h.DOCS })
  eq(res, nil, "gave up")
  local seq = {}
  for i, a in ipairs(err.attempts) do seq[i] = a.deployment end
  eq(table.concat(seq, " "), "a b a b", "each once, then again")
  eq(err.attempts[2].wait, 0, "sibling at once")
  ok(err.attempts[3].wait >= 1, "then the backoff (retry 2): " .. err.attempts[3].wait)
  eq(#t.slept, 2, "slept before the repeats only")
end)

test("backoff_grows_exponentially_then_gives_up", function()
  local r, t = make({ model_list = { dep("g", h.RETRIEVAL) }, router_settings = { num_retries = 3,
    allowed_fails = 100 } })
  local res, err = r:rerank({ model = "g", query = unique("!status=500"), documents = h.DOCS })
  eq(res, nil, "gave up")
  eq(err.type, "provider", "last error")
  eq(#err.attempts, 4, "1 + 3 retries")
  ok(t.slept[2] >= 1 and t.slept[3] >= 2, "exponential")
end)

test("retry_after_honoured", function()
  local r, t = make({ model_list = { dep("g", h.RETRIEVAL) } })
  local res, err = r:rerank({ model = "g", query = unique("!status=429 !retry-after=7 !times=1"),
    documents = h.DOCS })
  ok(res, tostring(err))
  ok(t.slept[1] >= 7, "waited at least Retry-After: " .. tostring(t.slept[1]))
end)

test("retry_after_longer_than_max_wait_goes_to_fallback", function()
  local r, t = make({ model_list = { dep("g", h.RETRIEVAL), dep("offline", "local/bm25") },
    router_settings = { fallbacks = { { g = { "offline" } } }, max_retry_wait = 10 } })
  local res = assert(r:rerank({ model = "g", query = unique("!status=429 !retry-after=3600"),
    documents = h.DOCS }))
  eq(res.meta.fallback, "offline", "fell back instead of waiting an hour")
  eq(#t.slept, 0, "did not wait")
end)

test("non_retryable_errors_are_not_retried", function()
  local r, t = make({ model_list = { dep("g", h.RETRIEVAL, { api_key = "wrong" }) } })
  local res, err = r:rerank({ model = "g", query = QUERY, documents = h.DOCS })
  eq(res, nil, "failed")
  eq(err.type, "auth", "auth")
  eq(#err.attempts, 1, "no retry")
  eq(#t.slept, 0, "no wait")
end)

test("a_bad_request_is_not_the_deployments_failure", function()
  local r = make({ model_list = { dep("g", h.RETRIEVAL, nil, "only") },
    router_settings = { allowed_fails = 1, num_retries = 0 } })
  for _ = 1, 4 do -- the provider refuses the request itself, four times
    local res, err = r:rerank({ model = "g", query = unique("!status=422"), documents = h.DOCS })
    eq(res, nil, "refused")
    eq(err.type, "bad_request", "the client's fault")
  end
  local res = assert(r:rerank({ model = "g", query = QUERY, documents = h.DOCS }))
  eq(res.meta.deployment, "only", "not cooling down")
end)

test("cooldown_skips_failing_deployment_and_it_returns", function()
  local r, t = make({ model_list = {
    dep("g", "nvidia_nim/nvidia/no-such-model", nil, "broken"),
    dep("g", h.RETRIEVAL, nil, "healthy"),
  } }, { random = function() return 0 end }) -- always the first ready deployment
  local res = assert(r:rerank({ model = "g", query = QUERY, documents = h.DOCS }))
  eq(res.meta.attempts[1].deployment, "broken", "first choice")
  eq(res.meta.attempts[1].error, "not_found", "its 404")
  eq(res.meta.deployment, "healthy", "a 404 moves to the sibling")
  res = assert(r:rerank({ model = "g", query = QUERY, documents = h.DOCS }))
  eq(#res.meta.attempts, 1, "broken one cooling down: not tried")
  eq(res.meta.deployment, "healthy", "answered")
  t.now = t.now + 5.01
  res = assert(r:rerank({ model = "g", query = QUERY, documents = h.DOCS }))
  eq(res.meta.attempts[1].deployment, "broken", "back after the cooldown")
end)

test("deployment_errors_move_to_a_sibling_request_errors_do_not", function()
  local r = make({ model_list = {
    dep("g", h.RETRIEVAL, { api_key = "wrong" }, "bad-key"),
    dep("g", h.RETRIEVAL, nil, "good-key"),
  } }, { random = function() return 0 end })
  local res, err = r:rerank({ model = "g", query = QUERY, documents = h.DOCS })
  ok(res, tostring(err))
  eq(res.meta.attempts[1].error, "auth", "401 on the first")
  eq(res.meta.deployment, "good-key", "then the sibling")
  r = make({ model_list = { dep("g", h.RETRIEVAL, nil, "a"), dep("g", h.RETRIEVAL, nil, "b") } },
    { random = function() return 0 end })
  res, err = r:rerank({ model = "g", query = unique("!status=422"), documents = h.DOCS })
  eq(res, nil, "a bad request is bad everywhere")
  eq(err.type, "bad_request", "type")
  eq(#err.attempts, 1, "not repeated on the sibling")
end)

test("allowed_fails_within_a_minute_then_cooldown", function()
  local r, t = make({ model_list = { dep("g", h.RETRIEVAL, nil, "d") },
    router_settings = { allowed_fails = 2, num_retries = 0 } })
  local q = unique("!status=500")
  for i = 1, 3 do
    local _, err = r:rerank({ model = "g", query = q, documents = h.DOCS })
    eq(err.type, "provider", "failure " .. i)
  end
  local _, err = r:rerank({ model = "g", query = q, documents = h.DOCS })
  eq(err.type, "rate_limit", "3rd failure > allowed_fails 2: cooling down")
  t.now = t.now + 6
  _, err = r:rerank({ model = "g", query = q, documents = h.DOCS })
  eq(err.type, "provider", "tried again after the cooldown")
end)

test("old_failures_leave_the_window", function()
  local r, t = make({ model_list = { dep("g", h.RETRIEVAL, nil, "d") },
    router_settings = { allowed_fails = 1, num_retries = 0 } })
  local q = unique("!status=500")
  r:rerank({ model = "g", query = q, documents = h.DOCS })
  t.now = t.now + 61
  local _, err = r:rerank({ model = "g", query = q, documents = h.DOCS })
  eq(err.type, "provider", "one failure in the last minute: not cooling")
end)

test("fallback_to_another_group_after_retries", function()
  local r = make({ model_list = { dep("primary", h.RETRIEVAL), dep("offline", "local/bm25") },
    router_settings = { fallbacks = { { primary = { "offline" } } } } })
  local res = assert(r:rerank({ model = "primary", query = unique("!status=503"),
    documents = h.DOCS }))
  eq(res.meta.fallback, "offline", "fallback used")
  eq(res.meta.model_group, "offline", "answered by")
  eq(#res.meta.attempts, 4, "3 primary attempts + 1 fallback")
  eq(res.meta.provider, "local", "offline answer")
end)

test("per_request_and_default_fallbacks", function()
  local r = make({ model_list = { dep("primary", h.RETRIEVAL, { api_key = "bad" }),
    dep("b", "local/bm25"), dep("c", "local/bm25") },
    router_settings = { default_fallbacks = { "c" } } })
  eq(r:rerank({ model = "primary", query = QUERY, documents = h.DOCS, fallbacks = { "b" } })
    .meta.fallback, "b", "per request")
  eq(r:rerank({ model = "primary", query = QUERY, documents = h.DOCS }).meta.fallback, "c",
    "default")
  eq(r:rerank({ model = "nvidia_nim/nvidia/no-such", query = QUERY, documents = h.DOCS,
    api_key = h.key, api_base = h.url, fallbacks = { "local/bm25" } }).meta.fallback, "local/bm25",
    "a provider model string falls back too")
end)

test("at_most_five_fallbacks_in_order", function()
  local list, chain = {}, {}
  for i = 1, 7 do
    list[i] = dep("f" .. i, h.RETRIEVAL, { api_key = "bad" })
    chain[i] = "f" .. i
  end
  list[8] = dep("primary", h.RETRIEVAL, { api_key = "bad" })
  local r = make({ model_list = list, router_settings = { fallbacks = { { primary = chain } } } })
  local _, err = r:rerank({ model = "primary", query = QUERY, documents = h.DOCS })
  eq(#err.attempts, 6, "primary + 5 fallbacks")
  for i = 1, 5 do eq(err.attempts[i + 1].model_group, "f" .. i, "order") end
end)

test("all_deployments_down_is_a_rate_limit_error", function()
  local r = make({ model_list = { dep("g", h.RETRIEVAL, { api_key = "bad1" }),
    dep("g", h.RETRIEVAL, { api_key = "bad2" }) } })
  r:rerank({ model = "g", query = QUERY, documents = h.DOCS })
  r:rerank({ model = "g", query = QUERY, documents = h.DOCS })
  local res, err = r:rerank({ model = "g", query = QUERY, documents = h.DOCS, num_retries = 0 })
  eq(res, nil, "no result")
  eq(err.type, "rate_limit", "type")
  eq(err.status, 429, "status")
  spec.match(err.message, "no deployments available", "message")
  spec.match(tostring(err), "rate_limit", "readable")
  ok(err.retry_after > 0 and err.retry_after <= 5, "says when one is ready")
end)

test("waits_for_a_cooldown_when_retries_remain", function()
  local r, t = make({ model_list = { dep("g", h.RETRIEVAL, nil, "d") } })
  local res = assert(r:rerank({ model = "g", query = unique("!status=429 !times=1"),
    documents = h.DOCS }))
  eq(res.meta.attempts[2].error, "rate_limit", "cooling: no deployment")
  ok(t.now - 1000 >= 5, "waited out the cooldown")
end)

test("per_deployment_params_and_call_defaults", function()
  local r = make({ model_list = { dep("g", h.RANKING, { api_base = h.open_url, api_key = nil,
    truncate = "END", timeout = 3 }) } })
  assert(r:rerank({ model = "g", query = QUERY, documents = h.DOCS }))
  local body = h.decode(h.last(h.open_url).body)
  eq(body.truncate, "END", "deployment default sent")
  assert(r:rerank({ model = "g", query = QUERY, documents = h.DOCS, truncate = "NONE" }))
  eq(h.decode(h.last(h.open_url).body).truncate, "NONE", "request wins over deployment default")
end)

test("metadata_never_holds_keys", function()
  local r = make({ model_list = { dep("g", h.RETRIEVAL), dep("x", h.RETRIEVAL,
    { api_key = "sekrit-123" }) },
    router_settings = { fallbacks = { { x = { "g" } } } } })
  local res = assert(r:rerank({ model = "x", query = QUERY, documents = h.DOCS }))
  local s = json.encode(res)
  spec.no_match(s, h.key, "no key")
  spec.no_match(s, "sekrit-123", "no failed key")
end)

test("deprecated_model_warning_in_meta", function()
  local r = make({ model_list = { dep("old",
    "nvidia_nim/ranking/nvidia/llama-3.2-nv-rerankqa-1b-v2") } })
  local res = assert(r:rerank({ model = "old", query = QUERY, documents = h.DOCS }))
  spec.match(res.meta.warnings[1], "deprecated.*llama%-nemotron%-rerank%-1b%-v2", "warning")
end)

test("plain_call_without_config_is_the_native_call", function()
  local res = assert(nim.rerank(h.args()))
  eq(res.meta.attempts, nil, "no router metadata")
  local n = assert(nim.native.rerank(h.args()))
  eq(res.results[1].index, n.results[1].index, "same answer")
  local _, err = nim.rerank(h.args({ query = "!status=503 " .. QUERY }))
  eq(err.type, "provider", "errors pass through untouched")
  eq(err.attempts, nil, "no attempts recorded")
end)

test("global_router_from_load_config", function()
  nim.load_config({ model_list = { dep("cfg-group", h.RETRIEVAL) } })
  local res = assert(nim.rerank({ model = "cfg-group", query = QUERY, documents = h.DOCS }))
  nim.load_config({})
  eq(res.meta.model_group, "cfg-group", "nim.rerank routes through the loaded config")
  eq(#nim.router:group_names(), 0, "reset")
end)

-- A routed call's timeout is its total time: attempts, waits and fallbacks all fit in it.
test("the_calls_timeout_bounds_retries_waits_and_fallbacks", function()
  local seen = {}
  local t
  local r
  r, t = make({ model_list = { dep("g", h.RETRIEVAL), dep("fb", h.RETRIEVAL) },
    router_settings = { num_retries = 5, fallbacks = { { g = { "fb" } } } } }, {
    call = function(a)
      seen[#seen + 1] = a.timeout
      t.now = t.now + math.min(0.2, a.timeout) -- an attempt takes 0.2 s, or its timeout
      return nil, nim.native.error({ type = "provider", status = 503, message = "busy",
        retry_after = 0.3 })
    end })
  local start = t.now
  local res, err = r:rerank({ model = "g", query = QUERY, documents = h.DOCS, timeout = 1 })
  eq(res, nil, "failed")
  eq(err.type, "provider", "with the last error")
  ok(t.now - start <= 1 + 1e-9, "within the call's second: " .. (t.now - start))
  for i, s in ipairs(seen) do ok(s <= 1 + 1e-9, "attempt " .. i .. " got at most what was left") end
  ok(seen[#seen] < seen[1], "later attempts get less")
  -- Retry-After beyond what is left is not waited for
  seen = {}
  r, t = make({ model_list = { dep("g", h.RETRIEVAL) }, router_settings = { num_retries = 3 } },
    { call = function()
      return nil, nim.native.error({ type = "rate_limit", status = 429, message = "slow down",
        retry_after = 3600 })
    end })
  start = t.now
  r:rerank({ model = "g", query = QUERY, documents = h.DOCS, timeout = 10 })
  ok(t.now - start < 10, "an hour's Retry-After is not waited in a 10 s call")
  -- the default total comes from nim.settings.timeout, checked like any timeout
  local before = nim.settings.timeout
  nim.settings.timeout = 0 / 0
  local okc, e2 = pcall(r.rerank, r, { model = "g", query = QUERY, documents = h.DOCS })
  nim.settings.timeout = before
  eq(okc, false, "a NaN default timeout is misuse")
  spec.match(tostring(e2), "nim.settings: timeout:", "named")
end)

test("bad_retry_counts_and_timeouts_are_misuse", function()
  local r = make({ model_list = { dep("g", "local/bm25") } })
  for _, v in ipairs({ math.huge, -1, 0 / 0, "x", 1.5, 101 }) do
    spec.raises(function() r:rerank({ model = "g", query = QUERY, documents = h.DOCS,
      num_retries = v }) end, "num_retries")
  end
  for _, v in ipairs({ math.huge, -1, 0, 0 / 0, "x", 1e9 }) do
    spec.raises(function() r:rerank({ model = "g", query = QUERY, documents = h.DOCS,
      timeout = v }) end, "timeout")
  end
end)

test("an_unset_variable_moves_to_a_sibling_deployment", function()
  local r = make({ model_list = {
    { model_name = "g", litellm_params = { model = h.RETRIEVAL, api_base = h.url,
      api_key = "os.environ/NIMRANK_SURELY_UNSET_5678" }, model_info = { id = "keyless" } },
    { model_name = "g", litellm_params = { model = "local/bm25" }, model_info = { id = "ok" } } },
    router_settings = { num_retries = 1 } })
  for _ = 1, 4 do -- whichever is picked first
    local res, err = r:rerank({ model = "g", query = QUERY, documents = h.DOCS })
    ok(res, "served by the sibling: " .. tostring(err))
    eq(res.meta.deployment, "ok", "the sibling")
  end
  -- and a check never mistakes the group's name for a model
  nim.load_config({ model_list = { { model_name = "team reranker", litellm_params = {
    model = "os.environ/NIMRANK_SURELY_UNSET_5678" } } } })
  local valid, bad = nim.check({ model = "team reranker", query = "q", documents = { "d" } })
  nim.load_config({})
  eq(valid, true, "an unset variable is no misuse: " .. tostring(bad and bad.message))
end)

-- The deadline passing between "is there time left?" and the attempt's timeout must end the
-- call with the deadline's error, never raise misuse about the caller's (valid) timeout. A
-- clock that jumps past the deadline after k readings puts the jump at every point of an
-- attempt in turn; the real call (local/bm25) checks the timeout it is given.
test("a_deadline_passing_mid_attempt_ends_the_call_never_raises_misuse", function()
  local cfg = config.load({ model_list = { { model_name = "g",
    litellm_params = { model = "local/bm25" } } } })
  for k = 1, 12 do
    local readings, now = 0, 1000
    local r = router.new(cfg, { random = seeded(1), sleep = function() end,
      clock = function()
        readings = readings + 1
        if readings > k then now = 1010 end -- past the 1 s deadline, for good
        return now
      end })
    local okc, res, err = pcall(r.rerank, r, { model = "g", query = "gpu",
      documents = { "gpu" }, timeout = 1, num_retries = 1 })
    ok(okc, ("jump after %d readings: no raise (%s)"):format(k, tostring(res)))
    ok(res or err.type == "timeout", ("jump after %d readings: %s"):format(k,
      res and "answered" or tostring(err)))
  end
end)

test("fallbacks_must_be_model_names_before_anything_is_sent", function()
  for _, fbs in ipairs({ { 42 }, { "offline", {} }, { true } }) do
    local valid, bad = nim.check({ model = "local/bm25", query = "q", documents = { "d" },
      fallbacks = fbs })
    eq(valid, nil, "nim.check refuses it")
    spec.match(bad.field, "^fallbacks%[%d%]$", "names the entry")
    spec.match(bad.message, "expected a model name", "says what is wrong")
    local err = spec.raises(function()
      nim.rerank({ model = h.RETRIEVAL, api_base = "http://127.0.0.1:1", query = "q",
        documents = { "d" }, fallbacks = fbs })
    end, "nim.rerank: fallbacks[")
    spec.match(err, "^[^\n]*router_spec%.lua:%d+: ", "at the caller's line")
  end
end)

-- router_settings.timeout is a default: a caller's request_timeout beats it on the plain path
-- (a provider model, no policy) as on the routed one (retries, fallbacks, groups).
test("request_timeout_beats_router_settings_timeout_on_both_paths", function()
  local cfg = { model_list = { dep("g", "local/bm25") }, router_settings = { timeout = 5 } }
  local got = {}
  local r = make(cfg, { call = function(a)
    got[#got + 1] = nim.native.call_timeout(a)
    return nil, nim.native.error({ type = "bad_request", status = 400, message = "no" })
  end })
  local base = { model = h.RETRIEVAL, query = QUERY, documents = h.DOCS, request_timeout = 0.3 }
  r:rerank(base) -- plain
  local routed = {}
  for k, v in pairs(base) do routed[k] = v end
  routed.num_retries = 0
  r:rerank(routed)
  eq(#got, 2, "one call each")
  spec.near(got[1], 0.3, 1e-9, "plain path: the caller's request_timeout")
  spec.near(got[2], 0.3, 1e-9, "routed path: the caller's request_timeout")
  -- and for real: an answer 2 s late is a timeout after 0.3 s, on both paths
  nim.load_config(cfg)
  for _, extra in ipairs({ {}, { num_retries = 0 } }) do
    local a = { model = h.RETRIEVAL, api_base = h.open_url, documents = { "gpu" },
      query = unique("!delay=2000"), request_timeout = 0.3 }
    for k, v in pairs(extra) do a[k] = v end
    local res, err = nim.rerank(a)
    local which = next(extra) and "routed" or "plain"
    eq(res, nil, which .. ": no late answer")
    eq(err.type, "timeout", which .. ": a timeout")
    spec.match(tostring(err), "0%.3 s", which .. ": after the caller's 0.3 s")
  end
  nim.load_config({})
end)

-- A deprecated model read from os.environ/ still gets its note, looked up by the model called
-- and naming it os.environ/NAME, never by its value.
test("a_deprecated_model_from_the_environment_is_noted_by_its_variable", function()
  local code = ([[
    local json = require "nim.json"
    nim.load_config({ model_list = { { model_name = "old", litellm_params = {
      model = "os.environ/MY_MODEL", api_base = %q, api_key = "os.environ/FAKE_KEY" } } } })
    local res, err = nim.rerank({ model = "old", query = "gpu", documents = { "gpu", "cpu" } })
    print(res and json.encode(res.meta) or tostring(err))
  ]]):format(h.url)
  local out, rc = h.sh(("MY_MODEL=%s %s -e %s 2>&1"):format(h.q(h.RANKING), h.nimrank, h.q(code)))
  eq(rc, 0, out)
  local meta = h.decode(out)
  eq(meta.model, "os.environ/MY_MODEL", "the model shown as its variable")
  ok(meta.warnings and meta.warnings[1], "a deprecation note: " .. out)
  spec.match(meta.warnings[1], "^os%.environ/MY_MODEL is deprecated", "naming the variable")
  spec.match(meta.warnings[1], "llama%-nemotron%-rerank%-1b%-v2 instead", "and the replacement")
  spec.no_match(out, "rerankqa", "never the value")
end)

-- ---- a call-level key belongs to the provider of the model the call names ----------------

local function fake_get(base, path)
  return json.decode((h.sh("curl -s " .. h.q(base .. path))))
end
local function cohere_posts(base)
  return fake_get(base, "/_fake/stats").requests.cohere or 0
end
local COHERE = "cohere/rerank-v3.5"
local function no_cohere_env()
  for _, v in ipairs({ "COHERE_API_KEY", "CO_API_KEY", "COHERE_API_BASE" }) do
    assert(not os.getenv(v), v .. " is set in the test environment: this test needs it unset")
  end
end

test("a_fallback_of_another_provider_never_gets_the_calls_key_base_or_headers", function()
  no_cohere_env()
  local r = make({ model_list = {
    -- Cohere deployments on the keyed fake without a key of their own, and on the open fake
    -- with one
    { model_name = "cohere-env", litellm_params = { model = COHERE,
      api_base = h.url .. "/cohere" } },
    { model_name = "cohere-own", litellm_params = { model = COHERE, api_key = "cohere-own-key",
      api_base = h.open_url .. "/cohere" } },
  } })
  local function nim_call(over) -- a NIM model that fails (404), with the NIM key and base
    local a = { model = "nvidia_nim/nvidia/no-such", api_key = h.key, api_base = h.url,
      query = QUERY, documents = h.DOCS, num_retries = 0 }
    for k, v in pairs(over) do a[k] = v end
    if a.api_key == false then a.api_key = nil end
    return r:rerank(a)
  end
  -- the NIM key as api_key, then as a header of the call's
  for _, creds in ipairs({ { api_key = h.key },
    { headers = { Authorization = "Bearer " .. h.key } } }) do
    local before = cohere_posts(h.url)
    local res, err = nim_call({ api_key = creds.api_key or false, headers = creds.headers,
      fallbacks = { "cohere-env" } })
    eq(res, nil, "the Cohere fallback has no key")
    eq(err.attempts[1].error, "not_found", "the NIM model failed first")
    eq(err.attempts[2].model_group, "cohere-env", "then the fallback")
    eq(err.type, "auth", "an auth error")
    spec.match(err.message, "COHERE_API_KEY", "naming Cohere's variable")
    eq(cohere_posts(h.url), before, "nothing was sent to Cohere")
    spec.no_match(json.encode(err), h.key, "never the key")
  end
  -- the literal provider model as the fallback: no key, no base of NIM's either (it would
  -- otherwise go to api.cohere.com with the NIM key, or to the NIM base)
  local before = cohere_posts(h.url)
  local res, err = nim_call({ fallbacks = { COHERE } })
  eq(res, nil, "no answer")
  eq(err.attempts[2].model, COHERE, "the Cohere model tried")
  eq(err.type, "auth", "for want of its own key")
  spec.match(err.message, "COHERE_API_KEY", "naming its variable")
  eq(cohere_posts(h.url), before, "nothing sent")
  -- a Cohere group with a key of its own uses it, and gets none of the call's headers
  res, err = nim_call({ fallbacks = { "cohere-own" }, headers = { ["X-Nim-Tenant"] = "t1" } })
  ok(res, tostring(err))
  eq(res.meta.fallback, "cohere-own", "answered by the Cohere group")
  local last = fake_get(h.open_url, "/_fake/last/cohere")
  eq(last.headers.authorization, "Bearer cohere-own-key", "the group's own key")
  eq(last.headers["x-nim-tenant"], nil, "not the call's headers")
  spec.no_match(json.encode(last), h.key, "never the NIM key")
end)

test("a_fallback_of_the_same_provider_still_gets_the_calls_key_and_base", function()
  local r = make({ model_list = {
    { model_name = "nim-keyless", litellm_params = { model = h.RETRIEVAL } } } })
  for _, fb in ipairs({ h.RETRIEVAL, "nim-keyless" }) do
    local res, err = r:rerank({ model = "nvidia_nim/nvidia/no-such", api_key = h.key,
      api_base = h.url, headers = { ["X-Nim-Tenant"] = "t2" }, query = QUERY,
      documents = h.DOCS, num_retries = 0, fallbacks = { fb } })
    ok(res, fb .. ": " .. tostring(err))
    eq(res.meta.fallback, fb, "answered by the fallback")
    local last = h.last(h.url)
    eq(last.headers.authorization, "Bearer " .. h.key, fb .. ": the call's key")
    eq(last.headers["x-nim-tenant"], "t2", fb .. ": the call's headers")
  end
  -- a call naming a Cohere model: its key is not sent to a NIM fallback (on the keyed fake,
  -- without a key of its own: it is refused there)
  r = make({ model_list = {
    { model_name = "cohere-down", litellm_params = { model = COHERE,
      api_base = "http://127.0.0.1:1" } },
    { model_name = "nim-no-key", litellm_params = { model = h.RETRIEVAL, api_base = h.url } } } })
  local nim_before = fake_get(h.url, "/_fake/stats").requests.nim or 0
  local res, err = r:rerank({ model = "cohere-down", api_key = h.key, query = QUERY,
    documents = h.DOCS, num_retries = 0, fallbacks = { "nim-no-key" } })
  eq(res, nil, "the NIM fallback went without the Cohere key")
  eq(err.attempts[1].error, "connection", "Cohere was down")
  eq(err.attempts[2].model_group, "nim-no-key", "then NIM")
  eq(err.type, "auth", "refused: " .. tostring(err))
  eq(fake_get(h.url, "/_fake/stats").requests.nim, nim_before + 1, "NIM was asked once")
  ok(fake_get(h.url, "/_fake/last/nim").headers.authorization ~= "Bearer " .. h.key,
    "without the key")
end)

test("a_group_whose_deployments_of_two_providers_would_take_the_key_is_misuse", function()
  local r, calls = nil, 0
  r = make({ model_list = {
    { model_name = "mixed", litellm_params = { model = h.RETRIEVAL, api_base = h.url } },
    { model_name = "mixed", litellm_params = { model = COHERE, api_base = h.url .. "/cohere" } },
    { model_name = "mixed-own", litellm_params = { model = h.RETRIEVAL, api_base = h.url } },
    { model_name = "mixed-own", litellm_params = { model = COHERE, api_key = "cohere-own-key",
      api_base = h.open_url .. "/cohere" } },
    { model_name = "mixed-own", litellm_params = { model = "local/bm25" } },
  } }, { call = function(a)
    calls = calls + 1
    return require("nim.batch").call(a)
  end })
  local msg = spec.raises(function()
    r:rerank({ model = "mixed", api_key = h.key, query = QUERY, documents = h.DOCS })
  end, "nim.rerank: api_key: ", "different providers (cohere, nvidia_nim)")
  spec.match(msg, "own in the config", "says what to do")
  spec.no_match(msg, h.key, "never the key")
  eq(calls, 0, "nothing sent")
  nim.load_config({ model_list = {
    { model_name = "mixed", litellm_params = { model = h.RETRIEVAL } },
    { model_name = "mixed", litellm_params = { model = COHERE } } } })
  local valid, bad = nim.check({ model = "mixed", headers = { ["X-A"] = "a" }, query = "q",
    documents = { "d" } })
  nim.load_config({})
  eq(valid, nil, "nim.check returns it")
  eq(bad.field, "headers", "naming the field given")
  -- the Cohere deployment brings its own key and base: the call's go to the NIM one only
  for _ = 1, 6 do -- whichever deployment is picked
    local res, err = r:rerank({ model = "mixed-own", api_key = h.key, query = QUERY,
      documents = h.DOCS })
    ok(res, tostring(err))
    if res.meta.provider == "cohere" then
      eq(fake_get(h.open_url, "/_fake/last/cohere").headers.authorization,
        "Bearer cohere-own-key", "its own key")
    end
  end
end)

-- ---- routing strategies and limits (nim.state, lua/nim/strategies) --------------------------
-- A provider call of the test's own: answers at once (or after advancing the fake clock by
-- latency[deployment's api_base]), with billed tokens; counts calls per deployment.
local function fake_call(t, o)
  o = o or {}
  local calls = {}
  return function(a)
    local who = a.api_base
    calls[who] = (calls[who] or 0) + 1
    if o.latency and o.latency[who] then t.now = t.now + o.latency[who] end
    if o.fail and o.fail[who] then
      return nil, nim.native.error({ type = "provider", status = 503, message = "busy" })
    end
    if o.during then o.during(a) end
    return { id = "x", results = nim.array{}, meta = { billed_units = {
      total_tokens = o.tokens or 10 } } }
  end, calls
end

-- Deployments on made-up bases named after their ids (the fake call never connects).
local function on(name, id, params)
  local p = { model = h.RETRIEVAL, api_base = "http://" .. id, api_key = "k" }
  for k, v in pairs(params or {}) do p[k] = v end
  return { model_name = name, litellm_params = p, model_info = { id = id } }
end

local function sequence(r, n, model)
  local seq = {}
  for i = 1, n do
    local res, err = r:rerank({ model = model or "g", query = "q", documents = { "d" } })
    seq[i] = res and res.meta.deployment or ("!" .. err.type)
  end
  return table.concat(seq, " ")
end

test("simple_shuffle_named_is_the_default", function()
  local list = { dep("g", "local/bm25", { weight = 1 }, "a"),
    dep("g", "local/bm25", { weight = 2 }, "b"), dep("g", "local/bm25", { weight = 3 }, "c") }
  local r1 = make({ model_list = list }, { random = seeded(11) })
  local r2 = make({ model_list = list, router_settings = { routing_strategy = "simple-shuffle" } },
    { random = seeded(11) })
  local s1, s2 = sequence(r1, 30), sequence(r2, 30)
  eq(s2, s1, "the same choices from the same draws")
  eq(r1.strategy.name, "simple-shuffle", "the default")
end)

test("least_busy_picks_the_deployment_with_fewest_in_flight", function()
  local t
  local r
  local inner = {}
  local call
  call = function(a)
    -- while the first call is in flight, two more start (nested: in flight together)
    if #inner < 2 then
      local i = #inner + 1
      inner[i] = "pending"
      local res = r:rerank({ model = "g", query = "q", documents = { "d" } })
      inner[i] = res.meta.deployment
    end
    return { id = "x", results = nim.array{}, meta = { api_base = a.api_base } }
  end
  r, t = make({ model_list = { on("g", "a"), on("g", "b"), on("g", "c") },
    router_settings = { routing_strategy = "least-busy" } },
    { random = function() return 0 end, call = call })
  local res = assert(r:rerank({ model = "g", query = "q", documents = { "d" } }))
  eq(res.meta.deployment, "a", "first: all idle, the tie goes to the first draw")
  -- inner[1] started with a busy: b (fewest, first of the tie b, c); inner[2] with a and b
  -- busy: c
  eq(table.concat(inner, " "), "b c", "each nested call avoided the busy ones")
  for _, id in ipairs({ "a", "b", "c" }) do eq(r.state[id].inflight, 0, id .. " back to idle") end
  ok(t, "clock")
end)

test("least_busy_counts_an_attempt_that_failed_or_was_cancelled_as_ended", function()
  nim.load_config({ model_list = { dep("g", h.RETRIEVAL, { api_base = h.open_url }, "slow") },
    router_settings = { routing_strategy = "least-busy", num_retries = 0 } })
  local req = nim.rerank_async({ model = "g", query = unique("!delay=3000"), documents = h.DOCS })
  for _ = 1, 20 do nim.poll() end
  eq(nim.router.state.slow.inflight, 1, "in flight")
  req:cancel()
  eq(nim.router.state.slow.inflight, 0, "a cancelled task ends its attempt")
  local _, err = nim.rerank({ model = "g", query = unique("!status=500"), documents = h.DOCS })
  eq(err.type, "provider", "failed")
  eq(nim.router.state.slow.inflight, 0, "a failed attempt ends too")
  nim.load_config({})
end)

test("usage_based_routing_picks_the_most_headroom_and_enforces_limits", function()
  local r, t = make({ model_list = { on("g", "a", { rpm = 4 }), on("g", "b", { rpm = 2 }),
    dep("offline", "local/bm25") },
    router_settings = { routing_strategy = "usage-based-routing-v2", num_retries = 0,
      fallbacks = { { g = { "offline" } } } } }, { random = seeded(5) })
  r.call = fake_call(t)
  -- headroom: a 4/4, b 2/2 (a tie: fewest tokens, then chance) ... the larger share left wins
  local seq = sequence(r, 6)
  local count = { a = 0, b = 0 }
  for id in seq:gmatch("%a") do count[id] = count[id] + 1 end
  eq(count.a, 4, "a took its rpm: " .. seq)
  eq(count.b, 2, "b took its rpm: " .. seq)
  eq(seq:sub(-1), "a", "the last slot left was a's (b was at 0 headroom): " .. seq)
  local res = assert(r:rerank({ model = "g", query = "q", documents = { "d" } }))
  eq(res.meta.fallback, "offline", "both at their limit: the fallback answered")
  eq(res.meta.attempts[1].error, "rate_limit", "the group's turn was a rate_limit")
  spec.match(res.meta.attempts[1].message, "at their rpm/tpm limit", "saying why")
  t.now = t.now + 60
  spec.match(sequence(r, 2), "^%a %a$", "a new window: admitted again")
end)

test("usage_based_routing_prefers_the_fewest_tokens_without_limits", function()
  local r, t = make({ model_list = { on("g", "a"), on("g", "b") },
    router_settings = { routing_strategy = "usage-based-routing" } },
    { random = function() return 0 end })
  local tokens = { ["http://a"] = 100, ["http://b"] = 30 }
  r.call = function(a)
    return { id = "x", results = nim.array{}, meta = { billed_units = {
      total_tokens = tokens[a.api_base] } } }
  end
  -- a (tie, first), then b (0 < 100), b (30), b (60), b (90), a (100 vs 120), ...
  eq(sequence(r, 6), "a b b b b a", "tokens decide")
  eq(r.state.a.tokens, 200, "a's tokens counted")
  eq(r.state.b.requests, 4, "b's requests counted")
  ok(t, "clock")
end)

test("latency_based_routing_prefers_the_fastest_and_explores", function()
  local cfg = { model_list = { on("g", "slow"), on("g", "fast") },
    router_settings = { routing_strategy = "latency-based-routing",
      routing_strategy_args = { exploration = 0 } } }
  local r, t = make(cfg, { random = function() return 0 end })
  r.call = fake_call(t, { latency = { ["http://slow"] = 0.5, ["http://fast"] = 0.1 } })
  -- unmeasured deployments count as 0 s: each is measured first, then the fastest wins
  eq(sequence(r, 6), "slow fast fast fast fast fast", "measured, then the fastest")
  -- exploration: a share of choices at random (seeded: the same every run)
  cfg.router_settings.routing_strategy_args = { exploration = 0.5 }
  r, t = make(cfg, { random = seeded(3) })
  local call, calls = fake_call(t, { latency = { ["http://slow"] = 0.5, ["http://fast"] = 0.1 } })
  r.call = call
  sequence(r, 200)
  ok(calls["http://slow"] > 20 and calls["http://slow"] < 90,
    "slow explored about a quarter of the time: " .. calls["http://slow"])
  -- a buffer shares the traffic among those close to the fastest
  cfg.router_settings.routing_strategy_args = { exploration = 0, lowest_latency_buffer = 5 }
  r, t = make(cfg, { random = seeded(3) })
  call, calls = fake_call(t, { latency = { ["http://slow"] = 0.5, ["http://fast"] = 0.1 } })
  r.call = call
  sequence(r, 200)
  ok(calls["http://slow"] > 60, "within 6x the fastest: shared: " .. calls["http://slow"])
  -- old samples leave after ttl; a failure counts as a slow sample
  cfg.router_settings.routing_strategy_args = { exploration = 0, ttl = 30 }
  r, t = make(cfg, { random = function() return 0 end })
  r.call = fake_call(t, { latency = { ["http://slow"] = 0.5, ["http://fast"] = 0.1 },
    fail = { ["http://fast"] = true } })
  sequence(r, 2)
  ok(r.strategy.latency(r.state.fast, t.now) >= 10, "a failure counts as at least 10 s")
  t.now = t.now + 31
  eq(r.strategy.latency(r.state.fast, t.now), nil, "samples older than ttl are gone")
end)

test("limits_are_enforced_with_enable_pre_call_checks_and_name_the_wait", function()
  local r, t = make({ model_list = { on("g", "a", { rpm = 2, tpm = 1000 }) },
    router_settings = { enable_pre_call_checks = true, usage_window = 10 } },
    { random = seeded(1) })
  r.call = fake_call(t, { tokens = 5 })
  eq(sequence(r, 2), "a a", "within rpm")
  t.now = t.now + 4
  local res, err = r:rerank({ model = "g", query = "q", documents = { "d" } })
  eq(res, nil, "third request in the window refused")
  eq(err.type, "rate_limit", "rate_limit")
  eq(err.status, 429, "429")
  spec.near(err.retry_after, 6, 1e-9, "the window frees in 6 s")
  eq(#t.slept, 0, "nothing waited for the window")
  eq(r.state.a.tokens, 10, "tokens counted from billed_units")
  t.now = t.now + 6
  eq(sequence(r, 1), "a", "admitted again in a new window")
  -- tpm: a window with 1000 tokens is full
  r, t = make({ model_list = { on("g", "a", { tpm = 1000 }) },
    router_settings = { enable_pre_call_checks = true } }, { random = seeded(1) })
  r.call = fake_call(t, { tokens = 600 })
  eq(sequence(r, 3), "a a !rate_limit", "the second call passed the tpm")
  -- without enable_pre_call_checks rpm is a weight only (LiteLLM's simple-shuffle)
  r, t = make({ model_list = { on("g", "a", { rpm = 1 }) } }, { random = seeded(1) })
  r.call = fake_call(t)
  eq(sequence(r, 3), "a a a", "no limit")
end)

test("a_strategy_a_config_script_registers_is_used_and_unknown_ones_are_refused", function()
  local script = os.tmpname() .. ".lua"
  local f = assert(io.open(script, "w"))
  f:write([[
    local nim = ...
    nim.router.strategies["always-last"] = {
      pick = function(deployments) return deployments[#deployments] end }
  ]])
  f:close()
  nim.load_config({ model_list = { dep("g", "local/bm25", nil, "one"),
    dep("g", "local/bm25", nil, "two") },
    router_settings = { routing_strategy = "always-last" },
    nimrank_settings = { scripts = { script } } })
  for _ = 1, 5 do
    eq(nim.rerank({ model = "g", query = "q", documents = { "q" } }).meta.deployment, "two",
      "the script's strategy")
  end
  require("nim.router").strategies["always-last"] = nil
  local before = nim.router
  local err = spec.raises(function() -- a script that cannot be read
    nim.load_config({ model_list = { dep("g", "local/bm25") },
      router_settings = { routing_strategy = "fastest-please" },
      nimrank_settings = { scripts = { script:gsub("%.lua$", "") .. "-none.lua" } } })
  end)
  os.remove(script)
  spec.raises(function()
    config.load({ model_list = { dep("g", "local/bm25") },
      router_settings = { routing_strategy = "fastest-please" } })
  end, "router_settings.routing_strategy: unknown strategy \"fastest-please\"", "least-busy")
  ok(err, "a missing script fails the load")
  -- a script that does not register the strategy: refused once the scripts ran
  local empty = os.tmpname() .. ".lua"
  f = assert(io.open(empty, "w"))
  f:write("return true\n")
  f:close()
  spec.raises(function()
    nim.load_config({ model_list = { dep("g", "local/bm25") },
      router_settings = { routing_strategy = "fastest-please" },
      nimrank_settings = { scripts = { empty } } })
  end, "router_settings.routing_strategy: unknown strategy \"fastest-please\"")
  os.remove(empty)
  eq(nim.router, before, "a refused config leaves the router as it was")
  nim.load_config({})
end)

test("a_strategy_must_choose_among_the_deployments_it_is_given", function()
  local strategies = require("nim.router").strategies
  strategies["rogue"] = { pick = function() return { id = "elsewhere" } end }
  local r = make({ model_list = { dep("g", "local/bm25") },
    router_settings = { routing_strategy = "rogue" } })
  spec.raises(function() r:rerank({ model = "g", query = "q", documents = { "q" } }) end,
    "routing strategy \"rogue\" chose elsewhere")
  strategies["rogue"] = nil
end)
