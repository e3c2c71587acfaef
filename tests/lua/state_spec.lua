-- nim.state and nim.state_redis: the router's state, local or shared through Redis. Redis is
-- the fake of tests/lua/fake_redis.lua (it runs the store's real scripts); two routers over
-- one fake are two instances of the gateway. The fake clock moves only when a test moves it.
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local router = require "nim.router"
local config = require "nim.config"
local state = require "nim.state"
local state_redis = require "nim.state_redis"
local fake_redis = require "fake_redis"
local test, eq, ok = spec.test, spec.eq, spec.ok

local fake_time, seeded = h.fake_time, h.seeded

-- Deployments on made-up bases named after their ids; the call never connects.
local function on(name, id, params)
  local p = { model = h.RETRIEVAL, api_base = "http://" .. id, api_key = h.key }
  for k, v in pairs(params or {}) do p[k] = v end
  return { model_name = name, litellm_params = p, model_info = { id = id } }
end

-- calls[base] counts the calls; behave[base] = "429" | "500" makes that deployment fail.
local function provider(t)
  local p = { calls = {}, behave = {} }
  p.call = function(a)
    local who = a.api_base
    p.calls[who] = (p.calls[who] or 0) + 1
    local b = p.behave[who]
    if b == "429" then
      return nil, nim.native.error({ type = "rate_limit", status = 429, message = "slow down" })
    elseif b == "500" then
      return nil, nim.native.error({ type = "provider", status = 500, message = "broken" })
    end
    return { id = "x", results = nim.array{}, meta = { billed_units = { total_tokens = 7 } } }
  end
  return p
end

-- Two instances sharing one fake Redis: { a, b, t, redis, up (the provider) }.
local function pair(cfg, o)
  o = o or {}
  local t = fake_time()
  local redis = o.redis or fake_redis.new({ clock = t.clock })
  local up = provider(t)
  local loaded = config.load(cfg)
  local function one(seed)
    return router.new(loaded, { clock = t.clock, sleep = t.sleep, random = seeded(seed),
      call = up.call, redis = redis })
  end
  return { a = one(1), b = one(2), t = t, redis = redis, up = up }
end

local function rerank(r, model)
  return r:rerank({ model = model or "g", query = "q", documents = { "d" } })
end

-- Captures what nim.state logs while fn runs.
local function logged(fn)
  local lines = {}
  local before = nim.settings.logger
  nim.settings.logger = function(e) lines[#lines + 1] = e end
  local okr, err = pcall(fn, lines)
  nim.settings.logger = before
  if not okr then error(err, 0) end
  return lines
end

test("local_store_counts_usage_in_windows_and_failures_in_a_sliding_minute", function()
  local s = state.new_local({ usage_window = 10 })
  s:register("d")
  ok(s:admit("d", 100, 2, nil), "first")
  ok(s:admit("d", 101, 2, nil), "second")
  local admitted, wait = s:admit("d", 105, 2, nil)
  eq(admitted, false, "third refused")
  eq(wait, 5, "the window (opened at 100) frees at 110")
  s:record("d", 105, 40)
  eq(s.records.d.tokens, 40, "tokens")
  ok(s:admit("d", 110, 2, 50), "a new window")
  eq(s.records.d.tokens, 0, "tokens reset with it")
  eq(s:fail("d", 200, 1, 5), false, "one failure allowed")
  eq(s:fail("d", 261, 1, 5), false, "the first left the minute")
  eq(s:fail("d", 262, 1, 5), true, "two within a minute: cooling")
  eq(s.records.d.cooldown_until, 267, "for the cooldown time")
  eq(s:cooling(263), 1, "counted as cooling")
  eq(s:health().state, "local", "health")
end)

test("a_429_through_one_instance_cools_the_deployment_for_the_other", function()
  local p = pair({ model_list = { on("g", "d") }, router_settings = { num_retries = 0,
    cooldown_time = 30 } })
  p.up.behave["http://d"] = "429"
  local _, err = rerank(p.a)
  eq(err.status, 429, "instance a saw the 429")
  p.up.behave["http://d"] = nil
  local res
  res, err = rerank(p.b)
  eq(res, nil, "instance b does not call it")
  eq(err.type, "rate_limit", "no deployment available")
  spec.match(err.message, "cooling down", "cooling")
  ok(err.retry_after > 29 and err.retry_after <= 30, "for the cooldown's time left: "
    .. err.retry_after)
  eq(p.up.calls["http://d"], 1, "one upstream call in all")
  p.t.now = p.t.now + 30
  ok(rerank(p.b), "ready again after the cooldown, for b too")
end)

test("failures_count_across_instances_for_allowed_fails", function()
  local p = pair({ model_list = { on("g", "d") }, router_settings = { num_retries = 0,
    allowed_fails = 2 } })
  p.up.behave["http://d"] = "500"
  rerank(p.a)
  rerank(p.b)
  local _, err = rerank(p.a) -- the third failure in the minute, over both instances
  eq(err.type, "provider", "third failure")
  _, err = rerank(p.b)
  eq(err.type, "rate_limit", "b sees the cooldown the shared count caused")
  -- a failure count expires with its window
  p = pair({ model_list = { on("g", "d") }, router_settings = { num_retries = 0,
    allowed_fails = 1 } })
  p.up.behave["http://d"] = "500"
  rerank(p.a)
  p.t.now = p.t.now + 61
  rerank(p.b)
  _, err = rerank(p.a)
  eq(err.type, "provider", "the first failure left with its minute: not cooling yet")
end)

test("an_rpm_limit_admits_at_most_rpm_requests_per_window_across_instances", function()
  local p = pair({ model_list = { on("g", "d", { rpm = 10 }) },
    router_settings = { num_retries = 0, enable_pre_call_checks = true, usage_window = 5 } })
  local admitted, refused = 0, 0
  for i = 1, 30 do
    local res, err = rerank(i % 2 == 0 and p.a or p.b)
    if res then admitted = admitted + 1 else
      refused = refused + 1
      eq(err.type, "rate_limit", "refused as a rate limit")
      ok(err.retry_after > 0 and err.retry_after <= 5, "until the window frees")
    end
  end
  eq(admitted, 10, "10 across both")
  eq(refused, 20, "the rest refused")
  eq(p.up.calls["http://d"], 10, "10 upstream calls")
  p.t.now = p.t.now + 5
  ok(rerank(p.a), "a new window")
  eq(p.b.store:view({ "d" }, p.t.now).d.requests, 1, "b sees a's request of the new window")
end)

test("admission_is_atomic_a_lost_race_picks_again", function()
  local p = pair({ model_list = { on("g", "x", { rpm = 1 }), on("g", "y", { rpm = 1 }) },
    router_settings = { num_retries = 0, enable_pre_call_checks = true } })
  -- a views both free; before its admission runs, b takes x's only request of the window
  local script = p.redis.script
  local raced = false
  p.redis.script = function(self, src)
    local fn = script(self, src)
    if src ~= state_redis.SCRIPTS.admit then return fn end
    return function(keys, args)
      if not raced and keys[1]:find("cool:x:", 1, true) then
        raced = true
        eq(p.b.store:admit("x", p.t.now, 1, nil), true, "b took x's slot")
      end
      return fn(keys, args)
    end
  end
  p.a.random = function() return 0 end -- a would take x (the first)
  local res = assert(rerank(p.a))
  ok(raced, "the race happened")
  eq(res.meta.deployment, "y", "a lost x and went to y")
  eq(#res.meta.attempts, 1, "in one attempt")
  local _, err = rerank(p.b)
  eq(err.type, "rate_limit", "both full now")
end)

test("redis_keys_are_namespaced_expire_and_never_hold_a_key", function()
  local p = pair({ model_list = { on("g", "d one", { rpm = 5 }), on("g", "e", { tpm = 99 }) },
    router_settings = { num_retries = 0, enable_pre_call_checks = true, allowed_fails = 5 } })
  p.up.behave["http://e"] = "500"
  for _ = 1, 4 do rerank(p.a) end
  p.up.behave["http://d one"] = "429"
  p.up.behave["http://e"] = "429"
  for _ = 1, 2 do rerank(p.b) end
  local keys = p.redis:call("KEYS", "*")
  ok(#keys >= 4, "keys written: " .. table.concat(keys, " "))
  for _, k in ipairs(keys) do
    spec.match(k, "^nimrank:{router}:%a+:", "namespaced: " .. k)
    spec.no_match(k, h.key, "no API key in " .. k)
    spec.no_match(k, " ", "escaped id in " .. k)
    ok(p.redis:call("PTTL", k) > 0, "expires: " .. k)
  end
  -- the same deployment in another config (another position) is the same key; another model
  -- under the same id is not
  local k1 = state_redis.deployment_key("d", "g\0m\0b")
  eq(state_redis.deployment_key("d", "g\0m\0b"), k1, "stable")
  ok(state_redis.deployment_key("d", "g\0m2\0b") ~= k1, "another model, another key")
end)

test("redis_down_never_fails_a_request_logs_once_a_minute_and_recovers", function()
  local p = pair({ model_list = { on("g", "d", { rpm = 3 }), on("g", "e") },
    router_settings = { num_retries = 0, enable_pre_call_checks = true } })
  local lines = logged(function(lines)
    ok(rerank(p.a), "served with Redis")
    eq(p.a.store:health().state, "redis", "shared")
    p.redis:set_down(true)
    for i = 1, 20 do
      p.t.now = p.t.now + 0.25
      local res, err = rerank(i % 2 == 0 and p.a or p.b)
      ok(res or (err.type == "rate_limit" and err.message:find("rpm")),
        "served on local state: " .. tostring(err))
    end
    eq(p.a.store:health().state, "degraded", "a degraded")
    eq(p.b.store:health().state, "degraded", "b degraded")
    eq(#lines, 2, "one line per instance for the outage so far")
    eq(lines[1].event, "router_state_degraded", "the event")
    eq(lines[1].level, "warn", "a warning")
    spec.match(lines[1].message, "connection refused", "saying why")
    p.t.now = p.t.now + 61
    rerank(p.a)
    eq(#lines, 3, "a minute later: one more line")
    spec.match(lines[3].message, "still", "still down")
    p.redis:set_down(false)
    p.t.now = p.t.now + 1
    ok(rerank(p.a), "served")
    eq(p.a.store:health().state, "redis", "recovered")
    eq(lines[4].event, "router_state_recovered", "recovery logged")
  end)
  ok(#lines == 4, "no more lines: " .. #lines)
  ok(state_redis.degradations() >= 2, "degradations counted")
  -- sharing is back: a 429 through b cools the deployment for a
  p.t.now = p.t.now + 1
  lines = logged(function() ok(rerank(p.b), "b back on Redis") end)
  eq(#lines, 1, "b says so")
  eq(lines[1].event, "router_state_recovered", "b's recovery")
  p.up.behave["http://e"] = "429"
  p.up.behave["http://d"] = "429"
  rerank(p.b, "g")
  rerank(p.b, "g")
  p.up.behave["http://e"], p.up.behave["http://d"] = nil, nil
  local _, err = rerank(p.a)
  eq(err and err.type, "rate_limit", "a sees b's cooldowns again")
end)

test("a_redis_reply_of_the_wrong_shape_is_a_degradation_not_a_failure", function()
  local t = fake_time()
  local weird = { status = function() return { state = "connected" } end,
    script = function() return function() return "surprise" end end,
    call = function() return nil, { type = "timeout", message = "timed out" } end }
  local r = router.new(config.load({ model_list = { on("g", "d") },
    router_settings = { num_retries = 0 } }), { clock = t.clock, random = seeded(1),
    call = provider(t).call, redis = weird })
  local lines = logged(function()
    ok(rerank(r), "served")
    ok(rerank(r), "served again")
  end)
  eq(r.store:health().state, "degraded", "degraded")
  eq(#lines, 1, "logged once")
  spec.match(lines[1].message, "the view script answered string", "why")
end)

test("a_password_never_reaches_a_log_line", function()
  local t = fake_time()
  local secret = "pw-" .. h.key
  local leaky = { status = function() return { state = "down", error = "AUTH " .. secret } end,
    script = function() return function()
      return nil, { type = "connection", message = "cannot log in with " .. secret }
    end end }
  local store = state_redis.new({ url = "redis://:" .. secret .. "@127.0.0.1:1/0" },
    { clock = t.clock, client = leaky })
  store:register("d", "x")
  local lines = logged(function() store:view({ "d" }, t.now) end)
  eq(#lines, 1, "logged")
  spec.no_match(lines[1].message, secret, "no password")
  spec.match(lines[1].message, "%*%*%*", "masked")
  spec.no_match(store:health().error or "", secret, "nor in health")
end)

test("redis_settings_from_the_config_and_a_server_that_is_not_there", function()
  local cfg = config.load({ model_list = { { model_name = "g",
    litellm_params = { model = "local/bm25" } } },
    router_settings = { redis_host = "127.0.0.1", redis_port = "1", redis_password = "pw" } })
  local s = state.redis_settings(cfg.router)
  eq(s.host, "127.0.0.1", "host")
  eq(s.port, 1, "a port given as digits")
  eq(s.password, "pw", "password")
  eq(state.redis_settings({ redis_url = "redis://x:1/2", redis_host = "y" }).url,
    "redis://x:1/2", "redis_url wins")
  eq(state.redis_settings({}), nil, "none: local state")
  -- nothing listens on port 1 (or nim.redis is not built yet): served all the same
  local lines = logged(function()
    local r = router.new(cfg)
    local res, err = r:rerank({ model = "g", query = "gpu", documents = { "gpu", "cpu" } })
    ok(res, "served on local state: " .. tostring(err))
    eq(r.store:health().state, "degraded", "degraded")
  end)
  ok(#lines >= 1, "said so")
  spec.no_match(lines[1].message, "pw", "not the password")
end)

test("config_accepts_the_new_router_keys_and_names_wrong_ones", function()
  local base = { { model_name = "g", litellm_params = { model = "local/bm25", rpm = 10,
    tpm = 1000 } } }
  local cfg, warnings = config.load({ model_list = base, router_settings = {
    routing_strategy = "latency-based-routing",
    routing_strategy_args = { ttl = 10, lowest_latency_buffer = 0.5, exploration = 0.2,
      max_latency_list_size = 5, unknown_arg = 1 },
    enable_pre_call_checks = true, redis_url = "redis://:pw@cache:6380/1",
    redis_host = "cache", redis_port = 6379, redis_password = "pw", usage_window = 2 } })
  eq(cfg.router.routing_strategy_args.ttl, 10, "args kept")
  local all = table.concat(warnings, "\n")
  spec.match(all, "routing_strategy_args.unknown_arg: not an argument", "unknown arg warned")
  spec.match(all, "redis_url is set too and wins", "both given")
  for _, strategy in ipairs({ "simple-shuffle", "least-busy", "usage-based-routing",
    "usage-based-routing-v2", "latency-based-routing" }) do
    ok(config.load({ model_list = base, router_settings = { routing_strategy = strategy } }),
      strategy)
  end
  local function bad(rs, ...)
    spec.raises(function() config.load({ model_list = base, router_settings = rs }) end, ...)
  end
  bad({ routing_strategy = "fastest" }, "router_settings.routing_strategy: unknown strategy",
    "latency-based-routing")
  bad({ routing_strategy = 3 }, "router_settings.routing_strategy: expected string")
  bad({ routing_strategy_args = "x" }, "router_settings.routing_strategy_args: expected map")
  bad({ routing_strategy = "latency-based-routing", routing_strategy_args = { ttl = -1 } },
    "router_settings.routing_strategy_args.ttl: must be > 0")
  bad({ routing_strategy = "latency-based-routing", routing_strategy_args = {
    exploration = 2 } }, "routing_strategy_args.exploration: must be at most 1")
  bad({ enable_pre_call_checks = "yes" }, "router_settings.enable_pre_call_checks: expected "
    .. "boolean")
  bad({ redis_port = 70000 }, "router_settings.redis_port: must be a port number")
  bad({ redis_port = "63a9" }, "router_settings.redis_port: expected an integer port")
  bad({ redis_port = 1.5 }, "router_settings.redis_port: expected an integer port, got float")
  bad({ redis_host = 5 }, "router_settings.redis_host: expected string")
  bad({ redis_password = 5 }, "router_settings.redis_password: expected string")
  local err = spec.raises(function()
    config.load({ model_list = base, router_settings = { redis_url = "http://:hunter2@x" } })
  end, "router_settings.redis_url: must be a redis:// URL")
  spec.no_match(err, "hunter2", "the URL is not shown")
  bad({ usage_window = 0 }, "router_settings.usage_window: must be > 0")
  bad({ model_group_alias = {}, cooldown_time = -1 }, "router_settings.cooldown_time")
end)

-- ---- through the gateway (no Redis needed) --------------------------------------------------
local json = require "nim.json"

local function http(srv, method, path, body)
  local tmp = os.tmpname()
  local f = assert(io.open(tmp .. ".in", "wb"))
  f:write(body and json.encode(body) or "")
  f:close()
  local status = h.sh(("curl -s --max-time 20 -X %s -o %s -D %s -w '%%{http_code}' %s %s")
    :format(method, h.q(tmp .. ".body"), h.q(tmp .. ".hdr"), body and ("-H 'Content-Type: "
    .. "application/json' --data-binary @" .. h.q(tmp .. ".in")) or "", h.q(srv.url .. path)))
  local function slurp(p)
    local fh = io.open(p, "rb")
    local s = fh and fh:read("a") or ""
    if fh then fh:close() end
    os.remove(p)
    return s
  end
  local hdr, text = slurp(tmp .. ".hdr"), slurp(tmp .. ".body")
  os.remove(tmp .. ".in")
  os.remove(tmp)
  local headers = {}
  for k, v in hdr:gmatch("([%w%-]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
  local okd, decoded = pcall(json.decode, text)
  return { status = tonumber(status), headers = headers, body = text,
    json = okd and decoded or nil }
end

local function gateway(yaml, fn)
  local srv = h.serve(yaml, "--workers 1")
  local okr, err = pcall(fn, srv)
  srv.stop()
  if not okr then error(err, 0) end
end

local GATEWAY = ([[
model_list:
  - model_name: g
    litellm_params:
      model: %s
      api_base: os.environ/FAKE_URL
      api_key: os.environ/FAKE_KEY
      rpm: 2
router_settings:
  num_retries: 0
  enable_pre_call_checks: true
  usage_window: 30
]]):format(h.RETRIEVAL)

test("an_rpm_limit_through_the_gateway_is_a_429_with_retry_after", function()
  gateway(GATEWAY, function(srv)
    local body = { model = "g", query = h.QUERY, documents = h.DOCS }
    eq(http(srv, "POST", "/rerank", body).status, 200, "first")
    eq(http(srv, "POST", "/rerank", body).status, 200, "second")
    local r = http(srv, "POST", "/rerank", body)
    eq(r.status, 429, "third: over rpm 2")
    eq(r.json.error.type, "rate_limit", "type")
    spec.match(r.json.error.message, "rpm/tpm limit", "why")
    local ra = tonumber(r.headers["retry-after"])
    ok(ra and ra >= 1 and ra <= 30, "Retry-After until the window frees: " .. tostring(ra))
    eq(http(srv, "GET", "/health/readiness").json.router_state, "local", "local state")
    spec.no_match(http(srv, "GET", "/metrics").body, "nimrank_redis_up", "no Redis figures")
  end)
end)

test("a_gateway_whose_redis_is_unreachable_serves_and_says_degraded", function()
  gateway(GATEWAY:gsub("usage_window: 30", "usage_window: 30\n  redis_url: "
    .. "redis://127.0.0.1:1/0"), function(srv)
    local body = { model = "g", query = h.QUERY, documents = h.DOCS }
    eq(http(srv, "POST", "/rerank", body).status, 200, "served on local state")
    eq(http(srv, "POST", "/rerank", body).status, 200, "again")
    eq(http(srv, "POST", "/rerank", body).status, 429, "the limit holds locally")
    local ready = http(srv, "GET", "/health/readiness")
    eq(ready.status, 200, "still ready: every request is served")
    eq(ready.json.router_state, "degraded", "degraded")
    local metrics = http(srv, "GET", "/metrics").body
    spec.match(metrics, 'nimrank_redis_up{use="router_state"} 0', "down in the metrics")
    spec.match(metrics, 'nimrank_redis_degradations_total{use="router_state"} 1', "counted once")
    local log = io.open(srv.log):read("a")
    local lines = 0
    for _ in log:gmatch("router_state_degraded") do lines = lines + 1 end
    eq(lines, 1, "one log line for the outage")
  end)
end)

test("a_redis_client_that_raises_falls_back_to_local_state_instead_of_failing", function()
  local p = pair({ model_list = { on("g", "d") }, router_settings = { num_retries = 0,
    cooldown_time = 30, allowed_fails = 0, rpm = nil } })
  ok(rerank(p.a), "a first call through Redis")
  -- the client now raises on every command and script (closed by a script, out of memory)
  p.redis.sent = function() error("the client was closed", 0) end
  p.up.behave["http://d"] = "429"
  local okc, res, err = pcall(rerank, p.a)
  ok(okc, "the request did not raise: " .. tostring(res))
  eq(err and err.status, 429, "the provider's answer, not the client's error")
  p.up.behave["http://d"] = nil
  okc = pcall(rerank, p.b)
  ok(okc, "the other instance answers too")
end)
