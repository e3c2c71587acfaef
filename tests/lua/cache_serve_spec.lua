-- The response cache in `nimrank serve` (type local): the second identical request is answered
-- without an upstream call (the fake NIM server counts them: GET /_fake/stats), meta.cache_hit,
-- LiteLLM's request controls in the body, /metrics, the log line and /health/readiness's
-- "cache". One worker: the local cache is per worker. Redis: cache_redis_spec.lua.
local spec = require "spec"
local h = require "helpers"
local json = require "nim.json"
local nim = require "nim"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match
local q, sh = h.q, h.sh

local CONFIG = ([[
model_list:
  - model_name: nv
    litellm_params:
      model: %s
      api_key: os.environ/FAKE_KEY
      api_base: os.environ/FAKE_URL
litellm_settings:
  cache: true
  cache_params:
    type: local
    ttl: 60
    max_bytes: 1048576
    supported_call_types: [acompletion, arerank, rerank]
]]):format(h.RETRIEVAL)

local function upstream_calls()
  local stats = h.decode(sh("curl -s --max-time 10 " .. q(h.url .. "/_fake/stats")))
  return stats.requests and stats.requests.nim or 0
end

local function post(srv, body, path)
  local f = assert(io.open(srv.dir .. "/body.json", "wb"))
  f:write(type(body) == "table" and json.encode(body) or body)
  f:close()
  local out = sh(("curl -s --max-time 20 -o %s -w '%%{http_code}' -H 'Content-Type: "
    .. "application/json' --data-binary @%s %s"):format(q(srv.dir .. "/out"),
    q(srv.dir .. "/body.json"), q(srv.url .. (path or "/rerank"))))
  local r = { status = tonumber(out), body = io.open(srv.dir .. "/out"):read("a") }
  local okd, v = pcall(json.decode, r.body)
  r.json = okd and v or nil
  return r
end

local function get(srv, path)
  return sh(("curl -s --max-time 10 %s"):format(q(srv.url .. path)))
end

local function metric(text, name)
  return tonumber(text:match("\n" .. name .. " (%S+)") or text:match("^" .. name .. " (%S+)"))
end

-- the results part of an answer's text: what a hit must give byte for byte
local function results_text(body) return body:match('"results":(%b[])') end

local function with_server(fn)
  local srv = h.serve(CONFIG, "--workers 1")
  local okr, err = pcall(fn, srv)
  srv.stop()
  if not okr then error(err, 0) end
end

