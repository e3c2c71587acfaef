-- nim.cache: the response cache. Its config keys (LiteLLM's cache_params), the key (what is in
-- it and what never is), the entries (empty lists round-trip as []), the local LRU, the
-- per-request controls, and failure of the Redis backend (a miss, reported once a minute,
-- recovered) against an in-memory fake of nim.redis's client (fake_redis.lua). Clocks are
-- injected: nothing here waits. The real server and the gateway: cache_redis_spec.lua and
-- cache_serve_spec.lua.
local spec = require "spec"
local nim = require "nim"
local router = require "nim.router"
local config = require "nim.config"
local cache = require "nim.cache"
local cache_local = require "nim.cache_local"
local json = require "nim.json"
local fake_redis = require "fake_redis"
local test, eq, ok, match, raises = spec.test, spec.eq, spec.ok, spec.match, spec.raises

local native = nim.native
local DOCS = { "the H100 has 3 TB/s of memory bandwidth", "the A100 has 2 TB/s",
  "the V100 has 900 GB/s of bandwidth" }
local QUERY = "memory bandwidth of the H100"

local function clock()
  local c = { now = 1000, wall = 1700000000 }
  c.clock = function() return c.now end
  c.wall_clock = function() return c.wall end
  c.advance = function(s) c.now, c.wall = c.now + s, c.wall + s end
  return c
end

