-- nim.config: LiteLLM's config.yaml (or the same structure as a Lua table or .lua file),
-- validated and normalised. load(path_or_table) -> config, warnings. Invalid values raise an
-- error naming the key path (model_list[2].litellm_params.model: expected string, got number);
-- unknown keys become warnings. Values written os.environ/NAME are read from the environment;
-- a missing variable is an error naming it, and no value is ever printed: every message that
-- shows a config value goes through shown() (or, after the load, M.env_name and M.hide).
--
-- A deployment's string parameters (model_list[].litellm_params: model, api_key, api_base,
-- ca_bundle) written os.environ/NAME are read when the deployment is used, not at load: a
-- config whose offline group needs no key loads without NVIDIA_NIM_API_KEY set, and the
-- missing variable is reported by the call that needs it (M.env_value). A group's name
-- (model_name), a deployment's id (model_info.id), fallbacks and alias targets are shown in
-- results, errors and attempts, so they may not come from the environment.
--
-- Lua in a config (a .lua config file, nimrank_settings.scripts) runs on the instruction
-- budget (M.budget) in an environment of its own (script_env); a .lua config's value is
-- copied raw on the budget (raw_copy).
local M = {}

-- Keys (and values) longer than this are cut where a message shows them: a 4 MB key must not
-- become a 4 MB error line.
local SHOWN_MAX = 64

