-- latency-based-routing: the candidate with the lowest recent latency, from this worker's own
-- observations (not shared through Redis). routing_strategy_args (LiteLLM's names, plus one):
--   ttl                     seconds a latency sample counts (default 3600)
--   max_latency_list_size   samples kept per deployment (default 10); their mean is its latency
--   lowest_latency_buffer   candidates within (1 + buffer) x the lowest share the traffic at
--                           random (default 0: the lowest only)
--   exploration             nimrank: the share of choices made uniformly at random, so a
--                           deployment that was slow once gets measured again (default 0.1)
-- A deployment without a sample counts as 0 s: new ones are measured first. A failed attempt
-- (other than a bad request, which is the client's) counts as at least FAILURE_LATENCY seconds:
-- a server that refuses at once must not look fast.
local nth = require("nim.strategies.least_busy").nth

local M = { name = "latency-based-routing", FAILURE_LATENCY = 10 }

-- Arguments: checked by nim.config when the config loads (errors name the key path).
M.args = {
  ttl = { type = "number", min = 0, strict = true },
  max_latency_list_size = { type = "integer", min = 1, max = 1000 },
  lowest_latency_buffer = { type = "number", min = 0 },
  exploration = { type = "number", min = 0, max = 1 },
}

function M.new(args)
  args = args or {}
  local ttl = args.ttl or 3600
  local size = args.max_latency_list_size or 10
  local buffer = args.lowest_latency_buffer or 0
  local exploration = args.exploration or 0.1
  local inst = { name = M.name }

  -- The mean of a record's samples younger than ttl, or nil.
  local function latency(st, now)
    local lat = st.latency
    if not lat then return nil end
    local sum, n = 0, 0
    for i = 1, #lat.s do
      if now - lat.t[i] < ttl then sum, n = sum + lat.s[i], n + 1 end
    end
    if n == 0 then return nil end
    return sum / n
  end
  inst.latency = latency

  function inst.pick(deployments, state, ctx)
    local n = #deployments
    if n == 1 then return deployments[1] end
    if exploration > 0 and ctx.random() < exploration then
      return deployments[nth(ctx, n)]
    end
    local lowest, of = math.huge, {}
    for i, d in ipairs(deployments) do
      of[i] = latency(state[d.id], ctx.now) or 0
      if of[i] < lowest then lowest = of[i] end
    end
    local within = {}
    for i, d in ipairs(deployments) do
      if of[i] <= lowest * (1 + buffer) then within[#within + 1] = d end
    end
    return within[nth(ctx, #within)]
  end

  function inst.on_end(d, state, ctx, outcome)
    if outcome.cancelled then return end
    local s = outcome.latency
    if not outcome.ok then
      if outcome.err and outcome.err.type == "bad_request" then return end
      s = math.max(s, M.FAILURE_LATENCY)
    end
    local st = state[d.id]
    local lat = st.latency
    if not lat then
      lat = { s = {}, t = {}, i = 0 }
      st.latency = lat
    end
    lat.i = lat.i % size + 1
    lat.s[lat.i], lat.t[lat.i] = s, outcome.now
  end

  return inst
end

return M