-- A router over local/bm25 groups (offline) whose provider calls are counted; a group named
-- "broken" fails every call (a provider error), so its fallback answers.
local function setup(extra_cfg)
  local cfg = {
    model_list = {
      { model_name = "bm", litellm_params = { model = "local/bm25" } },
      { model_name = "bm-top1", litellm_params = { model = "local/bm25", top_n = 1 } },
      { model_name = "broken", litellm_params = { model = "nvidia_nim/nvidia/broken",
        api_key = "sk-never-used", api_base = "http://127.0.0.1:1" } },
    },
    router_settings = { num_retries = 0, model_group_alias = { alias = "bm" },
      fallbacks = { { broken = { "bm" } } } },
  }
  for k, v in pairs(extra_cfg or {}) do cfg[k] = v end
  if extra_cfg and extra_cfg.model_list then cfg.router_settings = { num_retries = 0 } end
  local calls = { n = 0, args = {} }
  local r = router.new(config.load(cfg), {
    clock = function() return 0 end, sleep = function() end, random = function() return 0 end,
    call = function(a)
      calls.n = calls.n + 1
      calls.args[#calls.args + 1] = a
      if a.model == "nvidia_nim/nvidia/broken" then
        return nil, native.error({ type = "provider", status = 500, model = a.model,
          message = "upstream failed" })
      end
      return native.rerank(a)
    end,
  })
  return r, calls
end

local function args(over)
  local a = { model = "bm", query = QUERY, documents = DOCS }
  for k, v in pairs(over or {}) do a[k] = v end
  return a
end

local function local_cache(c, settings)
  settings = settings or {}
  settings.type = settings.type or "local"
  return cache.new(settings, { clock = c.clock, wall = c.wall_clock })
end

local function reset_stats()
  for k in pairs(cache.stats) do cache.stats[k] = 0 end
end

-- ---- config ----------------------------------------------------------------------------------
test("cache_config_reads_litellm_cache_params_and_normalises_them", function()
  local cfg, warnings = config.load({ litellm_settings = { cache = true, cache_params = {
    type = "redis", host = "redis.internal", port = "6380", password = "pw", db = 2,
    namespace = "team-a", ttl = 30, default_in_redis_ttl = 90, socket_timeout = 0.25,
    supported_call_types = { "acompletion", "arerank" }, max_connections = 10,
    redis_startup_nodes = {} } } })
  local c = cfg.cache
  eq(c.type, "redis", "type")
  eq(c.ttl, 90, "default_in_redis_ttl wins over ttl for redis")
  eq(c.namespace, "team-a", "namespace")
  eq(c.mode, "default_on", "mode")
  eq(c.redis.host, "redis.internal", "host")
  eq(c.redis.port, 6380, "a port given as a string is a number")
  eq(c.redis.password, "pw", "password")
  eq(c.redis.db, 2, "db")
  eq(c.redis.timeout, 0.25, "socket_timeout is the client's timeout")
  eq(#warnings, 1, "one warning: " .. table.concat(warnings, "; "))
  match(warnings[1], "cache_params%.redis_startup_nodes: unknown key", "LiteLLM's other keys")

  cfg = config.load({ litellm_settings = { cache = true, cache_params = {
    type = "redis", redis_url = "redis://:secret@host:6390/1" } } })
  eq(cfg.cache.redis.url, "redis://:secret@host:6390/1", "redis_url")
  cfg, warnings = config.load({ litellm_settings = { cache = true } })
  eq(cfg.cache.type, "local", "type defaults to local, as LiteLLM's")
  eq(cfg.cache.ttl, nil, "no ttl: the cache's default")
  eq(#warnings, 0, "no warnings")
  cfg, warnings = config.load({ litellm_settings = { cache = true, cache_params = {
    max_bytes = 4096, default_in_memory_ttl = 5, ttl = 50, host = "h" } } })
  eq(cfg.cache.max_bytes, 4096, "max_bytes (nimrank's own)")
  eq(cfg.cache.ttl, 5, "default_in_memory_ttl wins for local")
  match(table.concat(warnings, "\n"), "cache_params%.host: only used with type: redis",
    "a redis key with type local")
end)

test("cache_config_off_cases_warn", function()
  local cfg, w = config.load({ litellm_settings = { cache_params = { type = "local" } } })
  eq(cfg.cache, nil, "cache_params alone: off")
  match(w[1], "litellm_settings%.cache_params: ignored: litellm_settings%.cache is not true", "w")
  cfg, w = config.load({ litellm_settings = { cache = true,
    cache_params = { supported_call_types = { "acompletion", "aembedding" } } } })
  eq(cfg.cache, nil, "no rerank call type: off")
  match(w[1], "supported_call_types: names neither rerank nor arerank", "w")
  cfg = config.load({ litellm_settings = { cache = false } })
  eq(cfg.cache, nil, "cache: false")
  cfg, w = config.load({ litellm_settings = { cache = true, cache_params = { type = "redis",
    host = "h", max_bytes = 2048 } } })
  eq(cfg.cache.max_bytes, nil, "max_bytes is the local cache's")
  match(w[1], "max_bytes: only used with type: local", "w")
end)

test("cache_config_rejects_wrong_types_naming_the_field", function()
  local P = "litellm_settings.cache_params."
  local cases = {
    { { cache = "yes" }, "litellm_settings.cache: expected boolean, got string" },
    { { cache = true, cache_params = "redis" }, "litellm_settings.cache_params: expected map" },
    { { cache = true, cache_params = { type = "s3" } }, P .. "type: must be one of local, redis" },
    { { cache = true, cache_params = { type = "redis", host = "h", port = 0 } },
      P .. "port: must be a port number" },
    { { cache = true, cache_params = { type = "redis", host = "h", port = "x" } },
      P .. "port: must be a port number" },
    { { cache = true, cache_params = { type = "redis", host = 5 } },
      P .. "host: expected string, got integer" },
    { { cache = true, cache_params = { type = "redis", host = "h", password = 5 } },
      P .. "password: expected string" },
    { { cache = true, cache_params = { ttl = "60" } }, P .. "ttl: expected number, got string" },
    { { cache = true, cache_params = { ttl = 0 } }, P .. "ttl: must be > 0" },
    { { cache = true, cache_params = { namespace = "" } }, P .. "namespace: must not be empty" },
    { { cache = true, cache_params = { max_bytes = 10 } }, P .. "max_bytes: must be an integer" },
    { { cache = true, cache_params = { max_bytes = 2048.5 } }, P .. "max_bytes: expected integer" },
    { { cache = true, cache_params = { mode = "sometimes" } }, P .. "mode: must be one of" },
    { { cache = true, cache_params = { supported_call_types = "rerank" } },
      P .. "supported_call_types: expected list" },
    { { cache = true, cache_params = { type = "redis", url = "http://h:6379" } },
      P .. "url: must be a redis:// URL" },
    -- what nim.redis's client would refuse at the first request is refused at load
    { { cache = true, cache_params = { type = "redis", url = "rediss://:secret@h:6380/0" } },
      P .. "url: rediss:// (TLS) is not supported" },
    { { cache = true, cache_params = { type = "redis", redis_url = "redis://:secret@h/0?ssl=1" } },
      P .. "redis_url: query parameters and fragments are not supported" },
    { { cache = true, cache_params = { type = "redis", url = "redis://:secret@/0" } },
      P .. "url: must be a redis:// URL with a host" },
    { { cache = true, cache_params = { type = "redis", url = "redis://a",
      redis_url = "redis://b" } }, P .. "redis_url: give url or redis_url, not both" },
    { { cache = true, cache_params = { type = "redis", db = -1, host = "h" } },
      P .. "db: must be an integer >= 0" },
  }
  for _, c in ipairs(cases) do
    local e = raises(function() config.load({ litellm_settings = c[1] }) end, c[2])
    spec.no_match(e, "secret", "never a value")
  end
  -- the URL is never shown: it may hold the password
  local e = raises(function() config.load({ litellm_settings = { cache = true, cache_params = {
    type = "redis", url = "http://:hunter2-secret@h" } } }) end, "url")
  spec.no_match(e, "hunter2", "no password in the message")
end)

test("cache_config_redis_without_host_reads_litellms_variables_or_fails_naming_host", function()
  -- the test process's environment has none of them (tests/run.sh); without them: an error
  if not os.getenv("REDIS_HOST") and not os.getenv("REDIS_URL") then
    raises(function() config.load({ litellm_settings = { cache = true,
      cache_params = { type = "redis" } } }) end,
      "litellm_settings.cache_params.host: required for type redis")
  end
  -- os.environ/ values are read at load, as anywhere in litellm_settings, and never printed
  local e = raises(function() config.load({ litellm_settings = { cache = true, cache_params = {
    type = "redis", url = "os.environ/NIMRANK_CACHE_SPEC_UNSET" } } }) end,
    "environment variable NIMRANK_CACHE_SPEC_UNSET is not set")
  match(e, "cache_params%.url", "naming the key")
  local cfg = config.load({ litellm_settings = { cache = true, cache_params = {
    type = "redis", host = "h", password = "os.environ/FAKE_KEY" } } })
  eq(cfg.cache.redis.password, os.getenv("FAKE_KEY"), "read")
  eq(config.shown(cfg, cfg.cache.redis.password), "a value from the environment", "never shown")
end)

-- ---- the key -------------------------------------------------------------------------------
test("cache_key_holds_what_changes_the_answer_and_never_keys_headers_or_retries", function()
  local r = setup()
  local c = local_cache(clock())
  local base = c:key(r, args())
  ok(base:match("^nimrank:cache:%x+$") and #base == #"nimrank:cache:" + 64, "namespace:sha256")
  local changes = {
    { query = "another question" },
    { documents = { DOCS[2], DOCS[1], DOCS[3] } }, -- order
    { documents = { DOCS[1], DOCS[2] } },
    { top_n = 2 }, { top_k = 2 }, { truncate = "END" }, { return_documents = false },
    { rank_fields = { "text" } }, -- a provider parameter
    { bm25 = { k1 = 1.5 } },
    { model = "bm-top1" }, { model = "local/bm25" },
    { api_base = "http://elsewhere" }, -- another upstream
    { headers = { ["x-tenant"] = "b" } }, -- a non-secret header may shape the answer
  }
  for _, over in ipairs(changes) do
    local k = next(over)
    ok(c:key(r, args(over)) ~= base, "changes the key: " .. k)
  end
  local same = {
    { api_key = "sk-other" }, { timeout = 3 },
    { headers = { Authorization = "Bearer sk-x", ["X-API-Key"] = "k", ["api-key"] = "k",
      ["x-session-token"] = "t", ["X-Auth-User"] = "a", ["x-client-secret"] = "s",
      Cookie = "c=1", ["x-goog-api-key-2"] = "k" } }, -- credentials only
    { request_timeout = 9 }, { num_retries = 3 }, { fallbacks = { "bm-top1" } },
    { batch_size = 2 }, { concurrency = 1 }, { metadata = { user = "u" } }, { user = "u" },
    { filters = { "dedupe" } }, { cache = { ttl = 5 } },
    { model = "alias" }, -- an alias is its group
  }
  for _, over in ipairs(same) do
    local k = next(over)
    eq(c:key(r, args(over)), base, "does not change the key: " .. k)
  end
  eq(c:key(r, args({ top_n = 2.0 })), c:key(r, args({ top_n = 2 })), "2.0 is 2 (JSON gives 2.0)")
  ok(c:key(r, args({ query = "s1:x" })) ~= c:key(r, args({ query = "s1:" .. "x" .. "y" })),
    "strings are length-prefixed")
  -- two texts that join into the same bytes are different documents
  ok(c:key(r, args({ documents = { "ab", "c" } })) ~= c:key(r, args({ documents = { "a", "bc" } })),
    "document boundaries")
  eq(c:key(r, args({ on_progress = function() end })), base, "a batching callback is not in it")
  eq(c:key(r, args({ rank_fields = function() end })), nil, "a function in the key: no key")
  local no_model = args()
  no_model.model = nil
  eq(c:key(r, no_model), nil, "no model (the environment's default): no key")
  local ns = c:key(r, args(), "team-b")
  eq(ns:match("^(.-):%x+$"), "team-b", "a request's namespace")
  eq(ns:match(":(%x+)$"), base:match(":(%x+)$"), "same hash")
end)

test("cache_key_of_a_group_follows_its_deployments", function()
  local r1 = setup()
  local r2 = setup({ model_list = {
    { model_name = "bm", litellm_params = { model = "local/bm25", truncate = "END" } } } })
  local r3 = setup({ model_list = {
    { model_name = "bm", litellm_params = { model = "local/bm25", api_key = "sk-a",
      api_base = "http://x", timeout = 5, rpm = 10 } } } })
  local c = local_cache(clock())
  ok(c:key(r1, args()) ~= c:key(r2, args()), "a deployment's truncate changes it")
  local r5 = setup({ model_list = {
    { model_name = "bm", litellm_params = { model = "local/bm25", api_key = "sk-b",
      api_base = "http://x", timeout = 9, rpm = 99 } } } })
  local r6 = setup({ model_list = {
    { model_name = "bm", litellm_params = { model = "local/bm25", api_key = "sk-a",
      api_base = "http://y", timeout = 5, rpm = 10 } } } })
  eq(c:key(r3, args()), c:key(r5, args()), "keys, timeouts and limits do not")
  ok(c:key(r3, args()) ~= c:key(r6, args()), "the deployment's api_base (its upstream) does")
  ok(c:key(r1, args()) ~= c:key(r3, args()), "nor does having one")
  local r4 = setup({ nimrank_settings = { filters = { bm = { { min_score = 0.1 } } } } })
  ok(c:key(r1, args()) ~= c:key(r4, args()), "the group's configured filters change it")
end)

test("cache_key_holds_the_api_base_and_public_headers_and_env_values_not_names", function()
  local r = setup()
  local c = local_cache(clock())
  local a = c:key(r, args({ model = "nvidia_nim/nvidia/x", api_base = "http://a" }))
  local b = c:key(r, args({ model = "nvidia_nim/nvidia/x", api_base = "http://b" }))
  ok(a and b and a ~= b, "a library call's api_base: two upstreams, two keys")
  local h1 = c:key(r, args({ headers = { ["X-Tenant"] = "a", Authorization = "Bearer 1" } }))
  local h2 = c:key(r, args({ headers = { ["x-tenant"] = "a", Authorization = "Bearer 2" } }))
  eq(h1, h2, "a header's name in any case; never the credentials")
  -- a deployment's os.environ/ values: what the variable holds, not its name
  local function env_router(var)
    return setup({ model_list = { { model_name = "bm", litellm_params = {
      model = "os.environ/" .. var, api_base = "os.environ/" .. var .. "_BASE" } } } })
  end
  local env = { NIMRANK_CACHE_T = "local/bm25", NIMRANK_CACHE_T_BASE = "http://a" }
  local getenv = os.getenv
  os.getenv = function(n) if env[n] then return env[n] end return getenv(n) end
  local okc, err = pcall(function()
    local re = env_router("NIMRANK_CACHE_T")
    local k1 = c:key(re, args())
    env.NIMRANK_CACHE_T_BASE = "http://b"
    local k2 = c:key(re, args())
    ok(k1 and k2 and k1 ~= k2, "changing the variable changes the key (same router)")
    env.NIMRANK_CACHE_T_BASE = "http://a"
    eq(c:key(re, args()), k1, "back to the same value, the same key")
    env.OTHER_NAME, env.OTHER_NAME_BASE = "local/bm25", "http://a"
    eq(c:key(env_router("OTHER_NAME"), args()), k1, "the value counts, not the name")
  end)
  os.getenv = getenv
  assert(okc, err)
  -- two variables of other names holding the same values give the same key
  local ka = c:key(env_router("FAKE_KEY"), args())
  local kb = c:key(env_router("FAKE_KEY"), args())
  eq(ka, kb, "stable")
  local material = {}
  local real_sha = native.sha256
  native.sha256 = function(x)
    if type(x) == "table" then material[#material + 1] = table.concat(x) end
    return real_sha(x)
  end
  local okc, err = pcall(c.key, c, env_router("FAKE_KEY"), args({ api_key = "sk-secret-1" }))
  native.sha256 = real_sha
  assert(okc, err)
  local all = table.concat(material)
  ok(not all:find("os.environ/", 1, true), "no variable name in the key material")
  ok(not all:find("sk-secret-1", 1, true), "never the API key")
  local v = os.getenv("FAKE_KEY")
  ok(not v or not all:find(v, 1, true), "nor a variable's value as it is")
end)

-- ---- entries ---------------------------------------------------------------------------------
test("cache_entry_round_trips_empty_lists_as_json_arrays", function()
  local res = { id = "id-1", results = nim.array{},
    meta = { billed_units = { total_tokens = 0 }, warnings = nim.array{}, attempts = nim.array{},
      components = nim.array{ { model = "a", nested = nim.array{}, obj = {} } }, empty_obj = {} } }
  local text = cache.encode(res, 1700000000)
  local back, t = assert(cache.decode(text))
  eq(t, 1700000000, "stored at")
  eq(getmetatable(back.results), nim.array_mt, "empty results: a list")
  eq(json.encode(back.results), "[]", "encodes as []")
  eq(json.encode(back.meta.warnings), "[]", "empty warnings: []")
  eq(json.encode(back.meta.components[1].nested), "[]", "nested empty list: []")
  eq(json.encode(back.meta.components[1].obj), "{}", "an empty object stays {}")
  eq(json.encode(back.meta.empty_obj), "{}", "empty object in meta: {}")
  eq(getmetatable(back.meta.components), nim.array_mt, "non-empty list: marked")
  eq(back.meta.attempts, nil, "attempts are the request's, not stored")
  eq(back.id, "id-1", "id")
  -- Debian's cjson alone would turn them into {}: the reason for all this
  eq(require("cjson").encode(require("cjson").decode("[]")), "{}", "cjson 2.1.0's behaviour")

  local full = assert(native.rerank({ model = "local/bm25", query = QUERY, documents = DOCS }))
  back = assert(cache.decode(cache.encode(full, 1)))
  eq(#back.results, 3, "three results")
  for i, r in ipairs(full.results) do
    eq(back.results[i].index, r.index, "index " .. i)
    eq(math.type(back.results[i].index), "integer", "an integer index")
    spec.near(back.results[i].relevance_score, r.relevance_score, 1e-12, "score " .. i)
    eq(back.results[i].document.text, r.document.text, "document " .. i)
  end
  eq(native.encode_results(back.results), native.encode_results(full.results),
    "the answer's JSON is the same")
  for _, bad in ipairs({ "", "not json", "[]", '{"v":2}', '{"v":1,"t":1,"results":{},"meta":5,'
    .. '"e":[]}', '{"v":1,"t":1,"results":[{"index":"a"}],"meta":{},"e":[]}' }) do
    eq((cache.decode(bad)), nil, "unreadable: " .. bad)
  end
end)

-- ---- the local backend -----------------------------------------------------------------------
test("cache_local_evicts_the_least_recently_used_within_max_bytes", function()
  local c = clock()
  local b = cache_local.new({ max_bytes = 100, clock = c.clock })
  ok(b:set("a", ("x"):rep(29), 60), "a: 30 bytes")
  ok(b:set("b", ("x"):rep(29), 60), "b")
  ok(b:set("c", ("x"):rep(29), 60), "c")
  eq(select(1, b:usage()), 90, "90 bytes")
  ok(b:get("a"), "a read: now the most recent")
  ok(b:set("d", ("x"):rep(29), 60), "d needs room")
  eq(b:get("b"), nil, "b, least recently used, went")
  ok(b:get("a") and b:get("c") and b:get("d"), "the others stayed")
  eq(select(2, b:usage()), 3, "3 entries")
  eq(b:set("big", ("x"):rep(100), 60), false, "larger than max_bytes: not kept")
  eq(select(2, b:usage()), 3, "and nothing evicted for it")
  ok(b:set("a", "short", 60), "replaced")
  eq(b:get("a"), "short", "new value")
  eq(select(1, b:usage()), 30 + 30 + 6, "bytes follow the replacement")
end)

test("cache_local_entries_expire_on_the_injected_clock", function()
  local c = clock()
  local b = cache_local.new({ max_bytes = 1000, clock = c.clock })
  b:set("k", "v", 10)
  c.advance(9.9)
  eq(b:get("k"), "v", "alive at 9.9 s")
  c.advance(0.2)
  eq(b:get("k"), nil, "gone at 10.1 s")
  eq(select(2, b:usage()), 0, "and removed")
  b:set("old", "v", 1)
  c.advance(2)
  b:set("new", "v", 100)
  eq(select(2, b:usage()), 1, "an expired entry goes when another is stored")
end)

-- ---- through the cache -----------------------------------------------------------------------
test("cache_second_identical_call_is_answered_without_a_provider_call", function()
  reset_stats()
  local r, calls = setup()
  local c = local_cache(clock())
  local a = assert(c:rerank(r, args({ top_n = 2 })))
  eq(calls.n, 1, "one provider call")
  eq(a.meta.cache_hit, false, "a miss")
  ok(#a.meta.attempts == 1, "its attempt")
  local b = assert(c:rerank(r, args({ top_n = 2 })))
  eq(calls.n, 1, "no second provider call")
  eq(b.meta.cache_hit, true, "a hit")
  eq(b.meta.cache_key, a.meta.cache_key, "the same key")
  eq(json.encode(b.meta.attempts), "[]", "no attempts, as []")
  eq(b.id, a.id, "the stored answer's id")
  eq(b.meta.model_group, "bm", "model_group kept")
  eq(native.encode_results(b.results), native.encode_results(a.results), "same results")
  assert(c:rerank(r, args({ top_n = 2, model = "alias" })))
  eq(calls.n, 1, "an alias of the group: a hit")
  assert(c:rerank(r, args({ top_n = 3 })))
  eq(calls.n, 2, "another top_n: a miss")
  eq(cache.stats.hits, 2, "hits")
  eq(cache.stats.misses, 2, "misses")
  eq(cache.stats.errors, 0, "errors")
  ok(c:status().bytes > 0 and c:status().entries == 2, "two entries, bytes counted")
end)

test("cache_misuse_raises_on_a_hit_as_on_a_miss", function()
  local r = setup()
  local c = local_cache(clock())
  assert(c:rerank(r, args()))
  raises(function() c:rerank(r, args({ timeout = -1 })) end, "timeout")
  raises(function() c:rerank(r, args({ num_retries = 1000 })) end, "num_retries")
  raises(function() c:rerank(r, args({ filters = { "nope" } })) end, "unknown filter")
  raises(function() c:rerank(r, args({ cache = { ["no-cache"] = "yes" } })) end,
    "cache.no-cache: expected a boolean")
  raises(function() c:rerank(r, args({ cache = { no_cache = true } })) end,
    "cache.no_cache: unknown cache control")
  raises(function() c:rerank(r, args({ cache = true })) end, "cache: expected a table")
  raises(function() c:rerank(r, args({ cache = { ttl = -1 } })) end, "cache.ttl")
end)

test("cache_controls_no_cache_no_store_ttl_s_maxage_namespace", function()
  local r, calls = setup()
  local c = clock()
  local cc = local_cache(c, { ttl = 100 })
  local function call(control, over)
    local a = args(over)
    a.cache = control
    return assert(cc:rerank(r, a))
  end
  eq(call({ ["no-store"] = true }).meta.cache_hit, false, "no-store: a miss")
  eq(call({ ["no-store"] = true }).meta.cache_hit, false, "and nothing was stored")
  eq(calls.n, 2, "two calls")
  call()
  eq(calls.n, 3, "stored now")
  eq(call({ ["no-cache"] = true }).meta.cache_hit, false, "no-cache: not read")
  eq(calls.n, 4, "called again")
  eq(call().meta.cache_hit, true, "a hit without controls")
  local both = call({ ["no-cache"] = true, ["no-store"] = true })
  eq(both.meta.cache_hit, false, "both: the cache left out")
  eq(both.meta.cache_key, nil, "no key made")
  -- s-maxage: an entry older than that is a miss
  c.advance(30)
  eq(call({ ["s-maxage"] = 60 }).meta.cache_hit, true, "30 s old, 60 allowed")
  eq(call({ ["s-maxage"] = 10 }).meta.cache_hit, false, "30 s old, 10 allowed")
  -- the miss stored a fresh one (ttl 100 from now)
  eq(call({ ["s-max-age"] = 10 }).meta.cache_hit, true, "fresh now; LiteLLM's other spelling")
  -- ttl per request
  call({ ttl = 5 }, { query = "short-lived" })
  c.advance(6)
  eq(call(nil, { query = "short-lived" }).meta.cache_hit, false, "expired after its own ttl")
  -- namespaces keep entries apart
  eq(call({ namespace = "other" }).meta.cache_hit, false, "another namespace: a miss")
  eq(call({ namespace = "other" }).meta.cache_hit, true, "then a hit there")
end)

test("cache_mode_default_off_caches_only_what_asks_with_use_cache", function()
  local r, calls = setup()
  local c = local_cache(clock(), { mode = "default_off" })
  assert(c:rerank(r, args()))
  assert(c:rerank(r, args()))
  eq(calls.n, 2, "not cached without use-cache")
  assert(c:rerank(r, args({ cache = { ["use-cache"] = true } })))
  local res = assert(c:rerank(r, args({ cache = { ["use-cache"] = true } })))
  eq(calls.n, 3, "cached when asked")
  eq(res.meta.cache_hit, true, "a hit")
end)

test("cache_request_filters_run_on_every_answer_after_the_cache", function()
  local r, calls = setup()
  local c = local_cache(clock())
  local seen = 0
  local function count(results, ctx)
    seen = seen + 1
    eq(ctx.group, "bm", "the filter's ctx names the group")
    eq(ctx.query, QUERY, "and the query")
    return results
  end
  local a = assert(c:rerank(r, args({ filters = { { normalize = "sigmoid" }, count } })))
  ok(a.results[1].probability, "normalised on the miss")
  local b = assert(c:rerank(r, args({ filters = { { top_n = 1 }, count } })))
  eq(calls.n, 1, "another pipeline: still a hit")
  eq(#b.results, 1, "its own top_n")
  eq(b.results[1].probability, nil, "the first request's filter did not reach the cache")
  local d = assert(c:rerank(r, args()))
  eq(#d.results, 3, "no filters: the whole answer")
  eq(seen, 2, "the function ran on the miss and on the hit")
  ok(#a.meta.attempts == 1, "the router's meta as without the cache (attempts)")
end)

test("cache_does_not_store_a_fallbacks_answer", function()
  local r, calls = setup()
  local c = local_cache(clock())
  local a = assert(c:rerank(r, args({ model = "broken" })))
  eq(a.meta.fallback, "bm", "answered by the fallback")
  eq(calls.n, 2, "primary, then fallback")
  local b = assert(c:rerank(r, args({ model = "broken" })))
  eq(b.meta.cache_hit, false, "not stored")
  eq(calls.n, 4, "both called again")
  eq(c:status().entries, 0, "nothing stored")
end)

test("cache_a_group_with_a_function_filter_is_not_cached", function()
  local r, calls = setup()
  r.group_filters.bm = { function(results) return results end } -- as a .lua config may give
  local c = local_cache(clock())
  assert(c:rerank(r, args()))
  local b = assert(c:rerank(r, args()))
  eq(calls.n, 2, "no key, no cache")
  eq(b.meta.cache_hit, false, "cache_hit is still said")
end)

test("cache_errors_are_returned_not_stored", function()
  local r, calls = setup({ router_settings = { num_retries = 0 } })
  local c = local_cache(clock())
  local res, err = c:rerank(r, args({ model = "broken" }))
  eq(res, nil, "no answer")
  eq(err.type, "provider", "the error")
  c:rerank(r, args({ model = "broken" }))
  eq(calls.n, 2, "called again")
end)

-- ---- the layer -------------------------------------------------------------------------------
test("cache_nim_rerank_goes_through_nim_cache_after_load_config", function()
  local saved_router, saved_cfg, saved_cache = nim.router, nim.config, nim.cache
  local okr, e = pcall(function()
    local cfg, warnings = nim.load_config({
      model_list = { { model_name = "bm", litellm_params = { model = "local/bm25" } } },
      litellm_settings = { cache = true, cache_params = { type = "local", ttl = 60 } } })
    eq(#warnings, 0, "no warnings")
    ok(cfg.cache and nim.cache, "nim.cache set")
    local a = assert(nim.rerank(args()))
    local b = assert(nim.rerank(args()))
    eq(a.meta.cache_hit, false, "miss")
    eq(b.meta.cache_hit, true, "hit")
    ok(nim.check(args({ cache = { ["no-store"] = true } })), "nim.check accepts controls")
    local good, bad = nim.check(args({ cache = { ["no-store"] = 1 } }))
    eq(good, nil, "nim.check refuses a bad control")
    eq(bad.field, "cache.no-store", "naming it")
    nim.load_config({ model_list = { { model_name = "bm",
      litellm_params = { model = "local/bm25" } } } })
    eq(nim.cache, nil, "a config without cache turns it off")
    local c = assert(nim.rerank(args({ cache = { ["no-cache"] = true } })))
    eq(c.meta.cache_hit, nil, "no cache_hit when caching is off")
    raises(function() nim.rerank(args({ cache = { ["no-cache"] = 1 } })) end, "cache.no-cache")
    local _, w = nim.load_config({ litellm_settings = { cache = true,
      cache_params = { type = "redis", host = "127.0.0.1", port = 1 } } })
    if not pcall(require, "nim.redis") then
      match(table.concat(w, "\n"), "no Redis client %(nim%.redis%)", "a build without nim.redis")
    end
  end)
  nim.router, nim.config, nim.cache = saved_router, saved_cfg, saved_cache
  if not okr then error(e, 0) end
end)

-- ---- the redis backend, on the fake client -----------------------------------------------------
local function redis_cache(c, fake, settings)
  settings = settings or {}
  settings.type = "redis"
  settings.redis = settings.redis or { host = "127.0.0.1", port = 6379, password = "pw-secret" }
  return cache.new(settings, { clock = c.clock, wall = c.wall_clock, redis = fake })
end

test("cache_redis_backend_sets_with_px_and_namespace_and_reads_back", function()
  reset_stats()
  local c = clock()
  local fake = fake_redis.new({ clock = c.clock })
  local r, calls = setup()
  local cc = redis_cache(c, fake, { ttl = 30, namespace = "ns" })
  eq(#fake.connected, 0, "no client before the first use")
  local a = assert(cc:rerank(r, args()))
  eq(#fake.connected, 1, "made on first use")
  eq(fake.connected[1].password, "pw-secret", "with the password")
  eq(fake.connected[1].timeout, 0.5, "default timeout")
  local get, set = fake.calls[1], fake.calls[2]
  eq(get[1], "GET", "GET first")
  eq(get[2], "ns:" .. a.meta.cache_key, "namespace:hash")
  eq(set[1], "SET", "then SET")
  eq(set[4], "PX", "with PX")
  eq(set[5], 30000, "ttl in ms")
  local b = assert(cc:rerank(r, args()))
  eq(b.meta.cache_hit, true, "a hit from redis")
  eq(calls.n, 1, "one provider call")
  c.advance(31)
  eq(assert(cc:rerank(r, args())).meta.cache_hit, false, "expired in redis")
  eq(cache.stats.errors, 0, "no errors")
  -- a url target is passed as it is
  local cu = cache.new({ type = "redis", redis = { url = "redis://:pw@h:1/2", timeout = 2 } },
    { redis = fake })
  cu:rerank(r, args())
  eq(fake.connected[2].url, "redis://:pw@h:1/2", "url")
  eq(fake.connected[2].timeout, 2, "socket_timeout")
end)

test("cache_redis_failure_is_a_miss_reported_once_a_minute_and_recovered", function()
  reset_stats()
  local c = clock()
  local fake = fake_redis.new({ clock = c.clock })
  local r, calls = setup()
  local cc = redis_cache(c, fake)
  local logs = {}
  cache.set_logger(function(level, event, message)
    logs[#logs + 1] = { level = level, event = event, message = message }
  end)
  local okr, e = pcall(function()
    assert(cc:rerank(r, args()))
    eq(assert(cc:rerank(r, args())).meta.cache_hit, true, "cached while up")
    fake.down = true
    local n0, sent0 = calls.n, #fake.calls
    for i = 1, 5 do
      local res = assert(cc:rerank(r, args()), "answered with redis down " .. i)
      eq(res.meta.cache_hit, false, "uncached")
    end
    eq(calls.n - n0, 5, "every request reached the provider")
    eq(#fake.calls - sent0, 1, "one failed GET; then the backend rests (no waiting on it)")
    eq(cache.stats.errors, 1, "one error counted")
    eq(cc:status().degraded, true, "degraded")
    c.advance(1.5)
    assert(cc:rerank(r, args()))
    eq(#fake.calls - sent0, 2, "tried again after the rest")
    eq(cache.stats.errors, 2, "and failed again")
    eq(#logs, 1, "reported once: " .. json.encode(logs))
    eq(logs[1].event, "cache_degraded", "event")
    eq(logs[1].level, "warn", "level")
    match(logs[1].message, "redis cache's get failed %(connection:", "what failed")
    spec.no_match(logs[1].message, "pw-secret", "never the password")
    for _ = 1, 3 do
      c.advance(1.5)
      assert(cc:rerank(r, args()))
    end
    eq(#logs, 1, "still once within the minute")
    c.advance(60)
    assert(cc:rerank(r, args()))
    eq(#logs, 2, "again a minute later")
    match(logs[2].message, "failures since the last report", "with the count")
    fake.down = false
    c.advance(1.5)
    local res = assert(cc:rerank(r, args()))
    eq(res.meta.cache_hit, true, "recovered: the entry stored before is there")
    eq(cc:status().degraded, false, "not degraded")
    eq(logs[#logs].event, "cache_recovered", "recovery reported")
    -- a SET that fails: the answer is still given
    local n1 = calls.n
    fake.down = true
    c.advance(61)
    res = assert(cc:rerank(r, args({ query = "new question" })))
    eq(calls.n, n1 + 1, "answered by the provider")
    eq(res.meta.cache_hit, false, "a miss")
  end)
  cache.set_logger(nil)
  if not okr then error(e, 0) end
end)

test("cache_redis_unreadable_entry_and_odd_replies_are_misses", function()
  reset_stats()
  local c = clock()
  local fake = fake_redis.new({ clock = c.clock })
  local r, calls = setup()
  local cc = redis_cache(c, fake)
  cache.set_logger(function() end)
  local key = cc:key(r, args())
  fake:call("SET", key, "written by someone else")
  local res = assert(cc:rerank(r, args()))
  eq(res.meta.cache_hit, false, "unreadable: a miss")
  eq(calls.n, 1, "answered")
  eq(cache.stats.errors, 1, "counted")
  eq(assert(cc:rerank(r, args())).meta.cache_hit, true, "overwritten with a good entry")
  -- a client that raises, or answers a table to GET
  local odd = { connect = function()
    return { call = function(_, cmd)
      if cmd == "GET" then return { "a", "table" } end
      error("the client broke")
    end, status = function() return { state = "connected" } end }
  end }
  local co = cache.new({ type = "redis", redis = { host = "h" } }, { clock = c.clock, redis = odd })
  res = assert(co:rerank(r, args()))
  eq(res.meta.cache_hit, false, "answered")
  -- a client that cannot be made: every request answered uncached
  local missing = cache.new({ type = "redis", redis = { host = "h" } },
    { clock = c.clock, redis = { connect = function() error("no") end } })
  eq(assert(missing:rerank(r, args())).meta.cache_hit, false, "answered")
  cache.set_logger(nil)
end)

-- ---- stored entries are checked against the request they answer ------------------------------
test("cache_hit_validates_the_stored_entry_and_treats_a_bad_one_as_a_miss", function()
  local c = clock()
  local fake = fake_redis.new({ clock = c.clock })
  local r, calls = setup()
  local cc = redis_cache(c, fake)
  local logged = {}
  cache.set_logger(function(_, _, msg) logged[#logged + 1] = msg end)
  local key = cc:key(r, args())
  local good = assert(cc:rerank(r, args()))
  eq(good.meta.cache_hit, false, "stored")
  local stored = assert(fake:call("GET", key))
  stored = type(stored) == "table" and stored.ok or stored
  local entry = json.decode(stored)
  local function bad(name, edit)
    local e = json.decode(stored)
    edit(e)
    fake:call("SET", key, require("cjson").encode(e))
    reset_stats()
    local n = calls.n
    local res = assert(cc:rerank(r, args()))
    eq(res.meta.cache_hit, false, name .. ": a miss")
    eq(calls.n, n + 1, name .. ": answered by the provider")
    eq(cache.stats.errors, 1, name .. ": counted as an error")
    -- overwritten: the next one is a hit again
    local again = assert(cc:rerank(r, args()))
    eq(again.meta.cache_hit, true, name .. ": overwritten with a good entry")
  end
  bad("index 99", function(e) e.results[1].index = 99 end)
  bad("index -5", function(e) e.results[1].index = -5 end)
  bad("index 1.5", function(e) e.results[1].index = 1.5 end)
  bad("a repeated index", function(e) e.results[2].index = e.results[1].index end)
  bad("a score that is a string", function(e) e.results[1].relevance_score = "x" end)
  bad("an id that is an object", function(e) e.id = { a = 1 } end)
  bad("billed_units lots", function(e) e.meta.billed_units = { total_tokens = "lots" } end)
  bad("billed_units not a table", function(e) e.meta.billed_units = "lots" end)
  bad("too many results", function(e)
    e.results[#e.results + 1] = { index = 0, relevance_score = 1 }
  end)
  bad("results an object", function(e) e.results = { a = { index = 0, relevance_score = 1 } } end)
  -- NaN and infinities (not JSON: written through the decoder's leniency or another program)
  for _, s in ipairs({ "1e999", "-1e999" }) do
    local text = stored:gsub('"relevance_score":[^,}]+', '"relevance_score":' .. s, 1)
    fake:call("SET", key, text)
    reset_stats()
    local res = assert(cc:rerank(r, args()))
    eq(res.meta.cache_hit, false, "score " .. s .. ": a miss")
  end
  -- a direct check of NaN and of top_n
  local res = assert(cache.decode(stored))
  res.results[1].relevance_score = 0 / 0
  eq(cache.valid(res, args()), nil, "NaN score")
  res = assert(cache.decode(stored))
  eq(cache.valid(res, args({ top_n = 1 })), nil, "more results than top_n")
  ok(cache.valid(assert(cache.decode(stored)), args()), "the good entry is valid")
  ok(#logged > 0, "reported")
  -- documents are the request's: a stored text is never served
  local e = json.decode(stored)
  e.results[1].document = { text = "INJECTED: not a document of the request" }
  fake:call("SET", key, require("cjson").encode(e))
  local hit = assert(cc:rerank(r, args()))
  eq(hit.meta.cache_hit, true, "still a hit")
  eq(hit.results[1].document.text, DOCS[hit.results[1].index + 1], "the request's text")
  ok(entry.results, "(the entry had results)")
  cache.set_logger(nil)
end)

test("cache_hit_validation_on_the_local_backend", function()
  local c = clock()
  local r, calls = setup()
  local cc = local_cache(c)
  cache.set_logger(function() end)
  local key = cc:key(r, args())
  local res = assert(native.rerank({ model = "local/bm25", query = QUERY, documents = DOCS }))
  res.results[1].index = 7
  cc.backend:set(key, cache.encode(res, c.wall_clock()), 60)
  reset_stats()
  local n = calls.n
  local a = assert(cc:rerank(r, args()))
  eq(a.meta.cache_hit, false, "a bad local entry is a miss")
  eq(calls.n, n + 1, "answered")
  eq(cache.stats.errors, 1, "counted")
  eq(assert(cc:rerank(r, args())).meta.cache_hit, true, "overwritten")
  cache.set_logger(nil)
end)

test("cache_per_request_ttl_and_s_maxage_are_capped_at_the_configured_ttl", function()
  local c = clock()
  local fake = fake_redis.new({ clock = c.clock })
  local r = setup()
  local cc = redis_cache(c, fake, { ttl = 30 })
  local caller = { ttl = 999999999, ["s-maxage"] = 999999 }
  assert(cc:rerank(r, args({ cache = caller })))
  local set = fake.calls[#fake.calls]
  eq(set[1], "SET", "stored")
  eq(set[5], 30000, "a 31-year ttl asked for: the configured 30 s")
  eq(caller.ttl, 999999999, "the caller's table is left as it was")
  assert(cc:rerank(r, args({ query = "short", cache = { ttl = 5 } })))
  eq(fake.calls[#fake.calls][5], 5000, "a shorter one is kept")
  eq(cc:capped({ ["s-maxage"] = 1e6 })["s-maxage"], 30, "s-maxage too")
end)