local function cut(s)
  s = tostring(s)
  if #s <= SHOWN_MAX then return s end
  local n = SHOWN_MAX -- never half a UTF-8 sequence
  while n > 0 and (s:byte(n + 1) or 0) & 0xC0 == 0x80 do n = n - 1 end
  return ("%s...(%d bytes)"):format(s:sub(1, n), #s)
end

-- A deferred os.environ/NAME value.
local EnvRef = {}
EnvRef.__index = EnvRef
EnvRef.__tostring = function(r) return "os.environ/" .. cut(r.name) end
local LAZY = { model = true, api_key = true, api_base = true, ca_bundle = true }

-- Key paths are chains { up = parent, key = k } (a root is a plain string), formatted only when
-- a message needs one: copying "a.b.c" strings for every value made a long key over many
-- values quadratic. A key that is a table { text } is appended as it is (" key").
local function at(up, key) return { up = up, key = key } end

local function path_str(p)
  if type(p) ~= "table" then return p end
  local keys = {}
  while type(p) == "table" do
    keys[#keys + 1] = p.key
    p = p.up
  end
  local out = { p }
  for i = #keys, 1, -1 do
    local k = keys[i]
    if math.type(k) == "integer" then out[#out + 1] = ("[%d]"):format(k)
    elseif type(k) == "table" then out[#out + 1] = k[1]
    elseif #out == 0 then out[1] = cut(k)
    else out[#out + 1] = "." .. cut(k) end
  end
  return table.concat(out)
end

local function fail(path, fmt, ...)
  error(("%s: " .. fmt):format(path_str(path), ...), 0)
end

-- Values read from os.environ/ during this load (value -> true): never printed. Kept per
-- config (ENV_VALUES) for what runs after the load (its scripts).
local from_env = {}
local ENV_VALUES = setmetatable({}, { __mode = "k" })

-- How a message shows a config value: never one that came from the environment.
local function shown(v, env)
  if (env or from_env)[v] then return "a value from the environment" end
  if type(v) == "string" then return ("%q"):format(cut(v)) end
  return tostring(v)
end

-- shown(cfg, v): how a message shows a value of a loaded config.
function M.shown(cfg, v) return shown(v, ENV_VALUES[cfg]) end

-- Replaces every occurrence of value in s (plain text) with label.
local function replace_plain(s, value, label)
  if type(s) ~= "string" or value == "" then return s end
  local out, i = {}, 1
  while true do
    local a, b = s:find(value, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = label
    i = b + 1
  end
  if i == 1 then return s end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

-- env_value(v, field) -> v itself, or a deferred variable's value; nil, err when it is unset.
function M.env_value(v, field)
  if getmetatable(v) ~= EnvRef then return v end
  local value = os.getenv(v.name)
  if value ~= nil and value ~= "" then return value end
  local nim = require "nim"
  return nil, nim.native.error({ type = field == "api_key" and "auth" or "bad_request",
    deployment = true, -- the router moves to a sibling deployment
    message = ("%s: environment variable %s is not set"):format(v.path, cut(v.name)) })
end

-- env_name(v) -> "os.environ/NAME" for a deferred value (what is shown instead of it), else nil.
function M.env_name(v)
  if getmetatable(v) == EnvRef then return tostring(v) end
  return nil
end

-- hide(s, params) -> s with the values of params' deferred os.environ/ fields (as read now)
-- replaced by their os.environ/NAME: for messages of a call made with them (a model string
-- in a URL or a misuse message). Values shorter than 4 bytes are left, as the binding leaves
-- secrets that short (they would match everywhere).
function M.hide(s, params)
  for k in pairs(LAZY) do
    local v = params[k]
    if getmetatable(v) == EnvRef then
      local value = os.getenv(v.name)
      if value and #value >= 4 then
        s = replace_plain(s, value, tostring(v))
        -- a message cut short ("...") may end with the value's first part
        if s:sub(-3) == "..." then
          local body = s:sub(1, -4)
          for n = #value - 1, 4, -1 do
            if body:sub(-n) == value:sub(1, n) then
              s = body:sub(1, -n - 1) .. tostring(v) .. "..."
              break
            end
          end
        end
      end
    end
  end
  return s
end

-- Does a deployment's params hold a deferred value that a message could show?
function M.has_env(params)
  for k in pairs(LAZY) do
    if getmetatable(params[k]) == EnvRef then return true end
  end
  return false
end

-- Keys understood in each section. Values: a checker, or true for "accepted, not used".
local function is(t)
  return function(v, path)
    local ok
    if t == "integer" then ok = math.type(v) == "integer"
    elseif t == "list" then ok = type(v) == "table" and (next(v) == nil or v[1] ~= nil)
    elseif t == "map" then ok = type(v) == "table" and (next(v) == nil or v[1] == nil)
    else ok = type(v) == t end
    if not ok then
      local got = type(v)
      if got == "number" then got = math.type(v) end
      fail(path, "expected %s, got %s", t, got)
    end
    return v
  end
end

-- A finite number above (or at) min, below 1e7 (115 days, or ten million requests):
-- .inf, .nan and absurd values are refused rather than turned into endless waits.
local NUMBER_MAX = 1e7
local function number_at_least(min, strict)
  return function(v, path)
    is("number")(v, path)
    if v ~= v or (strict and v <= min) or (not strict and v < min) or v >= NUMBER_MAX then
      fail(path, "must be %s %s, below %g", strict and ">" or ">=", min, NUMBER_MAX)
    end
    return v
  end
end

local function integer_at_least(min, max)
  max = max or NUMBER_MAX
  return function(v, path)
    if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
    is("integer")(v, path)
    if v < min or v >= max then
      fail(path, "must be an integer >= %d, below %g", min, max)
    end
    return v
  end
end

local function one_of(...)
  local allowed = { ... }
  return function(v, path)
    for _, a in ipairs(allowed) do if v == a then return v end end
    fail(path, "must be one of %s (got %s)", table.concat(allowed, ", "), shown(v))
  end
end

local function list_of(check)
  return function(v, path)
    is("list")(v, path)
    local out = {}
    for i, x in ipairs(v) do out[i] = check(x, at(path, i)) end
    return out
  end
end

local string_list = list_of(is("string"))

-- fallbacks: [{group: [fallback, ...]}, ...] (LiteLLM's shape) -> {group = {...}}
local function fallback_map(v, path)
  is("list")(v, path)
  local out = {}
  for i, entry in ipairs(v) do
    local p = at(path, i)
    is("map")(entry, p)
    for group, targets in pairs(entry) do
      out[is("string")(group, at(p, { " key" }))] = string_list(targets, at(p, group))
    end
  end
  return out
end

-- model_group_alias: {alias: group} or {alias: {model: group, hidden: bool}}
local function alias_map(v, path)
  is("map")(v, path)
  local out = {}
  for alias, target in pairs(v) do
    local p = at(path, alias)
    if type(target) == "table" then
      out[alias] = is("string")(target.model, at(p, "model"))
    else
      out[alias] = is("string")(target, p)
    end
  end
  return out
end

-- A string, or a deferred os.environ/ value (checked when it is read).
local function string_or_env(v, path)
  if getmetatable(v) == EnvRef then return v end
  return is("string")(v, path)
end

local LITELLM_PARAMS = {
  model = string_or_env, api_key = string_or_env, api_base = string_or_env,
  timeout = number_at_least(0, true), stream_timeout = true,
  rpm = number_at_least(0), tpm = number_at_least(0), weight = number_at_least(0, true),
  order = integer_at_least(1), max_retries = integer_at_least(0),
  num_retries = integer_at_least(0),
  -- passed to the call as defaults under the request's own values
  truncate = one_of("NONE", "END"), drop_params = is("boolean"), headers = is("map"),
  connect_timeout = number_at_least(0, true),
  max_response_bytes = integer_at_least(1), return_documents = is("boolean"), bm25 = is("map"),
  top_n = integer_at_least(1), ca_bundle = string_or_env,
  -- model: hybrid's options, checked by nim.hybrid (check_hybrid)
  models = true, fusion = true, rrf_k = true, weights = true,
}

-- redis_port: an integer, or its digits (os.environ/REDIS_PORT gives a string).
local function port(v, path)
  if type(v) == "string" and v:match("^%d+$") and #v <= 5 then v = math.tointeger(tonumber(v)) end
  if math.type(v) == "float" and v == math.floor(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" then
    local got = type(v) == "number" and math.type(v) or type(v)
    if type(v) == "string" then got = "a string that is not a port number" end
    fail(path, "expected an integer port, got %s", got)
  end
  if v < 1 or v > 65535 then fail(path, "must be a port number from 1 to 65535") end
  return v
end

-- redis_url (router_settings.redis_url, cache_params.url and redis_url, REDIS_URL): what
-- nim.redis's client takes (src/redis_url.c, whose parser Lua cannot call without connecting):
-- redis://[user:password@]host[:port][/db], no query or fragment; rediss:// (TLS) is refused
-- at load, not at the first request. Never shown: it may hold the password.
local function redis_url(v, path)
  is("string")(v, path)
  local lower = v:sub(1, 9):lower()
  if lower == "rediss://" then
    fail(path, "rediss:// (TLS) is not supported: nimrank's Redis client (hiredis 0.14) has "
      .. "no TLS; use redis:// (through a TLS tunnel when the link needs encryption)")
  end
  if lower:sub(1, 8) ~= "redis://" then
    fail(path, "must be a redis:// URL (the value is not shown: it may hold a password)")
  end
  local rest = v:sub(9)
  if rest:find("[?#]") then
    fail(path, "query parameters and fragments are not supported in a redis:// URL (use the "
      .. "options: db, password, socket_timeout)")
  end
  local authority = rest:match("^[^/]*")
  local host = authority:match("^.*@(.*)$") or authority
  if rest:find("%s") or host == "" or host:match("^:") then
    fail(path, "must be a redis:// URL with a host (the value is not shown: it may hold a "
      .. "password)")
  end
  return v
end

local ROUTER_SETTINGS = {
  routing_strategy = is("string"), routing_strategy_args = is("map"),
  model_group_alias = alias_map,
  num_retries = integer_at_least(0), timeout = number_at_least(0, true),
  fallbacks = fallback_map, default_fallbacks = string_list,
  allowed_fails = integer_at_least(0), cooldown_time = number_at_least(0),
  retry_after = number_at_least(0), max_fallbacks = integer_at_least(0),
  max_retry_wait = number_at_least(0),
  -- rpm/tpm enforced as limits (LiteLLM's name), whatever the strategy
  enable_pre_call_checks = is("boolean"),
  -- shared router state (nim.state_redis); redis_url wins over redis_host
  redis_host = is("string"), redis_port = port, redis_password = is("string"),
  redis_url = redis_url,
  -- nimrank: seconds of a usage window (default 60: rpm and tpm are per minute); shorter ones
  -- are for tests
  usage_window = number_at_least(0, true),
}
local LITELLM_SETTINGS = {
  drop_params = is("boolean"), num_retries = integer_at_least(0),
  request_timeout = number_at_least(0, true), fallbacks = fallback_map,
  default_fallbacks = string_list, set_verbose = true, json_logs = true,
}
local GENERAL_SETTINGS = { master_key = is("string"),
  max_request_size_mb = number_at_least(0, true), max_documents = integer_at_least(1) }
local NIMRANK_SETTINGS = {
  filters = is("map"), catalog = is("map"), scripts = string_list,
  script_budget = integer_at_least(1000, 2 ^ 31),
}
-- litellm_settings.cache and cache_params: LiteLLM's response cache keys, for its types local
-- and redis (its other types, s3, gcs, disk and the semantic caches, are not nimrank's), plus
-- max_bytes, nimrank's own (the local cache's bound). Checked here and normalised into
-- cfg.cache (nil when caching is off); what the cache does with them is lua/nim/cache.lua's.
-- LiteLLM's keys nimrank has no use for are warnings ("unknown key"), as everywhere.
LITELLM_SETTINGS.cache = is("boolean")
LITELLM_SETTINGS.cache_params = is("map")

local TOP = { "model_list", "router_settings", "litellm_settings", "general_settings",
  "nimrank_settings", "environment_variables" }

local function known_top(k)
  for _, t in ipairs(TOP) do if k == t then return true end end
  return false
end

-- Bounds on what a config may expand to: YAML aliases share nodes, and a walk that copies
-- them could otherwise grow exponentially ("billion laughs") or forever (a cycle).
local MAX_DEPTH, MAX_VALUES, MAX_BYTES = 64, 100000, 4 * 1024 * 1024

-- Where a value sits under model_list[i] (path model_list[i].<a>[.<b>]): a, b; else nil.
local function deployment_key(path)
  local keys = {}
  while type(path) == "table" and #keys < 5 do
    keys[#keys + 1] = path.key
    path = path.up
  end
  local n = #keys
  if path ~= nil or n < 3 or n > 4 then return nil end
  if keys[n] ~= "model_list" or math.type(keys[n - 1]) ~= "integer" then return nil end
  return keys[n - 2], keys[n - 3]
end

-- Shown in results, errors and attempts: never from the environment.
local SHOWN_FIELDS = { model_name = "a group name", model_info = { id = "a deployment id" } }
-- Model names a router section refers to (<section>.<key>...) are shown as well: a fallback
-- in meta.fallback, attempts and the CLI's "fell back" line, an alias's target in
-- meta.model and attempts.
local SHOWN_SECTIONS = { router_settings = true, litellm_settings = true }
local SHOWN_NAMES = { fallbacks = "a fallback", default_fallbacks = "a fallback",
  model_group_alias = "an alias's target" }

-- The first two keys of a path (section, key), or nil.
local function section_key(path)
  local a, b
  while type(path) == "table" do
    a, b = path.key, a
    path = path.up
  end
  if path ~= nil then return nil end
  return a, b
end

-- Replaces os.environ/NAME strings and lyaml's null, depth first, into fresh tables. Errors
-- name the path. walk = { values = count, open = tables on the current path }.
local function resolve_values(v, path, null, walk, depth)
  if v == null then return nil end
  walk.values = walk.values + 1
  if walk.values > MAX_VALUES then
    fail(path or "config", "the config expands to more than %d values (YAML aliases?)",
      MAX_VALUES)
  end
  if type(v) == "string" then
    local name = v:match("^os%.environ/(.+)$")
    if not name then return v end
    local a, b = deployment_key(path)
    local what = SHOWN_FIELDS[a]
    if type(what) == "table" then what = what[b] elseif b ~= nil then what = nil end
    if not what then
      local section, key = section_key(path)
      what = SHOWN_SECTIONS[section] and SHOWN_NAMES[key]
    end
    if what then
      fail(path, "os.environ/ is not allowed here: %s is shown in results, errors and "
        .. "attempts, so a value from the environment would be printed", what)
    end
    if a == "litellm_params" and LAZY[b] then
      return setmetatable({ name = name, path = path_str(path) }, EnvRef)
    end
    local value = os.getenv(name)
    if value == nil or value == "" then
      fail(path, "environment variable %s is not set", cut(name))
    end
    from_env[value] = true
    return value
  end
  if type(v) ~= "table" then return v end
  if walk.open[v] then fail(path, "refers to itself (a YAML alias cycle)") end
  if depth > MAX_DEPTH then fail(path, "nested deeper than %d levels", MAX_DEPTH) end
  walk.open[v] = true
  local out = {}
  for k, x in pairs(v) do
    out[k] = resolve_values(x, at(path, k), null, walk, depth + 1)
  end
  walk.open[v] = nil
  return out
end

local function check_section(t, schema, path, warnings)
  if t == nil then return {} end
  is("map")(t, path)
  local out = {}
  for k, v in pairs(t) do
    local check = schema[k]
    if check == nil then
      warnings[#warnings + 1] = ("%s: unknown key, ignored"):format(path_str(at(path, k)))
    elseif check == true then
      out[k] = v
    else
      out[k] = check(v, at(path, k))
    end
  end
  return out
end

-- ---- litellm_settings.cache_params (see LITELLM_SETTINGS.cache) ---------------------------

local function port_number(v, path)
  if type(v) == "string" and v:match("^%d+$") then v = math.tointeger(tonumber(v)) end
  if math.type(v) ~= "integer" or v < 1 or v > 65535 then
    fail(path, "must be a port number, 1 to 65535")
  end
  return v
end

local function non_empty(v, path)
  is("string")(v, path)
  if v == "" then fail(path, "must not be empty") end
  return v
end

local CACHE_PARAMS = {
  type = one_of("local", "redis"), mode = one_of("default_on", "default_off"),
  ttl = number_at_least(0, true), default_in_memory_ttl = number_at_least(0, true),
  default_in_redis_ttl = number_at_least(0, true), namespace = non_empty,
  supported_call_types = string_list,
  host = non_empty, port = port_number, password = is("string"), db = integer_at_least(0, 2 ^ 31),
  url = redis_url, redis_url = redis_url, socket_timeout = number_at_least(0, true),
  max_connections = true, -- accepted: one connection per worker, pipelined
  max_bytes = integer_at_least(1024, 1e12), -- nimrank's own, type local
}
local REDIS_ONLY = { "host", "port", "password", "db", "url", "redis_url", "socket_timeout" }

-- The Redis server of type redis: url (or redis_url), else host/port/password/db, else, as
-- LiteLLM does, REDIS_URL or REDIS_HOST/REDIS_PORT/REDIS_PASSWORD from the environment.
local function redis_target(params, path)
  if params.url and params.redis_url then
    fail(at(path, "redis_url"), "give url or redis_url, not both")
  end
  local url = params.url or params.redis_url
  if url then return { url = url, db = params.db, timeout = params.socket_timeout } end
  local r = { host = params.host, port = params.port or 6379, password = params.password,
    db = params.db, timeout = params.socket_timeout }
  if r.host then return r end
  local env_url = os.getenv("REDIS_URL")
  if env_url and env_url ~= "" then
    from_env[env_url] = true
    return { url = redis_url(env_url, "REDIS_URL (environment)"), db = params.db,
      timeout = params.socket_timeout }
  end
  local host = os.getenv("REDIS_HOST")
  if not host or host == "" then
    fail(at(path, "host"), "required for type redis (or url, or REDIS_HOST or REDIS_URL in the "
      .. "environment)")
  end
  local password = os.getenv("REDIS_PASSWORD")
  if password and password ~= "" then from_env[password] = true else password = nil end
  r.host, r.password = host, params.password or password
  r.port = params.port or port_number(os.getenv("REDIS_PORT") or 6379, "REDIS_PORT (environment)")
  return r
end

-- cfg.cache: { type, mode, ttl, namespace, max_bytes (local), redis = {...} (redis) } or nil.
local function check_cache(litellm, warnings)
  local path = "litellm_settings.cache_params"
  if litellm.cache ~= true then
    if litellm.cache_params ~= nil then
      warnings[#warnings + 1] = path .. ": ignored: litellm_settings.cache is not true"
    end
    return nil
  end
  local params = check_section(litellm.cache_params, CACHE_PARAMS, path, warnings)
  local kind = params.type or "local"
  if params.supported_call_types then
    local rerank = false
    for _, call in ipairs(params.supported_call_types) do
      if call == "rerank" or call == "arerank" then rerank = true end
    end
    if not rerank then
      warnings[#warnings + 1] = path .. ".supported_call_types: names neither rerank nor "
        .. "arerank: nothing is cached"
      return nil
    end
  end
  local out = { type = kind, mode = params.mode or "default_on", namespace = params.namespace,
    ttl = (kind == "local" and params.default_in_memory_ttl)
      or (kind == "redis" and params.default_in_redis_ttl) or params.ttl }
  if kind == "local" then
    out.max_bytes = params.max_bytes
    for _, k in ipairs(REDIS_ONLY) do
      if params[k] ~= nil then
        warnings[#warnings + 1] = ("%s.%s: only used with type: redis, ignored"):format(path, k)
      end
    end
  else
    if params.max_bytes ~= nil then
      warnings[#warnings + 1] = path .. ".max_bytes: only used with type: local, ignored"
    end
    out.redis = redis_target(params, path)
  end
  return out
end

-- A deployment's hybrid options (model: hybrid): checked by nim.hybrid's rule, errors naming the
-- key path. Its components are shown in results (meta.components, warnings), so they may not
-- come from the environment; that they name something is checked with the other names
-- (check_names). On any other deployment the options are ignored, with a warning.
local function check_hybrid(d, path, warnings)
  local router = require "nim.router"
  if d.params.model ~= router.HYBRID then
    for _, k in ipairs(router.HYBRID_KEYS) do
      if d.params[k] ~= nil then
        warnings[#warnings + 1] = ("%s: only used with model: %s, ignored"):format(
          path_str(at(path, k)), router.HYBRID)
        d.params[k] = nil
      end
    end
    return
  end
  local function not_env(v, p)
    if from_env[v] then
      fail(p, "os.environ/ is not allowed here: a hybrid's options are shown in results and "
        .. "messages, so a value from the environment would be printed")
    end
  end
  for _, k in ipairs(router.HYBRID_KEYS) do not_env(d.params[k], at(path, k)) end
  for i, name in ipairs(type(d.params.models) == "table" and d.params.models or {}) do
    not_env(name, at(at(path, "models"), i))
  end
  require("nim.hybrid").options(d.params, function(field, msg)
    fail(("%s.%s"):format(path_str(path), field), "%s", msg)
  end)
end

-- The keys of a model_list entry (model_info is free-form, as in LiteLLM).
local DEPLOYMENT_KEYS = { model_name = true, litellm_params = true, model_info = true }

local function check_model_list(list, warnings)
  if list == nil then return {} end
  is("list")(list, "model_list")
  local out = {}
  for i, entry in ipairs(list) do
    local p = at("model_list", i)
    is("map")(entry, p)
    local d = {}
    for k in pairs(entry) do
      if not DEPLOYMENT_KEYS[k] then
        warnings[#warnings + 1] = ("%s: unknown key, ignored"):format(path_str(at(p, k)))
      end
    end
    d.model_name = is("string")(entry.model_name, at(p, "model_name"))
    if entry.litellm_params == nil then fail(at(p, "litellm_params"), "required") end
    d.params = check_section(entry.litellm_params, LITELLM_PARAMS, at(p, "litellm_params"),
      warnings)
    if d.params.model == nil then fail(at(at(p, "litellm_params"), "model"), "required") end
    check_hybrid(d, at(p, "litellm_params"), warnings)
    d.info = {}
    if entry.model_info ~= nil then
      is("map")(entry.model_info, at(p, "model_info"))
      for k, v in pairs(entry.model_info) do d.info[k] = v end -- free-form, as in LiteLLM
      if d.info.id ~= nil and type(d.info.id) ~= "string" then
        d.info.id = tostring(is("number")(d.info.id, at(at(p, "model_info"), "id")))
      end
    end
    d.id = d.info.id or ("%s#%d"):format(d.model_name, i)
    out[i] = d
  end
  return out
end

-- Walks libyaml's events once before lyaml builds tables: nesting deeper than MAX_DEPTH or
-- more than MAX_VALUES events is refused in bounded time, before any recursion.
local function check_events(path, text)
  local next_event = require("yaml").parser(text)
  local depth, events = 0, 0
  while true do
    local ok, ev = pcall(next_event)
    if not ok or not ev then return end -- lyaml reports the syntax error itself
    local t = ev.type
    if t == "MAPPING_START" or t == "SEQUENCE_START" then
      depth = depth + 1
      if depth > MAX_DEPTH then
        error(("%s:%d: nested deeper than %d levels"):format(path, ev.start_mark.line + 1,
          MAX_DEPTH), 0)
      end
    elseif t == "MAPPING_END" or t == "SEQUENCE_END" then
      depth = depth - 1
    elseif t == "STREAM_END" then
      return
    end
    events = events + 1
    if events > MAX_VALUES then
      error(("%s: more than %d YAML values"):format(path, MAX_VALUES), 0)
    end
  end
end

-- Parses YAML with lyaml (Debian's lua-yaml): never a hand-written parser.
local function read_yaml(path, text)
  local ok, lyaml = pcall(require, "lyaml")
  if not ok then
    error("config: reading YAML needs lyaml (apt-get install lua-yaml)", 0)
  end
  check_events(path, text)
  local parsed_ok, doc = pcall(lyaml.load, text)
  if not parsed_ok then
    error(("%s: not valid YAML: %s"):format(path, tostring(doc)), 0)
  end
  return doc, lyaml.null
end

-- The text of a file, at most MAX_BYTES: read with a bound, so a pipe or a device
-- (/dev/zero, <(yes)) is never read whole. what: the messages' prefix; label: how they name
-- the file (a path from the environment is not printed).
local function read_text(path, what, label)
  local f, err = io.open(path, "rb")
  if not f then
    local why = err and err:sub(1, #path + 2) == path .. ": " and err:sub(#path + 3) or err
    error(("%s: cannot open %s: %s"):format(what, label, replace_plain(why, path, label)), 0)
  end
  local probe, perr = f:read(0) -- a directory opens, but cannot be read
  local text, rerr
  if probe ~= nil or not perr then text, rerr = f:read(MAX_BYTES + 1) else rerr = perr end
  f:close()
  if text == nil and rerr then
    error(("%s: cannot read %s: %s"):format(what, label, replace_plain(rerr, path, label)), 0)
  end
  text = text or "" -- an empty file
  if #text > MAX_BYTES then
    error(("%s: %s is larger than %d bytes"):format(what, label, MAX_BYTES), 0)
  end
  return text
end

-- ---- Lua in a config ---------------------------------------------------------------------

-- budget() -> nim.settings.script_budget, checked where it is read: the VM instructions a
-- filter or a config's Lua may run (nim.native.budget takes 1 .. 2^31-1).
function M.budget()
  local b = require("nim").settings.script_budget
  local n = math.tointeger(b)
  if not n or n < 1 or n > 0x7fffffff then
    require("nim").native.misuse("nim.settings", "script_budget",
      ("must be an integer between 1 and 2^31-1 (got %s)"):format(
        type(b) == "number" and ("%.17g"):format(b) or type(b)))
  end
  return n
end

-- The environment a config's Lua runs in: the globals, read through, minus what would run code
-- outside the instruction budget.
-- * Finalizers: Lua turns hooks off while one runs, so setmetatable refuses a __gc
--   metamethod, and getmetatable gives the metatables of tables only (nil for a string or a
--   userdata: a file's __gc or the strings' __index must not be replaced; a __metatable field
--   is honoured). collectgarbage and debug are absent.
-- * Shared tables: the libraries a script may use (string, table, math, utf8, os, io) are its
--   own copies, in its globals and from require, so what it changes in them stays its own and
--   never runs later, outside any budget, in nimrank or the host.
-- * Coroutines: each one counts its instructions afresh, so many short ones would multiply
--   the budget: there is no coroutine library (config scripts do not need one).
-- * load, loadfile and dofile load text into this environment; require refuses debug,
--   package, _G and coroutine.
-- (Modules a script requires run in the real globals, and nimrank's own objects are not
-- wrapped: the budget stops runaway loops, it is not a sandbox for hostile code.)
local HIDDEN = { collectgarbage = true, debug = true, package = true, coroutine = true }
local REFUSED_MODULES = { debug = true, package = true, _G = true }
local LIBRARIES = { "string", "table", "math", "utf8", "os", "io" }

local function script_env()
  local env = {}
  local libraries = {}
  for _, name in ipairs(LIBRARIES) do
    local copy = {}
    for k, v in next, _G[name] do copy[k] = v end
    libraries[name] = copy
  end
  local function load_here(chunk, name, mode, ...)
    if mode ~= nil and mode ~= "t" then
      error("load: only text chunks can be loaded in a config script", 2)
    end
    if select("#", ...) > 0 then return load(chunk, name, "t", ...) end
    return load(chunk, name, "t", env)
  end
  local function loadfile_here(path, mode, ...)
    local ok, text = pcall(read_text, path, "loadfile", path)
    if not ok then return nil, text end
    return load_here(text, "@" .. path, mode, ...)
  end
  local overrides = {
    _G = env,
    setmetatable = function(t, mt)
      if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
        error("setmetatable: a __gc metamethod would run outside the instruction budget: "
          .. "not allowed in a config's Lua", 2)
      end
      return setmetatable(t, mt)
    end,
    getmetatable = function(v)
      if type(v) ~= "table" then return nil end
      return getmetatable(v)
    end,
    load = load_here,
    loadfile = loadfile_here,
    dofile = function(path)
      local chunk, err = loadfile_here(path)
      if not chunk then error(err, 2) end
      return chunk()
    end,
    require = function(name)
      if name == "coroutine" then
        error("require: a config's Lua has no coroutine library (config scripts do not need "
          .. "one, and each coroutine would count its instructions afresh)", 2)
      end
      if REFUSED_MODULES[name] then
        error(("require: module %q is not available to a config's Lua"):format(
          tostring(name)), 2)
      end
      return libraries[name] or require(name)
    end,
  }
  for name, copy in pairs(libraries) do overrides[name] = copy end
  return setmetatable(env, { __index = function(_, k)
    local o = overrides[k]
    if o ~= nil then return o end
    if HIDDEN[k] then return nil end
    return _G[k]
  end })
end

-- A .lua config's value, copied with raw access (on a budget, as run_lua's after). What the
-- load reads afterwards is plain tables: a metamethod of the script's (__index, __pairs,
-- __tostring of a key) would run outside the budget, so a table with a metatable is refused,
-- naming its key path. Bounded as resolve_values is; walk = { values =, open = }.
local RETURNED = "the returned table"

local function raw_copy(v, path, walk, depth)
  if type(v) ~= "table" then return v end
  path = path or RETURNED
  if getmetatable(v) ~= nil then
    error(("%s has a metatable: a .lua config must return plain tables (a metamethod would "
      .. "run outside the instruction budget)"):format(path_str(path)), 0)
  end
  if walk.open[v] then fail(path, "refers to itself (a cycle)") end
  if depth > MAX_DEPTH then fail(path, "nested deeper than %d levels", MAX_DEPTH) end
  walk.open[v] = true
  local out = {}
  for k, x in next, v do
    walk.values = walk.values + 1
    if walk.values > MAX_VALUES then fail(path, "holds more than %d values", MAX_VALUES) end
    local kp = path ~= RETURNED and path or nil -- key paths start at the top-level key
    if type(k) == "table" then k = raw_copy(k, at(kp, { " (a key)" }), walk, depth + 1) end
    out[k] = raw_copy(x, at(kp, k), walk, depth + 1)
  end
  walk.open[v] = nil
  return out
end

-- How an error a config's Lua raised is passed on: a string as it is; anything else (an
-- object whose __tostring would run outside the budget) is turned into text, on a budget too.
local function error_text(e)
  local ok, text = pcall(tostring, e)
  if ok and type(text) == "string" then return text end
  return ("(an error object: %s)"):format(type(e))
end

-- Runs a config's Lua file on the budget: results of the chunk, or of after(its first result)
-- when given (run on the budget too). label names the file in messages, chunkname in the chunk's
-- own errors; budget_name in the budget's.
-- Whether Lua of the user's has run in this state (a .lua config, a script), even one that
-- failed: what it installed (a route, a strategy, a replaced function) may run later. The
-- gateway puts its requests on the instruction budget once it has (nim.proxy).
M.user_code_ran = false

local function run_lua(path, what, label, chunkname, budget_name, after, ...)
  local text = read_text(path, what, label)
  local chunk, cerr = load(text, chunkname, "t", script_env())
  if not chunk then error(("%s: %s"):format(what, replace_plain(cerr, path, label)), 0) end
  local nim = require "nim"
  M.user_code_ran = true
  local function finish(ok, ...)
    if ok then return ... end
    local e = ...
    if type(e) ~= "string" then e = nim.native.budget(M.budget(), budget_name, error_text, e) end
    error(e, 0)
  end
  -- the chunk straight under the budget (no function of ours between them: a runaway loop's
  -- message carries no position of ours); after gets a budget of its own
  if after then
    local value = finish(pcall(nim.native.budget, M.budget(), budget_name, chunk, ...))
    return nim.native.budget(M.budget(), budget_name, after, value)
  end
  return finish(pcall(nim.native.budget, M.budget(), budget_name, chunk, ...))
end

-- run_scripts(cfg, ...): runs nimrank_settings.scripts in order, each with the arguments
-- given (nim). A path that came from the environment is named by its key path.
function M.run_scripts(cfg, ...)
  local env = ENV_VALUES[cfg] or {}
  for i, path in ipairs(cfg.nimrank.scripts or {}) do
    local label, chunkname = path, "@" .. path
    if env[path] then
      label = ("nimrank_settings.scripts[%d] (a value from the environment)"):format(i)
      chunkname = ("=nimrank_settings.scripts[%d]"):format(i)
    end
    run_lua(path, "nim", "script " .. label, chunkname, "script " .. label, nil, ...)
  end
end

local function read_file(path)
  if path:match("%.lua$") then
    return run_lua(path, "config", path, "@" .. path, "config " .. path, function(t)
      if type(t) ~= "table" then error(("config: %s must return a table"):format(path), 0) end
      return raw_copy(t, nil, { values = 0, open = {} }, 0)
    end)
  end
  return read_yaml(path, read_text(path, "config", path))
end

-- A provider model string with its prefix (nvidia_nim/..., local/bm25), or the pseudo-model
-- hybrid: always servable.
local function provider_model(name)
  if name == require("nim.router").HYBRID then return true end
  local ok, _, explicit = pcall(require("nim").native.provider_of, name)
  return ok and explicit
end

-- Names a config refers to (aliases, fallbacks) must exist when it loads: a typo would
-- otherwise be sent upstream as a model name, and only once a call fails.
local function check_names(cfg)
  local groups = {}
  for _, d in ipairs(cfg.deployments) do groups[d.model_name] = true end
  local aliases = cfg.router.model_group_alias or {}
  for alias, target in pairs(aliases) do
    if not groups[target] then
      fail(at("router_settings.model_group_alias", alias), "%s is not a model_name of "
        .. "model_list%s", shown(target),
        aliases[target] and " (aliases name groups, not aliases)" or "")
    end
  end
  local function check(name, path)
    if not (groups[name] or aliases[name] or provider_model(name)) then
      fail(path, "%s is neither a model_name, an alias, nor a provider model with its "
        .. "prefix (nvidia_nim/..., local/bm25)", shown(name))
    end
  end
  for _, section in ipairs({ "router", "litellm" }) do
    local where = section == "router" and "router_settings" or "litellm_settings"
    for group, list in pairs(cfg[section].fallbacks or {}) do
      local p = at(where .. ".fallbacks", group)
      check(group, p)
      for i, name in ipairs(list) do check(name, at(p, i)) end
    end
    for i, name in ipairs(cfg[section].default_fallbacks or {}) do
      check(name, at(where .. ".default_fallbacks", i))
    end
  end
  -- a hybrid deployment's components: known names, none of them hybrid (a recursion)
  local hybrid = require("nim.router").HYBRID
  local hybrid_group = {}
  for _, d in ipairs(cfg.deployments) do
    if d.params.model == hybrid then hybrid_group[d.model_name] = true end
  end
  for i, d in ipairs(cfg.deployments) do
    for j, name in ipairs(d.params.model == hybrid and d.params.models or {}) do
      local p = at(at(at(at("model_list", i), "litellm_params"), "models"), j)
      if name == hybrid or hybrid_group[name] or hybrid_group[aliases[name] or false] then
        fail(p, "%s is hybrid itself: a hybrid's component may not be", shown(name))
      end
      check(name, p)
    end
  end
end

local check_strategy
-- A strategy's routing_strategy_args, by the specs the strategy declares (its `args`):
-- { type = "number" | "integer", min =, max =, strict = (min excluded) }.
local function check_strategy_args(strategy, name, args, warnings)
  local path = "router_settings.routing_strategy_args"
  local specs = type(strategy) == "table" and strategy.args or {}
  for k, v in pairs(args) do
    local spec = specs[k]
    local p = at(path, k)
    if spec == nil then
      warnings[#warnings + 1] = ("%s: not an argument of %s, ignored"):format(path_str(p),
        shown(name))
    else
      if spec.type == "integer" then
        args[k] = integer_at_least(spec.min or -NUMBER_MAX, spec.max)(v, p)
      else
        args[k] = number_at_least(spec.min or -NUMBER_MAX, spec.strict)(v, p)
      end
      if spec.max and args[k] > spec.max then fail(p, "must be at most %g", spec.max) end
    end
  end
end

-- routing_strategy: a registered strategy (lua/nim/strategies, or one a script registered
-- before the load). One that nimrank_settings.scripts may yet register is checked by
-- nim.load_config once they have run; LiteLLM's strategies nimrank has no use for warn and
-- leave the default. Redis settings that do nothing warn.
function check_strategy(cfg, warnings)
  local router = require "nim.router"
  local name = cfg.router.routing_strategy
  local args = cfg.router.routing_strategy_args
  if name ~= nil and router.UNSUPPORTED_STRATEGIES[name] then
    warnings[#warnings + 1] = ("router_settings.routing_strategy: %s is not supported; using "
      .. "%s (weighted random)"):format(shown(name), router.DEFAULT_STRATEGY)
    cfg.router.routing_strategy, name = nil, nil
  end
  local strategy = router.strategy(name or router.DEFAULT_STRATEGY)
  if strategy == nil and #(cfg.nimrank.scripts or {}) == 0 then
    fail("router_settings.routing_strategy", "unknown strategy %s (known: %s; a script under "
      .. "nimrank_settings.scripts can register one)", shown(name),
      table.concat(router.strategy_names(), ", "))
  end
  if args ~= nil and strategy ~= nil then
    check_strategy_args(strategy, name or router.DEFAULT_STRATEGY, args, warnings)
  end
  local rs = cfg.router
  -- rpm/tpm are limits only with a strategy that enforces them or enable_pre_call_checks
  -- (LiteLLM's rule): otherwise they are weights, which a config may not mean
  if rs.enable_pre_call_checks ~= true and strategy ~= nil and strategy.limits ~= true then
    local with = {}
    for i, d in ipairs(cfg.deployments) do
      if d.params.rpm ~= nil or d.params.tpm ~= nil then
        with[#with + 1] = ("model_list[%d] (%s)"):format(i, cut(d.model_name))
      end
    end
    if #with > 0 then
      warnings[#warnings + 1] = ("rpm/tpm on %s%s are weights only: set "
        .. "enable_pre_call_checks: true or routing_strategy: usage-based-routing to enforce "
        .. "them"):format(table.concat(with, ", ", 1, math.min(#with, 5)),
        #with > 5 and (" and %d more"):format(#with - 5) or "")
    end
  end
  if rs.redis_url and rs.redis_host then
    warnings[#warnings + 1] = "router_settings.redis_host: redis_url is set too and wins"
  end
  for _, k in ipairs({ "redis_port", "redis_password" }) do
    if rs[k] ~= nil and not (rs.redis_host or rs.redis_url) then
      warnings[#warnings + 1] = ("router_settings.%s: no redis_host, ignored"):format(k)
    end
  end
end

-- load(path_or_table) -> config, warnings
local check_raw

function M.load(source)
  local raw, null
  if type(source) == "string" then
    raw, null = read_file(source)
  elseif type(source) == "table" then
    raw = source
  else
    error(("config: expected a file name or a table, got %s"):format(type(source)), 0)
  end
  return check_raw(raw, null)
end

-- load_yaml(text [, name]) -> config, warnings: the same, from YAML text (name in errors).
function M.load_yaml(text, name)
  if #text > MAX_BYTES then
    error(("config: %s is larger than %d bytes"):format(name or "config", MAX_BYTES), 0)
  end
  return check_raw(read_yaml(name or "config", text))
end

function check_raw(raw, null)
  if raw == nil or raw == null then raw = {} end
  is("map")(raw, "config")
  from_env = {}
  raw = resolve_values(raw, nil, null, { values = 0, open = {} }, 0)
  local warnings = {}
  for k in pairs(raw) do
    if not known_top(k) then
      warnings[#warnings + 1] = ("%s: unknown key, ignored"):format(cut(k))
    end
  end
  if raw.environment_variables ~= nil then
    warnings[#warnings + 1] = "environment_variables: not supported, ignored (set them in the "
      .. "environment)"
  end
  local cfg = {
    deployments = check_model_list(raw.model_list, warnings),
    router = check_section(raw.router_settings, ROUTER_SETTINGS, "router_settings", warnings),
    litellm = check_section(raw.litellm_settings, LITELLM_SETTINGS, "litellm_settings", warnings),
    general = check_section(raw.general_settings, GENERAL_SETTINGS, "general_settings", warnings),
    nimrank = check_section(raw.nimrank_settings, NIMRANK_SETTINGS, "nimrank_settings", warnings),
  }
  cfg.cache = check_cache(cfg.litellm, warnings)
  check_names(cfg)
  check_strategy(cfg, warnings)
  table.sort(warnings)
  ENV_VALUES[cfg] = from_env
  return cfg, warnings
end

-- The keys the loader accepts, section by section (read-only: the loader's own tables, for
-- tools such as the docs' drift test, tests/lua/docs_config_spec.lua). top: the top-level
-- keys, a list; the others map a key to its checker (true: accepted, not checked here).
-- routing_strategy_args are each strategy's own (its `args`); nimrank_settings.catalog entries
-- are nim.catalog's; filters nim.filters'.
M.KNOWN = {
  top = TOP,
  model_list = DEPLOYMENT_KEYS,
  litellm_params = LITELLM_PARAMS,
  router_settings = ROUTER_SETTINGS,
  litellm_settings = LITELLM_SETTINGS,
  cache_params = CACHE_PARAMS,
  general_settings = GENERAL_SETTINGS,
  nimrank_settings = NIMRANK_SETTINGS,
}

return M
