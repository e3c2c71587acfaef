-- The response cache on a real Redis server (Debian's redis-server, started on a free loopback
-- port by tests/redis.sh through helpers.redis: --save '' --appendonly no, a watchdog that stops
-- it if this spec dies first, killed at the end): the backend itself through nim.redis, two
-- `nimrank serve` instances sharing the cache (the second identical request makes no upstream
-- call: the fake NIM server counts them), and Redis killed mid-test (no request lost, answered
-- uncached, readiness says the cache is degraded) then restarted (caching back).
--
-- Every test skips when redis-server is not installed (Debian: redis-server); nim.redis is
-- part of the build, so a build without it fails here.
local spec = require "spec"
local h = require "helpers"
local json = require "nim.json"
local nim = require "nim"
require "nim.redis" -- the client the cache's redis backend uses
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match
local q, sh = h.q, h.sh

local have_server = sh("command -v redis-server"):match("%S") ~= nil

-- Runs fn(redis, cleanup) with a fresh server (helpers.redis); stops it, and whatever fn
-- started (cleanup: functions run last first), however fn ends.
local function with_redis(fn)
  if not have_server then
    spec.skip("redis-server is not installed (apt-get install redis-server)")
  end
  local r = h.redis()
  local cleanup = {}
  local okr, err = pcall(fn, r, cleanup)
  for i = #cleanup, 1, -1 do pcall(cleanup[i]) end
  r.stop()
  if not okr then error(err, 0) end
end

-- ---- the gateway -----------------------------------------------------------------------------
local function config(port)
  return ([[
model_list:
  - model_name: nv
    litellm_params:
      model: %s
      api_key: os.environ/FAKE_KEY
      api_base: os.environ/FAKE_URL
litellm_settings:
  cache: true
  cache_params:
    type: redis
    host: 127.0.0.1
    port: %d
    ttl: 120
    namespace: spec
    socket_timeout: 0.5
]]):format(h.RETRIEVAL, port)
end

local function upstream_calls()
  local stats = h.decode(sh("curl -s --max-time 10 " .. q(h.url .. "/_fake/stats")))
  return stats.requests and stats.requests.nim or 0
end

local function post(srv, body)
  local path = srv.dir .. "/body.json"
  local f = assert(io.open(path, "wb"))
  f:write(json.encode(body))
  f:close()
  local out = sh(("curl -s --max-time 20 -o %s -w '%%{http_code}' -H 'Content-Type: "
    .. "application/json' --data-binary @%s %s"):format(q(srv.dir .. "/out"), q(path),
    q(srv.url .. "/rerank")))
  local r = { status = tonumber(out), body = io.open(srv.dir .. "/out"):read("a") }
  local okd, v = pcall(json.decode, r.body)
  r.json = okd and v or nil
  return r
end

local function metric(srv, name)
  local text = sh(("curl -s --max-time 10 %s"):format(q(srv.url .. "/metrics")))
  return tonumber(text:match("\n" .. name .. " (%S+)") or text:match("^" .. name .. " (%S+)"))
end

-- GET /health/readiness (an open route) -> status, decoded body
local function readiness(srv)
  local out = sh(("curl -s --max-time 10 -w '\n%%{http_code}' %s"):format(
    q(srv.url .. "/health/readiness")))
  local text, code = out:match("^(.*)\n(%d+)%s*$")
  local okd, v = pcall(json.decode, text or "")
  return tonumber(code), okd and v or {}
end

