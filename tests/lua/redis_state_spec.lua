-- Shared router state on a real Redis: the store's scripts on redis-server, and two
-- `nimrank serve` instances on different ports with one config (issue 13's acceptance). A
-- redis-server is started on a free loopback port by this file (its PID recorded, killed at
-- the end, whatever happens); the instances are the fake NIM's clients.
--
-- Every test skips while nim.redis (the client, branch `redis`) is not in the build, or when
-- redis-server is not installed (Debian: redis-server).
local spec = require "spec"
local h = require "helpers"
local nim = require "nim"
local json = require "nim.json"
local eq, ok = spec.eq, spec.ok
local q, sh = h.q, h.sh

local have_client = pcall(require, "nim.redis")
local have_server = sh("command -v redis-server"):match("%S") ~= nil

local function need()
  if not have_client then spec.skip("nim.redis is not in this build yet (branch redis)") end
  if not have_server then
    spec.skip("redis-server is not installed (apt-get install redis-server)")
  end
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
local TMP = trim(sh("mktemp -d"))

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function poll(what, deadline, fn)
  local t_end = nim.now() + deadline
  repeat
    local v = fn()
    if v then return v end
    sh("sleep 0.05")
  until nim.now() > t_end
  error(("%s: not within %g s"):format(what, deadline), 2)
end

-- ---- redis-server ---------------------------------------------------------------------------
local redis = { pid = nil, port = nil }

-- Starts redis-server on port (a free one when nil); returns once it accepts connections.
local function redis_start(port)
  for _ = 1, 20 do
    local p = port or math.random(20000, 59999)
    local log = ("%s/redis-%d.log"):format(TMP, p)
    sh(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize no "
      .. ">%s 2>&1 </dev/null & echo $! >%s/redis.pid"):format(p, q(log), q(TMP)))
    local pid = tonumber(read(TMP .. "/redis.pid"))
    local up = false
    local t_end = nim.now() + 10
    while nim.now() < t_end do
      local text = read(log) or ""
      if text:find("Ready to accept connections", 1, true) then up = true break end
      if sh(("kill -0 %d 2>/dev/null && echo alive"):format(pid)) == "" then break end
      sh("sleep 0.05")
    end
    if up then
      redis.pid, redis.port = pid, p
      return p
    end
    sh(("kill -9 %d 2>/dev/null"):format(pid))
    if port then
      error(("redis-server did not start on port %d: %s"):format(port, read(log) or ""))
    end
  end
  error("redis-server did not start on any free port")
end

local function redis_kill()
  if redis.pid then
    sh(("kill -9 %d 2>/dev/null; while kill -0 %d 2>/dev/null; do sleep 0.02; done"):format(
      redis.pid, redis.pid))
    redis.pid = nil
  end
end

local function redis_url() return ("redis://127.0.0.1:%d/0"):format(redis.port) end

-- ---- two gateways ---------------------------------------------------------------------------
local function config(o)
  return ([[
model_list:
  - model_name: g
    litellm_params:
      model: %s
      api_base: os.environ/FAKE_URL
      api_key: os.environ/FAKE_KEY
%s    model_info: { id: %s }
router_settings:
  num_retries: 0
  cooldown_time: %d
  redis_url: %s
%s]]):format(h.RETRIEVAL, o.params or "", o.id, o.cooldown or 60, redis_url(), o.router or "")
end

local function gateways(cfg, fn)
  local a = h.serve(cfg, "--workers 1")
  local okb, b = pcall(h.serve, cfg, "--workers 1")
  if not okb then
    a.stop()
    error(b, 0)
  end
  local okr, err = pcall(fn, a, b)
  a.stop()
  b.stop()
  if not okr then error(err, 0) end
end

local n = 0
local function request(srv, method, path, body)
  n = n + 1
  local base = ("%s/r%d"):format(TMP, n)
  local f = assert(io.open(base .. ".in", "wb"))
  f:write(body and json.encode(body) or "")
  f:close()
  local status = sh(("curl -s --max-time 20 -X %s -o %s -D %s -w '%%{http_code}' %s %s")
    :format(method, q(base .. ".body"), q(base .. ".hdr"), body and ("-H 'Content-Type: "
    .. "application/json' --data-binary @" .. q(base .. ".in")) or "", q(srv.url .. path)))
  local headers = {}
  for k, v in (read(base .. ".hdr") or ""):gmatch("([%w%-]+):%s*([^\r\n]*)") do
    headers[k:lower()] = v
  end
  local text = read(base .. ".body") or ""
  local okd, decoded = pcall(json.decode, text)
  return { status = tonumber(status), headers = headers, body = text,
    json = okd and decoded or nil }
end

local function rerank(srv, query)
  return request(srv, "POST", "/rerank", { model = "g", query = query or h.QUERY,
    documents = h.DOCS })
end

local function upstream_calls()
  local stats = h.decode(sh("curl -s " .. q(h.url .. "/_fake/stats")))
  return stats.requests and stats.requests.nim or 0
end

local function router_state(srv)
  local r = request(srv, "GET", "/health/readiness")
  return r.json and r.json.router_state
