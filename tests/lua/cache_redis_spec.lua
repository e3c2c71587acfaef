-- The response cache on a real Redis server (Debian's redis-server, started here on a free
-- loopback port with --save '' --appendonly no, its pid recorded, killed at the end): the
-- backend itself, two `nimrank serve` instances sharing the cache (the second identical request
-- makes no upstream call: the fake NIM server counts them), and Redis killed mid-test (no
-- request lost, answered uncached) then restarted (caching back).
--
-- Needs nim.redis (the client of branch redis): every test skips while `require "nim.redis"`
-- fails. NIMRANK_REDIS_STANDIN=1 runs them now with tests/lua/redis_standin.lua, a blocking
-- LuaSocket client with the same contract (not nim.redis: it blocks its worker per command).
local spec = require "spec"
local h = require "helpers"
local json = require "nim.json"
local nim = require "nim"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match
local q, sh = h.q, h.sh

local STANDIN = os.getenv("NIMRANK_REDIS_STANDIN") == "1"

-- "nim.redis", "standin", or a skip
local installed = false
local function client_or_skip()
  if installed then return "standin" end
  if pcall(require, "nim.redis") then return "nim.redis" end
  if STANDIN then
    require("redis_standin").install()
    installed = true
    return "standin"
  end
  spec.skip("nim.redis is not in this build (it comes with branch redis); "
    .. "NIMRANK_REDIS_STANDIN=1 runs this with a LuaSocket stand-in client")
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function port_taken(port)
  return sh(("ss -Htan 2>/dev/null | awk '{n = split($4, a, \":\"); print a[n]}' | grep -qx %d "
    .. "&& echo taken"):format(port)):find("taken") ~= nil
end

local function free_port()
  for _ = 1, 100 do
    local port = math.random(20000, 31999)
    if not port_taken(port) then return port end
  end
  error("no free port")
end

-- start_redis([port]) -> { port, pid, dir }; the server answers PING when it returns.
local function start_redis(port, dir)
  if sh("command -v redis-server"):find("redis%-server") == nil then
    spec.skip("redis-server is not installed (Debian package redis-server)")
  end
  port = port or free_port()
  dir = dir or trim(sh("mktemp -d"))
  sh(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s "
    .. "</dev/null >%s 2>&1 & echo $! >%s"):format(port, q(dir), q(dir .. "/redis.log"),
    q(dir .. "/redis.pid")))
  local pid = tonumber(trim(io.open(dir .. "/redis.pid"):read("a")))
  local deadline = nim.now() + 10
  while trim(sh(("redis-cli -p %d ping 2>/dev/null"):format(port))) ~= "PONG" do
    if nim.now() > deadline then
      error("redis-server did not answer: " .. (io.open(dir .. "/redis.log"):read("a") or ""))
    end
    sh("sleep 0.05")
  end
  return { port = port, pid = pid, dir = dir }
end

local function stop_redis(r, keep_dir)
  if r.pid then
    sh(("kill -9 %d 2>/dev/null; i=0; while kill -0 %d 2>/dev/null && [ $i -lt 100 ]; do "
      .. "sleep 0.05; i=$((i+1)); done"):format(r.pid, r.pid))
    r.pid = nil
  end
  if not keep_dir then sh("rm -rf " .. q(r.dir)) end
end

local function redis_cli(r, args)
  return trim(sh(("redis-cli -p %d %s 2>/dev/null"):format(r.port, args)))
end

-- Runs fn(redis) with a fresh server; stops it (and whatever fn started) however fn ends.
local function with_redis(fn)
  local r = start_redis()
  local cleanup = {}
  local okr, err = pcall(fn, r, cleanup)
  for i = #cleanup, 1, -1 do pcall(cleanup[i]) end
  stop_redis(r)
  if not okr then error(err, 0) end
end

-- ---- the gateway -----------------------------------------------------------------------------
local function config(port, how, cleanup)
  local standin = ""
  if how == "standin" then
    -- a config script may require modules, which run in the real globals: the stand-in
    -- registers itself as nim.redis there (the gateway's cwd is the repository)
    local dir = trim(sh("mktemp -d"))
    cleanup[#cleanup + 1] = function() sh("rm -rf " .. q(dir)) end
    local f = assert(io.open(dir .. "/standin.lua", "w"))
    f:write('require("tests.lua.redis_standin").install()\n')
    f:close()
    standin = ("nimrank_settings:\n  scripts: [%s]\n"):format(dir .. "/standin.lua")
  end
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
%s]]):format(h.RETRIEVAL, port, standin)
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

local function serve(r, how, cleanup)
  local srv = h.serve(config(r.port, how, cleanup), "--workers 1")
  cleanup[#cleanup + 1] = srv.stop
  return srv
end

local function body(tag)
  return { model = "nv", query = ("cache redis %s %d"):format(tag, math.random(1, 1e9)),
    documents = h.DOCS, top_n = 2 }
end

-- ---- tests -----------------------------------------------------------------------------------
test("cache_redis_real_server_stores_with_expiry_under_the_namespace", function()
  client_or_skip()
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
    local keys = redis_cli(r, "--scan --pattern 'unit:*'")
    eq(keys, "unit:" .. a.meta.cache_key, "one key, namespace:hash")
    local pttl = tonumber(redis_cli(r, "pttl " .. q(keys)))
    ok(pttl > 25000 and pttl <= 30000, "expires in 30 s: " .. tostring(pttl))
    local b = assert(c:rerank(rt, { model = "bm", query = "gpu", documents = h.DOCS }))
    eq(b.meta.cache_hit, true, "hit")
    eq(calls, 1, "one call")
    -- an empty answer round-trips as []
    local e1 = assert(c:rerank(rt, { model = "bm", query = "gpu", documents = {} }))
    local e2 = assert(c:rerank(rt, { model = "bm", query = "gpu", documents = {} }))
    eq(e2.meta.cache_hit, true, "empty answer cached")
    eq(json.encode(e2.results), "[]", "empty results are []")
    eq(json.encode(e1.results), "[]", "as the first")
    match(redis_cli(r, "get " .. q("unit:" .. e2.meta.cache_key)), '"results":%[%]', "stored []")
  end)
end)

test("cache_redis_two_gateways_share_answers", function()
  local how = client_or_skip()
  with_redis(function(r, cleanup)
    local a, b = serve(r, how, cleanup), serve(r, how, cleanup)
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

test("cache_redis_killed_loses_no_request_and_restarted_restores_caching", function()
  local how = client_or_skip()
  with_redis(function(r, cleanup)
    local srv = serve(r, how, cleanup)
    local req = body("kill")
    eq(post(srv, req).json.meta.cache_hit, false, "miss")
    eq(post(srv, req).json.meta.cache_hit, true, "hit")
    stop_redis(r, true)
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
    local log = io.open(srv.log):read("a")
    local _, reports = log:gsub('"event":"cache_degraded"', "")
    eq(reports, 1, "reported once")
    -- back on the same port, empty: the first request stores, a later one hits
    local back = start_redis(r.port, r.dir)
    r.pid = back.pid
    local deadline, hit = nim.now() + 15, false
    repeat
      sh("sleep 0.3")
      local res = post(srv, req)
      eq(res.status, 200, "answered")
      hit = res.json.meta.cache_hit
    until hit or nim.now() > deadline
    ok(hit, "caching is back")
    eq(metric(srv, "nimrank_cache_degraded"), 0, "not degraded")
    match(io.open(srv.log):read("a"), '"event":"cache_recovered"', "recovery logged")
  end)
end)
