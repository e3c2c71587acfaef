-- nim.proxy: the request handling of `nimrank serve` (src/server.c runs it; one lua_State and
-- one event loop per worker, one nim task per request). Routes, auth, body checks, the router
-- call, error mapping, metrics and the log line are here, in Lua, so they can be read and
-- extended: a script listed under nimrank_settings.scripts can add a route or a middleware:
--
--   local proxy = require "nim.proxy"
--   proxy.route("GET", "/hello", function(req) return 200, { hello = "world" } end)
--   proxy.use("tenant-header", function(req)         -- runs before every route's handler
--     if not req.headers["x-tenant"] then return proxy.error(400, "invalid_request_error",
--       "x-tenant header is required", "x-tenant") end
--   end)
--
-- A handler gets req = { method, path, headers (lower-case names), body, id, json() } and
-- returns status, body (a table, encoded as JSON, or a string) [, headers]. A middleware
-- returns nothing to go on, or a response to answer with instead.
--
-- Contract: shared/spec/LITELLM_COMPAT.md section 4. Choices where it is silent:
-- * Every error is {"error": {"message", "type", "param", "code"}}, code = the HTTP status as
--   a string. Errors of the HTTP layer have types auth_error (401), invalid_request_error
--   (400), not_found_error (404), method_not_allowed (405), request_too_large (413),
--   unsupported_media_type (415), internal_error (500), service_unavailable (503); errors of
--   the routed call keep nim's type (auth, bad_request, not_found, rate_limit, timeout,
--   connection, provider, bad_response). A deployment whose os.environ/ variable is unset is
--   the gateway's fault, not the client's: 500 internal_error, naming the variable.
-- * Statuses of the routed call: an upstream 4xx and 5xx pass through; "no deployments" is
--   429 with Retry-After; an upstream timeout is 504 (the gateway's wait ran out, not the
--   client's: 408 would tell the client to resend); a connection failure or an unreadable
--   answer is 502.
-- * A request may carry the request keys of nim.rerank (model, query, documents, top_n,
--   top_k, truncate, return_documents) and provider extras (which the call refuses, or drops
--   with drop_params, by name). Keys that steer the gateway itself (api_key, api_base,
--   timeout, headers, fallbacks, num_retries, ...) belong to config.yaml: a request that
--   sends them gets 400 naming them. `user` and `metadata` are accepted and ignored.
-- * /v2/rerank answers without documents unless the request sets return_documents (Cohere's
--   v2 has no such field and returns none); /rerank and /v1/rerank return them by default.
-- * Content-Type may be absent (read as JSON, as LiteLLM does); one that is not JSON is 415.
local nim = require "nim"
local json = require "nim.json"
local metrics = require "nim.metrics"

local native = nim.native
local encode_value = require("cjson").encode
local config_module = require "nim.config"
local M = {}

local VERSION = nim.version or "0"
local DEFAULT_MAX_MB = 10
local DEFAULT_MAX_DOCUMENTS = 100000 -- a request's share of a worker's time and memory

-- ---- settings (from the loaded config; M.setup re-reads them) -------------------------------
local settings = { master_key = nil, max_body = DEFAULT_MAX_MB * 1024 * 1024, log_level = 1,
  secrets = {} }
M.settings = settings

-- The gateway's own settings of a config (general_settings), checked.
local function check_general(general)
  local key = general.master_key
  if key ~= nil and (type(key) ~= "string" or key == "") then
    error("general_settings.master_key: must be a non-empty string", 0)
  end
  -- a header value is trimmed and may not hold control characters: no client could send it
  if key ~= nil and (key:find("%c") or key:find("^%s") or key:find("%s$")) then
    error("general_settings.master_key: must not hold control characters or begin or end "
      .. "with white space (no client could send it in a header)", 0)
  end
  if key == nil and settings.key_required then
    error("general_settings.master_key: required: the gateway listens on every address "
      .. "(it had a master key when it started, and no --host was given)", 0)
  end
  local mb = general.max_request_size_mb
  if mb ~= nil and (type(mb) ~= "number" or not (mb > 0 and mb <= 4096)) then
    error("general_settings.max_request_size_mb: must be a number of MiB above 0, at most "
      .. "4096", 0)
  end
  return key, math.floor((mb or DEFAULT_MAX_MB) * 1024 * 1024),
    general.max_documents or DEFAULT_MAX_DOCUMENTS
end

-- The secrets no log line may hold: the master key; every deployment's api_key and the
-- values of its credential headers (nim.cache's rule for which headers those are), each as
-- read now (an os.environ/ one too); and the key variables of every provider, which a
-- deployment without api_key uses. A "Bearer <token>" value gives its token as well. One
-- shorter than 4 bytes is left, as the binding leaves secrets that short (they would match
-- everywhere); the master key never is.
local function secrets_of(cfg, master_key)
  local list, seen = {}, {}
  local function add(v)
    if type(v) ~= "string" or #v < 4 or seen[v] then return end
    seen[v] = true
    list[#list + 1] = v
    local token = v:match("^%a+%s+(%S+)$")
    if token then add(token) end
  end
  if master_key then list[1], seen[master_key] = master_key, true end
  local providers = require "nim.providers"
  for _, name in ipairs(providers.list()) do
    for _, var in ipairs(providers.get(name).key_env or {}) do add(os.getenv(var)) end
  end
  local secret_header = require("nim.cache").secret_header
  for _, d in ipairs(cfg and cfg.deployments or {}) do
    local params = d.params or {}
    add((config_module.env_value(params.api_key, "api_key")))
    if type(params.headers) == "table" then
      for name, v in pairs(params.headers) do
        if type(name) == "string" and secret_header(name) then
          add((config_module.env_value(v, name)))
        end
      end
    end
  end
  return list
end

-- setup(config_path [, reload]) -> info: what the gateway needs of nim.config, checked. With
-- reload the file is read again: checked whole first (nim.config.load, and the gateway's own
-- settings), then loaded; a bad file raises and changes nothing.
function M.setup(path, reload)
  local key, max_body, max_docs
  if reload and path and path ~= "" then
    local cfg = require("nim.config").load(path)
    key, max_body, max_docs = check_general(cfg.general)
    nim.load_config(path)
  else
    key, max_body, max_docs = check_general(nim.config and nim.config.general or {})
  end
  settings.master_key, settings.max_body, settings.max_documents = key, max_body, max_docs
  settings.secrets = secrets_of(nim.config, key)
  local groups, deployments = #nim.router:group_names(), 0
  for _ in pairs(nim.router.state) do deployments = deployments + 1 end
  return {
    master_key = key ~= nil,
    max_body = settings.max_body,
    summary = ("%d model name%s (groups and aliases), %d deployment%s, master key %s"):format(
      groups, groups == 1 and "" or "s", deployments, deployments == 1 and "" or "s",
      key and "set" or "not set"),
  }
end

-- ---- responses ------------------------------------------------------------------------------
-- error(status, type, message [, param] [, headers]) -> a response for a handler to return.
function M.error(status, etype, message, param, headers)
  return status, { error = { message = message, type = etype, param = param or json.null,
    code = tostring(status) } }, headers
end
local fail = M.error

-- ---- routes and middleware ------------------------------------------------------------------
local routes = {}      -- path -> { methods = { METHOD = handler }, open = bool }
local middleware = {}  -- { {name, fn}, ... } in the order added
M.routes = routes

-- Routes and middleware added once this module has loaded are the user's (a script's): from
-- then on every request runs on the instruction budget (see guarded).
local builtins_loaded, user_routes = false, false

-- route(method, path, handler [, opts]): opts.open = true skips the master key check.
function M.route(method, path, handler, opts)
  assert(type(method) == "string" and type(path) == "string" and type(handler) == "function",
    "proxy.route(method, path, handler [, opts])")
  user_routes = user_routes or builtins_loaded
  local r = routes[path] or { methods = {} }
  r.methods[method:upper()] = handler
  if opts and opts.open ~= nil then r.open = opts.open end
  routes[path] = r
end

-- use(name, fn): adds (or, by the same name, replaces: a reload runs scripts again) a
-- middleware.
function M.use(name, fn)
  assert(type(name) == "string" and type(fn) == "function", "proxy.use(name, fn)")
  user_routes = true
  for _, m in ipairs(middleware) do
    if m[1] == name then
      m[2] = fn
      return
    end
  end
  middleware[#middleware + 1] = { name, fn }
end

-- ---- metrics --------------------------------------------------------------------------------
local registry = metrics.new()
local LATENCY = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
  10, 30, 60 }
registry:counter("nimrank_requests_total", "Requests answered, by route, model group and "
  .. "HTTP status.")
registry:histogram("nimrank_request_duration_seconds", "Time from a request's first line to "
  .. "its answer.", LATENCY)
registry:histogram("nimrank_upstream_duration_seconds", "Time spent in upstream calls "
  .. "(all attempts) per request.", LATENCY)
registry:histogram("nimrank_gateway_duration_seconds", "The gateway's own time per request "
  .. "(total minus upstream).", LATENCY)
registry:counter("nimrank_upstream_errors_total", "Failed upstream attempts, by model group "
  .. "and error type.")
registry:counter("nimrank_retries_total", "Attempts beyond the first, by model group.")
registry:counter("nimrank_fallbacks_total", "Requests answered by a fallback, by model group "
  .. "and fallback.")
registry:gauge("nimrank_requests_in_flight", "Requests received and not yet answered.")
registry:gauge("nimrank_cooldowns_active", "Deployments cooling down, as each worker last "
  .. "saw them (summed over workers; with Redis they share one state, so each counts it).")
registry:gauge("nimrank_redis_up", "Workers whose router state reaches Redis (use=router_state; "
  .. "0 while they fall back to local state). Present when Redis is configured.")
registry:counter("nimrank_redis_degradations_total", "Times a worker's router state fell back "
  .. "to local state because Redis could not be reached (use=router_state).")
-- The response cache (nim.cache), while a config turns it on; counted per worker, added up.
registry:counter("nimrank_cache_hits_total", "Rerank requests answered from the response cache.")
registry:counter("nimrank_cache_misses_total", "Rerank requests the response cache did not "
  .. "answer (caching on).")
registry:counter("nimrank_cache_errors_total", "Failed operations of the response cache (each "
  .. "a miss, or an answer not stored).")
registry:gauge("nimrank_cache_degraded", "Workers whose cache backend is failing (requests are "
  .. "answered without the cache).")
registry:gauge("nimrank_cache_bytes", "Bytes held by the local response cache (summed over "
  .. "workers: each keeps its own).")
registry:gauge("nimrank_cache_entries", "Entries in the local response cache (summed over "
  .. "workers).")
local dirty = true

-- Series keys, made once per combination of label values (metrics.label_text sorts and
-- escapes: not a thing to do for every request). names: a constant list of at most three, one
-- per use site; a, b, c: the values, in its order.
local key_cache = setmetatable({}, { __mode = "k" })
local function child(node, v)
  local nxt = node[v]
  if not nxt then
    nxt = {}
    node[v] = nxt
  end
  return nxt
end
local function key_of(names, a, b, c)
  local node = key_cache[names]
  if not node then
    node = {}
    key_cache[names] = node
  end
  local n, last = #names, a
  if n > 1 then node, last = child(node, a), b end
  if n > 2 then node, last = child(node, b), c end
  local key = node[last]
  if not key then
    local labels, values = {}, { a, b, c }
    for i, name in ipairs(names) do labels[name] = values[i] end
    key = metrics.label_text(labels)
    node[last] = key
  end
  return key
end
local BY_REQUEST, BY_ROUTE, BY_MODEL = { "model", "route", "status" }, { "route" }, { "model" }
local BY_ERROR, BY_FALLBACK = { "model", "type" }, { "fallback", "model" }

-- ---- the rerank route -----------------------------------------------------------------------
local REQUEST_KEYS, REFUSED = {}, {}
for _, k in ipairs(native.keys.request) do REQUEST_KEYS[k] = true end
for _, list in ipairs({ native.keys.transport, native.keys.policy }) do
  for _, k in ipairs(list) do REFUSED[k] = true end
end
local IGNORED = { user = true, metadata = true }
local MAX_MODEL_NAME = 256
REFUSED.user, REFUSED.metadata = nil, nil
REFUSED.cache = nil -- LiteLLM's per-request cache controls: nim.rerank reads them (nim.cache);
-- but not cache.namespace (refused below)

-- Is this Content-Type JSON: application/json or application/*+json, with parameters or none?
-- Two values (server.c joins a repeated header with ", ") are not; a quoted parameter value
-- may hold anything.
local TOKEN = "[%w!#$%%&'*+.^_`|~%-]+"
local function json_media(ctype)
  local plain = ctype:gsub('"[^"]*"', '""')
  if plain:find(",", 1, true) then return false end
  local media, rest = plain:match("^%s*(" .. TOKEN .. "/" .. TOKEN .. ")%s*(.*)$")
  if not media or (rest ~= "" and rest:sub(1, 1) ~= ";") then return false end
  media = media:lower()
  return media == "application/json" or media:match("^application/" .. TOKEN .. "%+json$") ~= nil
end

-- The body as a JSON object, or an error response.
local function json_body(req)
  local ctype = req.headers["content-type"]
  if ctype and not json_media(ctype) then
    -- named by its media type only: a header's bytes are not echoed into answers
    local media = ctype:match("^%s*([%w!#$&^_.+%-]+/[%w!#$&^_.+%-]+)")
    return nil, { fail(415, "unsupported_media_type", ("Content-Type %s is not JSON: send "
      .. "application/json"):format(media and media:sub(1, 80) or "(not a media type)"),
      "Content-Type") }
  end
  local body = req.body or ""
  if body == "" then
    return nil, { fail(400, "invalid_request_error", "the request has no body: expected a "
      .. "JSON object") }
  end
  local bad_at = native.utf8_error(body)
  if bad_at then
    return nil, { fail(400, "invalid_request_error", ("the body is not valid UTF-8 (byte %d)")
      :format(bad_at)) }
  end
  local ok, v = pcall(json.decode, body)
  if not ok then
    local why = tostring(v):gsub("^.-: ", "")
    return nil, { fail(400, "invalid_request_error", "the body is not valid JSON: " .. why) }
  end
  -- (an empty list decodes as an empty table, as {} does: the text tells them apart)
  if type(v) ~= "table" or body:find("^%s*%[") or (next(v) ~= nil and v[1] ~= nil) then
    return nil, { fail(400, "invalid_request_error", "the body must be a JSON object") }
  end
  return v
end
M.json_body = json_body

-- Statuses for the routed call's errors (the choices in the header).
local PASS = { auth = true, bad_request = true, not_found = true, rate_limit = true,
  provider = true }
local FALLBACK_STATUS = { auth = 401, bad_request = 400, not_found = 404, rate_limit = 429,
  timeout = 504, connection = 502, provider = 502, bad_response = 502, cancelled = 499 }

local function call_error(err)
  if err.deployment == true then -- a deployment's os.environ/ variable is unset: ours to fix
    return fail(500, "internal_error", "the gateway's config: " .. tostring(err.message))
  end
  local s = err.status
  local status = (PASS[err.type] and math.type(s) == "integer" and s >= 400 and s <= 599) and s
    or FALLBACK_STATUS[err.type] or 502
  local headers
  if status == 429 or status == 503 then
    local ra = tonumber(err.retry_after)
    if ra and ra >= 0 then headers = { ["Retry-After"] = tostring(math.ceil(ra)) } end
  end
  return fail(status, err.type or "provider", tostring(err.message or err), err.field,
    headers)
end

-- The answer's meta: billed units, the version, cache_hit when the cache answered or missed,
-- warnings when there are any.
local function meta_table(billed, hit, warnings)
  return { billed_units = billed, api_version = { version = "1" }, cache_hit = hit,
    warnings = warnings }
end

-- The answer's meta as JSON: its usual shape (billed tokens, the version, maybe cache_hit)
-- written here as nim.json would write it, with no table made; any other (a filter's change,
-- warnings) by nim.json.
local META_HEAD = '{"api_version":{"version":"1"},"billed_units":{"total_tokens":'
local function meta_json(billed, hit, warnings)
  local tokens = type(billed) == "table" and getmetatable(billed) == nil and billed.total_tokens
  if warnings == nil and math.type(tokens) == "integer" and next(billed, next(billed)) == nil
    and (hit == nil or type(hit) == "boolean") then
    return META_HEAD .. tokens .. (hit == nil and "}}" or hit and '},"cache_hit":true}'
      or '},"cache_hit":false}')
  end
  return json.encode(meta_table(billed, hit, warnings))
end

-- A field as a JSON client counts: nim.rerank names a document by its Lua index (from 1),
-- the client's list starts at 0.
local function json_field(field)
  if type(field) ~= "string" then return field end
  return (field:gsub("^documents%[(%d+)%]", function(i)
    return ("documents[%d]"):format(tonumber(i) - 1)
  end))
end

local function rerank_route(req, ctx)
  local body, bad = json_body(req)
  if not body then return table.unpack(bad) end
  local args, refused = {}, nil
  local null = json.null
  for k, v in pairs(body) do
    if type(k) ~= "string" then
      return fail(400, "invalid_request_error", "the body must be a JSON object")
    end
    if v == null or IGNORED[k] then -- a null counts as absent
    elseif REFUSED[k] then
      refused = refused or {}
      refused[#refused + 1] = k
    else
      args[k] = v
    end
  end
  if refused then
    table.sort(refused)
    return fail(400, "invalid_request_error", ("%s: set by the gateway's config, not by a "
      .. "request"):format(table.concat(refused, ", ")), refused[1])
  end
  -- A client does not choose where its answer is written (another app's namespace); its ttl
  -- and s-maxage are capped at the configured ttl by nim.cache.
  if type(args.cache) == "table" and args.cache.namespace ~= nil then
    return fail(400, "invalid_request_error", "cache.namespace: set by the gateway's config "
      .. "(litellm_settings.cache_params.namespace), not by a request", "cache.namespace")
  end
  if type(args.model) ~= "string" or args.model == "" then
    return fail(400, "invalid_request_error", args.model == nil and "model: required"
      or "model: must be a non-empty string", "model")
  end
  if #args.model > MAX_MODEL_NAME then -- logs and messages show it: its length is bounded
    return fail(400, "invalid_request_error", ("model: longer than %d bytes"):format(
      MAX_MODEL_NAME), "model")
  end
  ctx.model = args.model
  -- With a config, a request names one of its models (LiteLLM's proxy does the same): a
  -- provider model string would spend the gateway's keys on models nobody configured.
  if nim.router.configured and not nim.router:group(args.model) then
    return fail(404, "not_found", ("model %q is not a model name of this gateway "
      .. "(configured: %s)"):format(args.model, table.concat(nim.router:group_names(), ", ")),
      "model")
  end
  -- nothing to rank is a bad request here (nim.rerank answers it with no results); an object
  -- decodes as a table too, so this is also where {"documents": {...}} is refused
  local docs = args.documents
  if type(docs) == "table" and #docs == 0 then
    return fail(400, "invalid_request_error", "documents: must be a non-empty list",
      "documents")
  end
  if type(docs) == "table" and #docs > settings.max_documents then
    return fail(400, "invalid_request_error", ("documents: %d of them, more than "
      .. "general_settings.max_documents (%d)"):format(#docs, settings.max_documents),
      "documents")
  end
  -- Cohere's v2 answers carry no documents (its SDK has no field for them) unless asked
  if req.path == "/v2/rerank" and args.return_documents == nil then
    args.return_documents = false
  end
  local t0 = nim.now()
  local ok, res, err = native.protect(nim.rerank, args)
  ctx.call_s = nim.now() - t0
  if not ok then -- misuse: the call names the field
    local m = res
    local field = json_field(m.field)
    return fail(400, "invalid_request_error", field and ("%s: %s"):format(field, m.message)
      or m.message, field)
  end
  local meta = res and res.meta or err
  ctx.attempts = meta and meta.attempts
  ctx.group = meta and meta.model_group
  -- an error's `deployment` is a flag (the error belongs to one): its attempts name the id
  local last = type(ctx.attempts) == "table" and ctx.attempts[#ctx.attempts]
  ctx.deployment = res and res.meta.deployment or (last and last.deployment) or nil
  ctx.fallback = meta and meta.fallback
  if not res then
    ctx.error_type = err.type
    return call_error(err)
  end
  local rmeta = res.meta
  local billed, hit, warnings = rmeta.billed_units, rmeta.cache_hit, rmeta.warnings
  if hit ~= nil then ctx.cache = hit and "hit" or "miss" end
  if not warnings or #warnings == 0 then warnings = nil end
  -- the answer (mostly documents) written by C in one piece; any shape it does not know goes
  -- to cjson
  local id = res.id
  local text = native.encode_results(res.results, '{"id":' .. encode_value(id) .. ',"results":',
    ',"meta":' .. meta_json(billed, hit, warnings) .. "}")
  if not text then
    return 200, { id = id, results = res.results, meta = meta_table(billed, hit, warnings) }
  end
  return 200, text
end

for _, path in ipairs({ "/rerank", "/v1/rerank", "/v2/rerank" }) do
  M.route("POST", path, rerank_route)
end

-- ---- the other routes -----------------------------------------------------------------------
local server -- the C side (server.c), given to start_worker
local log_line

M.route("GET", "/health/liveliness", function() return 200, { status = "I'm alive!" } end,
  { open = true })
M.route("GET", "/health/liveness", function() return 200, { status = "I'm alive!" } end,
  { open = true })
-- The router's state store's health (nim.state): "local", "redis" or "degraded" (Redis
-- configured, not reachable: local state in use). A router a script made without one is local.
local function router_state()
  local store = nim.router and nim.router.store
  if type(store) ~= "table" or type(store.health) ~= "function" then return { state = "local" } end
  local ok, h = pcall(store.health, store)
  if not ok or type(h) ~= "table" then return { state = "local" } end
  return h
end
M.router_state = router_state

-- The response cache's state (nim.cache, while a config turns it on): its type ("local",
-- "redis"), or "degraded" while its backend fails (this worker's last operation on it failed:
-- requests are answered uncached, as the nimrank_cache_degraded gauge counts). nil when off.
local function cache_state()
  local c = nim.cache
  if type(c) ~= "table" or type(c.status) ~= "function" then return nil end
  local ok, st = pcall(c.status, c)
  if not ok or type(st) ~= "table" then return "degraded" end
  return st.degraded and "degraded" or tostring(st.type)
end

-- Readiness stays 200 while Redis is away: every request is still served (on local state,
-- uncached).
M.route("GET", "/health/readiness", function()
  if server and server.draining() then
    return fail(503, "service_unavailable", "draining: this worker is shutting down")
  end
  -- (the states only: this route is open, and why Redis is away is for the log)
  return 200, { status = "healthy", nimrank_version = VERSION, router_state = router_state().state,
    cache = cache_state() }
end, { open = true })

local function models_route()
  local data = {}
  for i, name in ipairs(nim.router:group_names()) do
    data[i] = { id = name, object = "model", created = 0, owned_by = "nimrank" }
  end
  return 200, { object = "list", data = json.array(data) }
end
M.route("GET", "/v1/models", models_route)
M.route("GET", "/models", models_route)

local function cooldowns_active()
  local r, n, now = nim.router, 0, nim.now()
  for _, st in pairs(r.state or {}) do
    if st.cooldown_until and st.cooldown_until > now then n = n + 1 end
  end
  return n
end

-- The cache's figures, once caching has been on in this worker (a reload may turn it off: its
-- counters stay in the sums).
local function cache_figures()
  local loaded = package.loaded["nim.cache"]
  if not loaded then return end
  local st = loaded.stats
  if not nim.cache and st.hits + st.misses + st.errors == 0 then return end
  registry:set("nimrank_cache_hits_total", nil, st.hits)
  registry:set("nimrank_cache_misses_total", nil, st.misses)
  registry:set("nimrank_cache_errors_total", nil, st.errors)
  local status = nim.cache and nim.cache:status() or {}
  registry:set("nimrank_cache_degraded", nil, status.degraded and 1 or 0)
  if status.bytes then
    registry:set("nimrank_cache_bytes", nil, status.bytes)
    registry:set("nimrank_cache_entries", nil, status.entries)
  end
end

local ROUTER_STATE = { use = "router_state" }
local function render_own()
  registry:set("nimrank_requests_in_flight", nil, server and server.stats().inflight or 0)
  registry:set("nimrank_cooldowns_active", nil, cooldowns_active())
  cache_figures()
  local rs = router_state()
  if rs.state ~= "local" then -- Redis is configured
    registry:set("nimrank_redis_up", ROUTER_STATE, rs.state == "redis" and 1 or 0)
    registry:set("nimrank_redis_degradations_total", ROUTER_STATE, rs.degradations or 0)
  end
  return registry:render()
end

M.route("GET", "/metrics", function()
  local texts = { render_own() }
  for _, t in ipairs(server and server.peers() or {}) do texts[#texts + 1] = t end
  return 200, metrics.merge(texts), { ["Content-Type"] = "text/plain; version=0.0.4" }
end)

-- ---- auth -----------------------------------------------------------------------------------
local function presented_key(headers)
  local auth = headers["authorization"]
  if auth then
    local token = auth:match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(.-)%s*$") -- the scheme: any case
    if token then return token end
  end
  return headers["x-api-key"]
end

local function authorized(req)
  local key = settings.master_key
  if not key then return true end
  local given = presented_key(req.headers)
  return given ~= nil and server.same_secret(given, key)
end

-- ---- one request ----------------------------------------------------------------------------
-- What a client sent, as logs show it: a secret of the gateway's (settings.secrets), sent
-- where it does not belong (a model name, a request id, an error a script raised), never
-- reaches a log line.
local function scrub(s)
  if type(s) ~= "string" then return s end
  for _, secret in ipairs(settings.secrets) do
    if s:find(secret, 1, true) then s = s:gsub(secret:gsub("%W", "%%%0"), "[redacted]") end
  end
  return s
end

local function request_id(headers)
  local id = headers["x-request-id"]
  if id and #id <= 128 and id:match("^[%w%-_.:/=+]+$") and scrub(id) == id then return id end
  return nil
end

-- What a request's head decides (route, method, key): an error response, or nothing.
local function gate(req, ctx)
  if req.bad_head then -- what server.c refused in the head, before anything else
    return fail(400, "invalid_request_error", "the request's head: " .. req.bad_head)
  end
  local route = routes[req.path]
  if not route then
    -- the path is shown when it is text (an answer must be valid UTF-8), and cut
    local shown = native.utf8_error(req.path) and "(a path that is not UTF-8)"
      or req.path:sub(1, 200)
    return fail(404, "not_found_error", ("no route %s %s"):format(req.method, shown))
  end
  ctx.route = req.path
  -- HEAD is GET without the body (RFC 9110; libmicrohttpd leaves the body out)
  local handler = route.methods[req.method] or (req.method == "HEAD" and route.methods.GET)
  if not handler then
    local allowed = {}
    for m in pairs(route.methods) do allowed[#allowed + 1] = m end
    if route.methods.GET and not route.methods.HEAD then allowed[#allowed + 1] = "HEAD" end
    table.sort(allowed)
    return fail(405, "method_not_allowed", ("%s %s: use %s"):format(req.method:sub(1, 32),
      req.path, table.concat(allowed, " or ")), nil, { Allow = table.concat(allowed, ", ") })
  end
  if not route.open and not authorized(req) then
    return fail(401, "auth_error", "missing or wrong key: send 'Authorization: Bearer <key>' "
      .. "or 'x-api-key: <key>' with general_settings.master_key")
  end
  ctx.handler = handler
end

local function handle(req, ctx)
  local status, body, headers = gate(req, ctx)
  if status then return status, body, headers end
  if req.too_large then
    return fail(413, "request_too_large", ("the body is larger than %d bytes "
      .. "(general_settings.max_request_size_mb)"):format(settings.max_body))
  end
  for _, m in ipairs(middleware) do
    local status, body, headers = m[2](req, ctx)
    if status ~= nil then return status, body, headers end
  end
  return ctx.handler(req, ctx)
end

local LEVEL = { debug = 0, info = 1, warn = 2, error = 3 }

local function ms(s) return math.floor(s * 1e6 + 0.5) / 1e3 end

local function upstream_seconds(ctx)
  local a = ctx.attempts
  if type(a) ~= "table" or #a == 0 then return ctx.call_s or 0 end
  local sum = 0
  for _, at in ipairs(a) do sum = sum + (at.latency_ms or 0) / 1000 end
  return sum
end

-- A log line: one JSON object, its keys in this order (time first, as people read logs).
local LOG_KEYS = { "time", "level", "pid", "event", "request_id", "method", "route", "model",
  "model_group", "deployment", "status", "total_ms", "upstream_ms", "own_ms", "attempts",
  "cache", "fallback", "error", "message", "remote" }
log_line = function(fields)
  if (LEVEL[fields.level] or LEVEL.info) < settings.log_level then return end
  fields.pid = server.pid
  fields.message = scrub(fields.message)
  if type(fields.message) == "string" and #fields.message > 3000 then -- a line stays whole
    fields.message = fields.message:sub(1, 3000) .. "..."
  end
  local parts = {}
  for _, k in ipairs(LOG_KEYS) do
    local v = fields[k]
    if v ~= nil then parts[#parts + 1] = ('"%s":%s'):format(k, json.encode(v)) end
  end
  server.log("{" .. table.concat(parts, ",") .. "}")
end

-- cjson's, without its "\/"; a string with nothing to escape (cjson escapes control bytes,
-- DEL, quotes and backslashes) is quoted as it is. A request line's strings come from small
-- sets (methods, routes, model names, deployments, addresses) and a pattern costs per byte:
-- short ones' encodings are kept, a bounded number of them.
local enc_kept, enc_count = {}, 0
local function enc(v)
  if type(v) ~= "string" then return json.encode(v) end
  local e = enc_kept[v]
  if e then return e end
  if v:find('[%c"\\]') then e = json.encode(v) else e = '"' .. v .. '"' end
  if #v <= 64 then
    if enc_count >= 256 then enc_kept, enc_count = {}, 0 end
    enc_kept[v], enc_count = e, enc_count + 1
  end
  return e
end
local function opt(k, v)
  if v == nil then return "" end
  return ',"' .. k .. '":' .. enc(v)
end

-- up: upstream_seconds(ctx), when the caller has it already
local function record(req, ctx, status, up)
  local total = nim.now() - req.t0
  up = math.min(up or upstream_seconds(ctx), total)
  local own = total - up
  local route = ctx.route or "unmatched"
  -- labels name configured groups only: a model name a client made up must not add series
  local asked = ctx.model and nim.router:group(ctx.model)
  local group = ctx.group or (asked and asked.name) or (ctx.model and "other") or "none"
  registry:inc_key("nimrank_requests_total", key_of(BY_REQUEST, group, route, status))
  local by_route = key_of(BY_ROUTE, route)
  registry:observe_key("nimrank_request_duration_seconds", by_route, total)
  registry:observe_key("nimrank_gateway_duration_seconds", by_route, own)
  local attempts = ctx.attempts
  if attempts then
    registry:observe_key("nimrank_upstream_duration_seconds", key_of(BY_MODEL, group), up)
    local seen = #attempts > 1 and {} -- (one attempt is no retry)
    for _, at in ipairs(attempts) do
      local g = at.model_group or group
      if at.error then
        registry:inc_key("nimrank_upstream_errors_total", key_of(BY_ERROR, g, at.error))
      end
      if seen then
        if seen[g] then registry:inc_key("nimrank_retries_total", key_of(BY_MODEL, g)) end
        seen[g] = true
      end
    end
  end
  if ctx.fallback then
    registry:inc_key("nimrank_fallbacks_total", key_of(BY_FALLBACK, ctx.fallback,
      asked and asked.name or "other"))
  end
  dirty = true
  if settings.log_level <= LEVEL.info then
    -- the request line, in LOG_KEYS' order; strings a client or a config chose are encoded
    server.log(('{"time":"%s","level":"%s","pid":%d,"request_id":"%s","method":%s,"route":%s'
      .. '%s%s%s,"status":%d,"total_ms":%.3f,"upstream_ms":%.3f,"own_ms":%.3f,"attempts":%d'
      .. '%s%s%s%s}')
      :format(server.time(), status >= 500 and "error" or "info", server.pid or 0, ctx.id,
        enc(req.method:sub(1, 32)),
        enc(route), opt("model", scrub(ctx.model)), opt("model_group", ctx.group),
        opt("deployment", ctx.deployment), status, total * 1000, up * 1000, own * 1000,
        ctx.attempts and #ctx.attempts or 0, opt("cache", ctx.cache), opt("fallback", ctx.fallback),
        opt("error", ctx.error_type), opt("remote", req.remote)))
  end
end

local inflight = {} -- handle -> the task's nim.Request (for cancel)

-- The answer as bytes and headers: (status, body, headers) from a handler, checked.
local function encode_answer(ctx, status, body, headers)
  local text = body
  if type(body) == "table" then
    local ok, encoded = pcall(json.encode, body)
    if not ok then
      return encode_answer(ctx, fail(500, "internal_error", "the answer could not be encoded "
        .. "as JSON"))
    end
    text = encoded
  elseif type(body) ~= "string" then
    text = body == nil and "" or tostring(body)
  end
  local out = { ["x-request-id"] = ctx.id }
  local typed = false
  if type(headers) == "table" then
    for k, v in pairs(headers) do
      if type(k) == "string" then
        out[k] = tostring(v)
        typed = typed or k:lower() == "content-type"
      end
    end
  end
  if not typed then out["Content-Type"] = "application/json" end
  return status, text, out
end

-- Answers the request (exactly once), then counts and logs it.
local function finish(req, ctx, status, body, headers)
  local ok, s2, text, out = pcall(encode_answer, ctx, status, body, headers)
  if not ok then
    s2, text, out = encode_answer(ctx, fail(500, "internal_error", "the gateway failed to "
      .. "answer this request (request id " .. ctx.id .. ")"))
  end
  inflight[req.handle] = nil
  local total, ups = nim.now() - req.t0, upstream_seconds(ctx)
  out["x-nimrank-overhead-ms"] = ("%.3f"):format((total - math.min(ups, total)) * 1000)
  local sent = server.respond(req.handle, s2, out, text)
  record(req, ctx, sent and s2 or 499, ups)
end

-- Per-request Lua runs on the instruction budget (nim.settings.script_budget) whenever Lua of
-- the user's may run in it: a handler or a middleware that loops is stopped with an error
-- (500) instead of freezing the worker. It counts the request's own coroutine (and those it
-- starts); time spent in C (the network, JSON) is not counted. A count hook makes the VM call
-- it for every instruction (~8% of a request), so a gateway that runs only nimrank's own Lua,
-- whose loops are bounded by the checked request, goes without: guarded() says which.
local BUDGET_STEP = 10000
-- the program's NIMRANK_INIT file, which main.c runs at start-up when it is set and not empty
local INIT_FILE = (os.getenv("NIMRANK_INIT") or "") ~= ""
local function guarded()
  -- user Lua: routes or middleware added after start-up, a script or a .lua config (run by
  -- nim.config), an init file
  return user_routes or config_module.user_code_ran or INIT_FILE
end
M.guarded = guarded
local function on_budget(ctx)
  local co = coroutine.running()
  local used, limit = 0, nim.settings.script_budget
  debug.sethook(co, function()
    used = used + BUDGET_STEP
    if used > limit then
      debug.sethook(co)
      error(("request %s ran more than %d Lua instructions (nim.settings.script_budget)")
        :format(ctx.id, limit), 2)
    end
  end, "", BUDGET_STEP)
end

local function failed(req, ctx, message)
  log_line({ time = server.time(), level = "error", request_id = ctx.id,
    event = "handler_error", route = ctx.route, message = message })
  return fail(500, "internal_error", "the gateway failed to handle this request (request id "
    .. ctx.id .. ")")
end

local function budgeted(req, ctx)
  on_budget(ctx)
  return handle(req, ctx)
end

local function serve(req)
  local ctx = { id = request_id(req.headers) or server.new_id() }
  req.id, req.ctx = ctx.id, ctx
  local ok, status, body, headers
  if guarded() then
    ok, status, body, headers = xpcall(budgeted, debug.traceback, req, ctx)
    debug.sethook((coroutine.running())) -- the budget ends with the handler
  else
    ok, status, body, headers = xpcall(handle, debug.traceback, req, ctx)
  end
  if not ok then
    status, body, headers = failed(req, ctx, tostring(status))
  elseif math.type(status) ~= "integer" or status < 100 or status > 599 then
    status, body, headers = failed(req, ctx, ("the handler returned status %s"):format(
      tostring(status)))
  end
  finish(req, ctx, status, body, headers)
end

-- The request's head alone (its body is large or of unknown length, still to come): answered
-- at once when the route, the method or the key refuse it; otherwise nothing happens.
function M.precheck(req)
  local ctx = { id = request_id(req.headers) or server.new_id() }
  local ok, status, body, headers = pcall(gate, req, ctx)
  if not ok then status, body, headers = failed(req, ctx, tostring(status)) end
  if status then finish(req, ctx, status, body, headers) end
end

-- ---- the worker's entry points (server.c) ---------------------------------------------------
local async

function M.dispatch(req)
  function req.json() return json_body(req) end -- for handlers of routes scripts add
  local h = async.start(function()
    local ok, err = pcall(serve, req)
    if not ok then -- only a failure of finish itself gets here: answer all the same
      server.respond(req.handle, 500, { ["Content-Type"] = "application/json" },
        '{"error":{"message":"the gateway failed","type":"internal_error","param":null,'
        .. '"code":"500"}}')
      log_line({ time = server.time(), level = "error", event = "serve_failed",
        request_id = req.id, message = tostring(err) })
    end
  end)
  if not h:done() then inflight[req.handle] = { task = h, req = req } end
end

-- The client went away (status 499), or the worker stops with the request still waiting
-- (503): the task and its upstream transfer stop; the request is counted and logged.
function M.cancel(handle, status)
  local entry = inflight[handle]
  inflight[handle] = nil
  if not entry then return end
  entry.task:cancel()
  local req = entry.req
  local ctx = req.ctx or { id = req.id or "-" }
  status = math.tointeger(status) or 499
  ctx.error_type = status == 499 and "client_closed" or "shutting_down"
  record(req, ctx, status) -- counted and logged as any request
  return ctx.id -- server.c's answer carries it, as every answer does
end

function M.reload(path)
  local ok, info = pcall(M.setup, path, true)
  if not ok then
    log_line({ time = server.time(), level = "error", event = "reload_failed",
      message = tostring(info) })
    return 0
  end
  log_line({ time = server.time(), level = "info", event = "reloaded", message = info.summary })
  return settings.max_body
end

-- Once a second: the worker's figures go on the board for the others' /metrics.
local last_state
function M.tick()
  local rs = router_state().state -- a change of router state is news for /metrics
  if rs ~= last_state then dirty, last_state = true, rs end
  if dirty or next(inflight) then
    server.pin(render_own())
    dirty = false
  end
end

-- start_worker(server) -> the entry points server.c keeps.
function M.start_worker(native_server)
  server = native_server
  settings.log_level = server.log_level or 1
  math.randomseed() -- each worker its own random sequence (they are forks of one process)
  -- what the library logs (nim.state: Redis lost and found) goes into the gateway's log
  if nim.settings.logger == nil then
    nim.settings.logger = function(e)
      log_line({ time = server.time(), level = e.level or "info", event = e.event,
        message = e.message })
    end
  end
  -- A cycle when the heap has grown by half, not doubled: a thousand requests in flight
  -- leave less garbage standing (bench/proxy_rss.sh), for a little more collector time.
  collectgarbage("incremental", 150)
  async = require "nim.async"
  -- the response cache's reports (a backend failing, answering again) go to this log
  require("nim.cache").set_logger(function(level, event, message)
    log_line({ time = server.time(), level = level, event = event, message = message })
  end)
  return { dispatch = M.dispatch, cancel = M.cancel, reload = M.reload, tick = M.tick,
    precheck = M.precheck, max_body = settings.max_body }
end

builtins_loaded = true -- what M.route adds from here on is a script's
return M