test("cache_serve_second_identical_request_makes_no_upstream_call", function()
  with_server(function(srv)
    local body = { model = "nv", query = "cache serve " .. math.random(1, 1e9),
      documents = h.DOCS, top_n = 2 }
    local n0 = upstream_calls()
    local a = post(srv, body)
    eq(a.status, 200, "first: " .. a.body)
    eq(a.json.meta.cache_hit, false, "a miss")
    eq(upstream_calls(), n0 + 1, "one upstream call")
    local b = post(srv, body)
    eq(b.status, 200, "second: " .. b.body)
    eq(b.json.meta.cache_hit, true, "a hit")
    eq(upstream_calls(), n0 + 1, "no second upstream call")
    eq(results_text(b.body), results_text(a.body), "the same results, byte for byte")
    eq(b.json.id, a.json.id, "the stored answer's id")
    ok(b.json.meta.billed_units, "billed_units as stored")
    -- LiteLLM's controls in the body
    local c = post(srv, { model = "nv", query = body.query, documents = h.DOCS, top_n = 2,
      cache = { ["no-cache"] = true } })
    eq(c.json.meta.cache_hit, false, "no-cache: not read")
    eq(upstream_calls(), n0 + 2, "called")
    local d = post(srv, { model = "nv", query = body.query .. " other", documents = h.DOCS,
      cache = { ["no-store"] = true } })
    eq(d.json.meta.cache_hit, false, "no-store")
    d = post(srv, { model = "nv", query = body.query .. " other", documents = h.DOCS })
    eq(d.json.meta.cache_hit, false, "nothing was stored for it")
    eq(upstream_calls(), n0 + 4, "both called")
    local e = post(srv, { model = "nv", query = "q", documents = { "a" },
      cache = { ["no-cache"] = "yes" } })
    eq(e.status, 400, "a wrong control: 400")
    eq(e.json.error.param, "cache.no-cache", "naming it")
    e = post(srv, { model = "nv", query = "q", documents = { "a" }, cache = { s_maxage = 1 } })
    eq(e.status, 400, "an unknown control: 400")
    eq(post(srv, '{"model":"nv","query":"q","documents":["a"],"cache":null}').status, 200,
      "cache: null is no controls")
    -- a client does not choose where its answer is written
    e = post(srv, { model = "nv", query = "q", documents = { "a" },
      cache = { namespace = "victim-app:sessions", ttl = 999999999 } })
    eq(e.status, 400, "cache.namespace refused: " .. e.body)
    eq(e.json.error.param, "cache.namespace", "naming it")
    match(e.json.error.message, "cache%.namespace", "in the message")
    eq(post(srv, { model = "nv", query = "q", documents = { "a" }, cache = { ["no-cache"] = true,
      ["no-store"] = true, ttl = 999999999 } }).status, 200, "a long ttl is capped, not refused")
    -- /metrics: this worker's own figures
    local m = get(srv, "/metrics")
    match(m, "# TYPE nimrank_cache_hits_total counter", "hits family")
    eq(metric(m, "nimrank_cache_hits_total"), 1, "one hit")
    eq(metric(m, "nimrank_cache_misses_total"), 6, "six misses (no-cache and no-store count)")
    eq(metric(m, "nimrank_cache_errors_total"), 0, "no errors")
    eq(metric(m, "nimrank_cache_degraded"), 0, "not degraded")
    eq(metric(m, "nimrank_cache_entries"), 3, "three entries")
    ok(metric(m, "nimrank_cache_bytes") > 500, "bytes held")
    -- the request log line says hit or miss
    local hit_line, deadline = nil, nim.now() + 10
    repeat
      for line in (io.open(srv.log):read("a")):gmatch("[^\n]+") do
        if line:find('"cache":"hit"', 1, true) then hit_line = line end
      end
      if not hit_line then sh("sleep 0.05") end
    until hit_line or nim.now() > deadline
    ok(hit_line, "a log line with cache: hit")
    match(hit_line, '"attempts":0', "no attempts on a hit")
  end)
end)

test("cache_serve_readiness_says_local_and_nothing_when_caching_is_off", function()
  with_server(function(srv)
    local ready = h.decode(get(srv, "/health/readiness"))
    eq(ready.status, "healthy", "ready")
    eq(ready.cache, "local", "the local cache")
    eq(ready.router_state, "local", "beside the router's state")
  end)
  local off = h.serve(CONFIG:gsub("cache: true", "cache: false"), "--workers 1")
  local okr, err = pcall(function()
    local ready = h.decode(get(off, "/health/readiness"))
    eq(ready.status, "healthy", "ready")
    eq(ready.cache, nil, "no cache field while caching is off")
  end)
  off.stop()
  if not okr then error(err, 0) end
end)

test("cache_serve_v2_and_v1_answers_keep_their_own_documents_rule", function()
  with_server(function(srv)
    local body = { model = "nv", query = "cache v2 " .. math.random(1, 1e9), documents = h.DOCS }
    local v1 = post(srv, body, "/v1/rerank")
    local v2 = post(srv, body, "/v2/rerank")
    ok(v1.json.results[1].document, "v1: documents")
    eq(v2.json.results[1].document, nil, "v2: none (its return_documents is in the key)")
    eq(v2.json.meta.cache_hit, false, "so v2 was a miss")
    eq(post(srv, body, "/v2/rerank").json.meta.cache_hit, true, "then a hit")
    eq(post(srv, body, "/rerank").json.meta.cache_hit, true, "/rerank shares v1's entry")
  end)
end)
