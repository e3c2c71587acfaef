-- nim.providers: the rerank providers a model string's prefix can name. Each is a descriptor,
-- a table of data (lua/nim/providers/<name>.lua): where its API lives, which header and
-- environment variables carry the key and the base URL, the names of its request and answer
-- fields, the parameters it takes, its passage limit and what its error statuses mean. The C
-- side (src/descriptor.c, src/provider_http.c) executes a descriptor: it writes the body and
-- reads the answer in C, so a provider costs no Lua work per document.
--
--   nim.providers.add(descriptor)   -- checks it, registers it under descriptor.name: from
--                                   -- then on "<name>/<model>" goes to it
--   nim.providers.get(name)         -- a copy of the registered descriptor, or nil
--   nim.providers.list()            -- the registered names, sorted
--
-- A descriptor (every field but name optional; defaults in brackets):
--   name          the model prefix: "cohere" serves "cohere/rerank-v3.5"
--   api_base      default base URL [none: api_base or a base_env variable is required]
--   base_env      variables that may hold the base URL, first set wins
--   key_env       variables that may hold the key, first set wins
--   key_required  a call without a key fails with `auth` before sending [false]
--   auth          { header = "Authorization", prefix = "Bearer " }
--   path          appended to the base ["" ]; full = { suffixes }: a base ending with the path
--                 or one of these is the full URL; short = { ["/v1"] = "/rerank" }: a base
--                 ending with a key gets its value instead; path_params = { param = path }:
--                 a call passing that parameter uses that path
--   request       { model = "model" (nil: not sent), query = "query", documents = "documents",
--                   document = "string" | "object" ({"text": ...}), top_n = "top_n" (nil:
--                   applied here only), truncate = { field =, NONE =, END = } (nil:
--                   truncate is unsupported) }
--   params        { name = "integer" | "number" | "boolean" | "string" | "strings" }: the
--                 provider's own parameters, passed through; any other is unsupported (an
--                 error naming it, or dropped with drop_params)
--   response      { list = "results" (nil: the answer is a bare list), index = "index",
--                   score = "relevance_score", id = nil, tokens = { "usage", "total_tokens" },
--                   billed_as = "total_tokens" (the meta.billed_units key of that count) }
--   max_passages  documents per request; nimrank batches above it [no limit]
--   errors        { [status] = error type }: what the provider's statuses mean, beyond the
--                 common mapping (401 auth, 404 not_found, 429 rate_limit, ...)
--   native        "nvidia_nim" only: NIM's own rules run in C; its descriptor documents it
local nim = require "nim"

local native = nim.native
local M = {}

local KINDS = { integer = true, number = true, boolean = true, string = true, strings = true }
local TYPES = {}
for _, t in ipairs({ "auth", "bad_request", "not_found", "rate_limit", "timeout", "connection",
  "provider", "bad_response" }) do TYPES[t] = true end
-- Names a provider's parameter may not take: nimrank's own arguments.
local RESERVED = {}
for _, list in pairs(native.keys) do
  for _, k in ipairs(list) do RESERVED[k] = true end
end

local function bad(path, fmt, ...)
  native.misuse("nim.providers.add", path, fmt:format(...))
end

local function check_string(v, path, pattern, what)
  if v == nil then return end
  if type(v) ~= "string" then bad(path, "expected string, got %s", type(v)) end
  if v:find("%z") then bad(path, "contains a NUL byte") end
  if pattern and not v:find(pattern) then bad(path, "must be %s (got %q)", what, v) end
end

local function check_list(v, path, pattern, what, max)
  if v == nil then return end
  if type(v) ~= "table" then bad(path, "expected a list of strings, got %s", type(v)) end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n ~= #v then bad(path, "expected a list of strings") end
  if max and n > max then bad(path, "at most %d entries", max) end
  for i, s in ipairs(v) do check_string(s, ("%s[%d]"):format(path, i), pattern, what) end
end

