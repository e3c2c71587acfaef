-- nim.catalog: the known rerank models. The entries live in nim.catalog (seeded from the C
-- resolver's built-in table, which the C unit tests check); this module validates additions
-- and answers questions about them. An entry:
--   { endpoint_path = "/v1/retrieval/...", body_model = "...", max_passages = 512,
--     max_tokens = 8192, deprecated = "why", replacement = "model", family = "retrieval",
--     provider = "nvidia_nim" }
-- Keys use the URL spelling (underscores); a dotted ranking-family name finds the same entry.
local nim = require "nim"

local M = {}

local FIELDS = {
  endpoint_path = "string", body_model = "string", max_passages = "integer",
  max_tokens = "integer", deprecated = "string", replacement = "string", family = "string",
  provider = "string", description = "string",
}

-- Hosted NIM endpoints are all of the retrieval family.
for _, e in pairs(nim.catalog) do
  if e.provider == "nvidia_nim" and e.family == nil then e.family = "retrieval" end
end

local function key(name)
  local clean = name:gsub("^nvidia_nim/", ""):gsub("^ranking/", "")
  return clean
end

-- Adds or replaces an entry; raises naming the bad field. Returns the stored entry.
function M.add(name, entry)
  if type(name) ~= "string" or name == "" then error("catalog.add: name: expected a string", 2) end
  if type(entry) ~= "table" then error(("catalog[%q]: expected a table"):format(name), 2) end
  local e = {}
  for k, v in pairs(entry) do
    local want = FIELDS[k]
    if not want then error(("catalog[%q].%s: unknown field"):format(name, tostring(k)), 2) end
    local got = math.type(v) or type(v)
    if want == "integer" and math.type(v) == "float" and v == math.floor(v) then
      v, got = math.tointeger(v), "integer"
    end
    if got ~= want then
      error(("catalog[%q].%s: expected %s, got %s"):format(name, k, want, got), 2)
    end
    if (k == "max_passages" or k == "max_tokens") and v < 1 then
      error(("catalog[%q].%s: must be >= 1"):format(name, k), 2)
    end
    e[k] = v
  end
  e.provider = e.provider or "nvidia_nim"
  nim.catalog[key(name)] = e
  return e
end

function M.get(name)
  local k = key(name)
  return nim.catalog[k] or nim.catalog[(k:gsub("%.", "_"))]
end

function M.max_passages(name)
  if name:match("^local/") then return math.huge end
  local e = M.get(name)
  return e and e.max_passages or 512
end

-- The deprecation notice for a model, or nil.
function M.deprecation(name)
  local e = M.get(name)
  if e and e.deprecated then
    return ("%s is deprecated (%s)%s"):format(key(name), e.deprecated,
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
