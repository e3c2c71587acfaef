-- nim.layer: loaded by luaopen_nim (host program, require "nim", C embedders alike). Puts the
-- router pipeline in front of the native binding: after this, nim.rerank routes, retries,
-- falls back, batches and filters; nim.native.rerank stays the raw call.
--
-- Extending without editing these files: list scripts under nimrank_settings.scripts in a
-- config, or (in the nimrank program) set NIMRANK_INIT to a Lua file.
local nim = require "nim"
local router = require "nim.router"
local filters = require "nim.filters"
local catalog = require "nim.catalog"
local providers = require "nim.providers"

local native = nim.native

nim.filters = filters
nim.providers = providers
-- The scheduler (lua/nim/async.lua) loads on the first use of any of these, so scripts that
-- never go asynchronous do not compile it at start-up. nim.sleep yields inside nim's tasks
-- and blocks elsewhere.
local ASYNC = { "sleep", "poll", "next_timeout", "spawn", "run", "rerank_async", "rerank_many" }
for _, name in ipairs(ASYNC) do
  nim[name] = function(...)
    local async = require "nim.async"
    for _, n in ipairs(ASYNC) do nim[n] = async[n] end
    return async[name](...)
  end
end
nim.catalog_api = catalog
nim.router = router.new(nil)
nim.config = nil

-- Looks nim.router and nim.cache (the response cache, when a config turns it on) up at call
-- time, so load_config (or a user) can swap them. A request's cache controls are checked with
-- caching off too (LiteLLM's cache = {...}: a policy key, never sent to a provider).
function nim.rerank(args)
  local cache = nim.cache
  if cache then return cache:rerank(nim.router, args) end
  if type(args) == "table" and args.cache ~= nil then require("nim.cache").control(args) end
  return nim.router:rerank(args)
end

-- nim.check(args) -> true | nil, {fn, field, message}: everything nim.rerank would raise for
-- these arguments (its own options, the router's and the native call's), returned instead,
-- without any network traffic. The `.safe` flavour of misuse.
function nim.check(args)
  return native.protect(function()
    if type(args) == "table" and args.cache ~= nil then require("nim.cache").control(args) end
    nim.router:check(args)
  end)
end

-- nim.load_config(path_or_table [, router_opts]) -> config, warnings
-- Replaces the router, and the response cache (nim.cache: litellm_settings.cache; nil when
-- off); applies litellm_settings (drop_params, request_timeout) to nim.settings; adds
-- nimrank_settings.catalog entries; runs nimrank_settings.scripts.
function nim.load_config(source, opts)
  local config = require "nim.config"
  local cfg, warnings = config.load(source)
  for name, entry in pairs(cfg.nimrank.catalog or {}) do
    catalog.add(name, entry, "nimrank_settings.catalog")
  end
  local r = router.new(cfg, opts)
  if cfg.litellm.drop_params ~= nil then nim.settings.drop_params = cfg.litellm.drop_params end
  if cfg.litellm.request_timeout then nim.settings.timeout = cfg.litellm.request_timeout end
  if cfg.nimrank.script_budget then nim.settings.script_budget = cfg.nimrank.script_budget end
  local before_router, before_config, before_cache = nim.router, nim.config, nim.cache
  nim.router, nim.config = r, cfg
  nim.cache = nil
  if cfg.cache then
    nim.cache = require("nim.cache").new(cfg.cache)
    for _, w in ipairs(nim.cache:warnings()) do warnings[#warnings + 1] = w end
  end
  local ok, err = pcall(function()
    -- each on the instruction budget (nim.settings.script_budget), as Redis runs its scripts
    config.run_scripts(cfg, nim)
    -- a routing strategy the scripts were to register must be there now
    r:resolve_strategy(true)
  end)
  if not ok then -- router, config and cache stay what they were (what a script did, stays)
    nim.router, nim.config, nim.cache = before_router, before_config, before_cache
    error(err, 0)
  end
  return cfg, warnings
end

return nim
