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

-- Keys of the result envelope come first, in this order, at every level; other keys follow
-- sorted. Readers (people, diffs, snapshots) see id, results (index, relevance_score,
-- document), meta.
local FIRST = { id = 1, results = 2, index = 3, relevance_score = 4, document = 5, text = 6,
  meta = 7 }
local function key_before(a, b)
  local x, y = FIRST[a], FIRST[b]
  if x and y then return x < y end
  if x or y then return x ~= nil end
  return a < b
end

-- JSON with keys in that stable order, compact or indented. Scalars and strings are still
-- written by cjson.
local function write(v, indent)
  local out = {}
  local nl = indent and "\n" or ""
  local colon = indent and ": " or ":"
  local function put(x, depth)
    if type(x) ~= "table" then
      out[#out + 1] = M.encode(x)
      return
    end
    if depth > 100 then error("nim.json: nesting deeper than 100", 0) end
    local pad = indent and indent:rep(depth) or ""
    local inner = indent and indent:rep(depth + 1) or ""
    local n = #x
    local is_list = getmetatable(x) == array_mt or (n > 0 and next(x, n) == nil)
    if is_list then
      if n == 0 then out[#out + 1] = "[]" return end
      out[#out + 1] = "[" .. nl
      for i = 1, n do
        out[#out + 1] = inner
        put(x[i], depth + 1)
        out[#out + 1] = i < n and "," .. nl or nl
      end
      out[#out + 1] = pad .. "]"
      return
    end
    local keys = {}
    for k in pairs(x) do keys[#keys + 1] = tostring(k) end
    if #keys == 0 then out[#out + 1] = "{}" return end
    table.sort(keys, key_before)
    out[#out + 1] = "{" .. nl
    for i, k in ipairs(keys) do
      local val = x[k]
      if val == nil then val = x[tonumber(k)] end
      out[#out + 1] = inner .. M.encode(k) .. colon
      put(val, depth + 1)
      out[#out + 1] = i < #keys and "," .. nl or nl
    end
    out[#out + 1] = pad .. "}"
  end
  put(v, 0)
  return table.concat(out)
end

-- Compact JSON, keys in the stable order above.
function M.ordered(v) return write(v, nil) end

-- Indented JSON, keys in the stable order above.
function M.pretty(v, indent) return write(v, indent or "  ") end

M.decode = cjson.decode
M.null = cjson.null

-- A list for JSON: nim.json.array{} encodes as [].
M.array = nim.array

return M
