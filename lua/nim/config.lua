-- nim.config: LiteLLM's config.yaml (or the same structure as a Lua table or .lua file),
-- validated and normalised. load(path_or_table) -> config, warnings. Invalid values raise an
-- error naming the key path (model_list[2].litellm_params.model: expected string, got number);
-- unknown keys become warnings. Values written os.environ/NAME are read from the environment;
-- a missing variable is an error naming it, and no value is ever printed.
--
-- A deployment's string parameters (model_list[].litellm_params: model, api_key, api_base,
-- ca_bundle) written os.environ/NAME are read when the deployment is used, not at load: a
-- config whose offline group needs no key loads without NVIDIA_NIM_API_KEY set, and the
-- missing variable is reported by the call that needs it (M.env_value).
local M = {}

-- A deferred os.environ/NAME value.
local EnvRef = {}
EnvRef.__index = EnvRef
EnvRef.__tostring = function(r) return "os.environ/" .. r.name end
local LAZY = { model = true, api_key = true, api_base = true, ca_bundle = true }

-- env_value(v, field) -> v itself, or a deferred variable's value; nil, err when it is unset.
function M.env_value(v, field)
  if getmetatable(v) ~= EnvRef then return v end
  local value = os.getenv(v.name)
  if value ~= nil and value ~= "" then return value end
  local nim = require "nim"
  return nil, nim.native.error({ type = field == "api_key" and "auth" or "bad_request",
    deployment = true, -- the router moves to a sibling deployment
    message = ("%s: environment variable %s is not set"):format(v.path, v.name) })
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
      error(("%s: expected %s, got %s"):format(path, t, got), 0)
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
      error(("%s: must be %s %s, below %g"):format(path, strict and ">" or ">=", min,
        NUMBER_MAX), 0)
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
      error(("%s: must be an integer >= %d, below %g"):format(path, min, max), 0)
    end
    return v
  end
end

-- Paths whose values came from os.environ/ during this load: never printed.
local from_env = {}

local function one_of(...)
  local allowed = { ... }
  return function(v, path)
    for _, a in ipairs(allowed) do if v == a then return v end end
    local got = from_env[path] and "a value from the environment" or tostring(v)
    error(("%s: must be one of %s (got %s)"):format(path, table.concat(allowed, ", "), got), 0)
  end
end

local function list_of(check)
  return function(v, path)
    is("list")(v, path)
    local out = {}
    for i, x in ipairs(v) do out[i] = check(x, ("%s[%d]"):format(path, i)) end
    return out
  end
end

local string_list = list_of(is("string"))

-- fallbacks: [{group: [fallback, ...]}, ...] (LiteLLM's shape) -> {group = {...}}
local function fallback_map(v, path)
  is("list")(v, path)
  local out = {}
  for i, entry in ipairs(v) do
    local p = ("%s[%d]"):format(path, i)
    is("map")(entry, p)
    for group, targets in pairs(entry) do
      out[is("string")(group, p .. " key")] = string_list(targets, p .. "." .. group)
    end
  end
  return out
end

-- model_group_alias: {alias: group} or {alias: {model: group, hidden: bool}}
local function alias_map(v, path)
  is("map")(v, path)
  local out = {}
  for alias, target in pairs(v) do
    local p = path .. "." .. tostring(alias)
    if type(target) == "table" then
      out[alias] = is("string")(target.model, p .. ".model")
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
}

local ROUTER_SETTINGS = {
  routing_strategy = is("string"), model_group_alias = alias_map,
  num_retries = integer_at_least(0), timeout = number_at_least(0, true),
  fallbacks = fallback_map, default_fallbacks = string_list,
  allowed_fails = integer_at_least(0), cooldown_time = number_at_least(0),
  retry_after = number_at_least(0), max_fallbacks = integer_at_least(0),
  max_retry_wait = number_at_least(0),
}
local LITELLM_SETTINGS = {
  drop_params = is("boolean"), num_retries = integer_at_least(0),
  request_timeout = number_at_least(0, true), fallbacks = fallback_map,
  default_fallbacks = string_list, set_verbose = true, json_logs = true,
}
local GENERAL_SETTINGS = { master_key = is("string") }
local NIMRANK_SETTINGS = {
  filters = is("map"), catalog = is("map"), scripts = string_list,
  script_budget = integer_at_least(1000, 2 ^ 31),
}
local TOP = { "model_list", "router_settings", "litellm_settings", "general_settings",
  "nimrank_settings", "environment_variables" }

local function known_top(k)
  for _, t in ipairs(TOP) do if k == t then return true end end
  return false
end

-- Bounds on what a config may expand to: YAML aliases share nodes, and a walk that copies
-- them could otherwise grow exponentially ("billion laughs") or forever (a cycle).
local MAX_DEPTH, MAX_VALUES, MAX_BYTES = 64, 100000, 4 * 1024 * 1024

