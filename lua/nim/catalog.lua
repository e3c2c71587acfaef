-- nim.catalog: the known rerank models. The entries live in nim.catalog (seeded from the C
-- resolver's built-in table, which the C unit tests check); this module validates additions
-- and answers questions about them. An entry:
--   { endpoint_path = "/v1/retrieval/...", body_model = "...", max_passages = 512,
--     max_tokens = 8192, deprecated = "why", replacement = "model", family = "retrieval",
--     provider = "nvidia_nim" }
-- How names map to keys, how a lookup finds an entry and the default passage limit are the
-- binding's (nim.native.catalog_key, catalog_entry, max_passages): asked here, not repeated.
local nim = require "nim"

local native = nim.native
local M = {}

local FIELDS = {
  endpoint_path = "string", body_model = "string", max_passages = "integer",
  max_tokens = "integer", deprecated = "string", replacement = "string", family = "string",
  provider = "string", description = "string",
}

-- add(name, entry [, where]): adds or replaces an entry; raises naming the bad field, under
-- `where` (a config key path) when given. Returns the stored entry.
function M.add(name, entry, where)
  local function bad(field, msg)
    if where then error(("%s.%s%s: %s"):format(where, name, field, msg), 0) end
    native.misuse("catalog.add", ("catalog[%q]%s"):format(name, field), msg)
  end
  if type(name) ~= "string" or name == "" then native.misuse("catalog.add", "name",
    "expected a non-empty string") end
  if type(entry) ~= "table" then bad("", "expected a table") end
  local e = {}
  for k, v in pairs(entry) do
    local want = FIELDS[k]
    if not want then bad("." .. tostring(k), "unknown field") end
    local got = math.type(v) or type(v)
    if want == "integer" and math.type(v) == "float" and v == math.floor(v) then
      v, got = math.tointeger(v), "integer"
    end
    if got ~= want then bad("." .. k, ("expected %s, got %s"):format(want, got)) end
    if (k == "max_passages" or k == "max_tokens") and v < 1 then bad("." .. k, "must be >= 1") end
    e[k] = v
  end
  e.provider = e.provider or "nvidia_nim"
  nim.catalog[native.catalog_key(name)] = e
  return e
end

M.get = native.catalog_entry

-- Documents one request may carry for a model string; math.huge when there is no limit.
function M.max_passages(model)
  return native.max_passages(model) or math.huge
end

-- The deprecation notice for a model, or nil. shown: how the notice names the model (default
-- its catalog key; os.environ/NAME for a model string read from the environment).
function M.deprecation(name, shown)
  local ok, e = pcall(native.catalog_entry, name)
  if ok and e and e.deprecated then
    return ("%s is deprecated (%s)%s"):format(shown or native.catalog_key(name), e.deprecated,
      e.replacement and ("; use %s instead"):format(e.replacement) or "")
  end
end

function M.names()
  local out = {}
  for k in pairs(nim.catalog) do out[#out + 1] = k end
  table.sort(out)
  return out
end

return M