local function check_fields(t, path, spec)
  if t == nil then return end
  if type(t) ~= "table" then bad(path, "expected table, got %s", type(t)) end
  for k, v in pairs(t) do
    local check = spec[k]
    if not check then
      local known = {}
      for name in pairs(spec) do known[#known + 1] = name end
      table.sort(known)
      bad(path .. "." .. tostring(k), "unknown field (known: %s)", table.concat(known, ", "))
    end
    check(v, path .. "." .. k)
  end
end

local FIELD = "^[%w_%-%.]+$"
local function field(v, p) check_string(v, p, FIELD, "a JSON field name") end
local function path_string(v, p) check_string(v, p, "^/[%w%-%._~/]*$", "a URL path") end
local function env_list(v, p) check_list(v, p, "^[%a_][%w_]*$", "a variable name") end
local function json_value(v, p)
  local t = type(v)
  if t ~= "boolean" and t ~= "string" and math.type(v) ~= "integer" then
    bad(p, "expected a boolean, a string or an integer, got %s", t)
  end
end

local SPEC = {
  name = function(v, p) check_string(v, p, "^[%a][%w_%-]*$", "letters, digits, _ or -") end,
  api_base = function(v, p) check_string(v, p, "^https?://", "an http(s):// URL") end,
  base_env = env_list,
  key_env = env_list,
  key_required = function(v, p) if type(v) ~= "boolean" then bad(p, "expected boolean") end end,
  auth = function(v, p)
    check_fields(v, p, {
      header = function(h, hp) check_string(h, hp, "^[%w%-_]+$", "a header name") end,
      prefix = function(s, sp) check_string(s, sp, "^[^%c]*$", "free of control characters") end,
    })
  end,
  path = path_string,
  full = function(v, p) check_list(v, p, "^/[%w%-%._~/]*$", "a URL path") end,
  short = function(v, p)
    if type(v) ~= "table" then bad(p, "expected table, got %s", type(v)) end
    for k, s in pairs(v) do
      path_string(k, p .. " key")
      path_string(s, ("%s[%q]"):format(p, k))
    end
  end,
  path_params = function(v, p)
    if type(v) ~= "table" then bad(p, "expected table, got %s", type(v)) end
    for k, s in pairs(v) do
      field(k, p .. " key")
      path_string(s, ("%s.%s"):format(p, k))
    end
  end,
  request = function(v, p)
    check_fields(v, p, {
      model = field, query = field, documents = field, top_n = field,
      document = function(s, sp) check_string(s, sp, "^%l+$", "\"string\" or \"object\"")
        if s ~= "string" and s ~= "object" then bad(sp, "must be \"string\" or \"object\"") end
      end,
      truncate = function(t, tp)
        check_fields(t, tp, { field = field, NONE = json_value, END = json_value })
        if t.field == nil then bad(tp .. ".field", "required") end
      end,
    })
  end,
  params = function(v, p)
    if type(v) ~= "table" then bad(p, "expected table, got %s", type(v)) end
    for k, kind in pairs(v) do
      field(k, p .. " key")
      if RESERVED[k] then bad(p .. "." .. k, "is one of nimrank's own arguments") end
      if not KINDS[kind] then
        bad(p .. "." .. k, "must be integer, number, boolean, string or strings (got %s)",
          tostring(kind))
      end
    end
  end,
  response = function(v, p)
    check_fields(v, p, {
      list = field, index = field, score = field, id = field, billed_as = field,
      tokens = function(t, tp) check_list(t, tp, FIELD, "a JSON field name", 3) end,
    })
  end,
  max_passages = function(v, p)
    if math.type(v) ~= "integer" or v < 1 then bad(p, "expected an integer >= 1") end
  end,
  errors = function(v, p)
    if type(v) ~= "table" then bad(p, "expected table, got %s", type(v)) end
    for status, t in pairs(v) do
      if math.type(status) ~= "integer" or status < 300 or status > 599 then
        bad(p, "keys must be HTTP statuses 300..599 (got %s)", tostring(status))
      end
      if not TYPES[t] then bad(("%s[%d]"):format(p, status), "unknown error type %s",
        tostring(t)) end
    end
  end,
  native = function(v, p) if v ~= "nvidia_nim" then bad(p, "only \"nvidia_nim\"") end end,
  docs = function(v, p) check_string(v, p) end,
}

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

-- Prefixes that never name a descriptor: the embedded reranker and the fusion of several.
local TAKEN = { ["local"] = true, hybrid = true }

function M.add(desc)
  if type(desc) ~= "table" then
    native.misuse("nim.providers.add", nil, ("bad argument #1 (table expected, got %s)")
      :format(type(desc)))
  end
  check_fields(desc, "descriptor", SPEC)
  if desc.name == nil then bad("descriptor.name", "required") end
  if TAKEN[desc.name] then bad("descriptor.name", "%q is reserved", desc.name) end
  if desc.native and desc.name ~= "nvidia_nim" then bad("descriptor.native", "NIM's alone") end
  native.providers[desc.name] = copy(desc) -- a copy: later edits of desc change nothing
  return M
end

function M.get(name)
  return copy(native.providers[name])
end

function M.list()
  local out = {}
  for name in pairs(native.providers) do out[#out + 1] = name end
  table.sort(out)
  return out
end

-- The built-in providers, one file each.
M.BUILTIN = { "nvidia_nim", "cohere", "azure_ai", "jina_ai", "voyage", "together_ai",
  "infinity", "hosted_vllm", "huggingface" }
for _, name in ipairs(M.BUILTIN) do M.add(require("nim.providers." .. name)) end

return M
