-- nim.cache: the response cache (litellm_settings.cache: true, with cache_params). nim.rerank
-- goes through it when a config turns it on (nim.load_config sets nim.cache); an identical
-- request is then answered from the cache, without an upstream call.
--
--   local c = require("nim.cache").new(cfg.cache [, { clock =, wall =, backend =, redis = }])
--   c:rerank(router, args) -> res | nil, err      (what nim.rerank calls)
--
-- The key: namespace .. ":" .. the SHA-256 (nim.native.sha256) of a canonical encoding of
--   * the model: a configured group by its name (an alias counts as its group) together with
--     what its deployments would answer with and where they send it (each one's model,
--     api_base, non-secret headers, truncate, top_n, return_documents, bm25 and hybrid
--     options; never api keys) and the group's configured filters; else the model string as
--     given (a request naming no model, whose default is the environment's, is not cached);
--   * every other key of the request, sorted, except those that only say how to authenticate,
--     time or retry the call (the binding's transport and policy lists: api_key, timeouts,
--     fallbacks, retries, batching, cache). bm25 and custom_llm_provider (transport) and the
--     hybrid's models, fusion, rrf_k and weights (policy) change the answer, so they are in.
--     query, documents (texts in order), top_n, top_k, truncate, return_documents and provider
--     parameters are in as given. A request whose key material holds a function (or other
--     value with no canonical form) is not cached;
--   * where the call goes: the call's api_base, else (a model string) its provider's base
--     variable (descriptor base_env) when one is set; two upstreams never share answers;
--   * the call's headers, names lowercased, without credentials: Authorization, x-api-key,
--     api-key and any header whose name holds key, token, auth, secret or cookie are left out.
--   A value written os.environ/NAME stands in the key as the SHA-256 of what the variable holds
--   when the request is made (never its name, never the value itself): changing the variable
--   changes the key. A group whose deployments hold none is encoded once per router.
-- Decided:
--   * return_documents is in the key; a stored result's document shape ({ text }) is kept, but
--     its text is re-attached from the request on a hit.
--   * A request's own `filters` are not in the key: the cache holds the answer before them and
--     they run on every answer, hit or miss (a pipeline of functions is fine). A group's
--     configured filters (nimrank_settings.filters) run inside the router, before the cache:
--     they are part of the group's key.
--   * Only complete answers are stored: not one a fallback gave (meta.fallback), not a hybrid
--     one with a failed component.
--   * A hit answers what was stored: its id, results and meta (billed_units as billed then),
--     with meta.attempts = [] (none were made), meta.cache_hit = true and meta.cache_key (the
--     hash: no secret). Every answer while caching is on has meta.cache_hit (false on a miss).
--     The request is still checked as the call would be (misuse raises on a hit too).
--   * Per request, LiteLLM's controls: cache = { ["no-cache"] = true } (do not read),
--     ["no-store"] = true (do not write), ttl (seconds, for this answer), ["s-maxage"]
--     (seconds: an older entry is a miss), namespace (instead of the configured one; the
--     gateway refuses it: a client does not choose where answers are written),
--     ["use-cache"] = true (needed when cache_params.mode is default_off). ttl and s-maxage
--     are capped at the configured ttl: a request may keep an answer shorter, never longer.
--   * A hit is checked against its request before it is answered (M.valid): results a list of
--     at most min(top_n, #documents), each index an integer in [0, #documents) given once,
--     scores finite numbers, the id a string or none, meta.billed_units integers. Anything
--     else is a miss, counted in M.stats.errors, and the fresh answer overwrites it. A
--     returned document's text is taken from the request, never from the entry.
-- Failure of the cache never fails a request: a backend error is a miss (and nothing is
-- stored), counted in M.stats.errors; the backend then rests for RETRY_AFTER seconds (requests
-- meanwhile are answered uncached at once, without waiting on a server that is down), and is
-- tried again by the next request. The degradation is logged at most once a minute, the
-- recovery once it answers again.
local nim = require "nim"
local cjson = require "cjson"
local filters = require "nim.filters"
local config = require "nim.config"

local native = nim.native
local M = {}
local Cache = {}
Cache.__index = Cache

M.DEFAULT_TTL = 600                     -- seconds, as LiteLLM's in-memory cache
-- The local cache's bound, per worker. Its entries live in the worker's Lua heap, and a heap of
-- thousands of ~3 KB strings makes the collector's and malloc's pauses longer: on a 2-core VM
-- the slowest request in a thousand took ~12 ms with 16 MiB held, ~15-50 ms with 64 MiB,
-- against 0.4 ms with none (bench notes in the README). A larger cache belongs in Redis.
M.DEFAULT_MAX_BYTES = 16 * 1024 * 1024
M.DEFAULT_NAMESPACE = "nimrank:cache"
local RETRY_AFTER = 1                   -- seconds a failed backend rests
local LOG_EVERY = 60                    -- seconds between two reports of one kind
local FORMAT = 2                        -- of the stored entries (and of the key material)
local MAX_DEPTH = 32

-- Counted per lua_State (one gateway worker), over every cache it has had (a reload makes a new
-- one): the gateway's /metrics adds up the workers.
M.stats = { hits = 0, misses = 0, errors = 0 }

-- log(level, event, message): where the reports go; the gateway sends them to its log.
local function stderr_log(level, event, message)
  io.stderr:write(("nim.cache: %s: %s: %s\n"):format(level, event, message))
end
M.log = stderr_log
function M.set_logger(fn) M.log = fn or stderr_log end

-- ---- per-request controls ------------------------------------------------------------------

local CONTROLS = { ["no-cache"] = "boolean", ["no-store"] = "boolean", ["use-cache"] = "boolean",
  ttl = "seconds", ["s-maxage"] = "age", ["s-max-age"] = "age", namespace = "string" }
local CONTROL_NAMES = "no-cache, no-store, ttl, s-maxage, namespace, use-cache"

local function misuse(field, msg) native.misuse("nim.rerank", field, msg) end

-- control(args) -> args.cache checked (LiteLLM's spelling), or nil. Raises misuse naming the
-- field.
function M.control(args)
  local c = args.cache
  if c == nil then return nil end
  if type(c) ~= "table" or (next(c) ~= nil and c[1] ~= nil) then
    misuse("cache", ("expected a table of cache controls (%s), got %s"):format(CONTROL_NAMES,
      type(c)))
  end
  for k, v in pairs(c) do
    local kind = CONTROLS[k]
    local field = "cache." .. tostring(k)
    if not kind then
      misuse(field, ("unknown cache control (known: %s)"):format(CONTROL_NAMES))
    elseif kind == "boolean" and type(v) ~= "boolean" then
      misuse(field, "expected a boolean")
    elseif (kind == "seconds" or kind == "age") and (type(v) ~= "number" or v ~= v
      or v >= 1e9 or v < 0 or (kind == "seconds" and v == 0)) then
      misuse(field, kind == "seconds" and "expected a number of seconds above 0"
        or "expected a number of seconds >= 0")
    elseif kind == "string" and (type(v) ~= "string" or v == "" or #v > 256) then
      misuse(field, "expected a non-empty string of at most 256 bytes")
    end
  end
  return c
end

-- ---- the key -------------------------------------------------------------------------------

-- Keys of a request that say how to reach or retry the provider, not what it answers.
local NOT_IN_KEY = { model = true } -- (the model has a part of its own)
for _, list in ipairs({ native.keys.transport, native.keys.policy }) do
  for _, k in ipairs(list) do NOT_IN_KEY[k] = true end
end
for _, k in ipairs({ "bm25", "custom_llm_provider", "models", "fusion", "rrf_k", "weights" }) do
  NOT_IN_KEY[k] = nil
end
-- A deployment's parameters that shape its answers (what the router passes as call defaults,
-- and a hybrid's options).
local DEPLOYMENT_KEYS = { "model", "truncate", "top_n", "return_documents", "bm25", "models",
  "fusion", "rrf_k", "weights", "api_base" }

-- Headers never in the key (credentials): their names, lowercased, and the words a credential
-- header's name holds.
local SECRET_HEADERS = { authorization = true, ["x-api-key"] = true, ["api-key"] = true }
local SECRET_WORDS = { "key", "token", "auth", "secret", "cookie" }

local function secret_header(name)
  name = name:lower()
  if SECRET_HEADERS[name] then return true end
  for _, w in ipairs(SECRET_WORDS) do
    if name:find(w, 1, true) then return true end
  end
  return false
end
M.secret_header = secret_header -- the gateway's log keeps such values out too (nim.proxy)

-- A value as the call would use it: a deferred os.environ/NAME is read now and stands in the
-- key as the SHA-256 of its value (never the name: changing the variable changes the answer;
-- never the value itself), or "unset".
local function resolved(v)
  if not config.env_name(v) then return v, false end
  local value = config.env_value(v)
  return value and ("env:" .. native.sha256(value)) or "env-unset", true
end

-- headers -> the non-secret ones (names lowercased), resolved; nil when none. false when they
-- cannot be read (not a table of strings).
local function public_headers(h)
  if h == nil then return nil, false end
  if type(h) ~= "table" then return false, false end
  local out, dynamic = {}, false
  for k, v in pairs(h) do
    if type(k) ~= "string" then return false, false end
    if not secret_header(k) then
      local r, d = resolved(v)
      out[k:lower()] = r
      dynamic = dynamic or d
    end
  end
  if next(out) == nil then return nil, false end
  return out, dynamic
end

-- The provider's base URL from its environment variables, for a model string reaching it with
-- no api_base of its own (the descriptor's base_env, first set wins); nil when none is set.
local base_envs = {}
local function provider_base(model)
  if type(model) ~= "string" then return nil end
  local prefix = model:match("^([^/]+)/")
  if not prefix then return nil end
  local names = base_envs[prefix]
  if names == nil then
    local ok, desc = pcall(require("nim.providers").get, prefix)
    names = ok and type(desc) == "table" and type(desc.base_env) == "table" and desc.base_env
      or false
    base_envs[prefix] = names
  end
  for _, name in ipairs(names or {}) do
    local v = os.getenv(name)
    if v and v ~= "" then return v end
  end
  return nil
end

local function key_before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "boolean" then return (a and 1 or 0) < (b and 1 or 0) end
  return a < b
end

-- Appends v's canonical encoding to out; false when v has none (a function, a userdata, a
-- cycle, a table key). Strings are length-prefixed and never copied; numbers with an integer
-- value are written as integers (JSON gives 3.0 for 3).
local function put(v, out, depth)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = "s" .. #v .. ":"
    out[#out + 1] = v
  elseif t == "number" then
    local i = math.tointeger(v)
    if i then
      out[#out + 1] = "i" .. i .. ";"
    elseif v ~= v then
      return false
    else
      out[#out + 1] = ("d%.17g;"):format(v)
    end
  elseif t == "boolean" then
    out[#out + 1] = v and "T" or "F"
  elseif v == cjson.null then
    out[#out + 1] = "N"
  elseif t == "table" then
    if depth > MAX_DEPTH then return false end
    local n, count = #v, 0
    for _ in next, v do count = count + 1 end
    if count == n then
      local k = #out + 1
      out[k] = "[" .. n .. ";"
      for i = 1, n do
        local x = rawget(v, i)
        if type(x) == "string" then -- a document, mostly: the common case, inline
          out[k + 1], out[k + 2] = "s" .. #x .. ":", x
          k = k + 2
        else
          if not put(x, out, depth + 1) then return false end
          k = #out
        end
      end
    else
      local keys = {}
      for k in next, v do
        local tk = type(k)
        if tk ~= "string" and tk ~= "number" and tk ~= "boolean" then return false end
        keys[#keys + 1] = k
      end
      table.sort(keys, key_before)
      out[#out + 1] = "{" .. count .. ";"
      for _, k in ipairs(keys) do
        if not (put(k, out, depth + 1) and put(rawget(v, k), out, depth + 1)) then
          return false
        end
      end
    end
  else
    return false
  end
  return true
end

local function encoded(v)
  local out = {}
  if not put(v, out, 0) then return nil end
  return table.concat(out)
end

-- A group's part of the key, made once per router (a reload makes a new router): its name, what
-- its deployments answer with (sorted: their order in the file does not matter) and its
-- configured filters. false when it has no canonical form (a filter that is a function).
local group_parts = setmetatable({}, { __mode = "k" })

local function group_part(router, g)
  local parts = group_parts[router]
  if not parts then
    parts = {}
    group_parts[router] = parts
  end
  local part = parts[g.name]
  if part ~= nil then return part end
  local deployments, dynamic = {}, false
  part = false
  for i, d in ipairs(g.deployments) do
    local p = {}
    for _, k in ipairs(DEPLOYMENT_KEYS) do
      local v = d.params[k]
      if v ~= nil then
        local r, dyn = resolved(v) -- an os.environ/ value: what it holds now, hashed
        p[k], dynamic = r, dynamic or dyn
      end
    end
    if p.api_base == nil and type(p.model) == "string" then p.api_base = provider_base(p.model) end
    local h, dyn = public_headers(d.params.headers)
    if h == false then break end
    p.headers, dynamic = h, dynamic or dyn
    deployments[i] = encoded(p)
    if not deployments[i] then break end
  end
  if #deployments == #g.deployments then
    table.sort(deployments)
    local f = encoded(router.group_filters and router.group_filters[g.name] or false)
    if f then part = encoded({ group = g.name, deployments = deployments, filters = f }) end
  end
  -- a part holding an os.environ/ value is made again per request (a provider's base variable,
  -- read once per router, changes with the process's environment: at a restart)
  if not dynamic then parts[g.name] = part end
  return part
end

-- key(router, args [, namespace]) -> the full key (namespace:hash), the hash; nil when the
-- request cannot be cached (no model named: the default one is the environment's, which
-- another process sharing the cache may not have).
function Cache:key(router, args, namespace)
  local name = args.model
  if type(name) ~= "string" then return nil end
  local g = router:group(name)
  local model
  if g then
    model = group_part(router, g)
    if not model then return nil end
  else
    model = encoded(name)
  end
  local rest = {}
  for k, v in next, args do
    if not NOT_IN_KEY[k] then rest[k] = v end
  end
  -- where the call goes, and its non-secret headers (never api_key)
  local base = args.api_base
  if base ~= nil then base = resolved(base) elseif not g then base = provider_base(name) end
  if base ~= nil then rest[" api_base"] = base end
  local headers = public_headers(args.headers)
  if headers == false then return nil end
  if headers then rest[" headers"] = headers end
  local out = { ("nimrank-cache-%d\n"):format(FORMAT), model }
  if not model or not put(rest, out, 0) then return nil end
  local hash = native.sha256(out)
  return (namespace or self.namespace) .. ":" .. hash, hash
end

-- ---- entries -------------------------------------------------------------------------------
-- An entry is JSON: {"v": FORMAT, "t": when stored (the wall clock), "id", "results", "meta",
-- "e": the paths of the empty lists, "p": true when the results are in the plain shape
-- nim.native.encode_results writes (no lists inside)}. cjson (Debian's 2.1.0) encodes an empty
-- table as {} and decodes [] and {} alike, as an empty table, with no array marker; nim.array
-- marks lists so an answer encodes them as []. Stored with their paths, empty lists come back
-- marked; a non-empty list is known by its t[1] (cjson gives objects string keys only). The
-- work is cjson's and encode.c's, in C; Lua walks only meta (and results of another shape).

local array_mt = nim.array_mt

local function empty_lists(v, path, out, depth)
  if depth > MAX_DEPTH then return end
  for k, x in pairs(v) do
    if type(x) == "table" then
      path[depth] = k
      if getmetatable(x) == array_mt and next(x) == nil then
        out[#out + 1] = nim.array(table.move(path, 1, depth, 1, {}))
      else
        empty_lists(x, path, out, depth + 1)
      end
      path[depth] = nil
    end
  end
end

-- encode(res, t) -> the entry's text (meta.attempts, cache_hit and cache_key are the request's,
-- not the answer's: left out).
function M.encode(res, t)
  local meta = {}
  for k, v in pairs(res.meta or {}) do meta[k] = v end
  meta.attempts, meta.cache_hit, meta.cache_key = nil, nil, nil
  local results = native.encode_results(res.results)
  local plain, empty = results ~= nil, {}
  if plain then
    if #res.results == 0 then empty[1] = { "results" } end
    empty_lists({ meta = meta }, {}, empty, 1)
  else
    results = cjson.encode(res.results)
    empty_lists({ results = res.results, meta = meta }, {}, empty, 1)
  end
  return ('{"v":%d,"t":%.17g,"p":%s,"id":%s,"results":%s,"meta":%s,"e":%s}'):format(FORMAT, t,
    tostring(plain), cjson.encode(res.id == nil and cjson.null or res.id), results,
    cjson.encode(meta), cjson.encode(empty))
end

-- Marks the lists under v; numbers with an integer value become integers again (cjson decodes
-- every number as a float: billed_units.total_tokens was an integer).
local function mark_lists(v, depth)
  if depth > MAX_DEPTH then return end
  if rawget(v, 1) ~= nil then setmetatable(v, array_mt) end
  for k, x in pairs(v) do
    if type(x) == "table" then
      mark_lists(x, depth + 1)
    elseif math.type(x) == "float" then
      v[k] = math.tointeger(x) or x
    end
  end
end

-- decode(text) -> res, t | nil, why. The shape an answer needs is checked: an entry another
-- program (or another version) wrote is a miss, never a broken answer.
function M.decode(text)
  local ok, e = pcall(cjson.decode, text)
  if not ok or type(e) ~= "table" then return nil, "not JSON" end
  if e.v ~= FORMAT then return nil, "not an entry of this version" end
  local results, meta = e.results, e.meta
  if type(e.t) ~= "number" or type(results) ~= "table" or type(meta) ~= "table"
    or type(e.e) ~= "table" then
    return nil, "not an entry"
  end
  for i = 1, #results do
    local r = results[i]
    if type(r) ~= "table" or math.type(r.index) == nil or type(r.relevance_score) ~= "number" then
      return nil, "a result without index or relevance_score"
    end
    r.index = math.tointeger(r.index) or r.index
  end
  local body = { id = e.id ~= cjson.null and e.id or nil, results = results, meta = meta }
  mark_lists(meta, 1)
  if e.p ~= true then mark_lists(results, 1) end -- plain results hold no lists
  setmetatable(results, array_mt) -- a list even when empty
  for _, path in ipairs(e.e) do
    local t = body
    for i = 1, type(path) == "table" and #path or 0 do
      if type(t) ~= "table" then break end
      local k = path[i]
      t = t[type(k) == "number" and math.tointeger(k) or k]
    end
    if type(t) == "table" and next(t) == nil then setmetatable(t, array_mt) end
  end
  return body, e.t
end

-- valid(res, args) -> true | nil, why: a stored answer checked against the request it would
-- answer (an entry edited by hand, or written by a broken program, is a miss): results a list
-- of at most min(top_n, #documents); each index an integer in [0, #documents), once; each
-- relevance_score a finite number; the id a string or nil; meta.billed_units integers. The text
-- of each returned document is the request's, not the stored one.
function M.valid(res, args)
  local docs = args.documents
  if type(docs) ~= "table" then return nil, "no documents in the request" end
  local n = #docs
  local results = res.results
  if type(results) ~= "table" then return nil, "results not a list" end
  local count = 0
  for _ in pairs(results) do count = count + 1 end
  if count ~= #results then return nil, "results not a list" end
  local most = n
  local top_n = math.tointeger(args.top_n)
  if top_n and top_n >= 0 and top_n < most then most = top_n end
  if count > most then return nil, ("%d results for at most %d"):format(count, most) end
  local seen = {}
  for i = 1, count do
    local r = results[i]
    if type(r) ~= "table" then return nil, "a result not an object" end
    local idx = r.index
    if math.type(idx) ~= "integer" or idx < 0 or idx >= n then
      return nil, "a result's index out of the request's documents"
    end
    if seen[idx] then return nil, "an index given twice" end
    seen[idx] = true
    local score = r.relevance_score
    if type(score) ~= "number" or score ~= score or score == math.huge or score == -math.huge then
      return nil, "a relevance_score not a finite number"
    end
    if r.document ~= nil then
      local d = docs[idx + 1]
      local text = type(d) == "string" and d or type(d) == "table" and d.text
      if type(text) ~= "string" then return nil, "a returned document with no text" end
      r.document = { text = text }
    end
  end
  if res.id ~= nil and type(res.id) ~= "string" then return nil, "an id not a string" end
  local bu = res.meta.billed_units
  if bu ~= nil then
    if type(bu) ~= "table" then return nil, "billed_units not an object" end
    for k, v in pairs(bu) do
      if type(k) ~= "string" or math.type(v) ~= "integer" then
        return nil, "billed_units not integers"
      end
    end
  end
  return true
end

-- ---- the cache -----------------------------------------------------------------------------

-- new(settings [, opts]) -> cache. settings: cfg.cache (nim.config): { type, mode, ttl,
-- namespace, max_bytes, redis }. opts: clock (seconds, monotonic: expiry of local entries,
-- rests, reports), wall (seconds since the epoch: when an entry was stored, for s-maxage),
-- backend (instead of the one settings.type names), redis (a module with connect, instead of
-- nim.redis), client (a connected client).
function M.new(settings, opts)
  opts = opts or {}
  local self = setmetatable({
    type = settings.type or "local",
    mode = settings.mode or "default_on",
    ttl = settings.ttl or M.DEFAULT_TTL,
    namespace = settings.namespace or M.DEFAULT_NAMESPACE,
    clock = opts.clock or nim.now,
    wall = opts.wall or os.time,
    rest_until = -math.huge, degraded = false, failures = 0, reported = {},
  }, Cache)
  if opts.backend then
    self.backend = opts.backend
  elseif self.type == "redis" then
    self.backend = require("nim.cache_redis").new({ target = settings.redis,
      redis = opts.redis, client = opts.client })
  else
    self.max_bytes = settings.max_bytes or M.DEFAULT_MAX_BYTES
    self.backend = require("nim.cache_local").new({ max_bytes = self.max_bytes,
      clock = self.clock })
  end
  return self
end

-- warnings() -> what a config's loader should say about this cache (a build without nim.redis).
function Cache:warnings()
  if self.type == "redis" and not self.backend.client and not self.backend.module
    and not pcall(require, "nim.redis") then
    return { "litellm_settings.cache_params.type: redis, but this build has no Redis client "
      .. "(nim.redis): every request is answered uncached" }
  end
  return {}
end

-- A report of one kind at most once every LOG_EVERY seconds.
function Cache:report(kind, level, message)
  local now = self.clock()
  if now < (self.reported[kind] or -math.huge) then return false end
  self.reported[kind] = now + LOG_EVERY
  pcall(M.log, level, kind, message)
  return true
end

function Cache:failed(op, err)
  M.stats.errors = M.stats.errors + 1
  self.rest_until = self.clock() + RETRY_AFTER
  self.degraded = true
  self.failures = self.failures + 1
  local n = self.failures
  if self:report("cache_degraded", "warn", ("the %s cache's %s failed (%s: %s): answering "
    .. "without the cache%s"):format(self.type, op, tostring(err.type), tostring(err.message),
    n > 1 and (" (%d failures since the last report)"):format(n) or "")) then
    self.failures = 0
  end
end

function Cache:answered()
  if not self.degraded then return end
  self.degraded, self.failures = false, 0
  self:report("cache_recovered", "info", ("the %s cache answers again"):format(self.type))
end

-- The stored answer for key, or nil (none, too old, unreadable, or the backend failed).
function Cache:lookup(key, control)
  if self.clock() < self.rest_until then return nil end
  local text, err = self.backend:get(key)
  if err then
    self:failed("get", err)
    return nil
  end
  self:answered()
  if text == nil then return nil end
  local res, t = M.decode(text)
  if not res then
    M.stats.errors = M.stats.errors + 1
    self:report("cache_bad_entry", "warn", ("an entry of the %s cache could not be read (%s): "
      .. "answered without it"):format(self.type, t))
    return nil
  end
  local max_age = control and (control["s-maxage"] or control["s-max-age"])
  if max_age and self.wall() - t > max_age then return nil end
  return res
end

function Cache:store(key, res, control)
  if self.clock() < self.rest_until then return end
  local ok, text = pcall(M.encode, res, self.wall())
  if not ok then
    M.stats.errors = M.stats.errors + 1
    self:report("cache_bad_answer", "warn", ("an answer could not be stored in the %s cache "
      .. "(%s)"):format(self.type, tostring(text)))
    return
  end
  local _, err = self.backend:set(key, text, control and control.ttl or self.ttl)
  if err then self:failed("set", err) else self:answered() end
end

-- Complete answers only: not a fallback's, not a hybrid's with a failed component.
local function storable(res)
  local meta = res.meta
  if meta.fallback ~= nil then return false end
  for _, c in ipairs(type(meta.components) == "table" and meta.components or {}) do
    if type(c) == "table" and c.ok == false then return false end
  end
  return true
end

local EMPTY = {}

-- The router's call, the cache left out (no-cache and no-store, or a request with no key).
local function uncached(router, args)
  M.stats.misses = M.stats.misses + 1
  local res, err = router:rerank(args)
  if res then res.meta.cache_hit = false end
  return res, err
end

local function check_filters(pipeline)
  filters.check(pipeline, "filters", function(field, msg) misuse(field, msg) end)
end

-- The request's own filters, run on the answer as the router runs them (after the group's).
local function apply_filters(router, args, res)
  if args.filters == nil then return res end
  filters.apply(res, args.filters, { model = args.model, query = args.query,
    group = res.meta.model_group, router = router })
  return res
end

-- capped(control) -> a copy of control whose ttl and s-maxage are at most the configured ttl
-- (a request may keep an answer shorter, never longer).
function Cache:capped(control)
  if control == nil then return nil end
  local out = {}
  for k, v in pairs(control) do out[k] = v end
  for _, k in ipairs({ "ttl", "s-maxage", "s-max-age" }) do
    if out[k] and out[k] > self.ttl then out[k] = self.ttl end
  end
  return out
end

-- rerank(router, args) -> res | nil, err: router:rerank(args), through the cache.
function Cache:rerank(router, args)
  if type(args) ~= "table" then return router:rerank(args) end -- the router names the misuse
  local control = self:capped(M.control(args)) or EMPTY
  local on = self.mode ~= "default_off" or control["use-cache"] == true
  local read, write = on and not control["no-cache"], on and not control["no-store"]
  if not (read or write) then return uncached(router, args) end
  local key, hash = self:key(router, args, control.namespace)
  if not key then return uncached(router, args) end
  if read then
    local res = self:lookup(key, control)
    local good, why = true, nil
    if res then good, why = M.valid(res, args) end
    if res and not good then -- a miss; the answer below overwrites it
      M.stats.errors = M.stats.errors + 1
      self:report("cache_bad_entry", "warn", ("an entry of the %s cache does not answer its "
        .. "request (%s): answered without it"):format(self.type, why))
      res = nil
    end
    if res then
      router:check(args) -- what the call would raise, it raises on a hit too
      M.stats.hits = M.stats.hits + 1
      local meta = res.meta
      meta.attempts, meta.cache_hit, meta.cache_key = nim.array{}, true, hash
      return apply_filters(router, args, res)
    end
  end
  M.stats.misses = M.stats.misses + 1
  local call = args
  if args.filters ~= nil then -- they run below, after the answer is stored
    check_filters(args.filters)
    call = {}
    for k, v in next, args do call[k] = v end
    call.filters = EMPTY
  end
  local res, err = router:rerank(call)
  if not res then return nil, err end
  if write and storable(res) then self:store(key, res, control) end
  res.meta.cache_hit, res.meta.cache_key = false, hash
  return apply_filters(router, args, res)
end

-- status() -> { type, degraded, bytes, entries (local), backend = the client's (redis) }
function Cache:status()
  local st = { type = self.type, degraded = self.degraded }
  if self.backend.usage then
    st.bytes, st.entries = self.backend:usage()
  elseif self.backend.status then
    st.backend = self.backend:status()
  end
  return st
end

return M
