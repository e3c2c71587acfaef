-- docs/config.md and the config loader (lua/nim/config.lua) must not drift apart.
--
-- The convention docs/config.md follows (it says so itself, under "How this page is checked"):
-- * Only Markdown tables whose first header cell is `key` or `ignored key` are read. Text, code
--   blocks and other tables are not.
-- * A `key` table lists keys the loader accepts; an `ignored key` table lists LiteLLM keys the
--   loader warns about and ignores.
-- * Each body row's first cell is exactly one full key path in backticks: section and key names
--   joined by dots, `model_list[]` standing for every entry of the list. For example
--   `model_list[].litellm_params.api_key`, `router_settings.routing_strategy_args.ttl`,
--   `litellm_settings.cache_params.type`; a section is a row of its own (`router_settings`).
-- Checked here:
-- 1. every key the loader accepts has a row: its lists (require("nim.config").KNOWN, the tables
--    it checks each section with) and each built-in routing strategy's declared `args` (which
--    the loader checks routing_strategy_args against);
-- 2. every `key` row is a key the loader accepts, or a key under model_list[].model_info (free
--    form, as in LiteLLM) that loads without a warning;
-- 3. every `ignored key` row loads (a minimal config holding it) with a warning naming its path;
-- 4. no path has two rows, and every first cell is one well-formed path.
local spec = require "spec"
local config = require "nim.config"
local router = require "nim.router"
local test, ok = spec.test, spec.ok

local DOC = "docs/config.md"

