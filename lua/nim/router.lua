-- nim.router: model groups (config model_name), aliases, deployment choice, retries with
-- backoff, cooldowns and fallbacks, in front of the provider call. Policy only: every network
-- call goes through opts.call (nim.batch.call by default: the native call, split into batches
-- when the model takes fewer documents per request). Clock, sleep and random source are
-- injectable so tests run deterministically on a fake clock.
--
-- Semantics (shared/spec/LITELLM_COMPAT.md section 4):
-- * With a config that names groups, a model name must be a group, an alias, or a provider
--   model string with its prefix (nvidia_nim/..., local/...); anything else is not_found,
--   listing the configured names. Without one, a bare name is a NIM model.
-- * A group's deployments are chosen among those not cooling down (and, where limits are
--   enforced, not at their rpm/tpm limit); when some have `order`, the lowest order available
--   wins; the routing strategy chooses among what is left (router_settings.routing_strategy:
--   simple-shuffle, the default, is weighted random by weight, else rpm, else tpm, else 1).
--   See "Routing strategies" below.
-- * A retryable failure is retried num_retries times (default 2) with exponential backoff and
--   jitter, never sooner than Retry-After or router_settings.retry_after; a wait longer than
--   max_retry_wait (default 60 s) is not waited for: the fallbacks run instead.
--   Retries spread over the group: each ready deployment is tried once before any is tried
--   again, and a retry that goes to a deployment that has not failed yet does not wait.
--   Errors that belong to one deployment (auth, not_found, bad_response) are not retried on
--   it, but do move to a sibling that has not failed yet; bad_request ends the group's turn.
-- * A deployment cools down (cooldown_time, default 5 s) at once after a 429, 401, 404 or 408,
--   or after more than allowed_fails (default 3) failures within a minute; a bad_request
--   (the provider refused the request itself: 400, 413, 422) is not the deployment's failure.
--   Cooldowns, failure counts and usage live in a state store (nim.state): this process's
--   memory, or Redis shared by every instance when router_settings name one.
-- * rpm/tpm are limits with routing_strategy usage-based-routing, or any strategy with
--   router_settings.enable_pre_call_checks (LiteLLM's rule; otherwise they are weights only):
--   a deployment whose usage window holds rpm requests (or tpm tokens) is skipped, and when
--   every deployment left is at its limit the call fails at once with rate_limit (429) and
--   retry_after = the seconds until a window frees; the fallbacks run.
-- * When a model's own attempts fail, its fallbacks run in order (per request, else the
--   group's, else the default list), at most max_fallbacks (5). Fallbacks do not chain.
-- * Every attempt is recorded in res.meta.attempts (or err.attempts); keys never are.
-- * A call-level api_key, api_base or headers belongs to the provider of the model the call
--   names (its prefix's; a group's deployments', local ones aside): an attempt gets them only
--   when its model is of that provider, so a fallback of another provider never sees them
--   (it uses its deployment's own, else its provider's environment variable). A deployment's
--   own api_key and api_base still win over the call's. A group whose deployments of two
--   providers would both take them is misuse (credentials below); hybrid applies the same
--   rule to its components (lua/nim/hybrid.lua).
-- * A routed call's timeout is its total time: the request's timeout (else
--   router_settings.timeout, else nim.settings.timeout) is a deadline for every attempt,
--   backoff wait and fallback. Each attempt gets its deployment's timeout
--   (litellm_params.timeout), never more than what is left; a wait that would pass the
--   deadline is not waited; when it is spent the call ends with the last error (or a timeout).
-- * A deployment's os.environ/NAME values are read when it is used: a config whose other
--   groups need a variable that is not set still loads and serves. What the call shows of
--   them is os.environ/NAME (err.model, meta.model, attempts), never a value (hide_env).
-- * Misuse of the router's own options (fallbacks that are not model names, a built-in
--   filter's argument) raises before anything is sent; nim.check returns it.
-- * model = "hybrid" (or a deployment with model: hybrid) fuses the answers of several
--   models, each routed by this router on its own (lua/nim/hybrid.lua); it is always a
--   servable name, as a provider model with its prefix is.
local nim = require "nim"
local filters = require "nim.filters"
local catalog = require "nim.catalog"
-- nim.config (the config parser, the largest module) loads on first use: a program that
-- reads no config does not compile it at start-up (docs/architecture.md, start-up).
local config = setmetatable({}, { __index = function(t, k)
  local m = require "nim.config"
  setmetatable(t, { __index = m }) -- from now on a table lookup, no call
  return m[k]
end })
local state_store = require "nim.state"

local native = nim.native
local M = {}
local Router = {}
Router.__index = Router

-- Policy keys (the binding's list): never passed to the provider call.
local POLICY = {}
for _, k in ipairs(native.keys.policy) do POLICY[k] = true end
local BATCH_KEYS = { "batch_size", "concurrency", "on_progress" } -- batch_options: by name too
local DEPLOYMENT_WINS = { model = true, api_key = true, api_base = true }
-- The call-level values that belong to one provider: never passed to a model of another.
local CREDENTIALS = { "api_key", "api_base", "headers" }
local IS_CREDENTIAL = {}
for _, k in ipairs(CREDENTIALS) do IS_CREDENTIAL[k] = true end
M.CREDENTIALS = CREDENTIALS
-- Deployment litellm_params used as call defaults (the request's own values win, except
-- DEPLOYMENT_WINS).
local CALL_DEFAULTS = { "truncate", "drop_params", "headers", "connect_timeout", "ca_bundle",
  "max_response_bytes", "return_documents", "bm25", "top_n", "api_key", "api_base" }
local NO_CONFIG = { deployments = {}, router = {}, litellm = {}, nimrank = {} }
-- The pseudo-model nim.hybrid serves. Its options (models, fusion, rrf_k, weights) are read
-- by nim.hybrid; they are policy keys of the binding's list, so never passed to a provider.
local HYBRID = "hybrid"
M.HYBRID = HYBRID
M.HYBRID_KEYS = { "models", "fusion", "rrf_k", "weights" }
for _, k in ipairs(M.HYBRID_KEYS) do assert(POLICY[k], k .. " missing from native.keys.policy") end

-- The provider call: the native call, split into batches when too large (nim.batch, loaded
-- on first use so start-up stays fast).
local batch_call
local function batched_call(a, batch)
  batch_call = batch_call or require("nim.batch").call
  return batch_call(a, batch)
end

-- ---- Routing strategies ---------------------------------------------------------------------
-- A strategy chooses one deployment among the candidates the router leaves it (ready, within
-- limits, of the lowest order, tried least during this call). It is a table (or a module
-- returning one), or has new(routing_strategy_args, router) -> such a table:
--   pick(deployments, state, ctx) -> one of deployments
--       state[d.id]: the deployment's record (nim.state: cooldown_until, requests, tokens,
--       resets_at, and the strategy's own fields); ctx: { router, group, args (the request),
--       now, random (the router's source: draw from it, for deterministic tests), tried }
--   on_start(d, state, ctx), on_end(d, state, ctx, outcome)   optional, around each attempt;
--       outcome: { ok, latency (s), err, tokens, now, cancelled (the task was cancelled) }
--   usage = true     count requests and tokens of its deployments even without limits
--   limits = true    enforce rpm/tpm whatever enable_pre_call_checks says
--   args = { name = { type = "number" | "integer", min =, max =, strict = } }   checked by
--       nim.config for routing_strategy_args
-- Register one with nim.router.strategies[name] = strategy (from a script under
-- nimrank_settings.scripts, say); a built-in's value is its module name, loaded when used.
M.strategies = {
  ["simple-shuffle"] = "nim.strategies.simple_shuffle",
  ["least-busy"] = "nim.strategies.least_busy",
  ["usage-based-routing"] = "nim.strategies.usage_based",
  ["usage-based-routing-v2"] = "nim.strategies.usage_based",
  ["latency-based-routing"] = "nim.strategies.latency_based",
}
Router.strategies = M.strategies -- nim.router.strategies[name] = ... reaches the same table
-- LiteLLM's strategies nimrank has no use for: a warning, and the default.
M.UNSUPPORTED_STRATEGIES = { ["cost-based-routing"] = true }
M.DEFAULT_STRATEGY = "simple-shuffle"

-- strategy(name) -> the strategy registered under name (its module loaded), or nil.
function M.strategy(name)
  local s = M.strategies[name]
  if type(s) == "string" then
    s = require(s)
    M.strategies[name] = s
  end
  return s
end

function M.strategy_names()
  local out = {}
  for name in pairs(M.strategies) do out[#out + 1] = name end
  table.sort(out)
  return out
end
-- Errors that belong to one deployment (its key, its base URL, its server), not to the
-- request: not retryable in themselves, but a sibling deployment may well succeed.
local SIBLING_ERRORS = { auth = true, not_found = true, bad_response = true }
-- An error of the deployment's own configuration (an unset os.environ/ variable) likewise.
local function deployment_error(err) return SIBLING_ERRORS[err.type] or err.deployment end

local function default_random() return math.random() end

-- new(cfg, opts): cfg from nim.config.load (or nil for "no config").
-- opts: clock() -> seconds, sleep(seconds), random() -> [0, 1), call(args, batch) -> res | nil,
-- err, state (a store of nim.state's interface), redis (a client of nim.redis's contract for
-- the Redis store, e.g. a test's fake)
function M.new(cfg, opts)
  cfg = cfg or NO_CONFIG
  opts = opts or {}
  local r = setmetatable({}, Router)
  r.clock = opts.clock or nim.now
  r.sleep = opts.sleep or function(s) return nim.sleep(s) end -- looked up now: async swaps it
  r.random = opts.random or default_random
  r.call = opts.call or batched_call
  local rs, ls = cfg.router, cfg.litellm
  r.num_retries = rs.num_retries or ls.num_retries or 2
  r.timeout = rs.timeout or ls.request_timeout
  r.allowed_fails = rs.allowed_fails or 3
  r.cooldown_time = rs.cooldown_time or 5
  r.retry_floor = rs.retry_after or 0
  r.max_retry_wait = rs.max_retry_wait or 60
  r.max_fallbacks = math.min(rs.max_fallbacks or 5, 5)
  r.aliases = rs.model_group_alias or {}
  r.fallbacks = {}
  for g, l in pairs(ls.fallbacks or {}) do r.fallbacks[g] = l end
  for g, l in pairs(rs.fallbacks or {}) do r.fallbacks[g] = l end -- router_settings win
  r.default_fallbacks = rs.default_fallbacks or ls.default_fallbacks or {}
  r.group_filters = {}
  local function shown(v) return config.shown(cfg, v) end -- never a value from os.environ/
  for g, pipeline in pairs(cfg.nimrank.filters or {}) do
    filters.check(pipeline, ("nimrank_settings.filters.%s"):format(g), nil, shown)
    r.group_filters[g] = pipeline
  end
  r.groups = {}
  r.has_env, r.defaults = {}, {}
  r.store = opts.state or state_store.for_config(rs, { clock = r.clock, redis = opts.redis })
  r.state = r.store.records -- deployment id -> its record (nim.state)
  r.usage_window = r.store.usage_window or rs.usage_window or state_store.USAGE_WINDOW
  for _, d in ipairs(cfg.deployments) do
    local g = r.groups[d.model_name]
    if not g then
      g = { name = d.model_name, deployments = {}, ids = {} }
      r.groups[d.model_name] = g
    end
    g.deployments[#g.deployments + 1] = d
    g.ids[#g.ids + 1] = d.id
    -- asked once, not per call: whether its params hold os.environ/ values (read at each
    -- call), and which call defaults it sets
    r.has_env[d] = config.has_env(d.params)
    local present = {}
    for _, k in ipairs(CALL_DEFAULTS) do
      if d.params[k] ~= nil then present[#present + 1] = k end
    end
    r.defaults[d] = present
    r.store:register(d.id, table.concat({ d.model_name, tostring(d.params.model),
      tostring(d.params.api_base or "") }, "\0"))
  end
  r.configured = next(r.groups) ~= nil or next(r.aliases) ~= nil
  r.strategy_name = rs.routing_strategy or M.DEFAULT_STRATEGY
  r.strategy_args = rs.routing_strategy_args or {}
  r.pre_call_checks = rs.enable_pre_call_checks == true
  r.shown = shown
  r:resolve_strategy(false) -- one a config script registers is found once it has run
  return r
end

-- resolve_strategy(strict) -> the router's strategy, set up on first use; nil when its name is
-- not registered (yet), or with strict an error naming router_settings.routing_strategy.
function Router:resolve_strategy(strict)
  if self.strategy then return self.strategy end
  local mod = M.strategy(self.strategy_name)
  if mod == nil then
    if not strict then return nil end
    error(("router_settings.routing_strategy: unknown strategy %s (known: %s; a script under "
      .. "nimrank_settings.scripts can register one: nim.router.strategies[name] = {pick = "
      .. "...})"):format(self.shown(self.strategy_name), table.concat(M.strategy_names(), ", ")),
      0)
  end
  local s = mod
  if type(mod) == "table" and type(mod.new) == "function" then
    s = mod.new(self.strategy_args, self)
  end
  if type(s) ~= "table" or type(s.pick) ~= "function" then
    error(("router_settings.routing_strategy: strategy %s has no pick function"):format(
      self.shown(self.strategy_name)), 0)
  end
  self.strategy = s
  self.count_usage = s.usage == true
  self.enforce_limits = self.pre_call_checks or s.limits == true
  self.hooks = (s.on_start or s.on_end) and s or nil
  return s
end

function Router:group_names()
  local out = {}
  for name in pairs(self.groups) do out[#out + 1] = name end
  for alias in pairs(self.aliases) do out[#out + 1] = alias end
  table.sort(out)
  return out
end

-- The group a model name refers to (through model_group_alias), or nil for a provider model.
function Router:group(name)
  return self.groups[name] or self.groups[self.aliases[name] or false]
end

-- nil when the name can be served; else the not_found error. With configured groups, only
-- they, their aliases and provider model strings with an explicit prefix can be.
function Router:unknown(name)
  if not self.configured or self:group(name) or name == HYBRID then return nil end
  local ok, _, explicit = pcall(native.provider_of, name)
  if ok and explicit then return nil end
  return native.error({ type = "not_found", status = 404, model = name,
    message = ("model %q is not a configured model group or alias (configured: %s); a "
      .. "provider model needs its prefix, e.g. nvidia_nim/%s"):format(name,
      table.concat(self:group_names(), ", "), name) })
end

-- Picks a deployment of group g: returns it, or nil, the seconds until one is ready and
-- whether only limits (no cooldown) stand in the way. tried counts this call's failures per
-- deployment: only the ready deployments tried least are candidates, so retries spread over
-- the group instead of re-rolling the dice. Among the candidates the strategy chooses; where a
-- deployment's usage is counted, admission is atomic (Redis: a script), and a deployment whose
-- last request another worker took meanwhile is dropped and the choice made again.
function Router:pick(g, tried, ctx)
  local now = self.clock()
  local strategy = self.strategy or self:resolve_strategy(true)
  local state = self.store:view(g.ids, now)
  local limits = self.enforce_limits
  ctx = ctx or { router = self, group = g, random = self.random, tried = tried }
  ctx.now = now
  for _ = 0, #g.deployments do
    local ready, best_order, fewest, soonest, cooling = {}, math.huge, math.huge, math.huge, false
    for _, d in ipairs(g.deployments) do
      local st = state[d.id]
      local until_ = st.cooldown_until
      if until_ > now then
        cooling = true
        if until_ < soonest then soonest = until_ end
      elseif limits and state_store.at_limit(st, d.params.rpm, d.params.tpm) then
        local frees = st.resets_at or now + self.usage_window
        if frees < soonest then soonest = frees end
      else
        local order, n = d.params.order or math.huge, tried and tried[d] or 0
        if n < fewest or (n == fewest and order < best_order) then
          fewest, best_order, ready = n, order, {}
        end
        if n == fewest and order == best_order then ready[#ready + 1] = d end
      end
    end
    if #ready == 0 then return nil, math.max(0, soonest - now), not cooling end
    local d = strategy.pick(ready, state, ctx)
    local found = false
    for _, x in ipairs(ready) do if x == d then found = true end end
    if not found then
      error(("routing strategy %s chose %s, not one of the deployments it was given"):format(
        self.shown(self.strategy_name), type(d) == "table" and tostring(d.id) or type(d)), 0)
    end
    local p = d.params
    local rpm, tpm = limits and p.rpm or nil, limits and p.tpm or nil
    if not (rpm or tpm or self.count_usage) then return d end
    if self.store:admit(d.id, now, rpm, tpm) then return d end
  end
  return nil, 1, true
end

-- Is a deployment of g that has not failed during this call ready now?
function Router:untried(g, tried)
  local now = self.clock()
  for _, d in ipairs(g.deployments) do
    if not tried[d] and self.state[d.id].cooldown_until <= now then return true end
  end
  return false
end

-- Records a failure; cools the deployment down when the rules say so.
function Router:fail(d, err)
  -- A request the provider refused as malformed (400, 413, 422) says nothing about the
  -- deployment: counting it would let one client cool a deployment down for everyone.
  if err.type == "bad_request" then return end
  local now = self.clock()
  local s = err.status
  if s == 429 or s == 401 or s == 404 or s == 408 then
    self.store:cool(d.id, self.cooldown_time, now)
    return
  end
  self.store:fail(d.id, now, self.allowed_fails, self.cooldown_time)
end

-- Seconds to wait before retry number n (1-based) after err.
function Router:backoff(n, err)
  local wait = math.min(8, 0.5 * 2 ^ (n - 1)) * (1 + 0.25 * self.random())
  return math.max(wait, err.retry_after or 0, self.retry_floor)
end

-- The provider call's arguments: the request's own (policy keys dropped; its credentials too
-- with drop_credentials: they belong to another provider), over the deployment's defaults; a
-- deployment's model, key and base win. Returns nil, err when a deployment's os.environ/
-- variable is not set.
-- Does deployment d's params hold os.environ/ values? Found once per deployment of this router
-- (a deployment it does not know is asked afresh).
function Router:env_in(d)
  local env = self.has_env[d]
  if env == nil then env = config.has_env(d.params) end
  return env
end

function Router:call_args(args, d, drop_credentials)
  local a = {}
  for k, v in pairs(args) do
    if not POLICY[k] and not (drop_credentials and IS_CREDENTIAL[k]) then a[k] = v end
  end
  if d then
    local params = d.params
    for _, k in ipairs(self.defaults[d] or CALL_DEFAULTS) do
      local v = params[k]
      if v ~= nil and (DEPLOYMENT_WINS[k] or a[k] == nil) then a[k] = v end
    end
    a.model = params.model
    if self:env_in(d) then
      for k, v in pairs(a) do
        local value, err = config.env_value(v, k)
        if err then return nil, err end
        a[k] = value
      end
    end
  end
  -- router_settings.timeout is a default: a caller's request_timeout beats it, as on the
  -- routed path (the binding reads timeout, else request_timeout)
  if a.timeout == nil and a.request_timeout == nil then a.timeout = self.timeout end
  return a
end

-- ---- whose credentials: a call-level api_key, api_base, headers ----------------------------

-- The provider a model string names (nim.native.provider_of: "nvidia_nim", "cohere", "local",
-- ...), HYBRID for the pseudo-model; nil when there is none to tell (an unknown local model,
-- which the call itself refuses, or an unset os.environ/ model).
local function provider_of(model)
  if model == HYBRID then return HYBRID end
  if type(model) ~= "string" then return nil end
  local ok, p = pcall(native.provider_of, model)
  return ok and p or nil
end

-- The provider of deployment d's model (its os.environ/ value read now), or nil.
local function deployment_provider(d)
  return provider_of((config.env_value(d.params.model, "model")))
end

-- The first call-level credential args holds (its field name), or nil.
local function credential_field(args)
  for _, k in ipairs(CREDENTIALS) do
    if args[k] ~= nil then return k end
  end
  return nil
end
M.credential_field = credential_field

-- Would deployment d take one of args' call-level credentials? Its own api_key and api_base
-- win (DEPLOYMENT_WINS); the call's headers replace its own.
local function takes_credentials(d, args)
  for _, k in ipairs(CREDENTIALS) do
    if args[k] ~= nil and not (DEPLOYMENT_WINS[k] and d.params[k] ~= nil) then return true end
  end
  return false
end

-- credential_owner(name, args) -> owner, receivers: for a call naming `name` with args,
-- owner is the provider its call-level credentials belong to: a provider model's own (HYBRID
-- for hybrid), a group's: the one provider of its deployments that would take them, else the
-- one provider of its deployments, local ones aside unless all are local; nil when there is
-- no one provider. receivers: the providers, local aside (it takes no key), whose models
-- would get them, sorted; more than one is misuse (Router:credentials, nim.hybrid).
function Router:credential_owner(name, args)
  local has = credential_field(args) ~= nil
  local g = self:group(name)
  if not g then
    local p = provider_of(name)
    return p, (has and p and p ~= "local") and { p } or {}
  end
  local providers, receivers, seen, taking, any_local = {}, {}, {}, {}, false
  for _, d in ipairs(g.deployments) do
    local p = deployment_provider(d)
    if p == "local" then
      any_local = true
    elseif p then
      if not seen[p] then
        seen[p] = true
        providers[#providers + 1] = p
      end
      if has and not taking[p] and takes_credentials(d, args) then
        taking[p] = true
        receivers[#receivers + 1] = p
      end
    end
  end
  table.sort(receivers)
  local owner
  if #receivers == 1 then
    owner = receivers[1]
  elseif #receivers == 0 then
    if #providers == 1 then
      owner = providers[1]
    elseif #providers == 0 and any_local then
      owner = "local"
    end
  end
  return owner, receivers
end

-- credentials(args) -> the provider args' call-level credentials belong to (nil: no one
-- provider, or none given). Misuse when deployments of two providers of the group the call
-- names would take them: a key goes to the provider it was meant for, never to another.
function Router:credentials(args)
  local field = credential_field(args)
  if not field or type(args.model) ~= "string" then return nil end
  local owner, receivers = self:credential_owner(args.model, args)
  if #receivers > 1 then
    native.misuse("nim.rerank", field, ("model group %q has deployments of different "
      .. "providers (%s) that would take the call's %s: a call-level api_key, api_base or "
      .. "headers goes to one provider only; give each deployment its own in the config "
      .. "and leave it out of the call"):format(self:group(args.model).name,
      table.concat(receivers, ", "), field))
  end
  return owner
end

-- Does args hold a policy key (one the provider call must not get)?
local function has_policy(args)
  for k in pairs(args) do
    if POLICY[k] then return true end
  end
  return false
end

-- The batching options of a request (nim.batch's, not the provider's).
local function batch_options(args)
  if args.batch_size == nil and args.concurrency == nil and args.on_progress == nil then
    return nil -- the usual case, without a loop
  end
  local b
  for _, k in ipairs(BATCH_KEYS) do
    if args[k] ~= nil then
      b = b or {}
      b[k] = args[k]
    end
  end
  return b
end

-- Runs fn(...) for the call arguments a of deployment d. When d has os.environ/ values (env:
-- Router:env_in(d); they were read into a), misuse is raised with their os.environ/NAME in
-- place of the values (a model string from the environment that the binding refuses, say),
-- never with the values themselves.
local function env_guard(env, d, a, fn, ...)
  if not env then return fn(...) end
  local function settle(ok, ...)
    if ok then return ... end
    local bad = ...
    native.misuse(bad.fn, bad.field, config.hide(bad.message, d.params))
  end
  return settle(native.protect(fn, ...))
end

-- What a call made with deployment d's os.environ/ values shows of them: os.environ/NAME as
-- the model (err.model, meta.model, the attempt's), never the values (messages, warnings).
-- Returns os.environ/NAME when the model is one.
local function hide_env(d, res, err)
  local env_model = config.env_name(d.params.model)
  local t = res and res.meta or err
  if not t then return env_model end
  if env_model then t.model = env_model end
  if err then err.message = config.hide(err.message, d.params) end
  for i, w in ipairs(t.warnings or {}) do t.warnings[i] = config.hide(w, d.params) end
  return env_model
end

-- The call behind an attempt: the provider call, or for model "hybrid" nim.hybrid's fusion
-- of its components' routed calls (options from the deployment d, else the request args).
function Router:invoke(a, batch, d, args)
  if a.model == HYBRID then
    return require("nim.hybrid").call(self, a, d and d.params or args, args)
  end
  return self.call(a, batch)
end

-- The tokens a result counts against tpm: billed_units.total_tokens, else search_units.
local function tokens_of(res)
  local b = res.meta and res.meta.billed_units
  local n = type(b) == "table" and (b.total_tokens or b.search_units)
  return type(n) == "number" and n > 0 and n or 0
end

-- Counts a successful call's tokens where they are counted (a tpm limit enforced, or a
-- strategy that uses them).
function Router:count_tokens(d, res)
  if self.count_usage or (self.enforce_limits and d.params.tpm) then
    local n = tokens_of(res)
    if n > 0 then self.store:record(d.id, self.clock(), n) end
  end
end

-- An attempt with the strategy's on_start/on_end around it. on_end runs however the attempt
-- ends, its task cancelled included (a to-be-closed guard: coroutine.close closes it).
local Guard = { __close = function(g)
  if g.open then
    g.open = false
    g.hooks.on_end(g.d, g.state, g.ctx, { ok = false, cancelled = true,
      latency = g.router.clock() - g.t0, now = g.router.clock(), tokens = 0 })
  end
end }

function Router:hooked(d, ctx, t0, a, batch, args)
  local hooks, state = self.hooks, self.state
  if hooks.on_start then hooks.on_start(d, state, ctx) end
  local guard <close> = hooks.on_end and setmetatable({ open = true, hooks = hooks, d = d,
    state = state, ctx = ctx, router = self, t0 = t0 }, Guard) or nil
  local res, e = env_guard(self:env_in(d), d, a, self.invoke, self, a, batch, d, args)
  if guard then
    guard.open = false
    local now = self.clock()
    hooks.on_end(d, state, ctx, { ok = res ~= nil, latency = now - t0, err = e, now = now,
      tokens = res and tokens_of(res) or 0 })
  end
  return res, e
end

-- One attempt's record: what was tried, how long it waited first, how it ended. No keys.
local function record(attempts, group, d, model, wait, err, latency_ms)
  attempts[#attempts + 1] = {
    model_group = group, deployment = d and d.id or nil, model = model, wait = wait,
    status = err and err.status or 200, error = err and err.type or nil,
    message = err and err.message or nil, latency_ms = latency_ms,
  }
end

-- Seconds left of the call's time: budget = { deadline =, total = }.
function Router:left(budget) return budget.deadline - self.clock() end

local function deadline_error(name, total)
  return native.error({ type = "timeout", model = name,
    message = ("no answer within the call's timeout of %.3g s"):format(total) })
end

-- Tries one model name (a group, or a provider model string) with its retries, within the
-- deadline. owner: the provider the call-level credentials belong to (Router:credentials): an
-- attempt of another provider's model goes without them. Returns res, deployment, group, the
-- model string called (perhaps a value from the environment: for lookups, never to be shown)
-- on success; nil, err on failure.
function Router:try(name, args, attempts, num_retries, budget, owner)
  local unknown = self:unknown(name)
  if unknown then
    record(attempts, nil, nil, name, 0, unknown, 0)
    return nil, unknown
  end
  local g = self:group(name)
  local group_name = g and g.name or nil
  local batch = batch_options(args)
  local wait, err = 0, nil
  local tried = {}
  local ctx = g and { router = self, group = g, args = args, random = self.random, tried = tried }
  for n = 0, num_retries do
    if n > 0 then
      -- Backoff spares a struggling server; a sibling that has not failed is tried at once.
      if g and self:untried(g, tried) then wait = 0 end
      if wait > self.max_retry_wait or wait >= self:left(budget) then break end
      if wait > 0 then self.sleep(wait) end
    end
    local d, ready_in, limited = nil, nil, false
    if g then d, ready_in, limited = self:pick(g, tried, ctx) end
    if g and not d then
      local last = attempts[#attempts]
      local why = limited and "at their rpm/tpm limit (a usage window frees in %.1f s)"
        or "cooling down (next ready in %.1f s)"
      err = native.error({
        type = "rate_limit", status = 429, model = name, retry_after = ready_in,
        message = ("no deployments available for %q: all %d are " .. why .. "%s"):format(
          g.name, #g.deployments, ready_in,
          last and last.error and (", last error: " .. last.error) or ""),
      })
      record(attempts, group_name, nil, name, wait, err, 0)
      -- a window is not waited for: the limit is there to shed load (the fallbacks run)
      if limited then break end
      wait = ready_in
    else
      local t0 = self.clock()
      local provider = d and deployment_provider(d) or provider_of(name)
      local env = d and self:env_in(d)
      local a, e = self:call_args(args, d, owner == nil or provider ~= owner)
      -- The time left, read once: what decides whether to go and what the attempt gets agree,
      -- so a deadline that passes meanwhile ends the call, never makes its timeout misuse.
      local left = self:left(budget)
      if a and left <= 0 then break end
      local res
      if a then
        if not d then a.model = name end
        -- an attempt gets its deployment's timeout, never more than the call has left
        a.timeout = math.min(d and d.params.timeout or math.huge, left)
        a.request_timeout = nil
        if d and self.hooks then
          res, e = self:hooked(d, ctx, t0, a, batch, args)
        else
          res, e = env_guard(env, d, a, self.invoke, self, a, batch, d, args)
        end
      end
      local model = a and a.model or nil
      if env then model = hide_env(d, res, e) or model end
      record(attempts, group_name, d, model, wait, e, (self.clock() - t0) * 1000)
      if res and d then self:count_tokens(d, res) end
      if res then return res, d, g, a.model end
      err = e
      if d then
        tried[d] = (tried[d] or 0) + 1
        self:fail(d, err)
      end
      if not err.retryable and not (d and deployment_error(err) and self:untried(g, tried)) then
        break
      end
      wait = self:backoff(n + 1, err)
    end
  end
  return nil, err or deadline_error(name, budget.total)
end

-- Raises (at the caller's line) on misuse of the router's own options. Runs on every call:
-- no table or closure is made unless an option is there to check.
local function filter_misuse(field, msg) native.misuse("nim.rerank", field, msg) end
local function check_retries(args, k)
  local v = args[k]
  if math.type(v) ~= "integer" or v < 0 or v > 100 then
    native.misuse("nim.rerank", k, "must be an integer between 0 and 100")
  end
end
local function check_options(args)
  if type(args) ~= "table" then
    native.misuse("nim.rerank", nil, ("bad argument #1 (table expected, got %s)"):format(
      type(args)))
  end
  if args.filters ~= nil then filters.check(args.filters, "filters", filter_misuse) end
  if args.timeout ~= nil then native.seconds(args.timeout, "nim.rerank", "timeout") end
  if args.request_timeout ~= nil then
    native.seconds(args.request_timeout, "nim.rerank", "request_timeout")
  end
  local fallbacks = args.fallbacks
  if fallbacks ~= nil then
    if type(fallbacks) ~= "table" then
      native.misuse("nim.rerank", "fallbacks", "expected a list of model names")
    end
    for i, name in ipairs(fallbacks) do
      if type(name) ~= "string" then
        native.misuse("nim.rerank", ("fallbacks[%d]"):format(i),
          ("expected a model name (string), got %s"):format(type(name)))
      end
    end
  end
  if args.num_retries ~= nil then check_retries(args, "num_retries") end
  if args.max_retries ~= nil then check_retries(args, "max_retries") end
end

-- check(args): raises what rerank would raise for these arguments, sending nothing. A group
-- is checked against its first deployment whose variables are set (an unset one is a
-- runtime error of that deployment, not misuse of the call).
function Router:check(args)
  check_options(args)
  if type(args.model) == "string" and self:unknown(args.model) then return true end
  self:credentials(args)
  local g = type(args.model) == "string" and self:group(args.model)
  local a, d
  for _, dep in ipairs(g and g.deployments or {}) do
    a, d = self:call_args(args, dep), dep
    if a then break end
  end
  if g and not a then -- no deployment can be resolved now: check the request's own options
    require("nim.batch").check({ model = "local/bm25" }, batch_options(args))
    return true
  end
  a = a or self:call_args(args, nil)
  env_guard(d and self:env_in(d), d, a, function()
    if a.model == HYBRID then
      return require("nim.hybrid").check(self, a, d and d.params or args)
    end
    require("nim.batch").check(a, batch_options(args))
    native.validate(a)
  end)
  return true
end

-- rerank(args) -> res | nil, err: the routed pipeline behind nim.rerank.
function Router:rerank(args)
  check_options(args)
  local name = args.model
  if type(name) ~= "string" then -- the binding names the problem
    return native.rerank(self:call_args(args, nil))
  end
  local g = self:group(name)
  local plain = not g and args.filters == nil and args.fallbacks == nil
    and args.num_retries == nil and args.max_retries == nil and #self.default_fallbacks == 0
  if plain then
    local unknown = self:unknown(name)
    if unknown then return nil, unknown end
    -- args itself goes to the built-in call when there is nothing to take out or add (no
    -- policy key, no router timeout) and it is a plain table: that call reads it before it
    -- yields and never writes to it (nim.batch snapshots what it reads later), and a copy is
    -- a fifth of the router's cost on a small call. A call of the user's gets a copy.
    local a = (self.call == batched_call and self.timeout == nil and name ~= HYBRID
      and getmetatable(args) == nil and not has_policy(args)) and args
      or self:call_args(args, nil)
    return self:invoke(a, batch_options(args), nil, args)
  end

  local num_retries = args.num_retries or args.max_retries or (g and self.num_retries or 0)
  -- the call's own timeout, else router_settings.timeout, else the binding's rule
  local total = (args.timeout == nil and args.request_timeout == nil and self.timeout)
    or native.call_timeout(args)
  local budget = { deadline = self.clock() + total, total = total }
  local attempts = nim.array{}
  local owner = not self:unknown(name) and self:credentials(args) or nil
  local res, d_or_err, answered, called = self:try(name, args, attempts, num_retries, budget,
    owner)
  local fallback
  if not res and not self:unknown(name) then
    local chain = args.fallbacks or self.fallbacks[g and g.name or name] or self.default_fallbacks
    for i = 1, math.min(#chain, self.max_fallbacks) do
      if self:left(budget) <= 0 then break end
      res, d_or_err, answered, called = self:try(chain[i], args, attempts, num_retries, budget,
        owner)
      if res then
        fallback = chain[i]
        break
      end
    end
  end
  if not res then
    local err = d_or_err
    err.attempts = attempts
    return nil, err
  end
  local d = d_or_err
  local meta = res.meta
  meta.attempts = attempts
  meta.model_group = answered and answered.name or nil
  meta.deployment = d and d.id or nil
  meta.fallback = fallback
  -- looked up by the model called (the attempt shows os.environ/NAME for one from the
  -- environment); a note about such a model names it os.environ/NAME, never by its value
  local env_model = d and config.env_name(d.params.model)
  local note = catalog.deprecation(called, env_model)
  if note and d and self:env_in(d) then note = config.hide(note, d.params) end
  if note then
    meta.warnings = meta.warnings or nim.array{}
    meta.warnings[#meta.warnings + 1] = note
  end
  local ctx = { model = name, query = args.query, group = meta.model_group, router = self }
  if answered and self.group_filters[answered.name] then
    filters.apply(res, self.group_filters[answered.name], ctx)
  end
  filters.apply(res, args.filters, ctx)
  return res
end

return M
