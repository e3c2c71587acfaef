-- nim.filters: post-filters on results, applied after any provider's answer. A pipeline is a
-- list whose entries are a name ("dedupe"), a one-key table ({min_score = 0.5}), or a
-- function (results, ctx) -> results. Users add named filters with register(name, fn).
local nim = require "nim"
-- The instruction budget's rule is nim.config's (config.budget), required where it is used:
-- the config parser, the largest module, is not compiled at start-up by a program that runs
-- no filter (docs/architecture.md, start-up).
local function budget() return require("nim.config").budget() end

local M = {}

local function list(t) return nim.array(t) end

local builtin = {}

-- The built-in filters' argument rules, checked before any request (M.check) and again when
-- they run (a pipeline can change in between): nil when fine, else what is wrong. The string
-- form of an entry ("top_n") passes true.
local ARGUMENT = {
  top_n = function(n)
    if math.type(n) ~= "integer" or n < 1 then return "must be an integer >= 1" end
  end,
  min_score = function(min)
    if type(min) ~= "number" or min ~= min then return "expected a number" end
  end,
  normalize = function(how)
    if how ~= "sigmoid" then return 'only "sigmoid" is supported' end
  end,
  dedupe = function(enabled)
    if type(enabled) ~= "boolean" then return "expected a boolean" end
  end,
  return_documents = function(keep)
    if type(keep) ~= "boolean" then return "expected a boolean" end
  end,
}

local function check_argument(name, arg)
  local bad = ARGUMENT[name](arg)
  if bad then error(("filters: %s: %s"):format(name, bad), 0) end
end

-- Keeps the first n results (they are in rank order).
function builtin.top_n(results, _, n)
  check_argument("top_n", n)
  local out = {}
  for i = 1, math.min(n, #results) do out[i] = results[i] end
  return list(out)
end

-- Drops results whose score (relevance_score, or probability when normalised) is below min.
function builtin.min_score(results, _, min)
  check_argument("min_score", min)
  local out = {}
  for _, r in ipairs(results) do
    local s = r.probability or r.relevance_score
    if s >= min then out[#out + 1] = r end
  end
  return list(out)
end

-- normalize = "sigmoid" adds probability = 1 / (1 + e^-score) and keeps relevance_score raw,
-- so Cohere-style clients and thresholds on logits keep working.
function builtin.normalize(results, _, how)
  check_argument("normalize", how)
  for _, r in ipairs(results) do
    r.probability = 1 / (1 + math.exp(-r.relevance_score))
  end
  return results
end

-- Identical document text keeps only its best-ranked result. Needs documents in the results.
function builtin.dedupe(results, _, enabled)
  check_argument("dedupe", enabled)
  if enabled == false then return results end
  local seen, out = {}, {}
  for _, r in ipairs(results) do
    local text = r.document and r.document.text
    if text == nil or not seen[text] then
      if text ~= nil then seen[text] = true end
      out[#out + 1] = r
    end
  end
  return list(out)
end

-- return_documents = false drops document from every result.
function builtin.return_documents(results, _, keep)
  check_argument("return_documents", keep)
  if keep == false then
    for _, r in ipairs(results) do r.document = nil end
  end
  return results
end

local registry = setmetatable({}, { __index = builtin })

function M.register(name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then
    error("filters.register(name, fn): expected a string and a function", 2)
  end
  registry[name] = fn
end

function M.names()
  local out = {}
  for k in pairs(builtin) do out[#out + 1] = k end
  for k in pairs(registry) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Checks a pipeline before any call, so a typo fails early and names the entry. fail(path,
-- message) raises; by default error("path: message", 0) (config errors carry no position).
-- show(name) is how a message shows a filter's name (a config passes its own rule: never a
-- value from the environment). A built-in filter's argument is checked here too (unless the
-- name was registered over it), so a bad one fails before the request is sent, and nim.check
-- sees it.
local function fail_plain(path, msg) error(("%s: %s"):format(path, msg), 0) end
local function quoted(v) return ("%q"):format(v) end

function M.check(pipeline, where, fail, show)
  where, fail, show = where or "filters", fail or fail_plain, show or quoted
  if pipeline == nil then return end
  if type(pipeline) ~= "table" then fail(where, "expected a list") end
  if pipeline[1] ~= nil then budget() end -- the budget they will run on
  for i, f in ipairs(pipeline) do
    local p = ("%s[%d]"):format(where, i)
    local name, arg
    if type(f) == "string" then
      name, arg = f, true
    elseif type(f) == "table" then
      local n = 0
      for k, v in pairs(f) do name, arg, n = k, v, n + 1 end
      if n ~= 1 or type(name) ~= "string" then
        fail(p, "expected a one-key table such as {min_score = 0.5}")
      end
    elseif type(f) ~= "function" then
      fail(p, "expected a name, a one-key table or a function")
    end
    if name ~= nil then
      if not registry[name] then fail(p, ("unknown filter %s"):format(show(name))) end
      local bad = registry[name] == builtin[name] and ARGUMENT[name](arg)
      if bad then fail(p .. "." .. name, bad) end
    end
  end
end

-- Runs the pipeline over res.results; ctx is passed to every filter ({model, query, ...}).
function M.apply(res, pipeline, ctx)
  if not pipeline or #pipeline == 0 then return res end
  local results = res.results
  for i, f in ipairs(pipeline) do
    local fn, arg, label
    if type(f) == "function" then fn, label = f, ("filters[%d]"):format(i)
    elseif type(f) == "string" then fn, arg, label = registry[f], true, "filter " .. f
    else
      local name, value = next(f)
      fn, arg, label = registry[name], value, "filter " .. name
    end
    -- a filter (perhaps a config script's) runs on an instruction budget: a runaway one is
    -- stopped with an error naming it instead of hanging the call
    local out = nim.native.budget(budget(), label, fn, results, ctx, arg)
    if type(out) ~= "table" then
      error(("filters[%d]: a filter must return the results list"):format(i), 0)
    end
    results = out
  end
  if getmetatable(results) == nil then nim.array(results) end
  res.results = results
  return res
end

return M
