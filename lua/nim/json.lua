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

function M.encode(v)
  local prepared, changed = prepare(v, 0)
  local s = cjson.encode(prepared)
  if changed then s = s:gsub(QUOTED_SENTINEL, "[]", nil) end
  return s
end

M.decode = cjson.decode
M.null = cjson.null

-- A list for JSON: nim.json.array{} encodes as [].
M.array = nim.array

return M