-- Every row of the key tables: { path = ..., kind = "key" | "ignored key", line = n }; and
-- problems found while reading (malformed rows).
local function read_rows()
  local f = assert(io.open(DOC, "rb"), DOC .. " is missing")
  local text = f:read("a")
  f:close()
  local rows, problems = {}, {}
  local in_code, kind, state = false, nil, nil -- state: nil | "header" | "body"
  local n = 0
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    if line:match("^%s*```") then
      in_code, state = not in_code, nil
    elseif not in_code and line:match("^%s*|") then -- (nothing in a code block counts)
      local first = line:match("^%s*|([^|]*)|")
      first = first and first:match("^%s*(.-)%s*$")
      if state == nil then -- a table starts: its header row
        kind = (first == "key" or first == "ignored key") and first or nil
        state = "header"
      elseif state == "header" then -- the |---| row
        state = "body"
      elseif kind then
        local path = first and first:match("^`([^`]+)`$")
        if not path then
          problems[#problems + 1] = ("line %d: the first cell is not one key path in "
            .. "backticks: %s"):format(n, tostring(first))
        else
          rows[#rows + 1] = { path = path, kind = kind, line = n }
        end
      end
    elseif not in_code then
      state, kind = nil, nil
    end
  end
  return rows, problems
end

local function well_formed(path)
  local i = 0
  for seg in (path .. "."):gmatch("([^.]*)%.") do
    i = i + 1
    if not (seg:match("^[%a_][%w_]*$") or (i == 1 and seg == "model_list[]")) then
      return false
    end
  end
  return i > 0 and path ~= "model_list[]"
end

-- The keys the loader accepts, as paths: set (path -> true).
local function loader_keys()
  local K = config.KNOWN
  assert(type(K) == "table", "nim.config.KNOWN is missing: the loader's key lists are not "
    .. "exported")
  local out = {}
  local function add(prefix, map)
    for k in pairs(map) do out[prefix .. k] = true end
  end
  for _, k in ipairs(K.top) do out[k] = true end
  add("model_list[].", K.model_list)
  add("model_list[].litellm_params.", K.litellm_params)
  add("router_settings.", K.router_settings)
  add("litellm_settings.", K.litellm_settings)
  add("litellm_settings.cache_params.", K.cache_params)
  add("general_settings.", K.general_settings)
  add("nimrank_settings.", K.nimrank_settings)
  -- routing_strategy_args: the built-in strategies' (lua/nim/strategies/*.lua), not strategies
  -- another spec may have registered in this process
  for _, name in ipairs(router.strategy_names()) do pcall(router.strategy, name) end
  for modname, mod in pairs(package.loaded) do
    if modname:match("^nim%.strategies%.") and type(mod) == "table"
      and type(mod.args) == "table" then
      add("router_settings.routing_strategy_args.", mod.args)
    end
  end
  return out
end

-- A minimal config holding path = value (a model_list entry gets a model_name and a model; a
-- cache_params key turns the cache on, or its keys are not looked at).
local function config_with(path, value)
  local root = {}
  local t = root
  local segs = {}
  for seg in path:gmatch("[^.]+") do segs[#segs + 1] = seg end
  for i, seg in ipairs(segs) do
    if seg == "model_list[]" then
      local entry = { model_name = "docs-check", litellm_params = { model = "local/bm25" } }
      root.model_list = { entry }
      t = entry
    elseif i == #segs then
      t[seg] = value
    else
      t[seg] = t[seg] or {}
      t = t[seg]
    end
  end
  if root.litellm_settings and root.litellm_settings.cache_params then
    root.litellm_settings.cache = true
  end
  return root
end

local function shown_path(path) return (path:gsub("%[%]", "[1]")) end

local rows, problems = read_rows()

test("docs_config_md_key_tables_are_well_formed", function()
  local all = {}
  for _, p in ipairs(problems) do all[#all + 1] = p end
  local seen = {}
  for _, r in ipairs(rows) do
    if seen[r.path] then
      all[#all + 1] = ("lines %d and %d: two rows for %s"):format(seen[r.path], r.line, r.path)
    end
    seen[r.path] = r.line
    if not well_formed(r.path) then
      all[#all + 1] = ("line %d: not a key path: %s"):format(r.line, r.path)
    end
  end
  if #rows == 0 then all[#all + 1] = "no `key` table" end
  ok(#all == 0, DOC .. ":\n" .. table.concat(all, "\n"))
end)

test("every_key_the_loader_accepts_is_documented_in_config_md", function()
  local documented = {}
  for _, r in ipairs(rows) do documented[r.path] = true end
  local missing = {}
  for path in pairs(loader_keys()) do
    if not documented[path] then missing[#missing + 1] = path end
  end
  table.sort(missing)
  ok(#missing == 0, ("accepted by the loader, but without a row in %s: %s"):format(DOC,
    table.concat(missing, ", ")))
end)

test("every_key_config_md_documents_as_accepted_is_accepted_by_the_loader", function()
  local known = loader_keys()
  local wrong = {}
  for _, r in ipairs(rows) do
    if r.kind == "key" and not known[r.path] then
      local free = r.path:match("^model_list%[%]%.model_info%.([%a_][%w_]*)$")
      local accepted = false
      if free then -- model_info is free-form: accepted when it loads without a warning
        local loaded, _, warnings = pcall(config.load, config_with(r.path, "docs-check"))
        accepted = loaded and #warnings == 0
      end
      if not accepted then wrong[#wrong + 1] = ("%s (line %d)"):format(r.path, r.line) end
    end
  end
  ok(#wrong == 0, ("documented as accepted in %s, but the loader does not accept: %s"):format(
    DOC, table.concat(wrong, ", ")))
end)

test("every_ignored_key_in_config_md_loads_with_a_warning_naming_it", function()
  local wrong = {}
  for _, r in ipairs(rows) do
    if r.kind == "ignored key" then
      local loaded, cfg_or_err, warnings = pcall(config.load, config_with(r.path, true))
      local named = false
      for _, w in ipairs(loaded and warnings or {}) do
        if w:find(shown_path(r.path), 1, true) then named = true end
      end
      if not named then
        wrong[#wrong + 1] = ("%s (line %d): %s"):format(r.path, r.line, loaded
          and ("warnings: " .. table.concat(warnings, "; "))
          or ("error: " .. tostring(cfg_or_err)))
      end
    end
  end
  ok(#wrong == 0, ("listed as ignored in %s, but no warning names them:\n%s"):format(DOC,
    table.concat(wrong, "\n")))
end)