-- Replaces os.environ/NAME strings and lyaml's null, depth first, into fresh tables. Errors
-- name the path. walk = { values = count, open = tables on the current path }.
local function resolve_values(v, path, null, walk, depth)
  if v == null then return nil end
  walk.values = walk.values + 1
  if walk.values > MAX_VALUES then
    error(("%s: the config expands to more than %d values (YAML aliases?)"):format(
      path == "" and "config" or path, MAX_VALUES), 0)
  end
  if type(v) == "string" then
    local name = v:match("^os%.environ/(.+)$")
    if not name then return v end
    local field = path:match("^model_list%[%d+%]%.litellm_params%.([%w_]+)$")
    if field and LAZY[field] then return setmetatable({ name = name, path = path }, EnvRef) end
    local value = os.getenv(name)
    if value == nil or value == "" then
      error(("%s: environment variable %s is not set"):format(path, name), 0)
    end
    from_env[path] = true
    return value
  end
  if type(v) ~= "table" then return v end
  if walk.open[v] then error(("%s: refers to itself (a YAML alias cycle)"):format(path), 0) end
  if depth > MAX_DEPTH then
    error(("%s: nested deeper than %d levels"):format(path, MAX_DEPTH), 0)
  end
  walk.open[v] = true
  local out = {}
  for k, x in pairs(v) do
    local p = type(k) == "number" and ("%s[%d]"):format(path, k) or
      (path == "" and tostring(k) or path .. "." .. tostring(k))
    out[k] = resolve_values(x, p, null, walk, depth + 1)
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
      warnings[#warnings + 1] = ("%s.%s: unknown key, ignored"):format(path, tostring(k))
    elseif check == true then
      out[k] = v
    else
      out[k] = check(v, path .. "." .. k)
    end
  end
  return out
end

local function check_model_list(list, warnings)
  if list == nil then return {} end
  is("list")(list, "model_list")
  local out = {}
  for i, entry in ipairs(list) do
    local p = ("model_list[%d]"):format(i)
    is("map")(entry, p)
    local d = {}
    for k in pairs(entry) do
      if k ~= "model_name" and k ~= "litellm_params" and k ~= "model_info" then
        warnings[#warnings + 1] = ("%s.%s: unknown key, ignored"):format(p, tostring(k))
      end
    end
    d.model_name = is("string")(entry.model_name, p .. ".model_name")
    if entry.litellm_params == nil then error(p .. ".litellm_params: required", 0) end
    d.params = check_section(entry.litellm_params, LITELLM_PARAMS, p .. ".litellm_params",
      warnings)
    if d.params.model == nil then error(p .. ".litellm_params.model: required", 0) end
    d.info = {}
    if entry.model_info ~= nil then
      is("map")(entry.model_info, p .. ".model_info")
      for k, v in pairs(entry.model_info) do d.info[k] = v end -- free-form, as in LiteLLM
      if d.info.id ~= nil and type(d.info.id) ~= "string" then
        d.info.id = tostring(is("number")(d.info.id, p .. ".model_info.id"))
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

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error(("config: cannot open %s"):format(err), 0) end
  local probe, perr = f:read(0) -- a directory opens, but cannot be read
  if probe == nil and perr then
    f:close()
    error(("config: cannot read %s: %s"):format(path, perr), 0)
  end
  local size = f:seek("end")
  if size and size > MAX_BYTES then
    f:close()
    error(("config: %s is larger than %d bytes"):format(path, MAX_BYTES), 0)
  end
  f:seek("set")
  local text, rerr = f:read("a")
  f:close()
  if not text then error(("config: cannot read %s: %s"):format(path, rerr), 0) end
  if path:match("%.lua$") then
    local chunk, cerr = load(text, "@" .. path, "t", setmetatable({}, { __index = _G }))
    if not chunk then error(("config: %s"):format(cerr), 0) end
    local t = chunk()
    if type(t) ~= "table" then error(("config: %s must return a table"):format(path), 0) end
    return t
  end
  return read_yaml(path, text)
end

-- A provider model string with its prefix (nvidia_nim/..., local/bm25): always servable.
local function provider_model(name)
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
      error(("router_settings.model_group_alias.%s: %q is not a model_name of model_list%s")
        :format(alias, target, aliases[target] and " (aliases name groups, not aliases)" or ""),
        0)
    end
  end
  local function check(name, path)
    if not (groups[name] or aliases[name] or provider_model(name)) then
      error(("%s: %q is neither a model_name, an alias, nor a provider model with its "
        .. "prefix (nvidia_nim/..., local/bm25)"):format(path, name), 0)
    end
  end
  for _, section in ipairs({ "router", "litellm" }) do
    local where = section == "router" and "router_settings" or "litellm_settings"
    for group, list in pairs(cfg[section].fallbacks or {}) do
      check(group, ("%s.fallbacks.%s"):format(where, group))
      for i, name in ipairs(list) do
        check(name, ("%s.fallbacks.%s[%d]"):format(where, group, i))
      end
    end
    for i, name in ipairs(cfg[section].default_fallbacks or {}) do
      check(name, ("%s.default_fallbacks[%d]"):format(where, i))
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
  raw = resolve_values(raw, "", null, { values = 0, open = {} }, 0)
  local warnings = {}
  for k in pairs(raw) do
    if not known_top(k) then
      warnings[#warnings + 1] = ("%s: unknown key, ignored"):format(tostring(k))
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
  check_names(cfg)
  local strategy = cfg.router.routing_strategy
  if strategy and strategy ~= "simple-shuffle" then
    warnings[#warnings + 1] = ("router_settings.routing_strategy: %q is not supported; "
      .. "using simple-shuffle (weighted random)"):format(strategy)
  end
  table.sort(warnings)
  return cfg, warnings
end

return M