end

local function unique(directives)
  return ("%s u%d %s"):format(directives, math.random(1, 1e9), h.QUERY)
end

-- ---- tests ----------------------------------------------------------------------------------
spec.test("redis_store_scripts_behave_on_a_real_server", function()
  need()
  redis_start()
  local state_redis = require "nim.state_redis"
  local state = require "nim.state"
  local store = state_redis.new({ url = redis_url() }, { local_store = state.new_local({
    usage_window = 2 }) })
  store:register("d", "g\0m\0b")
  local now = nim.now()
  eq(store:admit("d", now, 2, nil), true, "first")
  eq(store:admit("d", now, 2, nil), true, "second")
  local admitted, wait = store:admit("d", now, 2, nil)
  eq(admitted, false, "third refused")
  ok(wait > 1 and wait <= 2, "until the window frees: " .. tostring(wait))
  store:record("d", now, 40)
  eq(store:view({ "d" }, now).d.tokens, 40, "tokens")
  eq(store:fail("d", now, 1, 3), false, "one failure allowed")
  eq(store:fail("d", now, 1, 3), true, "the second cools")
  local st = store:view({ "d" }, nim.now()).d
  ok(st.cooldown_until > nim.now() + 2, "cooling for about 3 s")
  eq(store:health().state, "redis", "healthy")
  local c = require("nim.redis").connect({ url = redis_url() })
  local keys = assert(c:call("KEYS", "nimrank:*"))
  ok(#keys >= 2, "keys")
  for _, k in ipairs(keys) do
    local ttl = c:call("PTTL", k)
    ok(ttl > 0, k .. " expires")
  end
end)

spec.test("a_429_through_instance_a_cools_the_deployment_for_instance_b", function()
  need()
  if not redis.pid then redis_start() end
  gateways(config({ id = "shared-429" }), function(a, b)
    local r = rerank(a, unique("!status=429 !times=1"))
    eq(r.status, 429, "a passes the upstream's 429 on: " .. r.body)
    local before = upstream_calls()
    r = rerank(b)
    eq(r.status, 429, "b does not call the cooling deployment: " .. r.body)
    spec.match(r.json.error.message, "cooling down", "no deployments available")
    ok(tonumber(r.headers["retry-after"]) >= 1, "with Retry-After")
    eq(upstream_calls(), before, "no upstream call from b")
    eq(router_state(b), "redis", "b's router state is Redis")
  end)
end)

spec.test("an_rpm_10_deployment_admits_at_most_10_requests_per_window_across_both", function()
  need()
  if not redis.pid then redis_start() end
  gateways(config({ id = "limited", params = "      rpm: 10\n",
    router = "  enable_pre_call_checks: true\n  usage_window: 30\n" }), function(a, b)
    local before = upstream_calls()
    local statuses = { [200] = 0, [429] = 0 }
    for i = 1, 30 do
      local r = rerank(i % 2 == 0 and a or b)
      statuses[r.status] = (statuses[r.status] or 0) + 1
      if r.status == 429 then
        spec.match(r.json.error.message, "rpm/tpm limit", "refused by the limit")
        local ra = tonumber(r.headers["retry-after"])
        ok(ra and ra >= 1 and ra <= 30, "Retry-After: seconds until the window frees")
      end
    end
    eq(statuses[200], 10, "10 admitted across both instances")
    eq(statuses[429], 20, "the other 20 refused")
    eq(upstream_calls() - before, 10, "10 upstream calls")
  end)
end)

spec.test("killing_redis_loses_no_request_and_a_restart_restores_sharing", function()
  need()
  if not redis.pid then redis_start() end
  local port = redis.port
  gateways(config({ id = "outage", cooldown = 30 }), function(a, b)
    eq(rerank(a).status, 200, "served with Redis")
    redis_kill()
    for i = 1, 10 do
      local r = rerank(i % 2 == 0 and a or b)
      eq(r.status, 200, "request " .. i .. " served while Redis is down: " .. r.body)
    end
    eq(router_state(a), "degraded", "a says so")
    eq(router_state(b), "degraded", "b says so")
    local metrics = request(a, "GET", "/metrics").body
    spec.match(metrics, 'nimrank_redis_up{use="router_state"} 0', "metrics: down")
    spec.match(metrics, 'nimrank_redis_degradations_total{use="router_state"} [1-9]',
      "metrics: counted")
    spec.match(read(a.log) or "", "router_state_degraded", "logged")
    redis_start(port)
    poll("both back on Redis", 15, function()
      rerank(a)
      rerank(b)
      return router_state(a) == "redis" and router_state(b) == "redis"
    end)
    spec.match(read(a.log) or "", "router_state_recovered", "recovery logged")
    local r = rerank(a, unique("!status=429 !times=1"))
    eq(r.status, 429, "a 429 through a")
    r = rerank(b)
    eq(r.status, 429, "b sees the cooldown again: " .. r.body)
    spec.match(r.json.error.message, "cooling down", "cooling")
  end)
end)

spec.test("zz_stop_redis", function()
  redis_kill()
  sh("rm -rf " .. q(TMP))
end)