local function serve(r, cleanup)
  local srv = h.serve(config(r.port), "--workers 1")
  cleanup[#cleanup + 1] = srv.stop
  return srv
end

local function body(tag)
  return { model = "nv", query = ("cache redis %s %d"):format(tag, math.random(1, 1e9)),
    documents = h.DOCS, top_n = 2 }
end

-- ---- tests -----------------------------------------------------------------------------------
test("cache_redis_real_server_stores_with_expiry_under_the_namespace", function()
  with_redis(function(r)
    local router = require "nim.router"
    local config_mod = require "nim.config"
    local cache = require "nim.cache"
    local calls = 0
    local rt = router.new(config_mod.load({ model_list = { { model_name = "bm",
      litellm_params = { model = "local/bm25" } } } }), { call = function(a)
        calls = calls + 1
        return nim.native.rerank(a)
      end })
    local c = cache.new({ type = "redis", ttl = 30, namespace = "unit",
      redis = { host = "127.0.0.1", port = r.port } })
    local a = assert(c:rerank(rt, { model = "bm", query = "gpu", documents = h.DOCS }))
    eq(a.meta.cache_hit, false, "miss")
    local keys = r.cli("--scan", "--pattern", "unit:*")
    eq(keys, "unit:" .. a.meta.cache_key, "one key, namespace:hash")
    local pttl = tonumber(r.cli("pttl", keys))
    ok(pttl > 25000 and pttl <= 30000, "expires in 30 s: " .. tostring(pttl))
    local b = assert(c:rerank(rt, { model = "bm", query = "gpu", documents = h.DOCS }))
    eq(b.meta.cache_hit, true, "hit")
    eq(calls, 1, "one call")
    eq(c:status().backend.state, "connected", "the client's status")
    -- an empty answer round-trips as []
    local e1 = assert(c:rerank(rt, { model = "bm", query = "gpu", documents = {} }))
    local e2 = assert(c:rerank(rt, { model = "bm", query = "gpu", documents = {} }))
    eq(e2.meta.cache_hit, true, "empty answer cached")
    eq(json.encode(e2.results), "[]", "empty results are []")
    eq(json.encode(e1.results), "[]", "as the first")
    match(r.cli("get", "unit:" .. e2.meta.cache_key), '"results":%[%]', "stored []")
  end)
end)

test("cache_redis_two_gateways_share_answers", function()
  with_redis(function(r, cleanup)
    local a, b = serve(r, cleanup), serve(r, cleanup)
    local req = body("shared")
    local n0 = upstream_calls()
    local ra = post(a, req)
    eq(ra.status, 200, "A: " .. ra.body)
    eq(ra.json.meta.cache_hit, false, "A: a miss")
    eq(upstream_calls(), n0 + 1, "A called upstream")
    local rb = post(b, req)
    eq(rb.status, 200, "B: " .. rb.body)
    eq(rb.json.meta.cache_hit, true, "B: a hit on what A stored")
    eq(upstream_calls(), n0 + 1, "B made no upstream call")
    eq(rb.body:match('"results":(%b[])'), ra.body:match('"results":(%b[])'), "same results")
    eq(metric(b, "nimrank_cache_hits_total"), 1, "B counted the hit")
    eq(metric(a, "nimrank_cache_misses_total"), 1, "A counted the miss")
  end)
end)

test("cache_redis_killed_loses_no_request_says_degraded_and_restarted_restores_caching",
  function()
  with_redis(function(r, cleanup)
    local srv = serve(r, cleanup)
    local req = body("kill")
    eq(post(srv, req).json.meta.cache_hit, false, "miss")
    eq(post(srv, req).json.meta.cache_hit, true, "hit")
    local status, ready = readiness(srv)
    eq(status, 200, "ready")
    eq(ready.cache, "redis", "readiness: the redis cache")
    eq(ready.router_state, "local", "beside the router's state")
    r.kill()
    local n0 = upstream_calls()
    for i = 1, 6 do
      local res = post(srv, req)
      eq(res.status, 200, "answered with Redis gone " .. i .. ": " .. res.body)
      eq(res.json.meta.cache_hit, false, "uncached " .. i)
      if i == 3 then sh("sleep 1.2") end -- past the backend's rest: it is tried again
    end
    eq(upstream_calls(), n0 + 6, "every one reached the upstream")
    ok(metric(srv, "nimrank_cache_errors_total") >= 1, "errors counted")
    eq(metric(srv, "nimrank_cache_degraded"), 1, "degraded")
    status, ready = readiness(srv)
    eq(status, 200, "still ready while degraded: the worker serves, uncached")
    eq(ready.cache, "degraded", "readiness: the cache is degraded")
    eq(ready.status, "healthy", "healthy")
    local res = post(srv, req)
    eq(res.status, 200, "and answers still come: " .. res.body)
    eq(res.json.meta.cache_hit, false, "uncached")
    local log = io.open(srv.log):read("a")
    local _, reports = log:gsub('"event":"cache_degraded"', "")
    eq(reports, 1, "reported once")
    -- back on the same port, empty: the first request stores, a later one hits
    r.restart()
    local deadline, hit = nim.now() + 15, false
    repeat
      sh("sleep 0.3")
      res = post(srv, req)
      eq(res.status, 200, "answered")
      hit = res.json.meta.cache_hit
    until hit or nim.now() > deadline
    ok(hit, "caching is back")
    eq(metric(srv, "nimrank_cache_degraded"), 0, "not degraded")
    eq(select(2, readiness(srv)).cache, "redis", "readiness: redis again")
    match(io.open(srv.log):read("a"), '"event":"cache_recovered"', "recovery logged")
  end)
end)
