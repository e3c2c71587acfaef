-- nim.json: lua-cjson, plus one thing Debian's cjson 2.1.0 cannot do: write an empty list as
-- [] instead of {}. Tables carrying nim.array_mt (every list nim creates: results,
-- dropped_params, ...) are lists; an empty one is swapped for a sentinel string before
-- encoding and the sentinel is replaced by [] afterwards. Only the path down to an empty list
-- is copied; the caller's tables are never modified.
local cjson = require "cjson"
local nim = require "nim"

local M = {}
local array_mt = nim.array_mt

local SENTINEL = ("@@nimrank:empty_array:%08x%08x@@"):format(
  math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
local QUOTED_SENTINEL = '"' .. SENTINEL .. '"'

-- Returns v with empty marked lists replaced (copying only what changes), and whether any was.
local function prepare(v, depth)
  if type(v) ~= "table" then return v, false end
  if depth > 100 then error("nim.json.encode: nesting deeper than 100", 0) end
  if getmetatable(v) == array_mt and next(v) == nil then return SENTINEL, true end
  local copy
  for k, x in pairs(v) do
    local y, changed = prepare(x, depth + 1)
    if changed then
      if not copy then
        copy = {}
        for k2, x2 in pairs(v) do copy[k2] = x2 end
      end
      copy[k] = y
    end
  end
  if copy then return copy, true end
  return v, false
end

-- cjson writes "/" as "\/". Valid JSON, but noisy in model names and URLs: in a run of
-- backslashes before "/", an odd count means the last one escapes the slash.
local function unescape_slashes(s)
  if not s:find("\\/", 1, true) then return s end
  return (s:gsub("(\\+)/", function(run)
    if #run % 2 == 1 then return run:sub(2) .. "/" end
  end))
end

function M.encode(v)
  local prepared, changed = prepare(v, 0)
  local s = cjson.encode(prepared)
  if changed then s = s:gsub(QUOTED_SENTINEL, "[]", nil) end
  return unescape_slashes(s)
end

-- Indented JSON with keys in sorted order, for people and for stable snapshots. Scalars and
-- strings are still written by cjson.
function M.pretty(v, indent)
  indent = indent or "  "
  local out = {}
  local function put(x, depth)
    if type(x) ~= "table" then
      out[#out + 1] = M.encode(x)
      return
    end
    local pad, inner = indent:rep(depth), indent:rep(depth + 1)
    local n = #x
    local is_list = getmetatable(x) == array_mt or (n > 0 and next(x, n > 0 and n or nil) == nil)
    if is_list then
      if n == 0 then out[#out + 1] = "[]" return end
      out[#out + 1] = "[\n"
      for i = 1, n do
        out[#out + 1] = inner
        put(x[i], depth + 1)
        out[#out + 1] = i < n and ",\n" or "\n"
      end
      out[#out + 1] = pad .. "]"
      return
    end
    local keys = {}
    for k in pairs(x) do keys[#keys + 1] = tostring(k) end
    if #keys == 0 then out[#out + 1] = "{}" return end
    table.sort(keys)
    out[#out + 1] = "{\n"
    for i, k in ipairs(keys) do
      local val = x[k]
      if val == nil then val = x[tonumber(k)] end
      out[#out + 1] = inner .. M.encode(k) .. ": "
      put(val, depth + 1)
      out[#out + 1] = i < #keys and ",\n" or "\n"
    end
    out[#out + 1] = pad .. "}"
  end
  put(v, 0)
  return table.concat(out)
end

M.decode = cjson.decode
M.null = cjson.null

-- A list for JSON: nim.json.array{} encodes as [].
M.array = nim.array

return M
