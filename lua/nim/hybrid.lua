-- nim.hybrid: model = "hybrid" runs two or more rerankers on the same documents at once and
-- fuses their rankings into one. Loaded by the router on first use.
--
--   nim.rerank{ model = "hybrid", models = { "nvidia-rerank", "local/bm25" },
--               fusion = "rrf", rrf_k = 60, weights = { 1, 1 }, query = ..., documents = ... }
--
-- or a config deployment: litellm_params: {model: hybrid, models: [...], fusion: ..., ...}.
--
-- * models: at least two model names (groups, aliases, provider models). Each goes through the
--   router (nim.router:rerank) as a call of its own: its group's deployments, retries,
--   fallbacks and filters apply. None may itself be hybrid (a recursion).
-- * fusion = "rrf" (default): reciprocal rank fusion, score = sum of w / (rrf_k + rank), rank
--   1-based in the component's answer, rrf_k = 60 by default (>= 0).
--   fusion = "weighted": score = sum of w * (s - min) / (max - min), s min-max normalised
--   over the scores that component returned. A component whose scores are all equal tells
--   the documents apart no more than one that did not rank them: its term is 0.
-- * weights: one per model, >= 0 and not all 0; default 1 each.
-- * A document a component did not rank (its answer was cut by a top_n of its own) gets no term
--   from it. Ties of the fused score go by index (the binding's one ranking rule).
-- * top_n and return_documents apply to the fused answer: components rank every document.
-- * A call-level api_key, api_base or headers goes only to the components of one provider: the
--   one provider (local aside: it takes no key) whose models would take them (a provider
--   model; a group's deployments without their own key and base: nim.router's
--   credential_owner). The other components go without them (a group's deployments bring
--   their own keys; a provider model uses its provider's environment variable). When
--   components of two providers would take them, the call is misuse naming the field: a key
--   is never sent to a provider it was not meant for.
-- * Each result carries `components`: { {model =, rank =, relevance_score =}, ... } for the
--   components that ranked it, in the order of models.
-- * meta: provider = "hybrid", model = "hybrid", fusion, rrf_k (rrf), billed_units summed
--   field by field (total_tokens, a Cohere component's search_units, ...),
--   components = { {model, provider, seconds, ok, error}, ... }; id is the first answering
--   component's. A failed component leaves a warning in meta.warnings (its error type and
--   message, which the binding has cleared of secrets) and the answer is fused from the
--   others alone (one survivor: its own order). When all fail: nil, the first component's
--   error, with err.components listing each one's.
-- * The components run as nim tasks (nim.async), so they are in flight together whether the
--   caller is a task (nim.spawn, rerank_async, a `nimrank serve` request) or not; cancelling
--   the caller's task cancels them.
local nim = require "nim"
local router_mod = require "nim.router"

local native = nim.native
local M = {}

local HYBRID = router_mod.HYBRID
local FUSIONS = { rrf = true, weighted = true }
local RRF_K = 60
local NUMBER_MAX = 1e7 -- as every number in a config: finite, not absurd

-- Component calls' arguments (weak keys): a hybrid reached from one (a fallback or alias that
-- leads to a hybrid group) would recurse.
local component_of = setmetatable({}, { __mode = "k" })

local function misuse(field, msg) native.misuse("nim.rerank", field, msg) end

local function got(v)
  if type(v) == "string" then return ("%q"):format(#v > 64 and v:sub(1, 64) .. "..." or v) end
  if math.type(v) == "float" then return ("%g"):format(v) end
  return type(v) == "number" and tostring(v) or type(v)
end

-- options(spec, bad) -> { models, fusion, rrf_k, weights }: the hybrid options of spec (a
-- request, or a deployment's litellm_params) checked. bad(field, message) raises: misuse for a
-- call, a key path for a config (nim.config asks this, it does not repeat it).
function M.options(spec, bad)
  bad = bad or misuse
  local models = spec.models
  if type(models) ~= "table" then
    bad("models", models == nil and 'required with model = "hybrid": a list of model names'
      or ("expected a list of model names, got %s"):format(type(models)))
  end
  local n = #models
  if n < 2 then bad("models", ("needs at least 2 model names to fuse (got %d)"):format(n)) end
  local list, seen = {}, {}
  for i = 1, n do
    local m, field = models[i], ("models[%d]"):format(i)
    if type(m) ~= "string" or m == "" then
      bad(field, ("expected a model name (a non-empty string), got %s"):format(got(m)))
    end
    if m == HYBRID then bad(field, "a component may not itself be hybrid") end
    if seen[m] then bad(field, ("%s is listed twice"):format(got(m))) end
    seen[m], list[i] = true, m
  end
  local fusion = spec.fusion
  if fusion == nil then fusion = "rrf" end
  if not FUSIONS[fusion] then
    bad("fusion", ('must be "rrf" or "weighted" (got %s)'):format(got(fusion)))
  end
  local k = spec.rrf_k
  if k ~= nil then
    if fusion ~= "rrf" then bad("rrf_k", 'only for fusion = "rrf"') end
    if type(k) ~= "number" or not (k >= 0 and k < NUMBER_MAX) then
      bad("rrf_k", ("must be a number >= 0, below 1e7 (got %s)"):format(got(k)))
    end
  end
  local weights, w = spec.weights, {}
  if weights == nil then
    for i = 1, n do w[i] = 1 end
  else
    if type(weights) ~= "table" then
      bad("weights", ("expected a list of numbers, got %s"):format(type(weights)))
    end
    if #weights ~= n then
      bad("weights", ("one per model: %d weights for %d models"):format(#weights, n))
    end
    local sum = 0
    for i = 1, n do
      local x = weights[i]
      if type(x) ~= "number" or not (x >= 0 and x < NUMBER_MAX) then
        bad(("weights[%d]"):format(i), ("must be a number >= 0, below 1e7 (got %s)")
          :format(got(x)))
      end
      w[i], sum = x, sum + x
    end
    if sum == 0 then bad("weights", "must not all be 0") end
  end
  return { models = list, fusion = fusion, rrf_k = k or RRF_K, weights = w }
end

-- Is name hybrid for router r: the pseudo-model, or a group (or alias) with a hybrid
-- deployment?
function M.is_hybrid(r, name)
  if name == HYBRID then return true end
  local g = r:group(name)
  for _, d in ipairs(g and g.deployments or {}) do
    if d.params.model == HYBRID then return true end
  end
  return false
end

-- The component calls' arguments: the call's own (a: the router's, no policy keys) for every
-- document, so no top_n; the fused answer's top_n is applied after the fusion. Without its
-- call-level credentials when they are not the component's (credentials below).
local NOT_PASSED = { model = true, top_n = true, top_k = true }
local CREDENTIAL = {}
for _, k in ipairs(router_mod.CREDENTIALS) do CREDENTIAL[k] = true end
local function component_args(a, name, keep_credentials)
  local ca = {}
  for k, v in pairs(a) do
    if not NOT_PASSED[k] and (keep_credentials or not CREDENTIAL[k]) then ca[k] = v end
  end
  ca.model = name
  component_of[ca] = true
  return ca
end

-- credentials(r, a, models) -> keep: keep[i] when component i gets the call's api_key,
-- api_base and headers (a). They go to the components of the one provider whose models would
-- take them; misuse when components of two providers would.
local function credentials(r, a, models)
  local keep = {}
  local field = router_mod.credential_field(a)
  if not field then return keep end
  local owners, takers, first = {}, {}, {}
  for i, m in ipairs(models) do
    local owner, receivers = r:credential_owner(m, a)
    owners[i] = owner
    for _, p in ipairs(receivers) do
      if not first[p] then
        first[p] = i
        takers[#takers + 1] = p
      end
    end
  end
  if #takers > 1 then
    local who = {}
    for _, p in ipairs(takers) do
      who[#who + 1] = ("%s: models[%d] %s"):format(p, first[p], got(models[first[p]]))
    end
    misuse(field, ("the components are of different providers (%s) and the call's %s would "
      .. "reach each: a call-level api_key, api_base or headers goes to one provider only; "
      .. "configure each component as a model group with its own api_key (and api_base) "
      .. "and leave it out of the call"):format(table.concat(who, ", "), field))
  end
  local one = takers[1]
  for i = 1, #models do keep[i] = one ~= nil and owners[i] == one end
  return keep
end

-- Everything the call would raise, raised before anything is sent. Returns the options and
-- the components' arguments.
local function prepare(r, a, spec)
  local opts = M.options(spec)
  for i, m in ipairs(opts.models) do
    if M.is_hybrid(r, m) then
      misuse(("models[%d]"):format(i), ("%s is hybrid itself: a component may not be")
        :format(got(m)))
    end
  end
  local keep = credentials(r, a, opts.models)
  native.merge({ { results = {} } }, a) -- the fused answer's top_n, by the binding's rule
  local calls = {}
  for i, m in ipairs(opts.models) do
    calls[i] = component_args(a, m, keep[i])
    -- the component's own misuse (query, documents, its group's options), raised before
    -- either is sent: never after the other component's request went out
    r:check(calls[i])
  end
  return opts, calls
end

-- check(r, a, spec): what call would raise, sending nothing (for nim.check).
function M.check(r, a, spec)
  prepare(r, a, spec)
  return true
end

-- One component's call, in its own task: never raises (a raise inside a task would surface
-- from whatever drives the scheduler next); what it would raise is returned.
local function run(r, ca)
  local t0 = nim.now()
  local out = {}
  local okc, valid, res, err = pcall(native.protect, r.rerank, r, ca)
  if not okc then
    out.raised = valid
  elseif not valid then
    out.bad = res
  else
    out.res, out.err = res, err
  end
  out.seconds = nim.now() - t0
  return out
end

-- Fuses the answers into one result (not yet sorted or cut); returns it and the billed units
-- summed over the answers, field by field (every numeric one: NIM's total_tokens, Cohere's
-- search_units, ...).
local function fuse(opts, outcomes)
  local by_index, results, billed_sum = {}, nim.array{}, {}
  for i, o in ipairs(outcomes) do
    local res = o.res
    if res then
      local list, w = res.results, opts.weights[i]
      local lo, hi = math.huge, -math.huge
      for _, x in ipairs(list) do
        lo, hi = math.min(lo, x.relevance_score), math.max(hi, x.relevance_score)
      end
      for rank, x in ipairs(list) do
        local e = by_index[x.index]
        if not e then
          e = { index = x.index, relevance_score = 0, components = nim.array{} }
          by_index[x.index] = e
          results[#results + 1] = e
        end
        if e.document == nil then e.document = x.document end
        e.components[#e.components + 1] = { model = opts.models[i], rank = rank,
          relevance_score = x.relevance_score }
        local term
        if opts.fusion == "rrf" then
          term = w / (opts.rrf_k + rank)
        else
          term = hi > lo and w * (x.relevance_score - lo) / (hi - lo) or 0
        end
        e.relevance_score = e.relevance_score + term
      end
      local billed = res.meta and res.meta.billed_units
      if type(billed) == "table" then
        for k, v in pairs(billed) do
          if type(k) == "string" and type(v) == "number" then
            billed_sum[k] = (billed_sum[k] or 0) + v
          end
        end
      end
    end
  end
  if next(billed_sum) == nil then billed_sum.total_tokens = 0 end
  return results, billed_sum
end

-- call(r, a, spec, args) -> res | nil, err: the hybrid call for router r. a: the call's
-- arguments as the router built them (model "hybrid", no policy keys, this attempt's
-- timeout); spec: where the hybrid options are (the deployment's litellm_params, else the
-- request); args: the request as the router got it. Raises on misuse before sending anything.
-- Inside a task it yields until the components are done; elsewhere it drives the scheduler.
function M.call(r, a, spec, args)
  if component_of[args] then
    return nil, native.error({ type = "bad_request", model = HYBRID,
      message = ("%s: a hybrid's component led to a hybrid model (through a fallback or "
        .. "an alias): a component may not itself be hybrid"):format(got(args.model)) })
  end
  local opts, calls = prepare(r, a, spec)
  local t0 = nim.now()
  local async = require "nim.async"
  local handles, tasks = {}, {}
  for i, ca in ipairs(calls) do
    handles[i] = async.start(run, r, ca) -- runs until its transfer is in flight
    tasks[i] = native.task_of(handles[i])
  end
  async.join(tasks)
  local outcomes, infos, warnings, first_ok = {}, nim.array{}, nim.array{}, nil
  for i, h in ipairs(handles) do
    local _, o = h:poll()
    if o.raised ~= nil then error(o.raised, 0) end
    if o.bad then native.misuse(o.bad.fn, o.bad.field, o.bad.message) end
    outcomes[i] = o
    local name, res, err = opts.models[i], o.res, o.err
    local meta = res and res.meta or err or {}
    infos[i] = { model = name, provider = meta.provider, seconds = o.seconds,
      ok = res ~= nil, error = err and err.type or nil,
      message = err and err.message or nil }
    for _, w in ipairs(meta.warnings or {}) do
      warnings[#warnings + 1] = ("%s: %s"):format(name, w)
    end
    if res then
      first_ok = first_ok or res
    else
      warnings[#warnings + 1] = ("hybrid: component %s failed (%s: %s); the answer is fused "
        .. "from the other components alone"):format(got(name), tostring(err.type),
        tostring(err.message))
    end
  end
  if not first_ok then
    local err = outcomes[1].err
    err.components = infos
    return nil, err
  end
  local results, billed = fuse(opts, outcomes)
  local res = native.merge({ { id = first_ok.id, results = results,
    meta = { latency_ms = (nim.now() - t0) * 1000 } } },
    a) -- sorted by the one ranking rule, cut to top_n
  local meta = res.meta
  meta.billed_units = billed -- the merge keeps total_tokens only
  meta.provider, meta.model, meta.fusion = HYBRID, HYBRID, opts.fusion
  meta.rrf_k = opts.fusion == "rrf" and opts.rrf_k or nil
  meta.components = infos
  if #warnings > 0 then meta.warnings = warnings end
  return res
end

return M
